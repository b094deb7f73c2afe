// Package pgtest starts a real PostgreSQL server for tests: Debian's
// package, a fresh data directory in a temporary directory, a free port on
// loopback, run as an unprivileged user (PostgreSQL refuses root). A test
// package starts one server (Shared) and gives each test a database of its
// own (Database). `sekisho demo --ha` starts its cluster's state the same
// way (Start, CreateDatabase).
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Server is a running PostgreSQL cluster of its own.
type Server struct {
	Dir  string // holds data/, the socket and log
	Port int
	bin  string
	user string // the unprivileged user it runs as; "" when not root

	mu     sync.Mutex
	n      int           // databases made
	proc   *os.Process   // the running server; nil when stopped
	exited chan struct{} // closed when it has exited
}

// Bin returns the directory of PostgreSQL's server programs (initdb,
// pg_ctl, postgres), or an error that says what to install.
func Bin() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	return "", errors.New("PostgreSQL's server programs are not installed (/usr/lib/postgresql/*/bin/initdb): apt-get install postgresql, or run tools/install-deps.sh test")
}

func version(dir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(dir)))
	return n
}

// Start initialises and starts a cluster in a new temporary directory.
// Whoever starts it stops it (Stop), which also removes the directory.
func Start(ctx context.Context) (*Server, error) {
	bin, err := Bin()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "sekisho-pg-")
	if err != nil {
		return nil, err
	}
	s := &Server{Dir: dir, bin: bin}
	if os.Geteuid() == 0 {
		s.user = "postgres"
		if _, err := user.Lookup(s.user); err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("PostgreSQL will not run as root and there is no user %q to run it as: %w", s.user, err)
		}
		if out, err := exec.CommandContext(ctx, "chown", s.user, dir).CombinedOutput(); err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("chown %s: %v: %s", dir, err, out)
		}
	}
	if err := s.run(ctx, "initdb", "-D", filepath.Join(dir, "data"), "-A", "trust", "-U", "sekisho", "-E", "UTF8", "--no-sync"); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	for attempt := 0; ; attempt++ {
		if s.Port, err = freePort(); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		if err = s.Restart(ctx); err == nil {
			return s, nil
		}
		if attempt == 4 {
			os.RemoveAll(dir)
			return nil, err
		}
	}
}

