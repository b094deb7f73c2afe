package e2e

import (
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"

	"github.com/sekisho/sekisho/internal/hardening"
)

// withCode runs ssh through v answering the keyboard-interactive prompt
// with code, through SSH_ASKPASS as a person's terminal would.
func withCode(t *testing.T, v *variant, login, code, remote string) result {
	t.Helper()
	askpass := filepath.Join(t.TempDir(), "askpass")
	os.WriteFile(askpass, []byte("#!/bin/sh\necho '"+code+"'\n"), 0o700)
	cmd := v.ssh(ctxT(t), "aiko", login, remote)
	cmd.Args = append(cmd.Args[:1], append([]string{"-o", "BatchMode=no", "-o", "NumberOfPasswordPrompts=1"}, cmd.Args[1:]...)...)
	cmd.Env = append(os.Environ(), "SSH_ASKPASS="+askpass, "SSH_ASKPASS_REQUIRE=force", "DISPLAY=:0")
	return run(t, cmd, nil)
}

func TestSecondFactor(t *testing.T) {
	t.Parallel()
	v := startVariant(t, func(cfg string) string {
		return strings.Replace(cfg, "    targets: [web-sg-01]\n", "    targets: [web-sg-01]\n    require_mfa: true\n", 1)
	})
	r := withCode(t, v, "aiko+web-sg-01", "123456", "echo no")
	if r.code != 255 || !strings.Contains(r.stderr, "a second factor is required but aiko has none enrolled") {
		t.Fatalf("not enrolled: exit %d, stderr %q", r.code, r.stderr)
	}

	out, err := v.cli(t, "technician", "enroll-totp", "aiko")
	uri := regexp.MustCompile(`otpauth://\S+`).FindString(out)
	if err != nil || uri == "" {
		t.Fatalf("enroll-totp: %v\n%s", err, out)
	}
	u, _ := url.Parse(uri)
	secret := u.Query().Get("secret")
	if secret == "" || u.Query().Get("issuer") != "sekisho" {
		t.Fatalf("otpauth URI %q", uri)
	}
	if !strings.Contains(out, "█") && !strings.Contains(out, "▀") {
		t.Errorf("no QR code printed:\n%s", out)
	}

	code, _ := totp.GenerateCode(secret, time.Now())
	r = withCode(t, v, "aiko+web-sg-01", code, "echo second-factor-ok")
	if r.code != 0 || r.stdout != "second-factor-ok\n" {
		t.Fatalf("right code: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	r = withCode(t, v, "aiko+web-sg-01", code, "echo replayed")
	if r.code != 255 || !strings.Contains(r.stderr, "that verification code was already used") {
		t.Errorf("replayed code: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	r = withCode(t, v, "aiko+web-sg-01", "abcdef", "echo wrong")
	if r.code != 255 || !strings.Contains(r.stderr, "wrong verification code") {
		t.Errorf("wrong code: exit %d, stderr %q", r.code, r.stderr)
	}
	// Other targets (no MFA rule) are not affected.
	if r := run(t, v.ssh(ctxT(t), "aiko", "aiko+db-jp-01", "echo no-mfa-here"), nil); r.code != 0 {
		t.Errorf("rule without MFA: exit %d, %q", r.code, r.stderr)
	}
	// Brute force: after five failures even a right, unused code is refused.
	for i := 0; i < 4; i++ {
		withCode(t, v, "aiko+web-sg-01", "abcdef", "true")
	}
	next, _ := totp.GenerateCode(secret, time.Now().Add(30*time.Second))
	r = withCode(t, v, "aiko+web-sg-01", next, "echo guessed")
	if r.code != 255 || !strings.Contains(r.stderr, "too many wrong verification codes") {
		t.Errorf("after five failures: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	hardening.Report(t, "6", "key then code through OpenSSH: not enrolled refused, the right code accepted, the same code replayed refused, a wrong code refused, a rule without MFA unaffected; after 5 wrong codes even the next right, unused code refused")
}
