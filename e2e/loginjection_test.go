package e2e

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"net"
	"os/exec"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"golang.org/x/crypto/ssh"

	"github.com/sekisho/sekisho/internal/hardening"
)

// TestHostileNamesAndCommandsStayInert: login names and commands built
// to forge log lines, drive the reader's terminal, reorder text or run
// shell code end up in sekisho's log and audit log escaped: every line
// is one JSON object, no control or invisible formatting character
// appears raw, no forged entry appears, and the audited value decodes
// to exactly what the technician sent.
func TestHostileNamesAndCommandsStayInert(t *testing.T) {
	t.Parallel()
	v := startVariant(t, nil)
	hostile := []string{
		"root\n{\"level\":\"ERROR\",\"msg\":\"forged\",\"technician\":\"kenji\"}",
		"aiko+db-jp-01\r\x1b[2J\x1b]0;pwned\x07\x1bP+q544e\x1b\\",
		"$(touch /tmp/sekisho-pwned)+`id`+db-jp-01",
		"aiko\u202e10-pj-bd+\u2066\u200b",
		"aiko+db-jp-01\x00root",
		"\xff\xfe\xc0\xafaiko",
	}
	for _, user := range hostile {
		for _, signer := range []ssh.Signer{techSigner(t, "aiko"), newSigner(t)} {
			cfg := &ssh.ClientConfig{User: user, Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
				HostKeyCallback: func(string, net.Addr, ssh.PublicKey) error { return nil }}
			if c, err := ssh.Dial("tcp", "127.0.0.1:"+v.port, cfg); err == nil {
				c.Close()
				t.Fatalf("login %q was accepted", user)
			}
		}
	}
	// A command with the same payloads, through a real client, reaches
	// the target (it is the target shell's input) and the recording.
	cmd := "printf '%s' ok # \x1b]0;pwned\x07 \u202e $(id) \r"
	r := run(t, v.ssh(ctxT(t), "aiko", "aiko+web-sg-01", cmd), nil)
	if r.code != 0 || r.stdout != "ok" {
		t.Fatalf("hostile command: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}

	inert := func(what, line string) {
		t.Helper()
		for _, c := range line {
			if c < 0x20 || c == 0x7f || unicode.Is(unicode.Cf, c) || c == utf8.RuneError && !strings.Contains(line, "\ufffd") {
				t.Errorf("%s: raw %U in %q", what, c, line)
				return
			}
		}
	}
	logLines := strings.Split(strings.TrimSpace(v.out.String()), "\n")
	for _, line := range logLines {
		inert("process log", line)
		var entry map[string]any
		if err := json.Unmarshal([]byte(line), &entry); err != nil {
			t.Fatalf("process log line is not one JSON object (%v): %q", err, line)
		}
		if entry["msg"] == "forged" {
			t.Fatalf("a login name forged a log entry: %q", line)
		}
	}

	out, err := exec.Command(env.sekisho, "audit", "--config", v.config, "--limit", "1000").Output()
	if err != nil {
		t.Fatal(err)
	}
	logins := map[string]bool{}
	auditLines := strings.Split(strings.TrimSpace(string(out)), "\n")
	for _, line := range auditLines {
		inert("sekisho audit", line)
		var e struct{ Kind, Detail string }
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("audit line is not JSON (%v): %q", err, line)
		}
		if e.Kind != "auth.failed" {
			continue
		}
		var d struct{ Login string }
		if err := json.Unmarshal([]byte(e.Detail), &d); err != nil {
			t.Fatalf("auth.failed detail is not JSON (%v): %q", err, e.Detail)
		}
		logins[d.Login] = true
	}
	for _, user := range hostile {
		// JSON keeps every valid character and writes each invalid byte
		// as U+FFFD.
		var want string
		b, _ := json.Marshal(user)
		json.Unmarshal(b, &want)
		if !logins[want] {
			t.Errorf("the failed login %q is not audited as it was sent; audited: %v", user, logins)
		}
	}
	hardening.Report(t, "29", "%d hostile login names (forged JSON log line, CR and terminal escapes, $() and backticks, bidi overrides, NUL, invalid UTF-8), each with a known and an unknown key, and a hostile command: %d process log lines and %d audit lines, each one JSON object with no raw control or invisible character; every name audited as sent; the command ran as the target shell's input",
		len(hostile), len(logLines), len(auditLines))
}

// newSigner is a fresh ed25519 key no technician has.
func newSigner(t *testing.T) ssh.Signer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
