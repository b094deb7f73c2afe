package e2e

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sekisho/sekisho/internal/hardening"
)

func TestExecRelaysStdoutStderrAndExitStatus(t *testing.T) {
	t.Parallel()
	marker := "exec-" + randHex(t)
	r := run(t, sshCmd(ctxT(t), "aiko", "aiko+db-jp-01", fmt.Sprintf("echo %s-out; echo %s-err >&2; exit 7", marker, marker)), nil)
	if r.code != 7 {
		t.Fatalf("exit status %d, want 7 (stderr %q)", r.code, r.stderr)
	}
	if r.stdout != marker+"-out\n" {
		t.Errorf("stdout %q, want %q", r.stdout, marker+"-out\n")
	}
	if r.stderr != marker+"-err\n" {
		t.Errorf("stderr %q, want %q", r.stderr, marker+"-err\n")
	}

	s, ev := endedSession(t, "aiko", "db-jp-01", marker)
	for _, want := range []string{
		`x-exec        "echo ` + marker,
		`x-stdout      "` + marker + `-out\n"`,
		`x-stderr      "` + marker + `-err\n"`,
		`x-exit-status "7"`,
	} {
		if !strings.Contains(ev, want) {
			t.Errorf("recording lacks %q:\n%s", want, ev)
		}
	}
	if s.Affiliate != "ops-jp" || s.Residency != "JP" || s.CrossBorder || s.Rule != "pii-in-residency" {
		t.Errorf("session register: %+v", s)
	}
	if !strings.Contains(s.CertKeyID, "technician=aiko") || !strings.Contains(s.CertKeyID, "session="+s.ID) {
		t.Errorf("certificate key ID %q does not name the technician and session", s.CertKeyID)
	}
	if s.BytesOut != int64(len(r.stdout)+len(r.stderr)) {
		t.Errorf("bytes out %d, want %d", s.BytesOut, len(r.stdout)+len(r.stderr))
	}
	// The recording's metadata names the certificate too.
	var meta struct {
		CertSerial uint64 `json:"cert_serial"`
		CertKeyID  string `json:"cert_key_id"`
		Residency  string `json:"residency"`
		EndReason  string `json:"end_reason"`
	}
	b, _ := os.ReadFile(filepath.Join(env.dir, "recordings", s.ID, "session.json"))
	if err := json.Unmarshal(b, &meta); err != nil || meta.CertSerial != s.CertSerial || meta.CertKeyID != s.CertKeyID ||
		meta.Residency != "JP" || meta.EndReason == "" {
		t.Errorf("session.json: %+v (%v)\n%s", meta, err, b)
	}
	// The target's own log names the technician through the key ID.
	log := targetLog(t, "db-jp-01")
	if !strings.Contains(log, "session="+s.ID) {
		t.Errorf("target sshd log does not show the certificate key ID for session %s", s.ID)
	}
	hardening.Report(t, "14", "an exec channel writing to stdout and stderr and exiting 7: %d bytes out, all relayed and recorded as x-stdout and x-stderr with the command and exit status; the certificate key ID names technician and session in the target's log", s.BytesOut)
}

func TestStdinRelayedAndRecorded(t *testing.T) {
	t.Parallel()
	data := make([]byte, 1<<20+17)
	rand.Read(data)
	sum := sha256.Sum256(data)
	r := run(t, sshCmd(ctxT(t), "aiko", "aiko+web-sg-01", "sha256sum"), data)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	want := fmt.Sprintf("%x  -\n", sum)
	if r.stdout != want {
		t.Fatalf("target saw other bytes: got %q, want %q", r.stdout, want)
	}
	s, ev := endedSession(t, "aiko", "web-sg-01", want[:64])
	if s.BytesIn != int64(len(data)) {
		t.Errorf("bytes in %d, want %d", s.BytesIn, len(data))
	}
	// Reassemble the recorded input and compare.
	in := bytes.NewBufferString(streams(t, ev, "x-stdin"))
	if !bytes.Equal(in.Bytes(), data) {
		t.Errorf("recorded input is %d bytes and differs from the %d bytes sent", in.Len(), len(data))
	}
	hardening.Report(t, "14", "%d random bytes on an exec channel's stdin: the target's sha256 matches, %d of %d bytes recorded as x-stdin, identical", len(data), in.Len(), len(data))
}

