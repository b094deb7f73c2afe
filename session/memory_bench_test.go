package session

import (
	"bufio"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sekisho/sekisho/broker"
)

// BenchmarkInteractiveSessionMemory measures what an interactive session
// costs the bastion: memorySessions technicians each hold a terminal
// (pty-req, shell) on a target that echoes like a pty running cat, and
// type a key every 100 ms. Run it with
//
//	go test -run=NONE -bench=InteractiveSessionMemory ./session/
//	go test -run=NONE -bench=InteractiveSessionMemory ./session/ -session-goroutines   # and list them
//	go test -run=NONE -bench=InteractiveSessionMemory ./session/ -session-heapprofile=heap.pb.gz
//
// What is counted is this process only: the Server, its two SSH
// connections per session (x/crypto's goroutines included) and the
// recorder. The technicians' clients and the target run in a child
// process (TestInteractiveLoadProcess), so neither their goroutines nor
// their memory are in the numbers. Each is the growth from before the
// sessions opened to when all of them had typed ten keys and still
// type, divided by memorySessions, both read after a garbage collection
// (which also shrinks stacks that use less than a quarter of theirs):
//
//   - B/session: Go heap in use plus stacks in use (HeapInuse +
//     StackInuse), what docs/BENCHMARKS.md reports as "heap + stacks";
//   - live-B/session: the same with the heap's live objects alone
//     (HeapAlloc), without the free space of the heap's spans: steadier
//     from run to run;
//   - stack-B/session: stacks alone;
//   - goroutines/session.
func BenchmarkInteractiveSessionMemory(b *testing.B) {
	if *sessionHeapProfile != "" {
		runtime.MemProfileRate = 4096
	}
	load, srv, addr := startInteractiveBench(b)

	// What the first sessions of a process allocate once (the
	// recorder's, x/crypto's) is not a session's.
	load.do(b, fmt.Sprintf("open %s %d", addr, 10))
	load.do(b, "close")
	awaitSessionsEnded(b, srv)

	var bytes, live, stacks, goroutines float64
	for range b.N {
		before := sampleMemory()
		load.do(b, fmt.Sprintf("open %s %d", addr, memorySessions))
		after := sampleMemory()
		if *sessionHeapProfile != "" {
			writeHeapProfile(b, *sessionHeapProfile)
		}
		if *listSessionGoroutines {
			logGoroutineGrowth(before.kinds, after.kinds, memorySessions)
		}
		load.do(b, "close")
		awaitSessionsEnded(b, srv)
		grew := func(after, before uint64) float64 { return (float64(after) - float64(before)) / memorySessions }
		bytes += grew(after.heap+after.stack, before.heap+before.stack)
		live += grew(after.live+after.stack, before.live+before.stack)
		stacks += grew(after.stack, before.stack)
		goroutines += float64(after.goroutines-before.goroutines) / memorySessions
	}
	b.ReportMetric(bytes/float64(b.N), "B/session")
	b.ReportMetric(live/float64(b.N), "live-B/session")
	b.ReportMetric(stacks/float64(b.N), "stack-B/session")
	b.ReportMetric(goroutines/float64(b.N), "goroutines/session")
}

// memorySessions is how many interactive sessions the benchmark holds
// open at once.
const memorySessions = 200

// startInteractiveBench starts the child process of the technicians and
// the target, and a Server in this process that relays to that target
// and records into a temporary directory; it returns the child, the
// Server and the Server's address. Both end with the benchmark.
func startInteractiveBench(b *testing.B) (*interactiveLoad, *Server, string) {
	hostSeed, targetSeed, techSeed := newSeed(), newSeed(), newSeed()
	hostKey, targetKey, techKey := seedSigner(hostSeed), seedSigner(targetSeed), seedSigner(techSeed)
	load := startInteractiveLoad(b, targetSeed, techSeed, hostKey.PublicKey())
	fb := &fakeBroker{
		tech: &broker.Technician{Name: "li", Keys: []ssh.PublicKey{techKey.PublicKey()}},
		tg: &broker.Target{Name: "db", Address: load.target, Login: "ops",
			HostKeys: []ssh.PublicKey{targetKey.PublicKey()}},
		ca: newSigner(),
	}
	srv, addr := serveOnLoopback(b, Config{HostKey: hostKey, Broker: fb, RecordingDir: b.TempDir(), Logger: slog.New(slog.DiscardHandler)})
	return load, srv, addr
}

