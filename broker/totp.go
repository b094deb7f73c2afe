package broker

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"
)

// TOTP errors. The technician sees a short message for each; the audit log
// gets the details.
var (
	ErrNotEnrolled = errors.New("no second factor enrolled")
	ErrWrongCode   = errors.New("wrong verification code")
	ErrCodeReused  = errors.New("verification code already used")
	ErrThrottled   = errors.New("too many wrong verification codes")
)

// TOTP limits: codes are 6 digits over 30 s, one step of clock skew either
// way; after maxFailures wrong codes within failureWindow, a technician or
// a source address is refused until the window has passed.
const (
	totpPeriod    = 30
	totpSkew      = 1
	maxFailures   = 5
	failureWindow = 5 * time.Minute
	// maxSourceFailures is the limit per source address. The key is
	// checked before any code is asked, so a guesser needs a technician's
	// key; many technicians share an office's address.
	maxSourceFailures = 30
)

// FailureLimit is a key under which failed attempts are counted (a
// technician, "t:NAME", or a source address, "s:HOST") and how many it may
// have within the window before further attempts are refused.
//
// The count lives in the store, not in a node's memory: a guesser who
// spreads attempts over several nodes behind the load balancer gets no
// more of them than on one.
type FailureLimit struct {
	Key string
	Max int
}

// TOTPState is a technician's enrolled second factor.
type TOTPState struct {
	// Secret is the base32 secret sealed by a Sealer, or in the clear as
	// a sekisho from before sealing stored it (see SealTOTPSecrets).
	Secret   string
	LastStep int64 // the last time step whose code was accepted
}

// ErrNoSealer is returned by EnrollTOTP when the broker has nothing to
// seal the secret with.
var ErrNoSealer = errors.New("second factors are sealed by Vault's transit engine, and this broker has no Vault")

// EnrollTOTP makes a new TOTP secret for technician, replacing any old one,
// and returns the otpauth URI to load into an authenticator app.
func (b *Broker) EnrollTOTP(ctx context.Context, technician string) (string, error) {
	if _, ok := b.Technician(technician); !ok {
		return "", fmt.Errorf("unknown technician %q", technician)
	}
	key, err := totp.Generate(totp.GenerateOpts{Issuer: "sekisho", AccountName: technician, Period: totpPeriod,
		Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1})
	if err != nil {
		return "", err
	}
	sealed, err := b.seal(ctx, technician, key.Secret())
	if err != nil {
		return "", fmt.Errorf("seal the TOTP secret: %w", err)
	}
	if err := b.store.SetTOTP(ctx, technician, sealed); err != nil {
		return "", err
	}
	b.Audit(ctx, AuditEvent{Kind: EventMFAEnrolled, Technician: technician})
	return key.URL(), nil
}

// VerifyTOTP checks a verification code of technician connecting from
// source. A code is accepted once: the time step it belongs to is claimed
// in the store, so it cannot be replayed, not even on another node. Wrong
// codes are counted per technician and per source address, in the store
// too: the limits hold over all nodes together.
func (b *Broker) VerifyTOTP(ctx context.Context, technician, source, code string) error {
	now := b.now()
	limits := []FailureLimit{{"t:" + technician, maxFailures}, {"s:" + sourceHost(source), maxSourceFailures}}
	keys := []string{limits[0].Key, limits[1].Key}
	ok, err := b.store.BeginAttempt(ctx, limits, now, failureWindow)
	if err != nil {
		// Without the count no code is compared: a guesser must not gain
		// tries from a store that does not answer.
		err = fmt.Errorf("count the attempt: %w", err)
		b.Audit(ctx, AuditEvent{Kind: EventMFAFailed, Technician: technician, Source: source, Detail: err.Error()})
		return err
	}
	if !ok {
		b.Audit(ctx, AuditEvent{Kind: EventMFAThrottled, Technician: technician, Source: source,
			Detail: fmt.Sprintf("too many wrong verification codes for %s or from this address (%d in %s for a technician, %d for an address)", technician, maxFailures, failureWindow, maxSourceFailures)})
		return ErrThrottled
	}
	err = b.checkTOTP(ctx, technician, code, now)
	switch {
	case err == nil:
		b.forgive(ctx, keys, now)
		return nil
	case errors.Is(err, ErrWrongCode):
		// Counted: a guess was compared.
		b.Audit(ctx, AuditEvent{Kind: EventMFAFailed, Technician: technician, Source: source, Detail: err.Error()})
	case errors.Is(err, ErrCodeReused):
		// Not a guess: the right code, too soon again (OpenSSH asks
		// three times, a second scp comes within the 30 s).
		b.forgive(ctx, keys, now)
		b.Audit(ctx, AuditEvent{Kind: EventMFAFailed, Technician: technician, Source: source, Detail: err.Error()})
	case errors.Is(err, ErrNotEnrolled):
		b.forgive(ctx, keys, now) // not the technician's fault
		b.Audit(ctx, AuditEvent{Kind: EventMFAFailed, Technician: technician, Source: source, Detail: ErrNotEnrolled.Error()})
	default:
		// Vault or the store failed before any code was compared: no
		// guess was made, so none is counted.
		b.forgive(ctx, keys, now)
		b.Audit(ctx, AuditEvent{Kind: EventMFAFailed, Technician: technician, Source: source, Detail: err.Error()})
	}
	return err
}

