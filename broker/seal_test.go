package broker_test

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"

	"github.com/sekisho/sekisho/broker"
	"github.com/sekisho/sekisho/broker/sqlitestore"
)

// fakeSealer seals by prefixing "vault:v1:" and the technician, so that a
// secret sealed for one technician does not open for another, as Vault's
// derived keys do. While down, it fails as an unreachable Vault would.
type fakeSealer struct {
	down   atomic.Bool
	denied atomic.Bool // as a Vault whose policy lacks the transit paths
}

var errVaultDown = errors.New("vault: connection refused")

func (f *fakeSealer) fail() error {
	switch {
	case f.down.Load():
		return errVaultDown
	case f.denied.Load():
		return broker.ErrSealerDenied
	}
	return nil
}

func (f *fakeSealer) Seal(_ context.Context, tech string, secret []byte) (string, error) {
	if err := f.fail(); err != nil {
		return "", err
	}
	return "vault:v1:" + tech + ":" + string(secret), nil
}

func (f *fakeSealer) Open(_ context.Context, tech, sealed string) ([]byte, error) {
	if err := f.fail(); err != nil {
		return nil, err
	}
	rest, ok := strings.CutPrefix(sealed, "vault:v1:"+tech+":")
	if !ok {
		return nil, errors.New("does not open for this technician")
	}
	return []byte(rest), nil
}

