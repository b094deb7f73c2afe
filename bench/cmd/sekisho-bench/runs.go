package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// path is one way from the OpenSSH client to the target.
type path string

const (
	pathA path = "A" // ssh -J through an OpenSSH sshd jump host
	pathB path = "B" // through sekisho: recording on, a Vault certificate per connection
	pathD path = "D" // directly to the target (reference)
	// pathJ is ssh -J through sekisho: sekisho answers the inner
	// connection as the target (ProxyJump), then as B. Timed for
	// connection setup only; its bytes take B's way.
	pathJ path = "J"
)

// paths are the paths of every part; setupPaths those of the connection
// setup.
var (
	paths      = []path{pathA, pathB, pathD}
	setupPaths = []path{pathA, pathB, pathJ, pathD}
)

func (p path) String() string {
	switch p {
	case pathA:
		return "A: ssh -J (OpenSSH jump host)"
	case pathB:
		return "B: sekisho (recording, Vault cert)"
	case pathJ:
		return "J: ssh -J through sekisho (ProxyJump answered as the target, then as B)"
	default:
		return "D: direct (reference)"
	}
}

// rotation returns the order of the paths in round i: each path goes
// first, second and third equally often, so that drift and noise hit all.
func rotation(i int) []path { return rotationOf(paths, i) }

// rotationOf is rotation over ps.
func rotationOf(ps []path, i int) []path {
	k := i % len(ps)
	return append(append([]path{}, ps[k:]...), ps[:k]...)
}

// sshArgs are the arguments of ssh (or scp) for path p with a client
// variant (see env.configs), before the destination. A cipher is also
// given with -c, as a user would; the config file carries it to the jump
// leg of path A, which -c does not reach.
func (e *env) sshArgs(p path, variant string) []string {
	args := []string{"-F", e.configs[variant]}
	if variant != "" && !strings.HasPrefix(variant, "kex:") {
		args = append(args, "-c", variant)
	}
	if p == pathA {
		args = append(args, "-J", hostJump)
	}
	return args
}

func host(p path) string {
	switch p {
	case pathB:
		return hostSekisho
	case pathJ:
		return targetName // by its own name, with ProxyJump through sekisho
	}
	return hostTarget
}

// runError describes a failed client run with the tail of its stderr.
func runError(what string, err error, stderr []byte) error {
	s := strings.TrimSpace(string(stderr))
	if len(s) > 400 {
		s = "…" + s[len(s)-400:]
	}
	if s == "" {
		return fmt.Errorf("%s: %w", what, err)
	}
	return fmt.Errorf("%s: %w: %s", what, err, s)
}

// setupOnce times `ssh HOST true` on a fresh connection: process start
// to exit, so the key exchange, authentication (and for B the policy
// decision, the Vault signature, the target connection and the recording's
// creation), the channel and the teardown.
func (e *env) setupOnce(ctx context.Context, p path, variant string) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	args := append(e.sshArgs(p, variant), host(p), "true")
	cmd := exec.CommandContext(ctx, "ssh", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	err := cmd.Run()
	d := time.Since(start)
	if err != nil {
		return 0, runError("ssh true via "+string(p), err, stderr.Bytes())
	}
	return d, nil
}

// transfer is one timed bulk transfer.
type transfer struct {
	Bytes int64 `json:"bytes"`
	// Wall is process start to exit.
	Wall time.Duration `json:"wall_ns"`
	// Data is the time the bytes took: for a download, first byte to end
	// of stream as the client's stdout sees it; for an upload, Wall minus
	// the path's median connection setup (scp gives no earlier hook).
	Data time.Duration `json:"data_ns"`
	// SekishoCPU is the CPU time sekisho used during the run (path B).
	SekishoCPU time.Duration `json:"sekisho_cpu_ns,omitempty"`
	// Recording is what the run's session left on disk (path B).
	Recording *diskUse `json:"recording,omitempty"`
}

// MiBps is the throughput over Data.
func (t transfer) MiBps() float64 {
	return float64(t.Bytes) / (1 << 20) / t.Data.Seconds()
}

// downloadOnce streams n bytes of /dev/zero from the target to the
// client's stdout, which the benchmark reads and discards.
func (e *env) downloadOnce(ctx context.Context, p path, cipher string, n int64) (transfer, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Minute)
	defer cancel()
	args := append(e.sshArgs(p, cipher), host(p), "head -c "+strconv.FormatInt(n, 10)+" /dev/zero")
	cmd := exec.CommandContext(ctx, "ssh", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return transfer{}, err
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return transfer{}, err
	}
	buf := make([]byte, 256<<10)
	var got int64
	var first, last time.Time
	for {
		k, rerr := out.Read(buf)
		if k > 0 {
			if got == 0 {
				first = time.Now()
			}
			got += int64(k)
		}
		if rerr != nil {
			last = time.Now()
			if !errors.Is(rerr, io.EOF) {
				err = rerr
			}
			break
		}
	}
	werr := cmd.Wait()
	t := transfer{Bytes: got, Wall: time.Since(start), Data: last.Sub(first)}
	switch {
	case werr != nil:
		return t, runError("download via "+string(p), werr, stderr.Bytes())
	case err != nil:
		return t, fmt.Errorf("download via %s: %w", p, err)
	case got != n:
		return t, fmt.Errorf("download via %s: got %d bytes, want %d", p, got, n)
	}
	return t, nil
}