// forgive undoes the failure VerifyTOTP counted at now. If the store
// fails, the failure stays counted until the window passes: the
// technician may be throttled early, never a guesser late.
func (b *Broker) forgive(ctx context.Context, keys []string, now time.Time) {
	// Forgiven even if the connection went meanwhile.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := b.store.ForgiveAttempt(ctx, keys, now); err != nil {
		b.log.Warn("a second-factor attempt that was no wrong guess stays counted", "technician", strings.TrimPrefix(keys[0], "t:"), "err", err)
	}
}

func (b *Broker) checkTOTP(ctx context.Context, technician, code string, now time.Time) error {
	st, err := b.store.TOTP(ctx, technician)
	if errors.Is(err, ErrNotFound) {
		return ErrNotEnrolled
	}
	if err != nil {
		return err
	}
	secret, err := b.openTOTP(ctx, technician, st.Secret)
	if err != nil {
		return err
	}
	step := now.Unix() / totpPeriod
	for s := step - totpSkew; s <= step+totpSkew; s++ {
		want, err := totp.GenerateCodeCustom(secret, time.Unix(s*totpPeriod, 0), totp.ValidateOpts{
			Period: totpPeriod, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1})
		if err != nil {
			return err
		}
		if subtle.ConstantTimeCompare([]byte(want), []byte(code)) != 1 {
			continue
		}
		claimed, err := b.store.ClaimTOTPStep(ctx, technician, s)
		if err != nil {
			return err
		}
		if !claimed {
			return ErrCodeReused
		}
		return nil
	}
	return ErrWrongCode
}

// ErrUnsealedSecret is returned for a TOTP secret stored in the clear that
// this server did not find in the clear at its start: it was written into
// the store behind sekisho's back.
var ErrUnsealedSecret = errors.New("the stored TOTP secret is in the clear and was not at start: written behind sekisho's back; re-enroll the technician")

