package broker

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	vault "github.com/hashicorp/vault/api"
)

// Secrets kept at rest. A technician's TOTP secret is stored sealed by
// Vault's transit engine under a key derived per technician: the store
// alone (a copy, a backup, a stolen disk) does not give the secret, and a
// sealed secret copied onto another technician's row does not open. The
// key never leaves Vault; sekisho's policy may only encrypt and decrypt
// with it.

// DefaultTransitMount and DefaultTOTPKey are VaultConfig's TransitMount
// and TOTPKey when none is configured.
const (
	DefaultTransitMount = "transit"
	DefaultTOTPKey      = "sekisho-totp"
)

// A Sealer seals secrets that are kept at rest for a technician, and opens
// them again; a secret sealed for one technician opens for no other.
// The Issuer is the Sealer of a running sekisho.
type Sealer interface {
	Seal(ctx context.Context, technician string, secret []byte) (string, error)
	Open(ctx context.Context, technician, sealed string) ([]byte, error)
}

// IsSealed reports whether a stored secret is sealed, rather than one
// kept in the clear by a sekisho from before secrets were sealed.
func IsSealed(stored string) bool {
	return strings.HasPrefix(stored, "vault:v")
}

// ErrUnopenable wraps Vault's transit engine refusing to open a sealed
// secret: it was sealed under another key (the transit key was lost or
// replaced, as when Vault is restored empty or a new dev Vault starts) or
// for another technician. Trying again does not help; only enrolling the
// technician again does.
var ErrUnopenable = errors.New("the sealed secret does not open for this technician")

// ErrSealerDenied wraps Vault refusing to seal or open: sekisho's policy
// lacks the transit paths, or the key is missing.
var ErrSealerDenied = errors.New("vault refused to seal or open a secret; run `sekisho vault setup` again to give sekisho its transit key")

// Seal encrypts secret for technician with Vault's transit key.
func (is *Issuer) Seal(ctx context.Context, technician string, secret []byte) (string, error) {
	sec, err := is.transit(ctx, "encrypt", map[string]any{
		"plaintext": base64.StdEncoding.EncodeToString(secret),
		"context":   base64.StdEncoding.EncodeToString([]byte(technician)),
	})
	if err != nil {
		return "", err
	}
	sealed, _ := sec.Data["ciphertext"].(string)
	if !IsSealed(sealed) {
		return "", errors.New("vault transit encrypt: no ciphertext in the response")
	}
	return sealed, nil
}

// Open decrypts what Seal returned for technician.
func (is *Issuer) Open(ctx context.Context, technician, sealed string) ([]byte, error) {
	sec, err := is.transit(ctx, "decrypt", map[string]any{
		"ciphertext": sealed,
		"context":    base64.StdEncoding.EncodeToString([]byte(technician)),
	})
	if err != nil {
		return nil, err
	}
	plain, _ := sec.Data["plaintext"].(string)
	b, err := base64.StdEncoding.DecodeString(plain)
	if err != nil || len(b) == 0 {
		return nil, errors.New("vault transit decrypt: no plaintext in the response")
	}
	return b, nil
}

// transit calls the transit engine's op ("encrypt" or "decrypt") with the
// TOTP key, within the configured timeout.
func (is *Issuer) transit(ctx context.Context, op string, data map[string]any) (*vault.Secret, error) {
	ctx, cancel := context.WithTimeout(ctx, is.cfg.Timeout)
	defer cancel()
	path := is.cfg.TransitMount + "/" + op + "/" + is.cfg.TOTPKey
	var sec *vault.Secret
	var callErr error // the transit call's own error, not the login's
	err := is.withToken(ctx, func(ctx context.Context) error {
		began := time.Now()
		sec, callErr = is.client.Logical().WriteWithContext(ctx, path, data)
		is.observe(op, began, callErr)
		return callErr
	})
	switch {
	case err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded):
		return nil, fmt.Errorf("vault did not answer within %s: %w", is.cfg.Timeout, err)
	case err != nil && err != callErr:
		return nil, err // logging in failed; its error says so
	case isStatus(err, 403, 404), isStatus(err, 400) && responseSays(err, "key not found"):
		return nil, fmt.Errorf("%w (%s: %v)", ErrSealerDenied, path, err)
	case isStatus(err, 400) && op == "decrypt":
		// Transit says 400 for a ciphertext that does not open with
		// this technician's key.
		return nil, fmt.Errorf("vault transit decrypt: %w: %w", ErrUnopenable, err)
	case err != nil:
		return nil, fmt.Errorf("vault transit %s: %w", op, err)
	case sec == nil || sec.Data == nil:
		return nil, fmt.Errorf("vault transit %s: empty response", op)
	}
	return sec, nil
}

// responseSays reports whether one of the errors in Vault's response
// contains s.
func responseSays(err error, s string) bool {
	var re *vault.ResponseError
	if !errors.As(err, &re) {
		return false
	}
	for _, e := range re.Errors {
		if strings.Contains(e, s) {
			return true
		}
	}
	return false
}