var listSessionGoroutines = flag.Bool("session-goroutines", false,
	"BenchmarkInteractiveSessionMemory: log the goroutines the sessions added, grouped by where they wait and who started them")

var sessionHeapProfile = flag.String("session-heapprofile", "",
	"BenchmarkInteractiveSessionMemory: write a heap profile to this file while the sessions are open")

func writeHeapProfile(b *testing.B, name string) {
	f, err := os.Create(name)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		b.Fatal(err)
	}
}

type memorySample struct {
	goroutines        int
	heap, live, stack uint64
	kinds             map[string]int // goroutines by goroutineKind, when listed
}

func sampleMemory() memorySample {
	var s memorySample
	if *listSessionGoroutines {
		buf := make([]byte, 64<<20)
		s.kinds = goroutineKinds(buf[:runtime.Stack(buf, true)])
	}
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	s.goroutines, s.heap, s.live, s.stack = runtime.NumGoroutine(), m.HeapInuse, m.HeapAlloc, m.StackInuse
	return s
}

// goroutineKinds counts the goroutines of a runtime.Stack dump by kind.
func goroutineKinds(dump []byte) map[string]int {
	kinds := map[string]int{}
	for _, g := range strings.Split(string(dump), "\n\n") {
		kinds[goroutineKind(g)]++
	}
	return kinds
}

// logGoroutineGrowth logs, per kind of goroutine (the function it runs
// and the one that started it), how many more there are per session.
func logGoroutineGrowth(was, now map[string]int, sessions int) {
	var lines []string
	total := 0
	for kind, n := range now {
		if d := n - was[kind]; d > 0 {
			total += d
			lines = append(lines, fmt.Sprintf("%5.2f  %s", float64(d)/float64(sessions), kind))
		}
	}
	slices.Sort(lines)
	// On stderr: the benchmark's log is cut after ten lines.
	fmt.Fprintf(os.Stderr, "goroutines added per session (%.2f):\n%s\n", float64(total)/float64(sessions), strings.Join(lines, "\n"))
}

// goroutineKind names a goroutine of a runtime.Stack dump by the
// function it runs (its outermost frame) and what it waits in (the
// innermost frame outside the runtime and sync), and who started it.
func goroutineKind(g string) string {
	var funcs []string
	created := ""
	lines := strings.Split(g, "\n")
	for i := 1; i < len(lines); i += 2 {
		f := lines[i]
		if rest, ok := strings.CutPrefix(f, "created by "); ok {
			created, _, _ = strings.Cut(rest, " in goroutine")
			break
		}
		if j := strings.LastIndexByte(f, '('); j > 0 {
			f = f[:j]
		}
		funcs = append(funcs, f)
	}
	if len(funcs) == 0 {
		return "?"
	}
	waits := funcs[0]
	for _, f := range funcs {
		if !strings.HasPrefix(f, "runtime.") && !strings.HasPrefix(f, "sync.") && !strings.HasPrefix(f, "internal/") {
			waits = f
			break
		}
	}
	return fmt.Sprintf("%s (waits in %s; created by %s)", funcs[len(funcs)-1], waits, created)
}

// awaitSessionsEnded waits until the server holds no connection.
func awaitSessionsEnded(b *testing.B, srv *Server) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		srv.mu.Lock()
		n := len(srv.conns)
		srv.mu.Unlock()
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d connections still open 30 s after the technicians left", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func newSeed() []byte {
	seed := make([]byte, ed25519.SeedSize)
	rand.Read(seed)
	return seed
}

func seedSigner(seed []byte) ssh.Signer {
	s, err := ssh.NewSignerFromKey(ed25519.NewKeyFromSeed(seed))
	if err != nil {
		panic(err)
	}
	return s
}

// interactiveLoad is the child process that holds the technicians and
// the target.
type interactiveLoad struct {
	target string
	in     io.Writer
	out    *bufio.Scanner
}

const interactiveLoadEnv = "SEKISHO_INTERACTIVE_LOAD"

// startInteractiveLoad starts TestInteractiveLoadProcess in a child
// process of this test binary, and returns once its target listens.
func startInteractiveLoad(b *testing.B, targetSeed, techSeed []byte, bastion ssh.PublicKey) *interactiveLoad {
	cmd := exec.Command(os.Args[0], "-test.run=^TestInteractiveLoadProcess$", "-test.bench=^$")
	cmd.Env = append(os.Environ(), interactiveLoadEnv+"="+hex.EncodeToString(targetSeed)+" "+hex.EncodeToString(techSeed)+" "+
		strings.TrimSpace(string(ssh.MarshalAuthorizedKey(bastion))))
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		in.Close() // the child ends when its input does
		cmd.Wait()
	})
	l := &interactiveLoad{in: in, out: bufio.NewScanner(out)}
	l.target = l.answer(b, "target")
	return l
}

