package recording

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/sekisho/sekisho/internal/hardening"
)

// signedSession records a session of three chunks or more on one
// channel (each Stdout of more than chunkBytes makes a chunk) and seals it.
func signedSession(t *testing.T) (dir string, pub ed25519.PublicKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	root, id := t.TempDir(), uuid.NewString()
	s, err := CreateSigned(root, Meta{ID: id, Technician: "li", Target: "db", Start: time.Now()}, priv)
	if err != nil {
		t.Fatal(err)
	}
	c, err := s.Channel(ChannelInfo{Kind: "exec", Command: "cat big"})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		must(t, c.Stdout(bytes.Repeat([]byte{byte('a' + i)}, chunkBytes)))
		settle(c)
	}
	must(t, c.Close())
	must(t, s.End(time.Now(), "client closed", 0, 4*chunkBytes))
	return s.Dir(), pub
}

// settle waits for the chunk being synced in the background, so that
// the next write of chunkBytes makes a chunk of its own (it would grow
// the current one while a sync is running).
func settle(c *Channel) {
	c.mu.Lock()
	c.waitSyncsLocked()
	c.mu.Unlock()
}

func problems(v Verification) string {
	var out []string
	for _, p := range v.Problems {
		out = append(out, p.What)
	}
	return strings.Join(out, "; ")
}

func TestVerifyIntactRecording(t *testing.T) {
	dir, pub := signedSession(t)
	v, err := Verify(dir, pub)
	if err != nil {
		t.Fatal(err)
	}
	if !v.OK || !v.Complete || !v.Sealed || !v.Signed || v.Chunks < 5 {
		t.Fatalf("intact recording: %+v (%s)", v, problems(v))
	}
	other, _, _ := ed25519.GenerateKey(rand.Reader)
	v, _ = Verify(dir, other)
	if v.OK || !strings.Contains(problems(v), "signature does not verify") {
		t.Errorf("another key: %+v", v)
	}
}

// chunkRange returns the byte range and the sequence number of the nth
// chunk (from 1) of 1.raw, the channel's exact bytes.
func chunkRange(t *testing.T, dir string, nth int) (from, to int64, seq int) {
	t.Helper()
	recs, _, err := readChain(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if r.File == "1.raw" {
			if nth--; nth == 0 {
				return r.Off, r.Off + r.Len, r.Seq
			}
		}
	}
	t.Fatalf("no such chunk of 1.raw")
	return 0, 0, 0
}

func TestVerifyNamesTampering(t *testing.T) {
	for _, tc := range []struct {
		name   string
		tamper func(t *testing.T, dir string, data []byte) []byte
		want   string
	}{
		{"a byte edited", func(t *testing.T, dir string, data []byte) []byte {
			from, _, _ := chunkRange(t, dir, 3)
			data[from+100] ^= 1
			return data
		}, "was modified"},
		{"a chunk dropped", func(t *testing.T, dir string, data []byte) []byte {
			from, to, _ := chunkRange(t, dir, 3)
			return append(data[:from:from], data[to:]...)
		}, "was removed"},
		{"two chunks swapped", func(t *testing.T, dir string, data []byte) []byte {
			f2, t2, _ := chunkRange(t, dir, 2)
			_, t3, _ := chunkRange(t, dir, 3)
			out := append([]byte{}, data[:f2]...)
			out = append(out, data[t2:t3]...)
			out = append(out, data[f2:t2]...)
			return append(out, data[t3:]...)
		}, "were swapped"},
		{"truncated", func(t *testing.T, dir string, data []byte) []byte {
			from, _, _ := chunkRange(t, dir, 4)
			return data[:from+10]
		}, "file truncated at byte"},
		{"bytes appended", func(t *testing.T, dir string, data []byte) []byte {
			return append(data, []byte("forged")...)
		}, "bytes after the last chunk are not in the chain"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, pub := signedSession(t)
			path := filepath.Join(dir, "1.raw")
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			must(t, os.WriteFile(path, tc.tamper(t, dir, data), 0o600))
			v, err := Verify(dir, pub)
			if err != nil {
				t.Fatal(err)
			}
			if v.OK || !strings.Contains(problems(v), tc.want) || (tc.name != "bytes appended" && !strings.Contains(problems(v), "chunk")) {
				t.Errorf("problems %q, want one containing %q", problems(v), tc.want)
			}
			_, _, seq2 := chunkRange(t, dir, 2)
			_, _, seq3 := chunkRange(t, dir, 3)
			if tc.name == "a byte edited" || tc.name == "a chunk dropped" {
				if want := fmt.Sprintf("chunk %d (bytes", seq3); !strings.Contains(problems(v), want) {
					t.Errorf("problems %q do not name the third chunk of 1.raw: %q", problems(v), want)
				}
			}
			if want := fmt.Sprintf("chunks %d and %d were swapped", seq2, seq3); tc.name == "two chunks swapped" && !strings.Contains(problems(v), want) {
				t.Errorf("problems %q, want %q", problems(v), want)
			}
		})
	}
	// Edits of the chain or the metadata.
	for _, tc := range []struct {
		name   string
		tamper func(t *testing.T, dir string)
		want   string
	}{
		{"chain lines swapped", func(t *testing.T, dir string) {
			path := filepath.Join(dir, chainFile)
			b, _ := os.ReadFile(path)
			lines := strings.SplitAfter(string(b), "\n")
			lines[1], lines[2] = lines[2], lines[1]
			must(t, os.WriteFile(path, []byte(strings.Join(lines, "")), 0o600))
		}, "removed or reordered"},
		{"chain line removed", func(t *testing.T, dir string) {
			path := filepath.Join(dir, chainFile)
			b, _ := os.ReadFile(path)
			lines := strings.SplitAfter(string(b), "\n")
			must(t, os.WriteFile(path, []byte(strings.Join(append(lines[:2:2], lines[3:]...), "")), 0o600))
		}, "removed or reordered"},
		{"metadata edited", func(t *testing.T, dir string) {
			path := filepath.Join(dir, "session.json")
			b, _ := os.ReadFile(path)
			must(t, os.WriteFile(path, bytes.Replace(b, []byte(`"li"`), []byte(`"xx"`), 1), 0o600))
		}, "session metadata was modified after sealing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, pub := signedSession(t)
			tc.tamper(t, dir)
			v, err := Verify(dir, pub)
			if err != nil {
				t.Fatal(err)
			}
			if v.OK || !strings.Contains(problems(v), tc.want) {
				t.Errorf("problems %q, want one containing %q", problems(v), tc.want)
			}
		})
	}
}

