package e2e

import (
	"database/sql"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"
	_ "modernc.org/sqlite"

	"github.com/sekisho/sekisho/internal/hardening"
)

// withCode runs ssh through v answering the keyboard-interactive prompt
// with code, through SSH_ASKPASS as a person's terminal would.
func withCode(t *testing.T, v *variant, login, code, remote string) result {
	t.Helper()
	return withCodeAs(t, v, "aiko", login, code, remote)
}

// withCodeAs is withCode with tech's key.
func withCodeAs(t *testing.T, v *variant, tech, login, code, remote string) result {
	t.Helper()
	askpass := filepath.Join(t.TempDir(), "askpass")
	os.WriteFile(askpass, []byte("#!/bin/sh\necho '"+code+"'\n"), 0o700)
	cmd := v.ssh(ctxT(t), tech, login, remote)
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

	// Not enrolled: said at once, without asking for a code.
	if r := run(t, v.ssh(ctxT(t), "aiko", "aiko+web-sg-01", "echo no"), nil); r.code != 255 || !strings.Contains(r.stderr, "has none enrolled") {
		t.Fatalf("not enrolled, without a prompt: exit %d, stderr %q", r.code, r.stderr)
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

	// A client that cannot answer a prompt is told why it is refused.
	if r := run(t, v.ssh(ctxT(t), "aiko", "aiko+web-sg-01", "echo no"), nil); r.code != 255 ||
		!strings.Contains(r.stderr, "sekisho: a second factor is required for web-sg-01 (rule any-affiliate-to-web)\n") {
		t.Errorf("BatchMode: exit %d, stderr %q", r.code, r.stderr)
	}

	code, _ := totp.GenerateCode(secret, time.Now())
	r = withCode(t, v, "aiko+web-sg-01", code, "echo second-factor-ok")
	if r.code != 0 || r.stdout != "second-factor-ok\n" {
		t.Fatalf("right code: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	// The same code again, as OpenSSH asks three times, and again: each
	// refused as used, none counted as a wrong guess.
	for range 3 {
		r = withCode(t, v, "aiko+web-sg-01", code, "echo replayed")
		if r.code != 255 || !strings.Contains(r.stderr, "that verification code was already used") {
			t.Errorf("replayed code: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
		}
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

// enrollSecret enrolls tech's second factor with the CLI and returns the
// base32 secret of the otpauth URI it prints.
func enrollSecret(t *testing.T, v *variant, tech string) string {
	t.Helper()
	out, err := v.cli(t, "technician", "enroll-totp", tech)
	u, perr := url.Parse(regexp.MustCompile(`otpauth://\S+`).FindString(out))
	if err != nil || perr != nil || u.Query().Get("secret") == "" {
		t.Fatalf("enroll-totp %s: %v\n%s", tech, err, out)
	}
	return u.Query().Get("secret")
}

// TestSecondFactorSecretsAreSealed: the store holds TOTP secrets sealed
// by Vault's transit engine, never in the clear; a sealed secret copied
// onto another technician's row does not open for them; and a secret in
// the clear, as an older sekisho stored it, is sealed at the next start
// and keeps working, with the codes already used still used.
func TestSecondFactorSecretsAreSealed(t *testing.T) {
	t.Parallel()
	v := startVariant(t, func(cfg string) string {
		return strings.Replace(cfg, "    targets: [web-sg-01]\n", "    targets: [web-sg-01]\n    require_mfa: true\n", 1)
	})
	aikoSecret, liSecret := enrollSecret(t, v, "aiko"), enrollSecret(t, v, "li")
	db, err := sql.Open("sqlite", filepath.Join(v.dir, "sekisho.db")+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	stored := func(tech string) (secret string, lastStep int64) {
		t.Helper()
		if err := db.QueryRow(`SELECT secret, last_step FROM totp WHERE technician=?`, tech).Scan(&secret, &lastStep); err != nil {
			t.Fatal(err)
		}
		return secret, lastStep
	}
	aikoSealed, _ := stored("aiko")
	liSealed, _ := stored("li")
	for tech, s := range map[string]string{"aiko": aikoSealed, "li": liSealed} {
		if !strings.HasPrefix(s, "vault:v1:") {
			t.Errorf("%s's secret is stored as %q, not sealed by Vault", tech, s)
		}
	}
	// Nowhere in the database files, the write-ahead log included.
	files, _ := filepath.Glob(filepath.Join(v.dir, "sekisho.db*"))
	for _, f := range files {
		b, _ := os.ReadFile(f)
		for _, secret := range []string{aikoSecret, liSecret} {
			if strings.Contains(string(b), secret) {
				t.Errorf("%s holds a TOTP secret in the clear", f)
			}
		}
	}
	code, _ := totp.GenerateCode(aikoSecret, time.Now())
	if r := withCode(t, v, "aiko+web-sg-01", code, "echo sealed-ok"); r.code != 0 || r.stdout != "sealed-ok\n" {
		t.Fatalf("aiko's right code: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}

	// Someone who can write the database copies aiko's sealed secret,
	// whose codes they know, onto li's row: it does not open for li.
	if _, err := db.Exec(`UPDATE totp SET secret=? WHERE technician='li'`, aikoSealed); err != nil {
		t.Fatal(err)
	}
	next, _ := totp.GenerateCode(aikoSecret, time.Now().Add(30*time.Second))
	r := withCodeAs(t, v, "li", "li+web-sg-01", next, "echo swapped")
	if r.code != 255 || r.stdout != "" || !strings.Contains(r.stderr, "your second factor must be enrolled again; ask the operator to run `sekisho technician enroll-totp li`") {
		t.Errorf("li with aiko's copied secret: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	waitUntil(t, 10*time.Second, "an mfa.failed audit row saying li's secret does not open", func() bool {
		for _, e := range v.audit(t) {
			if e["kind"] == "mfa.failed" && e["technician"] == "li" && strings.Contains(e["detail"], "does not open") {
				return true
			}
		}
		return false
	})

	// An older sekisho stored li's secret in the clear, and the code of
	// this time step was used. At the next start it is sealed, the step
	// is kept, and nothing of it is left in the clear.
	v.kill(t, syscall.SIGTERM)
	step := time.Now().Unix() / 30
	// Written as the CLI writes, on a connection closed before the
	// server starts again.
	if _, err := db.Exec(`UPDATE totp SET secret=?, last_step=? WHERE technician='li'`, liSecret, step); err != nil {
		t.Fatal(err)
	}
	db.Close()
	v.start(t)
	waitFor(t, v.out, `"msg":"sealed TOTP secrets stored in the clear by an older sekisho","sealed":1`)
	db, err = sql.Open("sqlite", filepath.Join(v.dir, "sekisho.db")+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if s, last := stored("li"); !strings.HasPrefix(s, "vault:v1:") || last != step {
		t.Errorf("after the start li's row is %q, step %d; want sealed, step %d", s, last, step)
	}
	files, _ = filepath.Glob(filepath.Join(v.dir, "sekisho.db*"))
	for _, f := range files {
		if b, _ := os.ReadFile(f); strings.Contains(string(b), liSecret) {
			t.Errorf("%s still holds li's secret in the clear after sealing", f)
		}
	}
	code, _ = totp.GenerateCode(liSecret, time.Unix(step*30, 0))
	if r := withCodeAs(t, v, "li", "li+web-sg-01", code, "echo replayed"); r.code != 255 || !strings.Contains(r.stderr, "already used") {
		t.Errorf("li's used code after sealing: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	code, _ = totp.GenerateCode(liSecret, time.Unix((step+1)*30, 0))
	if r := withCodeAs(t, v, "li", "li+web-sg-01", code, "echo resealed-ok"); r.code != 0 || r.stdout != "resealed-ok\n" {
		t.Errorf("li's next code after sealing: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	hardening.Report(t, "6", "TOTP secrets stored sealed by Vault transit (vault:v1:), never in the clear in the database or its WAL; aiko's sealed secret copied onto li's row refused for li (audited: does not open); a secret in the clear from an older sekisho sealed at start and gone from the database files, its used code still refused, the next accepted")
}

// TestSecondFactorWithVaultPolicyFromBeforeSealing: sekisho upgraded, but
// `sekisho vault setup` not yet run again, so its Vault policy lacks the
// transit key. Enrolling says what to do; a secret an older sekisho
// stored in the clear keeps working (the log warns at start); one
// written in the clear after the start is refused and audited.
func TestSecondFactorWithVaultPolicyFromBeforeSealing(t *testing.T) {
	t.Parallel()
	dv := startDevVault(t)
	dv.must(t, "PUT", "sys/policy/sekisho", map[string]any{"policy": `path "ssh/sign/sekisho" { capabilities = ["update"] }
path "ssh/config/ca" { capabilities = ["read"] }
`})
	tg := startOwnTarget(t, dv.caFile(), "ed25519")
	v := startVariant(t, func(cfg string) string {
		cfg = tg.asWebTarget(t)(dv.edit(cfg))
		return strings.Replace(cfg, "    targets: [web-sg-01]\n", "    targets: [web-sg-01]\n    require_mfa: true\n", 1)
	})
	out, err := v.cli(t, "technician", "enroll-totp", "aiko")
	if err == nil || !strings.Contains(out, "run `sekisho vault setup` again") || strings.Contains(out, "otpauth://") {
		t.Errorf("enroll-totp without the transit key: %v\n%s", err, out)
	}

	const aikoSecret, liSecret = "JBSWY3DPEHPK3PXP", "KRSXG5CTMVRXEZLU"
	v.kill(t, syscall.SIGTERM)
	db, err := sql.Open("sqlite", filepath.Join(v.dir, "sekisho.db")+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`INSERT INTO totp (technician, secret, last_step) VALUES ('aiko', ?, 0)`, aikoSecret); err != nil {
		t.Fatal(err)
	}
	db.Close()
	v.start(t)
	waitFor(t, v.out, "some TOTP secrets are left in the clear; run `sekisho vault setup` again")
	code, _ := totp.GenerateCode(aikoSecret, time.Now())
	if r := withCode(t, v, "aiko+web-sg-01", code, "echo legacy-ok"); r.code != 0 || r.stdout != "legacy-ok\n" {
		t.Errorf("aiko's secret in the clear since before the start: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}

	// Written in the clear behind sekisho's back, after the start.
	db, err = sql.Open("sqlite", filepath.Join(v.dir, "sekisho.db")+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`INSERT INTO totp (technician, secret, last_step) VALUES ('li', ?, 0)`, liSecret); err != nil {
		t.Fatal(err)
	}
	code, _ = totp.GenerateCode(liSecret, time.Now())
	r := withCodeAs(t, v, "li", "li+web-sg-01", code, "echo planted")
	if r.code != 255 || r.stdout != "" || !strings.Contains(r.stderr, "could not be checked") {
		t.Errorf("li's secret planted in the clear: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	waitUntil(t, 10*time.Second, "an mfa.tampered audit row for li", func() bool {
		for _, e := range v.audit(t) {
			if e["kind"] == "mfa.tampered" && e["technician"] == "li" {
				return true
			}
		}
		return false
	})
	// What an investigator asks of the audit log finds it.
	if out, err := v.cli(t, "audit", "--kind", "mfa.*", "--technician", "li", "--since", "1h", "--format", "text"); err != nil ||
		!strings.Contains(out, "mfa.tampered") || strings.Contains(out, "aiko") || !strings.HasPrefix(out, "TIME") {
		t.Errorf("sekisho audit --kind mfa.* --technician li: %v\n%s", err, out)
	}
	hardening.Report(t, "6", "Vault policy from before sealing: enroll-totp refused with what to do; a TOTP secret in the clear from before the start still accepted, the log warning at start; one written in the clear after the start refused (told the code could not be checked) and audited as mfa.tampered")
}
