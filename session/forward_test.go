package session

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/sekisho/sekisho/internal/hardening"
)

// changingResolver answers each lookup with the next of its answers, as a
// DNS name under an attacker's control could.
type changingResolver struct {
	answers [][]netip.Addr
	calls   int
}

func (r *changingResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	a := r.answers[min(r.calls, len(r.answers)-1)]
	r.calls++
	return a, nil
}

func addrs(s ...string) []netip.Addr {
	var out []netip.Addr
	for _, a := range s {
		out = append(out, netip.MustParseAddr(a))
	}
	return out
}

func TestCheckForwardResolvesOnceAndDialsWhatWasChecked(t *testing.T) {
	res := &changingResolver{answers: [][]netip.Addr{addrs("10.0.0.5"), addrs("169.254.169.254")}}
	dest, err := checkForward(context.Background(), res, []string{"db.internal:5432"}, "db.internal", 5432, nil)
	if err != nil {
		t.Fatal(err)
	}
	if dest.addr != netip.MustParseAddr("10.0.0.5") || dest.port != 5432 || res.calls != 1 {
		t.Errorf("got %v:%d after %d lookups; want 10.0.0.5:5432 after one", dest.addr, dest.port, res.calls)
	}
	hardening.Report(t, "31", "a name that answers 10.0.0.5, then 169.254.169.254: looked up %d time, the checked address %v:%d is the one dialed", res.calls, dest.addr, dest.port)
}

func TestCheckForward(t *testing.T) {
	vault := addrs("10.0.9.9")
	tests := []struct {
		dests  []string
		host   string
		port   uint32
		answer []netip.Addr
		want   string // address dialed, or a part of the refusal
	}{
		{[]string{"db.internal:5432"}, "db.internal", 5432, addrs("10.0.0.5"), "10.0.0.5"},
		{[]string{"db.internal:5432"}, "db.internal", 5433, addrs("10.0.0.5"), "not among the rule's forward_to"},
		{[]string{"db.internal:*"}, "DB.internal", 8443, addrs("10.0.0.5"), "10.0.0.5"},
		{[]string{"10.0.0.0/24:443"}, "web.internal", 443, addrs("10.0.0.7"), "10.0.0.7"},
		{[]string{"10.0.0.0/24:443"}, "web.internal", 443, addrs("10.0.1.7"), "not among"},
		{[]string{"db.internal:5432"}, "vault.internal", 8200, addrs("10.0.9.9"), "not among"}, // not looked up
		// A name the rule allows that resolves to loopback or metadata is refused.
		{[]string{"evil.example:80"}, "evil.example", 80, addrs("127.0.0.1"), "refused unless the rule names it"},
		{[]string{"0.0.0.0/0:*"}, "anything", 22, addrs("127.0.0.1"), "refused unless the rule names it"},
		{[]string{"[::/0]:*"}, "v6", 80, addrs("fd00:ec2::254"), "refused unless the rule names it"},
		{[]string{"[::/0]:*"}, "v6", 80, addrs("64:ff9b::a9fe:a9fe"), "refused unless the rule names it"},
		{[]string{"0.0.0.0/0:*"}, "md", 80, addrs("100.100.100.200"), "refused unless the rule names it"},
		{[]string{"evil.example:80"}, "evil.example", 80, addrs("169.254.169.254"), "refused unless the rule names it"},
		{[]string{"10.0.0.0/8:8200"}, "vault.internal", 8200, vault, "refused unless the rule names it"},
		// ... unless the rule names it.
		{[]string{"localhost:5432"}, "localhost", 5432, addrs("127.0.0.1"), "127.0.0.1"},
		{[]string{"10.0.9.9:8200"}, "10.0.9.9", 8200, nil, "10.0.9.9"},
		{[]string{"169.254.169.254:80"}, "169.254.169.254", 80, nil, "169.254.169.254"},
		// The first allowed address of several is dialed.
		{[]string{"10.0.0.0/24:443"}, "multi", 443, addrs("192.0.2.1", "10.0.0.9"), "10.0.0.9"},
		{[]string{"*:*"}, "x", 0, addrs("10.0.0.1"), "not a TCP port"},
		{[]string{"db:22"}, "db;rm", 22, addrs("10.0.0.1"), "not a host name"},
		{[]string{"::1:22"}, "::1", 22, nil, "not among"}, // a bad entry allows nothing
	}
	for _, tt := range tests {
		res := &changingResolver{answers: [][]netip.Addr{tt.answer}}
		dest, err := checkForward(context.Background(), res, tt.dests, tt.host, tt.port, vault)
		got := ""
		if err != nil {
			got = err.Error()
		} else {
			got = dest.addr.String()
		}
		if !strings.Contains(got, tt.want) || (err != nil) == isAddr(tt.want) {
			t.Errorf("%v %s:%d: got %q, want %q", tt.dests, tt.host, tt.port, got, tt.want)
		}
	}
	allowed := 0
	for _, tt := range tests {
		if isAddr(tt.want) {
			allowed++
		}
	}
	hardening.Report(t, "8", "%d forward requests against rules' forward_to (names resolving to loopback, cloud metadata, NAT64 metadata, the Vault address; other ports, networks and targets; bad ports and names): %d refused, %d dialed to the checked address, loopback and metadata only when a rule names them", len(tests), len(tests)-allowed, allowed)
}

// isAddr reports whether want is an address (a success) rather than a refusal.
func isAddr(want string) bool {
	_, err := netip.ParseAddr(want)
	return err == nil
}

func TestCheckForwardDoesNotResolveNamesNoEntryCouldAllow(t *testing.T) {
	res := &changingResolver{answers: [][]netip.Addr{addrs("10.0.0.5")}}
	if _, err := checkForward(context.Background(), res, []string{"db.internal:5432"}, "secret.internal", 5432, nil); err == nil {
		t.Fatal("allowed")
	}
	if res.calls != 0 {
		t.Errorf("looked up a name no entry could allow (%d lookups)", res.calls)
	}
}
