package session

import (
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sekisho/sekisho/broker"
	"github.com/sekisho/sekisho/internal/hardening"
)

// gssapiClient is a GSSAPI mechanism that would hand over any token asked
// for: sekisho must refuse gssapi-with-mic before one is.
type gssapiClient struct{}

func (gssapiClient) InitSecContext(string, []byte, bool) ([]byte, bool, error) {
	return []byte("token"), false, nil
}
func (gssapiClient) GetMIC([]byte) ([]byte, error) { return []byte("mic"), nil }
func (gssapiClient) DeleteSecContext() error       { return nil }

// TestUnexpectedAuthMethodsFailOnlyThatConnection connects real x/crypto
// clients to a real sekisho on loopback with the methods sekisho does not
// offer, or offers only after a key: each connection fails, and the next
// technician logs in. The broker accepts any verification code, so
// keyboard-interactive before the key fails for being out of order, not
// for a wrong code.
//
// What this shows is that sekisho advertises publickey alone (and then
// keyboard-interactive alone, after the key): a client that keeps to the
// protocol, as x/crypto's and OpenSSH's do, never sends password,
// keyboard-interactive, hostbased or gssapi-with-mic requests at all, so
// the attempts end with "no supported methods remain". A client that
// sends them anyway needs a hand-written transport; x/crypto's server
// answers every method it has no callback for with a failure.
func TestUnexpectedAuthMethodsFailOnlyThatConnection(t *testing.T) {
	h := newHarnessWith(t, &broker.Decision{Effect: broker.Allow, Login: "ops", Rule: "mfa", RequireMFA: true}, nil, replyAll)
	pinned := h.srv.cfg.HostKey.PublicKey()
	code := ssh.KeyboardInteractive(func(string, string, []string, []bool) ([]string, error) { return []string{"000000"}, nil })
	password := ssh.Password("li's password")
	gssapi := ssh.GSSAPIWithMICAuthMethod(gssapiClient{}, "bastion")

	login := func(user string, methods ...ssh.AuthMethod) error {
		c, err := ssh.Dial("tcp", h.addr, &ssh.ClientConfig{User: user, Auth: methods,
			HostKeyCallback: ssh.FixedHostKey(pinned), Timeout: 10 * time.Second})
		if err == nil {
			c.Close()
		}
		return err
	}

	cases := []struct {
		name    string
		user    string
		methods []ssh.AuthMethod
	}{
		{"none", "li+db", nil},
		{"none, unknown technician", "nobody+db", nil},
		{"password", "li+db", []ssh.AuthMethod{password}},
		{"password, retried", "li+db", []ssh.AuthMethod{ssh.RetryableAuthMethod(password, 10)}},
		{"keyboard-interactive before the key", "li+db", []ssh.AuthMethod{code}},
		{"keyboard-interactive, command login", "li", []ssh.AuthMethod{code}},
		{"gssapi-with-mic", "li+db", []ssh.AuthMethod{gssapi}},
		{"all of them", "li+db", []ssh.AuthMethod{password, code, gssapi}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := login(tc.user, tc.methods...)
			if err == nil || !strings.Contains(err.Error(), "no supported methods remain") {
				t.Fatalf("%s: %v, want the connection refused with no supported methods remaining", tc.name, err)
			}
			// The process serves on: li logs in with the key and a code.
			if err := login("li+db", ssh.PublicKeys(h.key), code); err != nil {
				t.Fatalf("after %s, li cannot log in: %v", tc.name, err)
			}
		})
	}
	hardening.Report(t, "7", "x/crypto clients offering none, password, keyboard-interactive before the key (any code would pass), gssapi-with-mic and all at once to sekisho on loopback: %d connections refused (only publickey advertised, so no compliant client sends the others), a key-and-code login after each succeeds",
		len(cases))
}
