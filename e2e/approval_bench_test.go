package e2e

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// BenchmarkApprovalToShell measures how long a technician waiting in ssh
// waits between an approver running `approve N` and the target's first
// bytes (its shell prompt) arriving: the target is under one second.
func BenchmarkApprovalToShell(b *testing.B) {
	v := approvalVariant(b, "15m", nil)
	hostKey := variantHostKey(b, v)
	kenji := benchClient(b, v, "kenji", hostKey)
	defer kenji.Close()
	var total time.Duration
	for i := 0; b.Loop(); i++ {
		li := benchClient(b, v, "li", hostKey)
		s, err := li.NewSession()
		if err != nil {
			b.Fatal(err)
		}
		in, _ := s.StdinPipe()
		out := &syncBuffer{}
		s.Stdout = out
		if err := s.RequestPty("xterm", 40, 120, ssh.TerminalModes{}); err != nil {
			b.Fatal(err)
		}
		if err := s.Shell(); err != nil {
			b.Fatal(err)
		}
		waitFor(b, out, "Reason (ticket")
		fmt.Fprintf(in, "BENCH-%d approval latency\r", i)
		waitFor(b, out, "Duration")
		io.WriteString(in, "\r")
		m := waitMatch(b, out, regexp.MustCompile(`request (\d+) is waiting`))

		approver, err := kenji.NewSession()
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		if res, err := approver.Output("approve " + m[1]); err != nil {
			b.Fatalf("approve: %v %s", err, res)
		}
		connected := waitFor(b, out, "granted until")
		// The first bytes after the approval line come from the target.
		deadline := time.Now().Add(30 * time.Second)
		for {
			s := out.String()
			if i := bytes.Index([]byte(s[connected:]), []byte("\n")); i >= 0 && len(s) > connected+i+1 {
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("no output from the target after approval:\n%s", out.String())
			}
			time.Sleep(time.Millisecond) // polling the output for a condition, with a deadline
		}
		total += time.Since(start)
		s.Close()
		li.Close()
		// The next iteration waits again.
		b.StopTimer()
		revoker, err := kenji.NewSession()
		if err != nil {
			b.Fatal(err)
		}
		if res, err := revoker.CombinedOutput("revoke " + m[1] + " --reason benchmark iteration done"); err != nil {
			b.Fatalf("revoke: %v %s", err, res)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "approve-to-shell-ms")
}

func variantHostKey(tb testing.TB, v *variant) ssh.PublicKey {
	tb.Helper()
	pem, err := os.ReadFile(filepath.Join(v.dir, "host_key"))
	if err != nil {
		tb.Fatal(err)
	}
	signer, err := ssh.ParsePrivateKey(pem)
	if err != nil {
		tb.Fatal(err)
	}
	return signer.PublicKey()
}

func benchClient(tb testing.TB, v *variant, tech string, hostKey ssh.PublicKey) *ssh.Client {
	tb.Helper()
	pem, err := os.ReadFile(env.state.Keys[tech])
	if err != nil {
		tb.Fatal(err)
	}
	signer, err := ssh.ParsePrivateKey(pem)
	if err != nil {
		tb.Fatal(err)
	}
	login := tech
	if tech == "li" {
		login = "li+db-jp-01"
	}
	auth := []ssh.AuthMethod{ssh.PublicKeys(signer)}
	if login == tech && holdsPowers(tb, v.config, tech) {
		// A holder of powers gives a verification code for them.
		code := v.logins(tb).freshCode(tb, tech)
		auth = append(auth, ssh.KeyboardInteractive(func(_, _ string, questions []string, _ []bool) ([]string, error) {
			return slices.Repeat([]string{code}, len(questions)), nil
		}))
	}
	c, err := ssh.Dial("tcp", "127.0.0.1:"+v.port, &ssh.ClientConfig{User: login, Auth: auth,
		HostKeyCallback: ssh.FixedHostKey(hostKey), Timeout: 30 * time.Second})
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// waitFor waits until out contains s and returns the offset after it.
func waitFor(tb testing.TB, out *syncBuffer, s string) int {
	tb.Helper()
	var at int
	waitUntil(tb, 30*time.Second, fmt.Sprintf("output %q", s), func() bool {
		at = bytes.Index([]byte(out.String()), []byte(s))
		return at >= 0
	})
	return at + len(s)
}

func waitMatch(tb testing.TB, out *syncBuffer, re *regexp.Regexp) []string {
	tb.Helper()
	var m []string
	waitUntil(tb, 30*time.Second, "output matching "+re.String(), func() bool {
		m = re.FindStringSubmatch(out.String())
		return m != nil
	})
	return m
}
