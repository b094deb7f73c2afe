package session

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/sekisho/sekisho/broker"
	"github.com/sekisho/sekisho/internal/hardening"
)

// A file transfer gets no terminal and no environment: on a terminal, the
// target's login shell (and its rc files) would stand between the
// technician and the transfer sekisho checked. A command keeps both.
func TestTransferChannelsGetNoPTYNorEnv(t *testing.T) {
	var mu sync.Mutex
	before := map[ssh.Channel][]string{} // requests each channel got before its start
	got := make(chan []string, 1)
	h := newHarness(t, func(ch ssh.Channel, r *ssh.Request) {
		mu.Lock()
		defer mu.Unlock()
		switch r.Type {
		case "pty-req", "env":
			before[ch] = append(before[ch], r.Type)
		case "exec", "subsystem":
			var s stringRequest
			ssh.Unmarshal(r.Payload, &s)
			got <- append(before[ch], r.Type+" "+s.Value)
			r.Reply(true, nil)
			ch.SendRequest("exit-status", false, ssh.Marshal(exitStatus{0}))
			ch.Close()
			return
		}
		replyAll(ch, r)
	})
	for _, c := range []struct {
		kind, what string
		want       []string
	}{
		{"exec", "scp -t /tmp/x", []string{"exec scp -t /tmp/x"}},
		{"exec", "rsync --server -rtWe.LsfxCIvu . /tmp/x", []string{"exec rsync --server -rtWe.LsfxCIvu . /tmp/x"}},
		{"subsystem", "sftp", []string{"subsystem sftp"}},
		{"exec", "echo hello", []string{"pty-req", "env", "exec echo hello"}},
	} {
		cl := h.dial(t)
		s, err := cl.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Setenv("LC_PAYLOAD", "x"); err != nil {
			t.Fatalf("%s: env refused: %v", c.what, err)
		}
		if err := s.RequestPty("xterm", 24, 80, ssh.TerminalModes{}); err != nil {
			t.Fatalf("%s: pty-req refused: %v", c.what, err)
		}
		if err := s.WindowChange(30, 100); err != nil {
			t.Fatal(err)
		}
		if c.kind == "subsystem" {
			err = s.RequestSubsystem(c.what)
		} else {
			err = s.Run(c.what)
		}
		if err != nil {
			t.Fatalf("%s: %v", c.what, err)
		}
		if reqs := <-got; !slices.Equal(reqs, c.want) {
			t.Errorf("%s: the target got %q, want %q", c.what, reqs, c.want)
		}
		cl.Close()
	}
	casts, _ := filepath.Glob(filepath.Join(h.recDir, "*", "*.cast"))
	withheld := 0
	for _, p := range casts {
		b, _ := os.ReadFile(p)
		if strings.Contains(string(b), `"x-withheld","pty, env LC_PAYLOAD: not given to a file transfer"`) {
			withheld++
		}
	}
	if withheld != 3 {
		t.Errorf("%d of %d recordings say what was withheld, want 3", withheld, len(casts))
	}
	hardening.Report(t, "32", "pty-req and env before scp -t, rsync --server and sftp: none reached the target (recorded as withheld); a command got both")
}

// A client sending refused sftp requests as fast as it can fills the
// recording (bounded by the traffic) but not the audit log: the first
// maxAuditedRefusals are audited one by one, the rest counted once.
func TestRefusedSFTPRequestsAuditedBounded(t *testing.T) {
	d := &broker.Decision{Effect: broker.Allow, Login: "ops", Rule: "uploads",
		Limits: broker.Limits{Channels: []string{broker.ChannelSFTP}, Files: broker.FilesUpload, UploadTo: []string{"/tmp"}}}
	h := newHarnessWith(t, d, nil, func(ch ssh.Channel, r *ssh.Request) {
		if r.Type != "subsystem" {
			replyAll(ch, r)
			return
		}
		r.Reply(true, nil)
		go func() {
			var init [9]byte
			if _, err := io.ReadFull(ch, init[:]); err != nil {
				return
			}
			ch.Write([]byte{0, 0, 0, 5, fxpVersion, 0, 0, 0, 3})
			io.Copy(io.Discard, ch)
			ch.SendRequest("exit-status", false, ssh.Marshal(exitStatus{0}))
			ch.Close()
		}()
	})
	var mu sync.Mutex
	var details []string
	h.broker.onAudit = func(e broker.AuditEvent) {
		mu.Lock()
		defer mu.Unlock()
		if e.Kind == broker.EventRefused {
			details = append(details, e.Detail)
		}
	}
	c := h.dial(t)
	defer c.Close()
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	in, _ := s.StdinPipe()
	out, _ := s.StdoutPipe()
	if err := s.RequestSubsystem("sftp"); err != nil {
		t.Fatal(err)
	}
	in.Write([]byte{0, 0, 0, 5, fxpInit, 0, 0, 0, 3})
	var version [9]byte
	if _, err := io.ReadFull(out, version[:]); err != nil {
		t.Fatal(err)
	}
	const sent = 250
	go func() {
		for id := uint32(1); id <= sent; id++ {
			path := "/etc/shadow"
			body := binary.BigEndian.AppendUint32([]byte{fxpStat}, id)
			body = binary.BigEndian.AppendUint32(body, uint32(len(path)))
			body = append(body, path...)
			in.Write(append(binary.BigEndian.AppendUint32(nil, uint32(len(body))), body...))
		}
	}()
	pr := &packetReader{r: out}
	for i := 0; i < sent; i++ {
		pkt, err := pr.next()
		if err != nil {
			t.Fatalf("reply %d: %v", i, err)
		}
		if pkt[4] != fxpStatus {
			t.Fatalf("reply %d of type %d, want a status", i, pkt[4])
		}
	}
	in.Close()
	s.Close()
	c.Close()
	waitFor(t, "the summary row", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(details) > 0 && strings.Contains(details[len(details)-1], "more on this channel")
	})
	mu.Lock()
	defer mu.Unlock()
	if len(details) != maxAuditedRefusals+1 || !strings.Contains(details[0], "/etc/shadow is outside it") ||
		details[len(details)-1] != fmt.Sprintf("sftp requests refused: %d more on this channel, each in the recording", sent-maxAuditedRefusals) {
		t.Errorf("%d audit rows for %d refused requests; first %q, last %q", len(details), sent, details[0], details[len(details)-1])
	}
	hardening.Report(t, "24", "%d refused sftp requests on one channel: %d audit rows (%d one by one, then one counting the rest); each refusal answered and recorded", sent, len(details), maxAuditedRefusals)
}
