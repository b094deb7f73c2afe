package session

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/ssh"

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