func sealingBroker(t *testing.T) (*broker.Broker, *sqlitestore.Store, *fakeSealer) {
	t.Helper()
	store, err := sqlitestore.Open(t.Context(), filepath.Join(t.TempDir(), "sekisho.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	sealer := &fakeSealer{}
	techs := []*broker.Technician{{Name: "aiko", Affiliate: broker.Affiliate{Name: "ops-jp", Country: "JP"}},
		{Name: "li", Affiliate: broker.Affiliate{Name: "ops-cn", Country: "CN"}}}
	policy, err := broker.NewPolicy(nil)
	if err != nil {
		t.Fatal(err)
	}
	b := broker.New(broker.Config{Technicians: techs, Policy: policy, Sealer: sealer, Store: store, Logger: slog.New(slog.DiscardHandler)})
	return b, store, sealer
}

func secretOf(t *testing.T, uri string) string {
	t.Helper()
	_, rest, _ := strings.Cut(uri, "secret=")
	secret, _, _ := strings.Cut(rest, "&")
	if secret == "" {
		t.Fatalf("no secret in %q", uri)
	}
	return secret
}

// Vault being down is not the technician guessing: however often they
// try meanwhile, their right code works once Vault is back.
func TestVaultDownDoesNotThrottleSecondFactor(t *testing.T) {
	b, _, sealer := sealingBroker(t)
	uri, err := b.EnrollTOTP(t.Context(), "aiko")
	if err != nil {
		t.Fatal(err)
	}
	sealer.down.Store(true)
	for i := 0; i < 10; i++ {
		if err := b.VerifyTOTP(t.Context(), "aiko", "192.0.2.1:4000", "000000"); !errors.Is(err, errVaultDown) {
			t.Fatalf("attempt %d with Vault down: %v, want Vault's error", i, err)
		}
	}
	sealer.down.Store(false)
	code, _ := totp.GenerateCode(secretOf(t, uri), time.Now())
	if err := b.VerifyTOTP(t.Context(), "aiko", "192.0.2.1:4000", code); err != nil {
		t.Errorf("the right code once Vault is back: %v", err)
	}
	// Wrong codes still count.
	for i := 0; i < 5; i++ {
		b.VerifyTOTP(t.Context(), "aiko", "192.0.2.1:4000", "000000")
	}
	if err := b.VerifyTOTP(t.Context(), "aiko", "192.0.2.1:4000", "000000"); !errors.Is(err, broker.ErrThrottled) {
		t.Errorf("after five wrong codes: %v, want throttled", err)
	}
}

// A secret in the clear works only if it was so at start and Vault would
// not seal it then; one written later is refused. Once Vault seals, the
// start seals every one and keeps the used step.
func TestSecretsInTheClear(t *testing.T) {
	ctx := t.Context()
	b, store, sealer := sealingBroker(t)
	const aikoSecret, liSecret = "JBSWY3DPEHPK3PXP", "KRSXG5CTMVRXEZLU"
	if err := store.SetTOTP(ctx, "aiko", aikoSecret); err != nil {
		t.Fatal(err)
	}
	step := time.Now().Unix() / 30
	if ok, err := store.ClaimTOTPStep(ctx, "aiko", step); !ok || err != nil {
		t.Fatal(ok, err)
	}

	sealer.denied.Store(true)
	if n, err := b.SealTOTPSecrets(ctx); n != 0 || !errors.Is(err, broker.ErrSealerDenied) {
		t.Fatalf("SealTOTPSecrets with transit denied: %d, %v", n, err)
	}
	next, _ := totp.GenerateCode(aikoSecret, time.Now().Add(30*time.Second))
	if err := b.VerifyTOTP(ctx, "aiko", "192.0.2.1:4000", next); err != nil {
		t.Errorf("aiko's secret in the clear since start: %v", err)
	}
	// Written behind sekisho's back after start: refused, audited.
	if err := store.SetTOTP(ctx, "li", liSecret); err != nil {
		t.Fatal(err)
	}
	code, _ := totp.GenerateCode(liSecret, time.Now())
	if err := b.VerifyTOTP(ctx, "li", "192.0.2.1:4000", code); !errors.Is(err, broker.ErrUnsealedSecret) {
		t.Errorf("li's secret written in the clear after start: %v, want ErrUnsealedSecret", err)
	}
	if !audited(t, store, "mfa.tampered", "li") {
		t.Error("no mfa.tampered audit row for li")
	}
	// Changed in the clear after start: refused too.
	if _, err := store.ReplaceTOTPSecret(ctx, "aiko", aikoSecret, liSecret); err != nil {
		t.Fatal(err)
	}
	if err := b.VerifyTOTP(ctx, "aiko", "192.0.2.1:4000", code); !errors.Is(err, broker.ErrUnsealedSecret) {
		t.Errorf("aiko's secret changed in the clear after start: %v, want ErrUnsealedSecret", err)
	}
	store.ReplaceTOTPSecret(ctx, "aiko", liSecret, aikoSecret)

	// Vault seals again: the next start seals both, the steps kept.
	sealer.denied.Store(false)
	if n, err := b.SealTOTPSecrets(ctx); n != 2 || err != nil {
		t.Fatalf("SealTOTPSecrets: %d, %v; want 2 sealed", n, err)
	}
	all, _ := store.TOTPSecrets(ctx)
	for tech, s := range all {
		if !broker.IsSealed(s) {
			t.Errorf("%s's secret is still %q", tech, s)
		}
	}
	if st, _ := store.TOTP(ctx, "aiko"); st.LastStep != step+1 {
		t.Errorf("aiko's used step is %d after sealing, want %d", st.LastStep, step+1)
	}
	if err := b.VerifyTOTP(ctx, "aiko", "192.0.2.1:4000", next); !errors.Is(err, broker.ErrCodeReused) {
		t.Errorf("aiko's used code after sealing: %v, want reused", err)
	}
	if err := b.VerifyTOTP(ctx, "li", "192.0.2.1:4000", code); err != nil {
		t.Errorf("li's code after sealing: %v", err)
	}
	// A sealed secret copied onto another's row does not open.
	aikoSealed := all["aiko"]
	if _, err := store.ReplaceTOTPSecret(ctx, "li", all["li"], aikoSealed); err != nil {
		t.Fatal(err)
	}
	if err := b.VerifyTOTP(ctx, "li", "192.0.2.1:4000", next); err == nil || errors.Is(err, broker.ErrWrongCode) {
		t.Errorf("aiko's sealed secret on li's row: %v, want it not to open", err)
	}
}

// Without a sealer, no second factor is enrolled in the clear.
func TestEnrollWithoutSealerRefused(t *testing.T) {
	store, err := sqlitestore.Open(t.Context(), filepath.Join(t.TempDir(), "sekisho.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	policy, _ := broker.NewPolicy(nil)
	b := broker.New(broker.Config{Technicians: []*broker.Technician{{Name: "aiko", Affiliate: broker.Affiliate{Name: "a", Country: "JP"}}},
		Policy: policy, Store: store, Logger: slog.New(slog.DiscardHandler)})
	if _, err := b.EnrollTOTP(t.Context(), "aiko"); !errors.Is(err, broker.ErrNoSealer) {
		t.Errorf("EnrollTOTP without a sealer: %v, want ErrNoSealer", err)
	}
	if _, err := store.TOTP(t.Context(), "aiko"); !errors.Is(err, broker.ErrNotFound) {
		t.Errorf("something was stored: %v", err)
	}
}

func audited(t *testing.T, store *sqlitestore.Store, kind broker.EventKind, tech string) bool {
	t.Helper()
	events, err := store.AuditEvents(t.Context(), 100)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range events {
		if e.Kind == kind && e.Technician == tech {
			return true
		}
	}
	return false
}
