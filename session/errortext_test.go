package session

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sekisho/sekisho/broker"
	"github.com/sekisho/sekisho/internal/hardening"
)

// internalDetail is what a failing Vault or store says: an internal
// address, a path, the API's own words. None of it is for a technician.
const internalDetail = `Error making API request. URL: PUT http://10.20.30.40:8200/v1/transit/decrypt/sekisho-totp Code: 503. Errors: * Vault is sealed; /var/lib/sekisho/sekisho.db: database is locked`

// leaks lists what of internalDetail appears in s.
func leaks(s string) []string {
	var found []string
	for _, w := range []string{"http", "10.20.30.40", "8200", "Vault is sealed", "/var/lib", "database is locked", "API request"} {
		if strings.Contains(s, w) {
			found = append(found, w)
		}
	}
	return found
}

// failingBroker is fakeBroker with one of its calls failing with
// internalDetail, and the audit events it was given kept.
type failingBroker struct {
	*fakeBroker
	fail string // the call that fails

	mu     sync.Mutex
	audits []broker.AuditEvent
}

func (f *failingBroker) err(call string) error {
	switch f.fail {
	case call:
		return errors.New(internalDetail)
	case call + " unopenable":
		return fmt.Errorf("%w: %s", broker.ErrUnopenable, internalDetail)
	}
	return nil
}

func (f *failingBroker) Authorize(ctx context.Context, tech, target, source string) (broker.Decision, *broker.Target, error) {
	if err := f.err("Authorize"); err != nil {
		return broker.Decision{}, nil, err
	}
	return f.fakeBroker.Authorize(ctx, tech, target, source)
}

func (f *failingBroker) TOTPEnrolled(context.Context, string) (bool, error) {
	return f.fail != "TOTPEnrolled", f.err("TOTPEnrolled")
}

func (f *failingBroker) VerifyTOTP(context.Context, string, string, string) error {
	return f.err("VerifyTOTP")
}

func (f *failingBroker) SessionStarted(context.Context, *broker.SessionRecord) error {
	return f.err("SessionStarted")
}

func (f *failingBroker) Audit(_ context.Context, e broker.AuditEvent) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.audits = append(f.audits, e)
}

func (f *failingBroker) audited() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var b strings.Builder
	for _, e := range f.audits {
		b.WriteString(string(e.Kind) + " " + e.Detail + "\n")
	}
	return b.String()
}

// TestTechnicianSeesNoInternalErrors: when the broker's Vault or store
// fails, the technician is told in a few words what happened and what to
// do; the address, the API's error and paths go to the log (and, where
// the session side writes it, the audit log) only.
func TestTechnicianSeesNoInternalErrors(t *testing.T) {
	for _, tc := range []struct {
		fail  string
		mfa   bool
		told  string // what the technician sees
		audit bool   // the session side audits the detail itself
	}{
		{fail: "Authorize", told: "sekisho: access to db could not be decided now; try again in a minute, or tell the sekisho operator"},
		{fail: "TOTPEnrolled", mfa: true, told: "sekisho: your verification code could not be checked now; try again in a minute", audit: true},
		{fail: "VerifyTOTP", mfa: true, told: "sekisho: your verification code could not be checked now; try again in a minute"},
		{fail: "VerifyTOTP unopenable", mfa: true, told: "sekisho: your second factor must be enrolled again; ask the operator to run `sekisho technician enroll-totp li`"},
		{fail: "SessionStarted", told: "sekisho: the session cannot be registered, so it is refused; tell the sekisho operator (session ", audit: true},
	} {
		t.Run(tc.fail, func(t *testing.T) {
			var logged syncBuf
			var fb *failingBroker
			d := &broker.Decision{Effect: broker.Allow, Login: "ops", Rule: "test", RequireMFA: tc.mfa}
			h := newHarnessWith(t, d, func(c *Config) {
				fb = &failingBroker{fakeBroker: c.Broker.(*fakeBroker), fail: tc.fail}
				c.Broker = fb
				c.Logger = slog.New(slog.NewTextHandler(&logged, nil))
			}, replyAll)
			var mu sync.Mutex
			var shown strings.Builder
			show := func(s string) {
				mu.Lock()
				defer mu.Unlock()
				shown.WriteString(s)
			}
			cfg := &ssh.ClientConfig{User: "li+db", HostKeyCallback: ssh.FixedHostKey(h.srv.cfg.HostKey.PublicKey()), Timeout: 10 * time.Second,
				BannerCallback: func(m string) error { show(m); return nil },
				Auth: []ssh.AuthMethod{ssh.PublicKeys(h.key), ssh.KeyboardInteractive(func(string, string, []string, []bool) ([]string, error) {
					return []string{"123456"}, nil
				})}}
			c, err := ssh.Dial("tcp", h.addr, cfg)
			if err == nil {
				_, _, err = c.OpenChannel("session", nil)
				var oce *ssh.OpenChannelError
				if errors.As(err, &oce) {
					show(oce.Message)
				}
				c.Close()
			}
			if err == nil {
				t.Fatal("the session went on with the broker failing")
			}
			mu.Lock()
			got := shown.String()
			mu.Unlock()
			if !strings.Contains(got, tc.told) {
				t.Errorf("the technician was shown %q; want %q", got, tc.told)
			}
			if l := leaks(got); l != nil {
				t.Errorf("the technician was shown %q, which gives away %q", got, l)
			}
			if !strings.Contains(logged.String(), "http://10.20.30.40:8200") {
				t.Errorf("the log lacks the detail:\n%s", logged.String())
			}
			if tc.audit && !strings.Contains(fb.audited(), "http://10.20.30.40:8200") {
				t.Errorf("the audit events lack the detail:\n%s", fb.audited())
			}
		})
	}
	hardening.Report(t, "vault", "the broker's Vault or store failing in the decision, the second factor's enrolment check and code check, and the session register: the technician told what to do in a few words, without the address, the API error or a path; the log has them, and the audit too where the session side writes it")
}

// A refusal is the technician's to read; any other error is only logged.
func TestRefusalOrLogged(t *testing.T) {
	var logged syncBuf
	c := &conn{srv: &Server{log: slog.New(slog.NewTextHandler(&logged, nil))},
		id: &identity{tech: &broker.Technician{Name: "li"}, target: &broker.Target{Name: "db"}}}
	if got := c.refusalOrLogged("x", &broker.Refusal{Msg: "request 4 is not yours"}); got != "request 4 is not yours" {
		t.Errorf("a refusal: %q", got)
	}
	got := c.refusalOrLogged("access request not cancelled", errors.New(internalDetail))
	if l := leaks(got); l != nil || !strings.Contains(got, "tell the sekisho operator") {
		t.Errorf("a store error: shown %q (gives away %q)", got, l)
	}
	if !strings.Contains(logged.String(), "access request not cancelled") || !strings.Contains(logged.String(), "10.20.30.40") {
		t.Errorf("the log lacks the detail:\n%s", logged.String())
	}
}