// TOTPEnrolled reports whether technician has a second factor.
func (b *Broker) TOTPEnrolled(ctx context.Context, technician string) (bool, error) {
	_, err := b.store.TOTP(ctx, technician)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// openTOTP returns the base32 secret of a stored one. A secret in the
// clear is used only if SealTOTPSecrets found it so at start and Vault
// would not seal it; any other is refused.
func (b *Broker) openTOTP(ctx context.Context, technician, stored string) (string, error) {
	if !IsSealed(stored) {
		if !b.unsealedAtStart(technician, stored) {
			b.Audit(ctx, AuditEvent{Kind: EventMFATampered, Technician: technician,
				Detail: "a TOTP secret in the clear that was not there at start was refused"})
			return "", ErrUnsealedSecret
		}
		b.log.Warn("a TOTP secret stored in the clear was used; run `sekisho vault setup` again so that it is sealed at the next start", "technician", technician)
		return stored, nil
	}
	if b.sealer == nil {
		return "", ErrNoSealer
	}
	secret, err := b.sealer.Open(ctx, technician, stored)
	if errors.Is(err, ErrUnopenable) {
		b.reportUnopenable(ctx, technician, err)
	}
	if err != nil {
		return "", fmt.Errorf("open the TOTP secret: %w", err)
	}
	return string(secret), nil
}

// reportUnopenable tells the operator, by the audit log (and so the
// metrics) and the server log, that technician's sealed secret no longer
// opens and what to do: the technician sees only that their code could
// not be checked, and nothing they do mends it.
func (b *Broker) reportUnopenable(ctx context.Context, technician string, err error) {
	enroll := "sekisho technician enroll-totp " + technician
	b.log.Error("a sealed TOTP secret no longer opens with Vault's transit key; enroll the technician again", "technician", technician, "command", enroll, "err", err)
	b.Audit(ctx, AuditEvent{Kind: EventMFAUnopenable, Technician: technician, Detail: fmt.Sprintf(
		"the sealed TOTP secret of %s no longer opens with Vault's transit key (a new or restored Vault, or a secret copied from another technician); no code of theirs can be checked until the operator runs `%s`", technician, enroll)})
}

// unsealedAtStart reports whether SealTOTPSecrets left stored, technician's
// secret in the clear, because Vault would not seal it.
func (b *Broker) unsealedAtStart(technician, stored string) bool {
	b.unsealedMu.Lock()
	defer b.unsealedMu.Unlock()
	want, ok := b.unsealed[technician]
	sum := sha256.Sum256([]byte(stored))
	return ok && subtle.ConstantTimeCompare(want[:], sum[:]) == 1
}

// TOTPCode returns technician's current code. It is for the demo, which
// shows the codes of its made-up technicians.
func (b *Broker) TOTPCode(ctx context.Context, technician string, now time.Time) (string, error) {
	st, err := b.store.TOTP(ctx, technician)
	if err != nil {
		return "", err
	}
	secret, err := b.openTOTP(ctx, technician, st.Secret)
	if err != nil {
		return "", err
	}
	return totp.GenerateCode(secret, now)
}

// SealTOTPSecrets seals the TOTP secrets stored in the clear by a sekisho
// from before sealing, keeping which codes were used, and returns how
// many it sealed. A server calls it once, at start. Those Vault will not
// seal (sekisho's policy is from before sealing) keep working, and only
// those: a secret in the clear written later is refused.
func (b *Broker) SealTOTPSecrets(ctx context.Context) (int, error) {
	all, err := b.store.TOTPSecrets(ctx)
	if err != nil {
		return 0, err
	}
	unsealed := map[string][sha256.Size]byte{}
	defer func() {
		b.unsealedMu.Lock()
		b.unsealed = unsealed
		b.unsealedMu.Unlock()
	}()
	n := 0
	var errs []error
	for tech, stored := range all {
		if IsSealed(stored) {
			continue
		}
		sealed, err := b.seal(ctx, tech, stored)
		if err != nil {
			unsealed[tech] = sha256.Sum256([]byte(stored))
			errs = append(errs, fmt.Errorf("%s: %w", tech, err))
			continue
		}
		ok, err := b.store.ReplaceTOTPSecret(ctx, tech, stored, sealed)
		if err != nil {
			unsealed[tech] = sha256.Sum256([]byte(stored))
			errs = append(errs, fmt.Errorf("%s: %w", tech, err))
			continue
		}
		if ok { // otherwise re-enrolled meanwhile, sealed
			n++
			b.Audit(ctx, AuditEvent{Kind: EventMFASealed, Technician: tech})
		}
	}
	if len(errs) > 0 {
		return n, fmt.Errorf("%d TOTP secrets left in the clear: %w", len(errs), errors.Join(errs...))
	}
	return n, nil
}

// seal seals a base32 secret for technician.
func (b *Broker) seal(ctx context.Context, technician, secret string) (string, error) {
	if b.sealer == nil {
		return "", ErrNoSealer
	}
	return b.sealer.Seal(ctx, technician, []byte(secret))
}