// do sends the child a command and returns its answer.
func (l *interactiveLoad) do(b *testing.B, command string) string {
	if _, err := fmt.Fprintln(l.in, command); err != nil {
		b.Fatal(err)
	}
	verb, _, _ := strings.Cut(command, " ")
	return l.answer(b, verb)
}

// answer returns what follows word on the child's next line of its own
// (the test framework's lines are skipped), failing on an error.
func (l *interactiveLoad) answer(b *testing.B, word string) string {
	for l.out.Scan() {
		line, ok := strings.CutPrefix(l.out.Text(), "load: ")
		if !ok {
			continue
		}
		if rest, ok := strings.CutPrefix(line, word); ok {
			return strings.TrimSpace(rest)
		}
		b.Fatalf("interactive load: %s", line)
	}
	b.Fatalf("interactive load ended: %v", l.out.Err())
	return ""
}

// TestInteractiveLoadProcess is not a test: it is the child process of
// BenchmarkInteractiveSessionMemory and BenchmarkInteractiveEcho, holding
// the target (an x/crypto server whose shells echo what they read, as a
// pty running cat does) and the technicians' clients. It reads commands
// on its input:
//
//	open ADDRESS N   N technicians log in through the bastion at ADDRESS,
//	                 each opens a terminal and types a key every 100 ms;
//	                 answered once each has typed ten and read their echo
//	echo ADDRESS N WINDOW FILE
//	                 N technicians open a terminal at ADDRESS, the
//	                 bastion's or the target's own (then directly), and
//	                 type a key every 100 ms; the echo latencies of the
//	                 keys typed in WINDOW go to FILE (see measureEcho)
//	pin CPUS         every thread of this process runs on CPUS only
//	close            the technicians stop typing and leave
func TestInteractiveLoadProcess(t *testing.T) {
	env := os.Getenv(interactiveLoadEnv)
	if env == "" {
		t.Skip("the child process of BenchmarkInteractiveSessionMemory")
	}
	say := func(format string, args ...any) { fmt.Printf("load: "+format+"\n", args...) }
	keys := strings.SplitN(env, " ", 3)
	targetSeed, _ := hex.DecodeString(keys[0])
	techSeed, _ := hex.DecodeString(keys[1])
	bastion, _, _, _, err := ssh.ParseAuthorizedKey([]byte(keys[2]))
	if err != nil {
		say("error: bastion key: %v", err)
		return
	}
	cfg := &ssh.ServerConfig{PublicKeyCallback: func(ssh.ConnMetadata, ssh.PublicKey) (*ssh.Permissions, error) { return nil, nil }}
	targetKey := seedSigner(targetSeed)
	cfg.AddHostKey(targetKey)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		say("error: %v", err)
		return
	}
	defer ln.Close()
	acceptChannels(ln, cfg, echoShell)
	say("target %s", ln.Addr())

	tech := seedSigner(techSeed)
	var typists []*typist
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		f := strings.Fields(in.Text())
		switch {
		case len(f) == 3 && f[0] == "open":
			n, _ := strconv.Atoi(f[2])
			var err error
			if typists, err = openTypists(f[1], tech, bastion, n); err != nil {
				say("error: %v", err)
				continue
			}
			say("open")
		case len(f) == 5 && f[0] == "echo":
			user, hostKey := "li+db", bastion
			if f[1] == ln.Addr().String() {
				user, hostKey = "ops", targetKey.PublicKey()
			}
			n, _ := strconv.Atoi(f[2])
			window, _ := time.ParseDuration(f[3])
			var err error
			if typists, err = measureEcho(say, f[1], user, tech, hostKey, n, window, f[4]); err != nil {
				say("error: %v", err)
			}
		case len(f) == 2 && f[0] == "pin":
			procs, err := pinSelf(f[1])
			if err != nil {
				say("error: %v", err)
				continue
			}
			say("pin %d", procs)
		case len(f) == 1 && f[0] == "close":
			for _, ty := range typists {
				ty.leave()
			}
			typists = nil
			say("close")
		default:
			say("error: unknown command %q", in.Text())
		}
	}
}

