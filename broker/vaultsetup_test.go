package broker

import "testing"

// An existing transit key is used only if the secrets it seals cannot
// leave Vault and open for one technician only.
func TestCheckTransitKey(t *testing.T) {
	good := map[string]any{"type": "aes256-gcm96", "derived": true, "exportable": false, "allow_plaintext_backup": false}
	if err := checkTransitKey(good); err != nil {
		t.Errorf("a derived, non-exportable AES key refused: %v", err)
	}
	for name, change := range map[string]map[string]any{
		"not derived":      {"derived": false},
		"exportable":       {"exportable": true},
		"plaintext backup": {"allow_plaintext_backup": true},
		"signing key":      {"type": "ed25519"},
		"no type":          {"type": nil},
	} {
		key := map[string]any{}
		for k, v := range good {
			key[k] = v
		}
		for k, v := range change {
			key[k] = v
		}
		if err := checkTransitKey(key); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