func TestSCPBothProtocolsBothDirections(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	src := filepath.Join(dir, "src.bin")
	data := make([]byte, 3<<20+5)
	rand.Read(data)
	os.WriteFile(src, data, 0o600)
	remote := "/tmp/sekisho-e2e-scp-" + randHex(t)
	t.Cleanup(func() { os.Remove(remote); os.Remove(remote + ".O") })
	for _, mode := range []struct {
		name  string
		extra []string
		path  string
	}{{"sftp-based", nil, remote}, {"legacy -O", []string{"-O"}, remote + ".O"}} {
		scp := func(from, to string) result {
			args := append(append(sshOpts("aiko"), "-P", env.port), mode.extra...)
			args = append(args, from, to)
			return run(t, exec.CommandContext(ctxT(t), "scp", args...), nil)
		}
		target := "aiko+db-jp-01@" + env.host + ":" + mode.path
		if r := scp(src, target); r.code != 0 {
			t.Fatalf("%s upload: exit %d: %s", mode.name, r.code, r.stderr)
		}
		back := filepath.Join(dir, "back"+strings.ReplaceAll(mode.name, " ", ""))
		if r := scp(target, back); r.code != 0 {
			t.Fatalf("%s download: exit %d: %s", mode.name, r.code, r.stderr)
		}
		got, _ := os.ReadFile(back)
		if !bytes.Equal(got, data) {
			t.Errorf("%s: round trip changed the file (%d bytes back of %d)", mode.name, len(got), len(data))
		}
	}
	// The legacy protocol runs as an exec channel; its command is recorded.
	endedSession(t, "aiko", "db-jp-01", "scp -t "+remote+".O")
	endedSession(t, "aiko", "db-jp-01", "scp -f "+remote+".O")
	// Each transfer is an event with its path, size and content hash.
	for _, dir := range []string{"upload", "download"} {
		wantTransfer(t, transferRecorded(t, "aiko", "db-jp-01", "sftp", dir, remote), data)
		wantTransfer(t, transferRecorded(t, "aiko", "db-jp-01", "scp", dir, remote+".O"), data)
	}
	hardening.Report(t, "15", "a %d-byte file through scp in both protocols (sftp-based and legacy -O), up and down: 4 transfers each recorded with path, size and SHA-256 matching the file; the legacy commands recorded", len(data))
}

// fileTransfer is the data of an x-file event.
type fileTransfer struct {
	Protocol  string `json:"protocol"`
	Direction string `json:"direction"`
	Path      string `json:"path"`
	Size      int64  `json:"size"`
	SHA256    string `json:"sha256"`
	HashNote  string `json:"hash_note"`
}

// fileEvents returns the data of the events with code in an event listing.
func fileEvents[T any](t *testing.T, events, code string) []T {
	t.Helper()
	var list []T
	for _, line := range strings.Split(events, "\n") {
		f := strings.Fields(line)
		if len(f) < 4 || f[2] != code {
			continue
		}
		var v T
		q, err := strconv.Unquote(strings.TrimSpace(line[strings.Index(line, f[2])+len(f[2]):]))
		if err == nil {
			err = json.Unmarshal([]byte(q), &v)
		}
		if err != nil {
			t.Fatalf("bad %s event %q: %v", code, line, err)
		}
		list = append(list, v)
	}
	return list
}

// transferRecorded waits for the ended session of tech to target that
// recorded a transfer of path, and returns the transfer's event.
func transferRecorded(t *testing.T, tech, target, protocol, direction, path string) fileTransfer {
	t.Helper()
	q := strconv.Quote(fmt.Sprintf(`"protocol":%q,"direction":%q,"path":%q`, protocol, direction, path))
	_, ev := endedSession(t, tech, target, q[1:len(q)-1])
	for _, f := range fileEvents[fileTransfer](t, ev, "x-file") {
		if f.Protocol == protocol && f.Direction == direction && f.Path == path {
			return f
		}
	}
	t.Fatalf("no %s %s of %s in:\n%s", protocol, direction, path, ev)
	return fileTransfer{}
}

// wantTransfer checks that a recorded transfer carried data.
func wantTransfer(t *testing.T, f fileTransfer, data []byte) {
	t.Helper()
	sum := sha256.Sum256(data)
	if f.Size != int64(len(data)) || f.SHA256 != hex.EncodeToString(sum[:]) || f.HashNote != "" {
		t.Errorf("%s %s of %s recorded as %d bytes, sha256 %q (%s); want %d bytes, sha256 %x",
			f.Protocol, f.Direction, f.Path, f.Size, f.SHA256, f.HashNote, len(data), sum)
	}
}