// uploadOnce copies file (n bytes) to /dev/null on the target with scp
// (OpenSSH 9's scp speaks SFTP). The target's sftp-server cannot fsetstat
// /dev/null and scp says so ("remote fsetstat: Bad message") but exits 0
// with every byte written; that line is dropped.
func (e *env) uploadOnce(ctx context.Context, p path, cipher, file string, n int64, setup time.Duration) (transfer, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Minute)
	defer cancel()
	args := append(e.sshArgs(p, cipher), "-q", file, host(p)+":/dev/null")
	cmd := exec.CommandContext(ctx, "scp", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	err := cmd.Run()
	t := transfer{Bytes: n, Wall: time.Since(start)}
	t.Data = t.Wall - setup
	if t.Data <= 0 {
		t.Data = t.Wall
	}
	if err != nil {
		return t, runError("scp upload via "+string(p), err, stderr.Bytes())
	}
	return t, nil
}

// ptyOnce runs a command on a terminal through sekisho that prints n
// bytes of base64 text (line by line, as a busy terminal would), and
// returns how many bytes the client received (the pty adds a CR per line).
func (e *env) ptyOnce(ctx context.Context, n int64) (int64, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Minute)
	defer cancel()
	remote := "base64 -w 79 /dev/urandom | head -c " + strconv.FormatInt(n, 10)
	args := append(e.sshArgs(pathB, ""), "-tt", host(pathB), remote)
	cmd := exec.CommandContext(ctx, "ssh", args...)
	// An open stdin that never sends: EOF on a terminal's input would
	// reach the remote shell as ^D.
	if _, err := cmd.StdinPipe(); err != nil {
		return 0, 0, err
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cw := &countWriter{}
	cmd.Stdout = cw
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return cw.n, 0, runError("pty session via B", err, stderr.Bytes())
	}
	return cw.n, time.Since(start), nil
}

type countWriter struct{ n int64 }

func (w *countWriter) Write(p []byte) (int, error) { w.n += int64(len(p)); return len(p), nil }

// diskUse is the size of a session's recording directory.
type diskUse struct {
	Dir      string `json:"dir"`
	Apparent int64  `json:"apparent_bytes"` // sum of sizes, as du --apparent-size
	Disk     int64  `json:"disk_bytes"`     // allocated blocks, as du counts
}

// listSessions returns the session directories under the recordings dir.
func (e *env) listSessions() (map[string]bool, error) {
	ents, err := os.ReadDir(e.recordingsDir())
	if err != nil {
		return nil, err
	}
	m := map[string]bool{}
	for _, de := range ents {
		if de.IsDir() {
			m[de.Name()] = true
		}
	}
	return m, nil
}

// newRecording waits for the one session directory that is not in
// before to be sealed (seal.json: the session ended and its recording is
// complete), measures it and, if remove is set, deletes it so that
// gigabytes of recordings do not pile up during the run.
func (e *env) newRecording(ctx context.Context, before map[string]bool, remove bool) (*diskUse, error) {
	var dir string
	err := poll(ctx, 2*time.Minute, "the session's sealed recording", func() (bool, error) {
		now, err := e.listSessions()
		if err != nil {
			return false, err
		}
		var fresh []string
		for d := range now {
			if !before[d] {
				fresh = append(fresh, d)
			}
		}
		if len(fresh) > 1 {
			return false, fmt.Errorf("%d new recordings, want 1: %v", len(fresh), fresh)
		}
		if len(fresh) == 0 {
			return false, nil
		}
		dir = filepath.Join(e.recordingsDir(), fresh[0])
		_, err = os.Stat(filepath.Join(dir, "seal.json"))
		return err == nil, nil
	})
	if err != nil {
		return nil, err
	}
	u, err := measureDir(dir)
	if err != nil {
		return nil, err
	}
	if remove {
		if err := os.RemoveAll(dir); err != nil {
			return u, err
		}
	}
	return u, nil
}

// measureDir sums what dir takes, as du does: the directory and
// everything in it at any depth, whatever the files' names, so that a
// recording's .cast chunks, any raw-bytes files beside them (<n>.raw),
// the chain, the metadata and the seal all count.
func measureDir(dir string) (*diskUse, error) {
	u := &diskUse{Dir: filepath.Base(dir)}
	err := filepath.WalkDir(dir, func(_ string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := de.Info()
		if err != nil {
			return err
		}
		u.Apparent += fi.Size()
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			u.Disk += st.Blocks * 512
		}
		return nil
	})
	return u, err
}

// makeUploadFile creates the n-byte file scp uploads: sparse, so it reads
// as zeros from memory for every path alike, as /dev/zero does for the
// downloads.
func makeUploadFile(dir string, n int64) (string, error) {
	p := filepath.Join(dir, "upload.bin")
	f, err := os.Create(p)
	if err != nil {
		return "", err
	}
	if err := f.Truncate(n); err != nil {
		f.Close()
		return "", err
	}
	return p, f.Close()
}