// A recording cut off by a crash: everything written stays readable, the
// bytes after the last chunk are chained as recovered, and the seal says
// it is incomplete.
func TestRecoverSealsACrashedRecording(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	root := t.TempDir()
	id := uuid.NewString()
	s, err := CreateSigned(root, Meta{ID: id, Technician: "li", Target: "db", Start: time.Now()}, priv)
	if err != nil {
		t.Fatal(err)
	}
	c, err := s.Channel(ChannelInfo{Kind: "shell", PTY: true, Cols: 80, Rows: 24})
	if err != nil {
		t.Fatal(err)
	}
	must(t, c.Stdout(bytes.Repeat([]byte("x"), chunkBytes+10))) // a chunk
	// The process dies right after writing more: nothing of the channel
	// is chained after that (closed, the sync pass leaves it alone).
	c.mu.Lock()
	c.closed = true
	must(t, c.writeLocked("o", "after the last chunk\r\n")) // written, not chained
	c.mu.Unlock()
	t.Cleanup(func() { c.closeFiles() })
	// A cut line at the end of the chain, as a crash mid-append leaves.
	f, _ := os.OpenFile(filepath.Join(s.Dir(), chainFile), os.O_WRONLY|os.O_APPEND, 0)
	f.WriteString(`{"seq":99,"fi`)
	f.Close()
	// A second, sealed recording is left alone.
	other, otherPub := signedSession(t)
	_ = otherPub

	seals, errs := Recover(root, priv, "the server stopped before the session ended (crash or kill)", nil)
	if len(errs) != 0 || len(seals) != 1 || seals[0].Session != id || seals[0].Complete {
		t.Fatalf("Recover = %+v, %v", seals, errs)
	}
	v, err := Verify(s.Dir(), pub)
	if err != nil {
		t.Fatal(err)
	}
	if !v.OK || v.Complete || !v.Sealed || !v.Signed || v.Recovered == 0 || !strings.Contains(v.Reason, "crash") {
		t.Fatalf("recovered recording: %+v (%s)", v, problems(v))
	}
	m, err := ReadMeta(root, id)
	if err != nil || m.End.IsZero() || !strings.Contains(m.EndReason, "crash") {
		t.Errorf("metadata after recovery: %+v, %v", m, err)
	}
	// Readable through the end of what was written.
	var out bytes.Buffer
	must(t, WriteEvents(&out, root, id))
	if !strings.Contains(out.String(), "after the last chunk") {
		t.Errorf("recovered events lack the last output:\n%.300s", out.String())
	}
	// Running it again changes nothing.
	if seals, errs := Recover(root, priv, "again", nil); len(seals) != 0 || len(errs) != 0 {
		t.Errorf("second Recover = %v, %v", seals, errs)
	}
	if b, _ := os.ReadFile(filepath.Join(other, sealFile)); !json.Valid(b) {
		t.Error("the sealed recording's seal was touched")
	}
	// A seal removed from a recording the register knows as sealed is not
	// made again.
	os.Remove(filepath.Join(other, sealFile))
	otherID := filepath.Base(other)
	seals, errs = Recover(filepath.Dir(other), priv, "crash", func(id string) error {
		if id == otherID {
			return fmt.Errorf("the register holds its seal: %w", ErrNotRecoverable)
		}
		return nil
	})
	if len(seals) != 0 || len(errs) != 1 || !errors.Is(errs[0], ErrNotRecoverable) {
		t.Errorf("Recover of a stripped recording = %v, %v", seals, errs)
	}
	hardening.Report(t, "25", "a recording cut off mid-append (output after the last chunk, a cut chain line) beside a sealed one: recovery seals it incomplete and signed, the %d bytes after the last chunk chained as recovered, the output readable to the end; a second run changes nothing; a seal stripped from a recording the register knows as sealed is not remade", v.Recovered)
}