// Restart starts the cluster again after StopServer (or for the first
// time). The server runs in the foreground as a child of this process,
// killed if this process dies (a test binary that times out or panics
// leaves no PostgreSQL behind), and is ready when Restart returns.
func (s *Server) Restart(ctx context.Context) error {
	logf, err := os.OpenFile(filepath.Join(s.Dir, "log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(filepath.Join(s.bin, "postgres"), "-D", filepath.Join(s.Dir, "data"),
		"-p", strconv.Itoa(s.Port), "-k", s.Dir, "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=300")
	cmd.Dir = s.Dir
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if s.user != "" {
		u, err := user.Lookup(s.user)
		if err != nil {
			logf.Close()
			return err
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start postgres: %w", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(exited) }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		conn, err := pgx.Connect(cctx, s.DSN("postgres"))
		cancel()
		if err == nil {
			conn.Close(ctx)
			break
		}
		select {
		case <-exited:
			log, _ := os.ReadFile(filepath.Join(s.Dir, "log"))
			return fmt.Errorf("postgres exited at start:\n%s", tail(string(log), 2000))
		case <-ctx.Done():
			cmd.Process.Kill()
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			<-exited
			return fmt.Errorf("postgres did not answer within 60s: %w", err)
		}
	}
	s.mu.Lock()
	s.proc, s.exited = cmd.Process, exited
	s.mu.Unlock()
	return nil
}

// StopServer stops the cluster quickly (a fast shutdown), keeping its
// data, so that a test can see what sekisho does while PostgreSQL is down.
func (s *Server) StopServer(ctx context.Context) error {
	s.mu.Lock()
	proc, exited := s.proc, s.exited
	s.proc, s.exited = nil, nil
	s.mu.Unlock()
	if proc == nil {
		return nil
	}
	proc.Signal(syscall.SIGINT) // fast shutdown
	select {
	case <-exited:
		return nil
	case <-time.After(30 * time.Second):
		proc.Kill()
		<-exited
		return errors.New("postgres did not stop within 30s of a fast shutdown; killed")
	case <-ctx.Done():
		proc.Kill()
		<-exited
		return ctx.Err()
	}
}

// Stop stops the cluster and removes its directory.
func (s *Server) Stop() error {
	err := s.StopServer(context.Background())
	if rerr := os.RemoveAll(s.Dir); err == nil {
		err = rerr
	}
	return err
}

// StopLeftover stops the server in dir (a Server.Dir) that a process
// killed before it could stop it left running, and removes dir. It
// touches only a directory named as Start names them.
func StopLeftover(ctx context.Context, dir string) error {
	if filepath.Dir(dir) != filepath.Clean(os.TempDir()) || !strings.HasPrefix(filepath.Base(dir), "sekisho-pg-") {
		return fmt.Errorf("%s is not a directory of pgtest.Start", dir)
	}
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	bin, err := Bin()
	if err != nil {
		return err
	}
	s := &Server{Dir: dir, bin: bin}
	if os.Geteuid() == 0 {
		s.user = "postgres"
	}
	pidFile := filepath.Join(dir, "data", "postmaster.pid")
	if _, err := os.Stat(pidFile); err == nil {
		if err := s.run(ctx, "pg_ctl", "-D", filepath.Join(dir, "data"), "-m", "immediate", "-w", "stop"); err != nil {
			// A server that died with its owner leaves postmaster.pid
			// naming no process: nothing to stop.
			b, _ := os.ReadFile(pidFile)
			pid, _ := strconv.Atoi(strings.SplitN(string(b), "\n", 2)[0])
			if pid <= 0 || syscall.Kill(pid, 0) == nil {
				return err
			}
		}
	}
	return os.RemoveAll(dir)
}

func (s *Server) run(ctx context.Context, prog string, args ...string) error {
	path := filepath.Join(s.bin, prog)
	cmd := exec.CommandContext(ctx, path, args...)
	if s.user != "" {
		cmd = exec.CommandContext(ctx, "runuser", append([]string{"-u", s.user, "--", path}, args...)...)
	}
	cmd.Dir = s.Dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(s.Dir, "log"))
		return fmt.Errorf("%s %s: %v\n%s\n%s", prog, strings.Join(args, " "), err, out, tail(string(log), 2000))
	}
	return nil
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// DSN is the connection string of database name on the server.
func (s *Server) DSN(name string) string {
	return fmt.Sprintf("postgres://sekisho@127.0.0.1:%d/%s?sslmode=disable", s.Port, name)
}

// Database creates a new empty database and returns its DSN.
func (s *Server) Database(ctx context.Context) (string, error) {
	s.mu.Lock()
	s.n++
	name := fmt.Sprintf("t%d", s.n)
	s.mu.Unlock()
	return s.CreateDatabase(ctx, name)
}

// CreateDatabase creates the empty database name, an SQL identifier of
// the caller's (never a user's) choosing, and returns its DSN.
func (s *Server) CreateDatabase(ctx context.Context, name string) (string, error) {
	conn, err := pgx.Connect(ctx, s.DSN("postgres"))
	if err != nil {
		return "", err
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return "", fmt.Errorf("create database %s: %w", name, err)
	}
	return s.DSN(name), nil
}

var (
	shared    *Server
	sharedErr error
	sharedMu  sync.Mutex
)

// Shared returns the test binary's server, starting it on first use; the
// package's TestMain stops it with Main. A machine without PostgreSQL
// fails the test with what to install: the store tests are not optional.
func Shared(t testing.TB) *Server {
	t.Helper()
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if shared == nil && sharedErr == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		shared, sharedErr = Start(ctx)
	}
	if sharedErr != nil {
		t.Fatalf("start PostgreSQL: %v", sharedErr)
	}
	return shared
}

// NewDatabase is Shared(t).Database with the test's context and failure.
func NewDatabase(t testing.TB) string {
	t.Helper()
	dsn, err := Shared(t).Database(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return dsn
}

// Main runs the tests and stops the shared server, if one was started.
func Main(m *testing.M) {
	code := m.Run()
	StopShared()
	os.Exit(code)
}

// StopShared stops the shared server, if one was started: for a
// TestMain that does more than Main.
func StopShared() {
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if shared != nil {
		if err := shared.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "pgtest: stop PostgreSQL:", err)
		}
		shared = nil
	}
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
