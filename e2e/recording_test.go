package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sekisho/sekisho/internal/hardening"
)

// A session's recording verifies: chunks, chain, signed seal. A byte
// edited in it is named by `sekisho verify`; the published key verifies
// a copy offline.
func TestRecordingVerifiesAndTamperingIsNamed(t *testing.T) {
	t.Parallel()
	marker := "verify-me-" + randHex(t)
	if r := run(t, sshCmd(ctxT(t), "aiko", "aiko+web-sg-01", "echo "+marker), nil); r.code != 0 {
		t.Fatalf("exit %d, %q", r.code, r.stderr)
	}
	s, _ := endedSession(t, "aiko", "web-sg-01", marker)
	out := sekishoCLI(t, "verify", s.ID)
	if !strings.Contains(out, s.ID+": OK, complete;") || !strings.Contains(out, "seal signed by SHA256:") {
		t.Fatalf("verify of an intact recording:\n%s", out)
	}

	// Offline: a copy of the directory and the published key.
	key := filepath.Join(t.TempDir(), "recording.pub")
	pub := sekishoCLI(t, "recording-key")
	if !strings.HasPrefix(pub, "ssh-ed25519 ") {
		t.Fatalf("recording-key printed %q", pub)
	}
	os.WriteFile(key, []byte(pub), 0o600)
	cfgDir := filepath.Dir(env.state.Config)
	copyDir := filepath.Join(t.TempDir(), s.ID)
	if err := exec.Command("cp", "-r", filepath.Join(cfgDir, "recordings", s.ID), copyDir).Run(); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctxT(t), env.sekisho, "verify", "--key", key, copyDir)
	cmd.Env = append(os.Environ(), "SEKISHO_CONFIG=/nonexistent")
	if r := run(t, cmd, nil); r.code != 0 || !strings.Contains(r.stdout, "OK, complete") {
		t.Fatalf("offline verify: exit %d, %q, %q", r.code, r.stdout, r.stderr)
	}

	// One byte of the output changed in the copy: an exec channel keeps
	// its exact bytes in 1.raw.
	raw := filepath.Join(copyDir, "1.raw")
	b, _ := os.ReadFile(raw)
	i := strings.Index(string(b), marker)
	if i < 0 {
		t.Fatalf("the output is not in 1.raw: %q", b)
	}
	b[i] ^= 1
	os.WriteFile(raw, b, 0o600)
	cmd = exec.CommandContext(ctxT(t), env.sekisho, "verify", "--key", key, copyDir)
	cmd.Env = append(os.Environ(), "SEKISHO_CONFIG=/nonexistent")
	if r := run(t, cmd, nil); r.code != 1 || !strings.Contains(r.stdout, "FAILED") || !strings.Contains(r.stdout, "1.raw: chunk") || !strings.Contains(r.stdout, "was modified") {
		t.Errorf("verify of a tampered copy: exit %d, %q, %q", r.code, r.stdout, r.stderr)
	}
}

// The server killed mid-session: at the next start the recording is
// sealed as incomplete, verifies up to what was written, and the
// register says how the session ended.
func TestCrashMidSessionIsRecovered(t *testing.T) {
	t.Parallel()
	v := startVariant(t, nil)
	marker := "before-crash-" + randHex(t)
	cmd := v.ssh(ctxT(t), "aiko", "aiko+web-sg-01", "echo "+marker+"; sleep 120")
	stdout := &syncBuffer{}
	cmd.Stdout = stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 30*time.Second, "the marker through the bastion", func() bool { return strings.Contains(stdout.String(), marker) })
	v.kill(t, syscall.SIGKILL)
	cmd.Wait() // the technician's connection drops with the server

	restarted := time.Now()
	v.start(t)
	var id string
	waitUntil(t, 30*time.Second, "the cut-off session to be ended in the register", func() bool {
		out, _ := v.cli(t, "sessions", "--json")
		i := strings.Index(out, `"end_reason": "server stopped: the session was cut off`)
		if i < 0 {
			return false
		}
		j := strings.LastIndex(out[:i], `"id": "`)
		id = out[j+len(`"id": "`) : j+len(`"id": "`)+36]
		return true
	})
	recovered := time.Since(restarted)
	out, err := v.cli(t, "verify", id)
	if err != nil || !strings.Contains(out, "OK, INCOMPLETE") || !strings.Contains(out, "crash or kill") {
		t.Fatalf("verify after the crash: %v\n%s", err, out)
	}
	events, err := v.cli(t, "replay", "--events", id)
	if err != nil || !strings.Contains(streams(t, events, "x-stdout"), marker) {
		t.Errorf("the output before the crash is not readable: %v\n%s", err, events)
	}
	if !strings.Contains(v.out.String(), "recording of a session cut off by a crash sealed as incomplete") {
		t.Error("the restart did not log the recovery")
	}
	hardening.Report(t, "25", "sekisho killed with SIGKILL during a live session: the session is ended in the register %d ms after the restart began, its recording sealed incomplete (\"crash or kill\") and verifies, the output before the kill readable", recovered.Milliseconds())
	hardening.Report(t, "kill", "SIGKILL mid-session: the technician's connection drops; %d ms after the restart began the session is registered as cut off and its recording sealed incomplete, verifying, with the output before the kill", recovered.Milliseconds())
}

