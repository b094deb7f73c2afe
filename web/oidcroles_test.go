package web

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

// A person's console roles are those sekisho's config gives them that the
// provider's groups also give: the provider can take roles away, never
// add one.
func TestSignOnRolesAreAnIntersection(t *testing.T) {
	mapping := map[string][]string{RoleAdmin: {"sec-admins"}, RoleApprover: {"jp-approvers", "sg-approvers"}, RoleReviewer: {"sec-review"}}
	for _, tc := range []struct {
		name   string
		config []string // roles the config gives
		groups []string // at the provider
		want   []string
	}{
		{"all groups, all roles", []string{"admin", "approver", "reviewer"}, []string{"sec-admins", "jp-approvers", "sec-review"}, []string{"admin", "approver", "reviewer"}},
		{"removed from the approver group", []string{"admin", "approver"}, []string{"sec-admins"}, []string{"admin"}},
		{"any mapped group will do", []string{"approver"}, []string{"staff", "sg-approvers"}, []string{"approver"}},
		{"a group cannot add a role the config does not give", []string{"reviewer"}, []string{"sec-admins", "sec-review"}, []string{"reviewer"}},
		{"no group at all", []string{"admin"}, nil, nil},
		{"groups of no role", []string{"admin"}, []string{"staff"}, nil},
		{"no role in the config", nil, []string{"sec-admins"}, nil},
	} {
		got := intersectRoles(tc.config, rolesOfGroups(mapping, tc.groups))
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: config %v, groups %v: roles %v, want %v", tc.name, tc.config, tc.groups, got, tc.want)
		}
	}

	p := &person{Admin: true, Approver: true, Reviewer: true}
	p.limitTo([]string{RoleApprover})
	if p.Admin || !p.Approver || p.Reviewer {
		t.Errorf("limitTo(approver): %+v", p)
	}
	p = &person{Reviewer: true}
	p.limitTo([]string{RoleAdmin, RoleReviewer})
	if p.Admin || p.Reviewer != true {
		t.Errorf("limitTo never adds a role: %+v", p)
	}
}

// A person left with no role is told which groups would give one.
func TestNoRoleMessageNamesTheGroups(t *testing.T) {
	mapping := map[string][]string{RoleAdmin: {"sec-admins"}, RoleApprover: {"jp-approvers"}, RoleReviewer: {"sec-review"}}
	got := noRoleMessage([]string{"admin", "approver"}, mapping, []string{"staff"})
	for _, want := range []string{"(staff)", "admin, approver", "sec-admins (admin) or jp-approvers (approver)"} {
		if !strings.Contains(got, want) {
			t.Errorf("%q lacks %q", got, want)
		}
	}
	if strings.Contains(got, "sec-review") {
		t.Errorf("%q names a group of a role the person does not have", got)
	}
	if got := noRoleMessage([]string{"reviewer"}, map[string][]string{RoleAdmin: {"a"}}, nil); !strings.Contains(got, "no group is mapped") {
		t.Errorf("no group mapped: %q", got)
	}
}

func TestStringsClaim(t *testing.T) {
	for _, tc := range []struct {
		in   any
		want []string
	}{
		{[]any{"a", "b", 3, ""}, []string{"a", "b"}},
		{"only", []string{"only"}},
		{"", nil},
		{nil, nil},
		{map[string]any{"a": 1}, nil},
	} {
		if got := stringsClaim(tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("stringsClaim(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

// A source starts at most startLimit single sign-ons a minute; another
// source, or the next minute, starts afresh; an IPv6 source counts by
// its /48; a balancer's address counts only towards the node's bound,
// which holds for all sources together.
func TestOIDCStartsLimitedPerSourceAndNode(t *testing.T) {
	var c startCounter
	now := time.Date(2026, 12, 7, 10, 0, 5, 0, time.UTC)
	balancers := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24")}
	req := func(addr string) *http.Request {
		r := httptest.NewRequest(http.MethodGet, "/oidc/login", nil)
		r.RemoteAddr = addr
		return r
	}
	allow := func(addr string, at time.Time) bool { return c.allow(req(addr), balancers, at) }
	for i := range startLimit {
		if !allow("192.0.2.7:4000", now) {
			t.Fatalf("start %d refused, want %d allowed", i+1, startLimit)
		}
	}
	if allow("192.0.2.7:4001", now) {
		t.Errorf("start %d from one address allowed in a minute", startLimit+1)
	}
	if !allow("192.0.2.8:4000", now) {
		t.Error("another address refused")
	}
	for i := range startLimit {
		allow(fmt.Sprintf("[2001:db8:0:%x::1]:4000", i+1), now)
	}
	if allow("[2001:db8:0:ffff::1]:4000", now) {
		t.Error("an IPv6 /48 started more than the limit by changing its address")
	}
	// Behind the balancer: up to the node's bound, then nobody.
	n := 0
	for allow("10.0.0.5:4000", now) {
		n++
	}
	if total := startLimit + 1 + startLimit + n; total != nodeStartLimit {
		t.Errorf("the node allowed %d starts in a minute, want %d", total, nodeStartLimit)
	}
	if allow("198.51.100.1:4000", now) {
		t.Error("a new address allowed past the node's bound")
	}
	if !allow("192.0.2.7:4000", now.Add(time.Minute)) || !allow("10.0.0.5:4000", now.Add(time.Minute)) {
		t.Error("refused again in the next minute")
	}
}