func TestSFTPBatch(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	data := make([]byte, 512<<10)
	rand.Read(data)
	src, back := filepath.Join(dir, "up"), filepath.Join(dir, "down")
	os.WriteFile(src, data, 0o600)
	remote := "/tmp/sekisho-e2e-sftp-" + randHex(t)
	t.Cleanup(func() { os.Remove(remote) })
	batch := filepath.Join(dir, "batch")
	os.WriteFile(batch, []byte(fmt.Sprintf("put %s %s\nls -l %s\nget %s %s\n", src, remote, remote, remote, back)), 0o600)
	args := append(sshOpts("aiko"), "-P", env.port, "-b", batch, "aiko+db-jp-01@"+env.host)
	r := run(t, exec.CommandContext(ctxT(t), "sftp", args...), nil)
	if r.code != 0 {
		t.Fatalf("sftp: exit %d: %s", r.code, r.stderr)
	}
	if !strings.Contains(r.stdout, strconv.Itoa(len(data))) {
		t.Errorf("ls -l through sftp does not show the size %d:\n%s", len(data), r.stdout)
	}
	got, _ := os.ReadFile(back)
	if !bytes.Equal(got, data) {
		t.Errorf("sftp round trip changed the file")
	}
	endedSession(t, "aiko", "db-jp-01", remote)
	wantTransfer(t, transferRecorded(t, "aiko", "db-jp-01", "sftp", "upload", remote), data)
	wantTransfer(t, transferRecorded(t, "aiko", "db-jp-01", "sftp", "download", remote), data)
	hardening.Report(t, "15", "a %d-byte sftp put and get in one batch: the round trip intact, both transfers recorded with path, size and SHA-256 matching", len(data))
}

func TestSFTPFileOperationsRecorded(t *testing.T) {
	t.Parallel()
	src := filepath.Join(t.TempDir(), "f")
	os.WriteFile(src, []byte("ops\n"), 0o600)
	d := "/tmp/sekisho-e2e-ops-" + randHex(t)
	t.Cleanup(func() { os.RemoveAll(d) })
	batch := fmt.Sprintf("mkdir %[1]s\nput %[2]s %[1]s/f\nrename %[1]s/f %[1]s/g\nchmod 600 %[1]s/g\nrm %[1]s/g\nrmdir %[1]s\n", d, src)
	args := append(sshOpts("aiko"), "-P", env.port, "-b", "-", "aiko+web-sg-01@"+env.host)
	if r := run(t, exec.CommandContext(ctxT(t), "sftp", args...), []byte(batch)); r.code != 0 {
		t.Fatalf("sftp: exit %d: %s", r.code, r.stderr)
	}
	_, ev := endedSession(t, "aiko", "web-sg-01", "rmdir")
	type op struct{ Op, Path, To string }
	got := fileEvents[op](t, ev, "x-file-op")
	want := []op{{"mkdir", d, ""}, {"rename", d + "/f", d + "/g"}, {"setstat", d + "/g", ""}, {"remove", d + "/g", ""}, {"rmdir", d, ""}}
	if !slices.Equal(got, want) {
		t.Errorf("file operations recorded as %+v, want %+v", got, want)
	}
	wantTransfer(t, transferRecorded(t, "aiko", "web-sg-01", "sftp", "upload", d+"/f"), []byte("ops\n"))
	hardening.Report(t, "15", "an sftp batch of mkdir, put, rename, chmod, rm and rmdir: the %d file operations recorded in order with their paths, the upload with its size and SHA-256", len(got))
}

func TestSFTPTransfersRecordedUnderFilesLimit(t *testing.T) {
	t.Parallel()
	// A files limit relays sftp packet by packet; transfers are recorded
	// there too.
	v := startVariant(t, func(cfg string) string {
		return strings.Replace(cfg, "    targets: [web-sg-01]\n", "    targets: [web-sg-01]\n    channels: [sftp]\n    files: download_only\n", 1)
	})
	data := make([]byte, 300<<10+3)
	rand.Read(data)
	remote := "/tmp/sekisho-e2e-limited-" + randHex(t)
	os.WriteFile(remote, data, 0o644)
	t.Cleanup(func() { os.Remove(remote) })
	back := filepath.Join(t.TempDir(), "back")
	opts := v.ssh(ctxT(t), "li", "x").Args[1:]
	opts = opts[:len(opts)-3] // without -p PORT and the destination
	cmd := exec.CommandContext(ctxT(t), "sftp", append(append(opts, "-P", v.port, "-b", "-"), "li+web-sg-01@127.0.0.1")...)
	if r := run(t, cmd, []byte("get "+remote+" "+back+"\n")); r.code != 0 {
		t.Fatalf("sftp get: exit %d: %s", r.code, r.stderr)
	}
	if got, _ := os.ReadFile(back); !bytes.Equal(got, data) {
		t.Fatal("the download did not arrive intact")
	}
	var found []fileTransfer
	waitUntil(t, 30*time.Second, "the download's x-file event", func() bool {
		found = nil
		out, _ := v.cli(t, "sessions", "--json", "--target", "web-sg-01")
		ids := uuidRe.FindAllString(out, -1)
		slices.Sort(ids)
		for _, id := range slices.Compact(ids) { // an ID is in a session's listing more than once
			ev, _ := v.cli(t, "replay", "--events", id)
			for _, f := range fileEvents[fileTransfer](t, ev, "x-file") {
				if f.Path == remote {
					found = append(found, f)
				}
			}
		}
		return len(found) > 0
	})
	if len(found) != 1 || found[0].Protocol != "sftp" || found[0].Direction != "download" {
		t.Fatalf("transfers of %s recorded: %+v; want one sftp download", remote, found)
	}
	wantTransfer(t, found[0], data)
}