// On a recording of several chunks, `sekisho verify` names a dropped
// chunk and two swapped ones.
func TestVerifyNamesDroppedAndSwappedChunks(t *testing.T) {
	t.Parallel()
	marker := "chunks-" + randHex(t)
	// About 7 MB of distinct lines: several 1 MiB chunks.
	if r := run(t, sshCmd(ctxT(t), "aiko", "aiko+web-sg-01", "seq 1 1000000; echo "+marker), nil); r.code != 0 {
		t.Fatalf("exit %d, %q", r.code, r.stderr)
	}
	s, _ := endedSession(t, "aiko", "web-sg-01", marker)
	src := filepath.Join(filepath.Dir(env.state.Config), "recordings", s.ID)
	type chunk struct {
		Seq      int
		File     string
		Off, Len int64
	}
	var chunks []chunk
	b, _ := os.ReadFile(filepath.Join(src, "chain.jsonl"))
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var c chunk
		json.Unmarshal([]byte(line), &c)
		if c.File == "1.raw" {
			chunks = append(chunks, c)
		}
	}
	if len(chunks) < 5 {
		t.Fatalf("%d chunks of 1.raw, want 5 or more", len(chunks))
	}
	c2, c3 := chunks[2], chunks[3]
	for _, tc := range []struct {
		name string
		edit func(data []byte) []byte
		want string
	}{
		{"dropped", func(d []byte) []byte {
			return append(d[:c2.Off:c2.Off], d[c2.Off+c2.Len:]...)
		}, fmt.Sprintf("chunk %d (bytes %d-%d) was removed", c2.Seq, c2.Off, c2.Off+c2.Len)},
		{"swapped", func(d []byte) []byte {
			out := append([]byte{}, d[:c2.Off]...)
			out = append(out, d[c3.Off:c3.Off+c3.Len]...)
			out = append(out, d[c2.Off:c2.Off+c2.Len]...)
			return append(out, d[c3.Off+c3.Len:]...)
		}, fmt.Sprintf("chunks %d and %d were swapped", c2.Seq, c3.Seq)},
	} {
		dir := filepath.Join(t.TempDir(), s.ID)
		if err := exec.Command("cp", "-r", src, dir).Run(); err != nil {
			t.Fatal(err)
		}
		data, _ := os.ReadFile(filepath.Join(dir, "1.raw"))
		os.WriteFile(filepath.Join(dir, "1.raw"), tc.edit(data), 0o600)
		out, err := exec.Command(env.sekisho, "verify", "--config", env.state.Config, dir).CombinedOutput()
		if err == nil || !strings.Contains(string(out), tc.want) {
			t.Errorf("%s: verify said (%v):\n%s\nwant %q", tc.name, err, out, tc.want)
		}
	}
}

// A recording stripped of its seal (to have it cut short and signed anew
// at the next start) is not sealed again, and verify says what happened.
func TestStrippedSealIsNotResealed(t *testing.T) {
	t.Parallel()
	v := startVariant(t, nil)
	if r := run(t, v.ssh(ctxT(t), "aiko", "aiko+web-sg-01", "echo sealed-once"), nil); r.code != 0 {
		t.Fatalf("exit %d, %q", r.code, r.stderr)
	}
	var id string
	waitUntil(t, 30*time.Second, "the session's seal in the register", func() bool {
		out, _ := v.cli(t, "sessions", "--json")
		if i := strings.Index(out, `"recording_head": "`); i >= 0 {
			id = uuidRe.FindString(out)
			return true
		}
		return false
	})
	if err := os.Remove(filepath.Join(v.dir, "recordings", id, "seal.json")); err != nil {
		t.Fatal(err)
	}
	v.kill(t, syscall.SIGTERM)
	v.start(t)
	if !strings.Contains(v.out.String(), "it was removed, not lost in a crash; not sealed again") {
		t.Errorf("the restart did not refuse to re-seal:\n%s", tail(v.out.String(), 20))
	}
	if _, err := os.Stat(filepath.Join(v.dir, "recordings", id, "seal.json")); err == nil {
		t.Error("the stripped recording was sealed again")
	}
	out, err := v.cli(t, "verify", id)
	if err == nil || !strings.Contains(out, "not sealed, yet the session has ended: the seal was removed") {
		t.Errorf("verify of the stripped recording (%v):\n%s", err, out)
	}
	hardening.Report(t, "25", "the seal of an ended session's recording deleted, then sekisho restarted: it is not sealed again, the log says it was removed rather than lost in a crash, verify names the removed seal")
}

// A recording made before exact bytes got a file of their own (format 1,
// kept in recording/testdata) still verifies offline with `sekisho
// verify`, and a byte changed in it is still named.
func TestFormat1RecordingVerifiesOffline(t *testing.T) {
	t.Parallel()
	const id = "0d3c7f5e-8a41-4c36-9f0b-6f2a1e5d4c01"
	fixture := filepath.Join("..", "recording", "testdata", "format1")
	dir := filepath.Join(t.TempDir(), id)
	if err := os.CopyFS(dir, os.DirFS(filepath.Join(fixture, id))); err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(fixture, "recording_key.pub")
	verify := func() result {
		cmd := exec.CommandContext(ctxT(t), env.sekisho, "verify", "--key", key, dir)
		cmd.Env = append(os.Environ(), "SEKISHO_CONFIG=/nonexistent")
		return run(t, cmd, nil)
	}
	if r := verify(); r.code != 0 || !strings.Contains(r.stdout, id+": OK, complete") {
		t.Fatalf("verify of the format-1 recording: exit %d, %q, %q", r.code, r.stdout, r.stderr)
	}
	cast := filepath.Join(dir, "2.cast")
	b, _ := os.ReadFile(cast)
	os.WriteFile(cast, []byte(strings.Replace(string(b), "H4sI", "H4sJ", 1)), 0o600)
	if r := verify(); r.code != 1 || !strings.Contains(r.stdout, "2.cast: chunk") {
		t.Errorf("verify of a changed format-1 recording: exit %d, %q, %q", r.code, r.stdout, r.stderr)
	}
}
