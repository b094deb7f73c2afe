package recording

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/sekisho/sekisho/internal/hardening"
)

// Format 2: a channel without a terminal keeps its exact bytes in
// <n>.raw, in the order they were relayed, and its events refer to them.
func TestExactBytesAreStoredRaw(t *testing.T) {
	root, id, s := newSession(t)
	c := newChannel(t, s, ChannelInfo{Kind: "exec", Command: "cat"})
	in, out, errb := []byte("\x00\x01typed\xff"), bytes.Repeat([]byte("\x00\xfe-out-"), 20000), []byte("warn\n")
	must(t, c.Stdin(in))
	must(t, c.Stdout(out))
	must(t, c.Stderr(errb))

	// Recorded before the call returns, hence before it is forwarded:
	// the bytes and the event that refers to them are in the files.
	raw, err := os.ReadFile(filepath.Join(s.Dir(), "1.raw"))
	must(t, err)
	if want := string(in) + string(out) + string(errb); string(raw) != want {
		t.Fatalf("1.raw holds %d bytes, want the %d relayed, in order", len(raw), len(want))
	}
	cast, err := os.ReadFile(filepath.Join(s.Dir(), "1.cast"))
	must(t, err)
	wantRefs := []string{`"x-stdin","0+8"]`, `"x-stdout","8+140000"]`, `"x-stderr","140008+5"]`}
	for _, w := range wantRefs {
		if !bytes.Contains(cast, []byte(w)) {
			t.Errorf("1.cast lacks %s:\n%s", w, cast)
		}
	}
	if !bytes.Contains(cast, []byte(`"x_data":"1.raw"`)) {
		t.Errorf("the header does not name the data file:\n%s", cast)
	}
	must(t, c.Close())
	must(t, s.End(time.Now(), "client closed", 0, 0))

	m, err := ReadMeta(root, id)
	must(t, err)
	if m.Format != 2 || len(m.Channels) != 1 || m.Channels[0] != "1.cast" {
		t.Errorf("metadata: format %d, channels %q", m.Format, m.Channels)
	}
	_, evs := readCast(t, filepath.Join(s.Dir(), "1.cast"))
	want := []ev{{"x-stdin", string(in)}, {"x-stdout", string(out)}, {"x-stderr", string(errb)}}
	if len(evs) != 3 || evs[0] != want[0] || evs[1] != want[1] || evs[2] != want[2] {
		t.Errorf("events read back differ from what was recorded")
	}
	// The event stream costs little beside the bytes.
	fi, _ := os.Stat(filepath.Join(s.Dir(), "1.cast"))
	if fi.Size() > 1024 {
		t.Errorf("1.cast is %d bytes for three events", fi.Size())
	}
}

// A terminal channel stays asciicast v2 alone: no data file.
func TestTerminalChannelHasNoDataFile(t *testing.T) {
	_, _, s := newSession(t)
	c := newChannel(t, s, ChannelInfo{PTY: true, Kind: "shell"})
	must(t, c.Stdout([]byte("$ \xff")))
	must(t, c.Close())
	if _, err := os.Stat(filepath.Join(s.Dir(), "1.raw")); !os.IsNotExist(err) {
		t.Errorf("a terminal channel has a data file: %v", err)
	}
	h, evs := readCast(t, filepath.Join(s.Dir(), "1.cast"))
	if h.Data != "" || len(evs) != 2 || evs[1] != (ev{"x-o-bytes", "$ \xff"}) {
		t.Errorf("header %+v, events %q", h, evs)
	}
}

// Verify checks the data file as it checks the events: a changed byte,
// bytes added, a data file removed.
func TestVerifyChecksTheDataFile(t *testing.T) {
	for _, tc := range []struct {
		name   string
		tamper func(path string)
		want   string
	}{
		{"a byte changed", func(p string) {
			b, _ := os.ReadFile(p)
			b[3] ^= 1
			os.WriteFile(p, b, 0o600)
		}, "1.raw: chunk"},
		{"bytes appended", func(p string) {
			f, _ := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
			f.Write([]byte("forged"))
			f.Close()
		}, "6 bytes after the last chunk are not in the chain"},
		{"removed", func(p string) { os.Remove(p) }, "channel file is missing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pub, priv, _ := ed25519.GenerateKey(rand.Reader)
			root := t.TempDir()
			s, err := CreateSigned(root, Meta{ID: uuid.NewString(), Start: time.Now()}, priv)
			must(t, err)
			c := newChannel(t, s, ChannelInfo{Kind: "exec", Command: "cat"})
			must(t, c.Stdout([]byte("exact bytes")))
			must(t, c.Close())
			must(t, s.End(time.Now(), "client closed", 0, 11))
			v, err := Verify(s.Dir(), pub)
			must(t, err)
			if v.CheckOffline(); !v.OK {
				t.Fatalf("intact: %s", problems(v))
			}
			tc.tamper(filepath.Join(s.Dir(), "1.raw"))
			v, err = Verify(s.Dir(), pub)
			must(t, err)
			if v.CheckOffline(); v.OK || !strings.Contains(problemsWithFiles(v), tc.want) {
				t.Errorf("problems %q, want one containing %q", problemsWithFiles(v), tc.want)
			}
		})
	}
}