// The recorder holds no unwritten data: every event is in the file as
// soon as it is recorded, and a chunk is chained within chunkInterval.
func TestEventsAreWrittenAtOnceAndChainedWithinASecond(t *testing.T) {
	root, id, s := newSession(t)
	c := newChannel(t, s, ChannelInfo{Kind: "exec", Command: "true"})
	must(t, c.Stdout([]byte("small")))
	b, _ := os.ReadFile(filepath.Join(root, id, "1.cast"))
	if !bytes.Contains(b, []byte(`"x-stdout"`)) {
		t.Fatalf("the event is not in the file at once:\n%s", b)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		recs, _, _ := readChain(filepath.Join(root, id))
		if n := len(recs); n >= 2 && recs[n-1].Off+recs[n-1].Len == int64(len(b)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the last bytes were not chained within 10s")
		}
		time.Sleep(20 * time.Millisecond) // polling the chain for a condition, with a deadline
	}
	must(t, c.Close())
}

// A sealed recording moved under another session's ID does not pass.
func TestVerifyBindsTheSealToItsSession(t *testing.T) {
	dir, pub := signedSession(t)
	moved := filepath.Join(filepath.Dir(dir), uuid.NewString())
	must(t, os.Rename(dir, moved))
	v, err := Verify(moved, pub)
	if err != nil {
		t.Fatal(err)
	}
	if v.OK || !strings.Contains(problems(v), "the seal is of session") || !strings.Contains(problems(v), "its header names session") {
		t.Errorf("moved recording: %s", problems(v))
	}
}

// chain.jsonl cannot make anything read or upload a file that is not a
// channel file of the recording.
func TestChainNamesOnlyChannelFiles(t *testing.T) {
	names := []string{"../recording_key", "/etc/passwd", "session.json", "1.cast/../../x", "0.cast", "1.cast.idx"}
	for _, name := range names {
		dir, _ := signedSession(t)
		r := ChainRecord{Seq: 99, File: name, Len: 10}
		b, _ := json.Marshal(r)
		f, _ := os.OpenFile(filepath.Join(dir, chainFile), os.O_WRONLY|os.O_APPEND, 0)
		f.Write(append(b, '\n'))
		f.Close()
		if _, _, err := readChain(dir); err == nil || !strings.Contains(err.Error(), "not a channel file") {
			t.Errorf("chain naming %q: %v", name, err)
		}
		if _, err := Verify(dir, nil); err == nil {
			t.Errorf("Verify of a chain naming %q did not fail", name)
		}
	}
	hardening.Report(t, "26", "%d chain records naming files other than channel files (../recording_key, /etc/passwd, session.json, 1.cast/../../x, 0.cast, an index): all refused by the chain reader and by verify", len(names))
}

// A failed write makes the seal say the recording is incomplete, and what
// reached the file before the failure is chained.
func TestFailedRecordingIsSealedIncomplete(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	root, id := t.TempDir(), uuid.NewString()
	s, err := CreateSigned(root, Meta{ID: id, Start: time.Now()}, priv)
	if err != nil {
		t.Fatal(err)
	}
	failed := make(chan error, 1)
	s.OnFailure(func(err error) { failed <- err })
	c, err := s.Channel(ChannelInfo{Kind: "exec", Command: "x"})
	if err != nil {
		t.Fatal(err)
	}
	must(t, c.Stdout([]byte("before")))
	c.mu.Lock()
	c.data.f.Close() // the next write fails, as on a dead disk
	c.mu.Unlock()
	if err := c.Stdout([]byte("after")); err == nil {
		t.Fatal("write to a closed file succeeded")
	}
	select {
	case <-failed:
	case <-time.After(10 * time.Second):
		t.Fatal("OnFailure was not called")
	}
	c.Close()
	must(t, s.End(time.Now(), "recording failed", 0, 0))
	if seal := s.Seal(); seal.Complete || !strings.Contains(seal.Reason, "recording failed") {
		t.Errorf("seal %+v", seal)
	}
	v, err := Verify(s.Dir(), pub)
	if err != nil {
		t.Fatal(err)
	}
	if v.Complete || !strings.Contains(v.Reason, "recording failed") {
		t.Errorf("verify: %+v (%s)", v, problems(v))
	}
	hardening.Report(t, "disk", "a channel file failing mid-recording, as on a dead disk: the failure reported at once, the seal and verify say incomplete with reason \"recording failed\", what was written before is chained")
}
