package node

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"golang.org/x/crypto/ssh"
)

// loadOrCreateHostKey reads the server's host key, generating an ed25519
// key (mode 0600) on first start. A key file readable by others is refused,
// as OpenSSH does.
func loadOrCreateHostKey(path string, logger *slog.Logger) (ssh.Signer, error) {
	raw, err := loadOrCreateKey(path, "host key", logger)
	if err != nil {
		return nil, err
	}
	return ssh.NewSignerFromKey(raw)
}

// loadOrCreateRecordingKey reads the ed25519 key that signs recordings,
// generating it on first start.
func loadOrCreateRecordingKey(path string, logger *slog.Logger) (ed25519.PrivateKey, error) {
	raw, err := loadOrCreateKey(path, "recording key", logger)
	if err != nil {
		return nil, err
	}
	switch k := raw.(type) {
	case ed25519.PrivateKey:
		return k, nil
	case *ed25519.PrivateKey:
		return *k, nil
	}
	return nil, fmt.Errorf("recording key %s: must be an ed25519 key (ssh-keygen -t ed25519)", path)
}

// loadOrCreateKey reads an OpenSSH private key file, generating an
// ed25519 key (mode 0600) if there is none. A key file readable by others
// is refused, as OpenSSH does.
func loadOrCreateKey(path, what string, logger *slog.Logger) (any, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, err
		}
		block, err := ssh.MarshalPrivateKey(priv, "sekisho "+what)
		if err != nil {
			return nil, err
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		pub, _ := ssh.NewPublicKey(priv.Public())
		logger.Info("generated "+what, "path", path, "fingerprint", ssh.FingerprintSHA256(pub))
		return priv, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%s %s has mode %04o; it must not be readable by others (chmod 600 %s)", what, path, st.Mode().Perm(), path)
	}
	raw, err := ssh.ParseRawPrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", what, path, err)
	}
	return raw, nil
}

// checkWritableDir makes dir (mode 0700) and proves it can be written, so
// that a read-only recording store refuses to start rather than refusing
// every session.
func checkWritableDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, ".probe-*")
	if err != nil {
		return err
	}
	name := f.Name()
	_, err = f.Write([]byte("probe"))
	if err == nil {
		err = f.Sync()
	}
	f.Close()
	os.Remove(name)
	return err
}

// writeFileAtomic writes data to a temporary file beside path and renames
// it over path, so a reader sees the old content or the new, never a part.
func writeFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