func problemsWithFiles(v Verification) string {
	var out []string
	for _, p := range v.Problems {
		out = append(out, p.File+": "+p.What)
	}
	return strings.Join(out, "; ")
}

// A reference past the end of the data file (the file cut short) is an
// error when the bytes are asked for, not garbage.
func TestReferencePastTheDataFile(t *testing.T) {
	_, _, s := newSession(t)
	c := newChannel(t, s, ChannelInfo{Kind: "exec", Command: "cat"})
	must(t, c.Stdout([]byte("0123456789")))
	must(t, c.Close())
	must(t, os.Truncate(filepath.Join(s.Dir(), "1.raw"), 4))
	cr, err := OpenChannel(ChannelFile{Name: "1.cast", Path: filepath.Join(s.Dir(), "1.cast")})
	must(t, err)
	defer cr.Close()
	if _, err := cr.Next(); !errors.Is(err, ErrTruncated) || !strings.Contains(err.Error(), "refers to bytes 0-10 of 1.raw, which holds 4") {
		t.Errorf("Next = %v, want a truncation naming the bytes", err)
	}
}

// A channel that relayed nothing has no chunk of its data file, so a copy
// rebuilt from the chunks (an object store's) has no data file at all:
// it reads as empty.
func TestMissingDataFileIsEmpty(t *testing.T) {
	_, _, s := newSession(t)
	c := newChannel(t, s, ChannelInfo{Kind: "exec", Command: "true"})
	must(t, c.Event("x-exit-status", "0"))
	must(t, c.Close())
	must(t, os.Remove(filepath.Join(s.Dir(), "1.raw")))
	_, evs := readCast(t, filepath.Join(s.Dir(), "1.cast"))
	if len(evs) != 1 || evs[0] != (ev{"x-exit-status", "0"}) {
		t.Errorf("events %q", evs)
	}
}

// An idle interactive channel's bytes are chained by the node's sync
// pass, without a write or Close to prompt it; one pass serves the
// channels of many sessions.
func TestSyncPassChainsIdleChannels(t *testing.T) {
	var chans []*Channel
	var sessions []*Session
	root := t.TempDir()
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	for i := range 6 {
		s, err := CreateSigned(root, Meta{ID: uuid.NewString(), Start: time.Now()}, priv)
		must(t, err)
		info := ChannelInfo{PTY: true, Kind: "shell"}
		if i%2 == 1 {
			info = ChannelInfo{Kind: "exec", Command: "cat"} // with a data file
		}
		c := newChannel(t, s, info)
		must(t, c.Stdin([]byte("l")))
		must(t, c.Stdout([]byte("l")))
		chans, sessions = append(chans, c), append(sessions, s)
	}
	deadline := time.Now().Add(10 * time.Second)
	for i, s := range sessions {
		for {
			recs, _, err := readChain(s.Dir())
			must(t, err)
			covered := map[string]int64{}
			for _, r := range recs {
				covered[r.File] = r.Off + r.Len
			}
			c := chans[i]
			c.mu.Lock()
			all := covered[c.ev.name] == c.ev.off && (c.data == nil || covered[c.data.name] == c.data.off)
			c.mu.Unlock()
			if all {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("session %d: chained %v", i, covered)
			}
			time.Sleep(20 * time.Millisecond)
		}
		// What the pass chained verifies.
		must(t, chans[i].Close())
		must(t, s.End(time.Now(), "client closed", 1, 1))
		v, err := Verify(s.Dir(), pub)
		must(t, err)
		if v.CheckOffline(); !v.OK || !v.Complete {
			t.Errorf("session %d: %s", i, problems(v))
		}
	}
}