// echoShell answers a session channel's pty-req, env and window-change,
// and echoes what it reads once it got a shell, until the technician
// sends EOF or closes it.
func echoShell(ch ssh.Channel, reqs <-chan *ssh.Request) {
	for req := range reqs {
		switch req.Type {
		case "pty-req", "env", "window-change":
			req.Reply(true, nil)
		case "shell":
			req.Reply(true, nil)
			go ssh.DiscardRequests(reqs)
			buf := make([]byte, 256)
			for {
				n, err := ch.Read(buf)
				if n > 0 {
					if _, werr := ch.Write(buf[:n]); werr != nil {
						break
					}
				}
				if err != nil {
					break
				}
			}
			ch.SendRequest("exit-status", false, ssh.Marshal(exitStatus{0}))
			ch.Close()
			return
		default:
			req.Reply(false, nil)
		}
	}
}

// typist is one technician at a terminal through the bastion.
type typist struct {
	client *ssh.Client
	ch     ssh.Channel
	stop   chan struct{}
	done   chan struct{}
}

// openTypists logs n technicians in, one after the other, and returns once
// each has typed ten keys and read their echo.
func openTypists(addr string, key ssh.Signer, bastion ssh.PublicKey, n int) ([]*typist, error) {
	typists := make([]*typist, n)
	errs := make(chan error, n)
	var typed sync.WaitGroup
	for i := range typists {
		ty, err := openTypist(addr, "li+db", key, bastion)
		if err != nil {
			for _, ty := range typists[:i] {
				ty.leave()
			}
			return nil, err
		}
		typists[i] = ty
		typed.Add(1)
		go ty.typeKeys(&typed, errs)
	}
	typed.Wait()
	select {
	case err := <-errs:
		for _, ty := range typists {
			ty.leave()
		}
		return nil, err
	default:
		return typists, nil
	}
}

// openTypist logs in at addr as user (li+db through the bastion, any
// login on the target itself), checking that the server's host key is
// hostKey, and opens a terminal running a shell.
func openTypist(addr, user string, key ssh.Signer, hostKey ssh.PublicKey) (*typist, error) {
	cfg := &ssh.ClientConfig{User: user, Auth: []ssh.AuthMethod{ssh.PublicKeys(key)},
		HostKeyCallback: ssh.FixedHostKey(hostKey), Timeout: 10 * time.Second,
		Config: ssh.Config{Ciphers: []string{"chacha20-poly1305@openssh.com"}}} // OpenSSH's first choice
	c, err := ssh.Dial("tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	ch, reqs, err := c.OpenChannel("session", nil)
	if err != nil {
		c.Close()
		return nil, err
	}
	go ssh.DiscardRequests(reqs)
	for _, r := range []struct {
		kind    string
		payload []byte
	}{
		{"pty-req", ssh.Marshal(ptyRequest{Term: "xterm-256color", Cols: 120, Rows: 40})},
		{"shell", nil},
	} {
		if ok, err := ch.SendRequest(r.kind, true, r.payload); err != nil || !ok {
			c.Close()
			return nil, fmt.Errorf("%s refused: %v", r.kind, err)
		}
	}
	return &typist{client: c, ch: ch, stop: make(chan struct{}), done: make(chan struct{})}, nil
}

// typeKeys types a key every 100 ms (from a random offset) and reads its
// echo, until leave; typed is done after the tenth.
func (ty *typist) typeKeys(typed *sync.WaitGroup, errs chan<- error) {
	defer close(ty.done)
	first := time.NewTimer(mrand.N(100 * time.Millisecond))
	select {
	case <-first.C:
	case <-ty.stop:
		typed.Done()
		return
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	key := []byte{'k'}
	for i := 1; ; i++ {
		_, err := ty.ch.Write(key)
		if err == nil {
			_, err = io.ReadFull(ty.ch, key)
		}
		if err != nil {
			select {
			case <-ty.stop:
			default:
				errs <- fmt.Errorf("keystroke %d: %w", i, err)
			}
			if i <= 10 {
				typed.Done()
			}
			return
		}
		if i == 10 {
			typed.Done()
		}
		select {
		case <-tick.C:
		case <-ty.stop:
			return
		}
	}
}

func (ty *typist) leave() {
	close(ty.stop)
	ty.client.Close()
	<-ty.done
}
