package e2e

import (
	"bufio"
	"net"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sekisho/sekisho/internal/hardening"
)

func TestPortForwardOnlyToNamedDestinations(t *testing.T) {
	t.Parallel()
	_, dbPort, _ := net.SplitHostPort(targetNamed(t, "db-jp-01").Address)
	v := startVariant(t, func(cfg string) string {
		return strings.Replace(cfg, "    when: '\"pii\" in target.data && !cross_border'\n",
			"    when: '\"pii\" in target.data && !cross_border'\n    channels: [shell, exec, port_forward]\n    forward_to: [\"localhost:"+dbPort+"\"]\n", 1)
	})
	// ssh -L to the target's own sshd on its loopback, which the rule names.
	local := freePort(t)
	fwd := v.ssh(ctxT(t), "aiko", "aiko+db-jp-01")
	fwd.Args = append(fwd.Args[:1], append([]string{"-N", "-o", "ExitOnForwardFailure=yes", "-L", "127.0.0.1:" + local + ":localhost:" + dbPort}, fwd.Args[1:]...)...)
	var stderr syncBuffer
	fwd.Stderr = &stderr
	if err := fwd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fwd.Process.Kill(); fwd.Wait() })
	var banner string
	waitUntil(t, 30*time.Second, "the forwarded port to answer", func() bool {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+local, time.Second)
		if err != nil {
			return false
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		banner, _ = bufio.NewReader(c).ReadString('\n')
		return banner != ""
	})
	if !strings.HasPrefix(banner, "SSH-2.0-OpenSSH") {
		t.Fatalf("through the forward: %q (ssh stderr %q)", banner, stderr.String())
	}
	fwd.Process.Kill()
	fwd.Wait()

	// Destinations the rule does not name are refused, metadata included.
	for _, dest := range []string{"169.254.169.254:80", "localhost:22", "127.0.0.1:" + dbPort} {
		w := v.ssh(ctxT(t), "aiko", "aiko+db-jp-01")
		w.Args = append(w.Args[:1], append([]string{"-W", dest}, w.Args[1:]...)...)
		r := run(t, w, nil)
		if r.code == 0 || !strings.Contains(r.stderr, "port forwarding refused") {
			t.Errorf("-W %s: exit %d, stderr %q", dest, r.code, r.stderr)
		}
	}
	// A rule without port_forward allows none.
	w := v.ssh(ctxT(t), "aiko", "aiko+web-sg-01")
	w.Args = append(w.Args[:1], append([]string{"-W", "localhost:" + dbPort}, w.Args[1:]...)...)
	if r := run(t, w, nil); r.code == 0 || !strings.Contains(r.stderr, `port forwarding is not allowed to web-sg-01 under rule "any-affiliate-to-web"`) {
		t.Errorf("-W without port_forward: exit %d, stderr %q", r.code, r.stderr)
	}

	// The forward is recorded: destination and bytes.
	out, _ := v.cli(t, "sessions", "--json", "--target", "db-jp-01")
	var found bool
	for _, id := range uuidRe.FindAllString(out, -1) {
		ev, err := exec.Command(env.sekisho, "replay", "--events", "--config", v.config, id).CombinedOutput()
		if err == nil && strings.Contains(string(ev), "forward \"localhost:"+dbPort+" -> 127.0.0.1:"+dbPort+"\"") &&
			strings.Contains(streams(t, string(ev), "x-stdout"), "SSH-2.0-OpenSSH") {
			found = true
			// Its close carries the byte counts.
			if !regexp.MustCompile(`x-close\s+"\{\\"destination\\":\\"localhost:` + dbPort + `[^"]*\\",\\"bytes_in\\":\d+,\\"bytes_out\\":[1-9]\d*\}"`).MatchString(string(ev)) {
				t.Errorf("the forward's close lacks its byte counts:\n%s", ev)
			}
		}
	}
	if !found {
		t.Errorf("no recording of the forward with its destination and the bytes that passed:\n%s", out)
	}
	hardening.Report(t, "8", "ssh -W to 3 destinations the rule does not name (169.254.169.254:80, localhost:22, the named port by IP): all refused; -W under a rule without port_forward refused; -L to the one named destination relayed and recorded with its byte counts")
}

var uuidRe = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`)