func TestRsyncThroughBastion(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	os.MkdirAll(filepath.Join(src, "sub"), 0o700)
	data := make([]byte, 2<<20)
	rand.Read(data)
	os.WriteFile(filepath.Join(src, "big.bin"), data, 0o600)
	os.WriteFile(filepath.Join(src, "sub", "note.txt"), []byte("rsync through sekisho\n"), 0o600)
	remote := "/tmp/sekisho-e2e-rsync-" + randHex(t)
	t.Cleanup(func() { os.RemoveAll(remote) })
	rsync := func(from, to string) {
		t.Helper()
		r := run(t, exec.CommandContext(ctxT(t), "rsync", "-a", "-e", sshCommandString("li"), from, to), nil)
		if r.code != 0 {
			t.Fatalf("rsync %s %s: exit %d: %s", from, to, r.code, r.stderr)
		}
	}
	rsync(src+"/", "li+web-sg-01@"+env.host+":"+remote+"/")
	back := filepath.Join(dir, "back")
	rsync("li+web-sg-01@"+env.host+":"+remote+"/", back+"/")
	got, _ := os.ReadFile(filepath.Join(back, "big.bin"))
	note, _ := os.ReadFile(filepath.Join(back, "sub", "note.txt"))
	if !bytes.Equal(got, data) || string(note) != "rsync through sekisho\n" {
		t.Errorf("rsync round trip changed the files")
	}
	endedSession(t, "li", "web-sg-01", "rsync --server")
	// rsync's protocol is not parsed: its transfers are recorded by command.
	for _, dir := range []string{"upload", "download"} {
		q := strconv.Quote(fmt.Sprintf(`{"protocol":"rsync","direction":%q,"paths":[%q],"content":"not parsed (rsync)"}`, dir, remote+"/"))
		endedSession(t, "li", "web-sg-01", q[1:len(q)-1])
	}
	hardening.Report(t, "15", "rsync -a of a %d-byte file and a subdirectory up and back: intact; both transfers recorded by command and paths (content not parsed)", len(data))
}

func TestSeveralChannelsOnOneConnection(t *testing.T) {
	t.Parallel()
	// A ControlMaster multiplexes two commands over one connection: one
	// session, two recorded channels.
	dir := t.TempDir()
	sock := filepath.Join(dir, "cm")
	base := append(sshOpts("aiko"), "-p", env.port, "-o", "ControlPath="+sock)
	ctx := ctxT(t)
	master := exec.CommandContext(ctx, "ssh", append(base, "-o", "ControlMaster=yes", "-N", "aiko+web-sg-01@"+env.host)...)
	if err := master.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		exec.Command("ssh", append(base, "-O", "exit", "aiko+web-sg-01@"+env.host)...).Run()
		master.Wait()
	})
	waitUntil(t, 30*time.Second, "control master socket", func() bool {
		return exec.Command("ssh", append(base, "-O", "check", "aiko+web-sg-01@"+env.host)...).Run() == nil
	})
	marker := randHex(t)
	for i := 1; i <= 2; i++ {
		r := run(t, exec.CommandContext(ctx, "ssh", append(base, "-o", "ControlMaster=no", "aiko+web-sg-01@"+env.host,
			fmt.Sprintf("echo mux-%s-%d", marker, i))...), nil)
		if r.code != 0 || r.stdout != fmt.Sprintf("mux-%s-%d\n", marker, i) {
			t.Fatalf("multiplexed command %d: exit %d, stdout %q, stderr %q", i, r.code, r.stdout, r.stderr)
		}
	}
	exec.Command("ssh", append(base, "-O", "exit", "aiko+web-sg-01@"+env.host)...).Run()
	_, ev := endedSession(t, "aiko", "web-sg-01", "mux-"+marker+"-2")
	if !strings.Contains(ev, "# channel 2:") || !strings.Contains(ev, "mux-"+marker+"-1") {
		t.Errorf("both channels should be in one session recording:\n%s", ev)
	}
	hardening.Report(t, "14", "2 commands multiplexed over one ControlMaster connection: one session recording holding both channels and their output")
}