// A crash leaves bytes in the data file that no chunk holds yet: Recover
// chains them as recovered, and the recording verifies as incomplete
// with everything that was relayed readable.
func TestRecoverChainsTheDataFile(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	root := t.TempDir()
	id := uuid.NewString()
	s, err := CreateSigned(root, Meta{ID: id, Start: time.Now()}, priv)
	must(t, err)
	c := newChannel(t, s, ChannelInfo{Kind: "exec", Command: "cat"})
	// The process dies right after writing: nothing is closed, nothing
	// synced or chained by the writer (or the sync pass) any more.
	c.mu.Lock()
	c.closed = true
	off := c.data.off
	must(t, c.appendLocked(c.data, []byte("before the crash")))
	must(t, c.writeEncodedLocked("x-stdout", []byte(fmt.Sprintf("%q", fmt.Sprintf("%d+%d", off, len("before the crash"))))))
	c.mu.Unlock()
	seals, errs := Recover(root, priv, "crash or kill", nil)
	if len(errs) != 0 || len(seals) != 1 {
		t.Fatalf("Recover: %v, %d seals", errs, len(seals))
	}
	v, err := Verify(s.Dir(), pub)
	must(t, err)
	if v.CheckOffline(); !v.OK || v.Complete || v.Recovered == 0 {
		t.Fatalf("verify: %+v (%s)", v, problems(v))
	}
	recs, _, err := readChain(s.Dir())
	must(t, err)
	recoveredRaw := false
	for _, r := range recs {
		recoveredRaw = recoveredRaw || (r.Recovered && r.File == "1.raw" && r.Len == int64(len("before the crash")))
	}
	if !recoveredRaw {
		t.Errorf("no recovered chunk of 1.raw in %+v", recs)
	}
	_, evs := readCast(t, filepath.Join(s.Dir(), "1.cast"))
	if len(evs) != 1 || evs[0] != (ev{"x-stdout", "before the crash"}) {
		t.Errorf("events after recovery: %q", evs)
	}
	c.mu.Lock() // let the test's clean-up close the files
	c.closeFiles()
	c.mu.Unlock()
}

// A sync pass that cannot chain an idle channel's bytes (the chain's file
// fails, as on a dead disk) fails the session: no write is waiting to be
// told, so OnFailure is, and the next write returns the error.
func TestSyncPassFailureFailsTheSession(t *testing.T) {
	_, _, s := newSession(t)
	failed := make(chan error, 1)
	s.OnFailure(func(err error) { failed <- err })
	c := newChannel(t, s, ChannelInfo{PTY: true, Kind: "shell"})
	s.chainMu.Lock()
	s.chain.f.Close() // the pass's chain write fails
	s.chainMu.Unlock()
	must(t, c.Stdout([]byte("typed while the disk died")))
	select {
	case err := <-failed:
		if !strings.Contains(err.Error(), "recording chain") {
			t.Errorf("failure %q, want a recording chain error", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the sync pass did not fail the session")
	}
	if err := c.Stdout([]byte("more")); err == nil || !strings.Contains(err.Error(), "recording chain") {
		t.Errorf("a write after the failure: %v, want the failure", err)
	}
	c.Close()
}

// A channel header naming any data file but its own (a path outside the
// session, another channel's bytes) is refused by every reader, before
// anything is opened.
func TestDataFileNameChecked(t *testing.T) {
	_, _, s := newSession(t)
	c := newChannel(t, s, ChannelInfo{Kind: "exec", Command: "cat"})
	must(t, c.Stdout([]byte("mine")))
	must(t, c.Close())
	cast := filepath.Join(s.Dir(), "1.cast")
	orig, err := os.ReadFile(cast)
	must(t, err)
	names := []string{"../1.raw", "2.raw", "/etc/passwd", "1.raw/../../x", "1.cast", "1.cast.idx", "../../recording_key", ""}
	for _, name := range names {
		b := bytes.Replace(orig, []byte(`"x_data":"1.raw"`), []byte(`"x_data":`+strconv.Quote(name)), 1)
		if name == "" {
			b = bytes.Replace(orig, []byte(`"x_data":"1.raw"`), []byte(`"x_data":"1.raw","x_data":"../x"`), 1)
		}
		must(t, os.WriteFile(cast, b, 0o600))
		if cr, err := OpenChannel(ChannelFile{Name: "1.cast", Path: cast}); err == nil {
			cr.Close()
			t.Errorf("x_data %q: opened", name)
		} else if !strings.Contains(err.Error(), "names data file") {
			t.Errorf("x_data %q: %v", name, err)
		}
	}
	hardening.Report(t, "26", "%d channel headers naming a data file other than their own (../1.raw, another channel's, /etc/passwd, 1.raw/../../x, the event stream, its index, the recording key, a duplicate key): all refused by the reader before any file is opened", len(names))
}
