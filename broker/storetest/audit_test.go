package storetest

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sekisho/sekisho/broker"
)

func TestAuditEvents(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e env) {
		ctx := context.Background()
		s := e.open(t)

		if got, err := s.AuditEvents(ctx, 10); err != nil || len(got) != 0 {
			t.Fatalf("empty log: AuditEvents = %v, %v", got, err)
		}
		var all []broker.AuditEvent
		for i := range 150 {
			ev := broker.AuditEvent{
				At:   e.base.Add(time.Duration(i)*time.Second + time.Duration(i)*e.tick),
				Kind: []broker.EventKind{"decision", "session_start", "session_end"}[i%3], Technician: "aiko", Target: "db-jp-01",
				Source: "192.0.2.7:50022", Session: fmt.Sprintf("s%d", i), Detail: fmt.Sprintf(`{"n":%d}`, i),
			}
			if err := s.Audit(ctx, ev); err != nil {
				t.Fatal(err)
			}
			all = append(all, ev)
		}
		// A minimal event: empty optional fields are stored as empty.
		minimal := broker.AuditEvent{At: e.base.Add(time.Hour), Kind: "hostkey_mismatch"}
		if err := s.Audit(ctx, minimal); err != nil {
			t.Fatal(err)
		}
		all = append(all, minimal)

		for _, tc := range []struct{ limit, want int }{{3, 3}, {1, 1}, {151, 151}, {1000, 151}, {0, 100}, {-1, 100}} {
			got, err := s.AuditEvents(ctx, tc.limit)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != tc.want {
				t.Fatalf("AuditEvents(%d) returned %d events, want %d", tc.limit, len(got), tc.want)
			}
			wantEvents := all[len(all)-tc.want:]
			for i := range got {
				g, w := got[i], wantEvents[i]
				if !g.At.Equal(w.At) {
					t.Errorf("AuditEvents(%d)[%d].At = %v, want %v", tc.limit, i, g.At, w.At)
				}
				if g.At.Location() != time.UTC {
					t.Errorf("AuditEvents(%d)[%d].At is in %v, want UTC", tc.limit, i, g.At.Location())
				}
				g.At, w.At = time.Time{}, time.Time{}
				if g != w {
					t.Errorf("AuditEvents(%d)[%d] = %+v, want %+v", tc.limit, i, g, w)
				}
			}
		}
	})
}

// The audit log is searched by kind (or kind prefix), technician, target,
// session, source address, period and detail text, newest N, oldest
// first.
func TestSearchAudit(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e env) {
		ctx := context.Background()
		s := e.open(t)
		at := e.base.UTC()
		for i, ev := range []broker.AuditEvent{
			{Kind: "auth.failed", Technician: "li", Source: "203.0.113.5:40000", Detail: "mfa: wrong verification code"},
			{Kind: "mfa.enrolled", Technician: "li"},
			{Kind: "mfa.tampered", Technician: "wei", Detail: "a TOTP secret in the clear"},
			{Kind: "session.start", Technician: "li", Target: "db-jp-01", Source: "203.0.113.50:41000", Session: "s1"},
			{Kind: "session.end", Session: "s1", Detail: `{"reason":"client closed","at":"ÉCOLE"}`},
			{Kind: "mfaX", Technician: "li"},
		} {
			ev.At = at.Add(time.Duration(i) * time.Hour)
			if err := s.Audit(ctx, ev); err != nil {
				t.Fatal(err)
			}
		}
		kinds := func(f broker.AuditFilter) string {
			t.Helper()
			got, err := s.SearchAudit(ctx, f)
			if err != nil {
				t.Fatal(err)
			}
			var k []string
			for _, ev := range got {
				k = append(k, string(ev.Kind))
			}
			return strings.Join(k, " ")
		}
		for _, c := range []struct {
			f    broker.AuditFilter
			want string
		}{
			{broker.AuditFilter{}, "auth.failed mfa.enrolled mfa.tampered session.start session.end mfaX"},
			{broker.AuditFilter{Kinds: []string{"mfa.*"}}, "mfa.enrolled mfa.tampered"},
			{broker.AuditFilter{Kinds: []string{"mfa."}}, "mfa.enrolled mfa.tampered"},
			{broker.AuditFilter{Kinds: []string{"auth.failed", "session.end"}}, "auth.failed session.end"},
			{broker.AuditFilter{Kinds: []string{"mfa"}}, ""},
			{broker.AuditFilter{Kinds: []string{"%.*"}}, ""},
			{broker.AuditFilter{Technician: "li"}, "auth.failed mfa.enrolled session.start mfaX"},
			{broker.AuditFilter{Technician: "li", Kinds: []string{"mfa.*"}}, "mfa.enrolled"},
			{broker.AuditFilter{Session: "s1"}, "session.start session.end"},
			{broker.AuditFilter{Target: "db-jp-01"}, "session.start"},
			{broker.AuditFilter{Source: "203.0.113.5"}, "auth.failed"},
			{broker.AuditFilter{Source: "203.0.113.50:41000"}, "session.start"},
			{broker.AuditFilter{Since: at.Add(2 * time.Hour), Until: at.Add(4 * time.Hour)}, "mfa.tampered session.start"},
			{broker.AuditFilter{Text: "clear"}, "mfa.tampered"},
			{broker.AuditFilter{Text: "CLEAR"}, "mfa.tampered"},
			{broker.AuditFilter{Text: "ÉcOlE"}, "session.end"},
			{broker.AuditFilter{Text: "école"}, ""}, // ASCII letters only
			{broker.AuditFilter{Text: "%"}, ""},
			{broker.AuditFilter{Text: "_"}, ""},
			{broker.AuditFilter{Limit: 2}, "session.end mfaX"},
			{broker.AuditFilter{Technician: "li' OR '1'='1"}, ""},
		} {
			if got := kinds(c.f); got != c.want {
				t.Errorf("SearchAudit(%+v) = %q, want %q", c.f, got, c.want)
			}
		}
	})
}