func TestEnvAllowlist(t *testing.T) {
	t.Parallel()
	// The demo targets accept LANG and LD_* (AcceptEnv); sekisho must pass
	// the first and drop the second.
	cmd := sshCmd(ctxT(t), "aiko", "aiko+web-sg-01", `echo "LANG=[$LANG] LD_PRELOAD=[$LD_PRELOAD] LD_LIBRARY_PATH=[$LD_LIBRARY_PATH]"`)
	cmd.Args = append(cmd.Args[:1], append([]string{"-o", "SetEnv=LANG=C.UTF-8 LD_PRELOAD=/tmp/evil.so LD_LIBRARY_PATH=/tmp"}, cmd.Args[1:]...)...)
	r := run(t, cmd, nil)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if want := "LANG=[C.UTF-8] LD_PRELOAD=[] LD_LIBRARY_PATH=[]\n"; r.stdout != want {
		t.Errorf("got %q, want %q", r.stdout, want)
	}
	// What was passed is recorded; what was refused is not passed.
	_, ev := endedSession(t, "aiko", "web-sg-01", "LD_LIBRARY_PATH=[$LD_LIBRARY_PATH]")
	if got := streams(t, ev, "x-env"); got != "LANG=C.UTF-8" {
		t.Errorf("recorded env %q, want %q", got, "LANG=C.UTF-8")
	}
	hardening.Report(t, "29", "SetEnv with LANG, LD_PRELOAD=/tmp/evil.so and LD_LIBRARY_PATH through to a target that accepts LD_*: only LANG reaches the target and the recording, the 2 LD_ variables are dropped")
}

func randHex(t *testing.T) string {
	b := make([]byte, 6)
	rand.Read(b)
	return fmt.Sprintf("%x", b)
}

func targetLog(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(targetNamed(t, name).Log)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestForcedPTYExecIsRecordedAsTerminal(t *testing.T) {
	t.Parallel()
	// ssh -tt host 'cmd' runs an exec channel with a pty: it must be
	// recorded like a shell, input and output.
	marker := randHex(t)
	cmd := sshCmd(ctxT(t), "aiko", "aiko+web-sg-01", "read line; echo got-$line-"+marker+"; tty")
	cmd.Args = append(cmd.Args[:1], append([]string{"-tt"}, cmd.Args[1:]...)...)
	r := run(t, cmd, []byte("typed-"+marker+"\n"))
	if r.code != 0 || !strings.Contains(r.stdout, "got-typed-"+marker+"-"+marker) || !strings.Contains(r.stdout, "/dev/pts/") {
		t.Fatalf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	_, ev := endedSession(t, "aiko", "web-sg-01", "got-typed-"+marker)
	if !strings.Contains(ev, "pty=true") || !strings.Contains(streams(t, ev, "i"), "typed-"+marker) ||
		!strings.Contains(streams(t, ev, "o"), "got-typed-"+marker) {
		t.Errorf("forced-pty exec not recorded as a terminal with input and output:\n%s", ev)
	}
	hardening.Report(t, "14", "ssh -tt with a command (an exec channel with a pty): recorded as a terminal, the typed input and the output both in the recording")
}

func TestExitSignalRelayedAndRecorded(t *testing.T) {
	t.Parallel()
	marker := randHex(t)
	r := run(t, sshCmd(ctxT(t), "aiko", "aiko+web-sg-01", "echo sig-"+marker+"; kill -TERM $$"), nil)
	// OpenSSH's client exits 255 when the remote command was killed by a signal.
	if r.code != 255 || r.stdout != "sig-"+marker+"\n" {
		t.Fatalf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	_, ev := endedSession(t, "aiko", "web-sg-01", "sig-"+marker)
	if got := streams(t, ev, "x-exit-signal"); got != "TERM" {
		t.Errorf("recorded exit signal %q, want TERM:\n%s", got, ev)
	}
}
