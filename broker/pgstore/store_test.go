package pgstore_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/sekisho/sekisho/broker"
	"github.com/sekisho/sekisho/broker/pgstore"
	"github.com/sekisho/sekisho/internal/pgtest"
)

// What every backend must answer is tested in broker/storetest; here is
// what only PostgreSQL can get wrong: text it refuses, migrations, and
// notifications.

func TestMain(m *testing.M) { pgtest.Main(m) }

// open opens a store on dsn, closed when the test ends.
func open(t *testing.T, dsn string) *pgstore.Store {
	t.Helper()
	s, err := pgstore.Open(context.Background(), dsn, pgstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// PostgreSQL refuses text that is not valid UTF-8 or holds NUL; what a
// technician typed or a peer sent is stored with U+FFFD in its place
// rather than lost, and searches for it find it.
func TestInvalidTextIsStored(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := open(t, pgtest.NewDatabase(t))
	const (
		bad  = "li\xff\xfe\x00x" // invalid UTF-8, then NUL
		good = "li\uFFFD\uFFFDx" // as stored
	)
	at := time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC)

	// Audit details, and every other field of an event.
	if err := s.Audit(ctx, broker.AuditEvent{At: at, Kind: "auth.failed", Technician: bad, Target: bad, Source: bad, Session: bad,
		Detail: `{"login":"` + bad + `"}`}); err != nil {
		t.Fatalf("Audit with invalid text: %v", err)
	}
	events, err := s.SearchAudit(ctx, broker.AuditFilter{Technician: bad, Target: bad, Session: bad, Source: bad, Text: bad})
	if err != nil {
		t.Fatal(err)
	}
	want := broker.AuditEvent{At: at, Kind: "auth.failed", Technician: good, Target: good, Source: good, Session: good,
		Detail: `{"login":"` + good + `"}`}
	if len(events) != 1 || events[0] != want {
		t.Errorf("SearchAudit by the invalid text = %+v, want [%+v]", events, want)
	}

	// Session fields, the session's ID included, and its end.
	r := &broker.SessionRecord{ID: "s" + bad, Technician: bad, Affiliate: bad, AffiliateCountry: "JP", Source: bad,
		SourceCountry: bad, SourceNetwork: bad, Target: bad, TargetAddress: bad, Residency: bad, Login: bad, Rule: bad,
		Trace: bad, CertKeyID: bad, StartedAt: at, Recording: bad}
	if err := s.StartSession(ctx, r); err != nil {
		t.Fatalf("StartSession with invalid text: %v", err)
	}
	if err := s.EndSession(ctx, r.ID, broker.SessionEnd{At: at.Add(time.Minute), Reason: bad}); err != nil {
		t.Fatalf("EndSession with invalid text: %v", err)
	}
	if err := s.SetRecordingSeal(ctx, r.ID, bad, 1, true); err != nil {
		t.Fatalf("SetRecordingSeal with invalid text: %v", err)
	}
	got, err := s.Session(ctx, r.ID)
	if err != nil {
		t.Fatalf("Session by the invalid ID: %v", err)
	}
	for name, v := range map[string]string{"ID": got.ID[1:], "Technician": got.Technician, "Affiliate": got.Affiliate,
		"Source": got.Source, "SourceCountry": got.SourceCountry, "SourceNetwork": got.SourceNetwork, "Target": got.Target,
		"TargetAddress": got.TargetAddress, "Residency": got.Residency, "Login": got.Login, "Rule": got.Rule, "Trace": got.Trace,
		"CertKeyID": got.CertKeyID, "Recording": got.Recording, "EndReason": got.EndReason, "RecordingHead": got.RecordingHead} {
		if v != good {
			t.Errorf("session %s = %q, want %q", name, v, good)
		}
	}
	list, err := s.Sessions(ctx, broker.SessionFilter{Technician: bad, Target: bad, Affiliate: bad, SourceCountry: bad,
		Residency: bad, Residencies: []string{bad}, EndReason: bad})
	if err != nil || len(list) != 1 {
		t.Errorf("Sessions by the invalid text = %d sessions, %v; want 1", len(list), err)
	}
	if err := s.IndexSessionText(ctx, r.ID, broker.SessionText{Typed: "echo " + bad, Shown: bad}); err != nil {
		t.Fatalf("IndexSessionText of a session with an invalid ID: %v", err)
	}
	if snippets, err := s.TextSnippets(ctx, "echo", []string{r.ID}); err != nil || snippets["s"+good] == "" {
		t.Errorf("TextSnippets of a session with an invalid ID = %q, %v", snippets, err)
	}

	// Request reasons, notes and approval comments, at creation and
	// update.
	req, err := s.CreateRequest(ctx, broker.AccessRequest{Technician: bad, Affiliate: bad, AffiliateCountry: "JP", Target: bad,
		Rule: bad, Source: bad, SourceCountry: bad, Reason: "INC-1 " + bad, Duration: time.Hour, State: broker.RequestPending, Needed: 1,
		Created: at, Approvals: []broker.RequestApproval{{By: bad, Affiliate: bad, Comment: bad, At: at}}})
	if err != nil {
		t.Fatalf("CreateRequest with invalid text: %v", err)
	}
	updated, err := s.UpdateRequest(ctx, req.ID, func(r *broker.AccessRequest) error {
		r.Approvals = append(r.Approvals, broker.RequestApproval{By: "kenji", Affiliate: "ops-jp", Comment: "ok " + bad, At: at})
		r.Note, r.DecidedBy, r.Revised = bad, bad, bad
		return nil
	})
	if err != nil {
		t.Fatalf("UpdateRequest with invalid text: %v", err)
	}
	stored, err := s.Request(ctx, req.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []broker.AccessRequest{updated, stored} {
		for name, v := range map[string]string{"Technician": r.Technician, "Affiliate": r.Affiliate, "Target": r.Target, "Rule": r.Rule,
			"Source": r.Source, "SourceCountry": r.SourceCountry, "Reason": r.Reason[len("INC-1 "):], "Note": r.Note,
			"DecidedBy": r.DecidedBy, "Revised": r.Revised} {
			if v != good {
				t.Errorf("request %s = %q, want %q", name, v, good)
			}
		}
		if len(r.Approvals) != 2 {
			t.Fatalf("approvals = %+v, want 2", r.Approvals)
		}
		if a := r.Approvals[0]; a.By != good || a.Affiliate != good || a.Comment != good {
			t.Errorf("first approval = %+v, want its texts %q", a, good)
		}
		if c := r.Approvals[1].Comment; c != "ok "+good {
			t.Errorf("second approval's comment = %q, want %q", c, "ok "+good)
		}
	}
	if list, err := s.Requests(ctx, broker.RequestFilter{Technician: bad, Target: bad, Targets: []string{bad}}); err != nil || len(list) != 1 {
		t.Errorf("Requests by the invalid text = %d requests, %v; want 1", len(list), err)
	}

	// Locks, holds and second factors.
	lock, err := s.AddLock(ctx, broker.Lock{Kind: broker.LockTechnician, Name: bad, Reason: bad, By: bad, Created: at})
	if err != nil {
		t.Fatalf("AddLock with invalid text: %v", err)
	}
	if locks, err := s.Locks(ctx, at); err != nil || len(locks) != 1 || locks[0].ID != lock.ID ||
		locks[0].Name != good || locks[0].Reason != good || locks[0].By != good {
		t.Errorf("Locks = %+v, %v; want the lock with its texts %q", locks, err, good)
	}
	if err := s.SetHold(ctx, broker.LegalHold{Session: r.ID, Reason: bad, By: bad, At: at}); err != nil {
		t.Fatalf("SetHold with invalid text: %v", err)
	}
	if holds, err := s.Holds(ctx); err != nil || len(holds) != 1 || holds[0].Session != "s"+good || holds[0].Reason != good || holds[0].By != good {
		t.Errorf("Holds = %+v, %v; want the hold with its texts %q", holds, err, good)
	}
	if err := s.RemoveHold(ctx, r.ID); err != nil {
		t.Errorf("RemoveHold by the invalid ID: %v", err)
	}
	if err := s.SetTOTP(ctx, bad, "vault:v1:x"); err != nil {
		t.Fatalf("SetTOTP for an invalid name: %v", err)
	}
	if ok, err := s.ClaimTOTPStep(ctx, bad, 7); !ok || err != nil {
		t.Errorf("ClaimTOTPStep for an invalid name: %v, %v", ok, err)
	}
	if ok, err := s.ReplaceTOTPSecret(ctx, bad, "vault:v1:x", "vault:v1:y"); !ok || err != nil {
		t.Errorf("ReplaceTOTPSecret for an invalid name: %v, %v", ok, err)
	}
	if st, err := s.TOTP(ctx, bad); err != nil || st.LastStep != 7 || st.Secret != "vault:v1:y" {
		t.Errorf("TOTP for an invalid name = %+v, %v", st, err)
	}
	if all, err := s.TOTPSecrets(ctx); err != nil || all[good] != "vault:v1:y" {
		t.Errorf("TOTPSecrets = %q, %v; want %q stored under %q", all, err, "vault:v1:y", good)
	}
}

// An address that is wrong, or a server that does not answer, is
// reported without the password of the connection string.
func TestOpenErrorsHideThePassword(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, dsn := range []string{
		"postgres://sekisho:hunter2secret@127.0.0.1:notaport/sekisho",
		"postgres://sekisho:hunter2secret@127.0.0.1:1/sekisho?sslmode=disable&connect_timeout=2",
		"host=127.0.0.1 port=1 user=sekisho password=hunter2secret sslmode=disable connect_timeout=2",
	} {
		s, err := pgstore.Open(ctx, dsn, pgstore.Options{})
		if err == nil {
			s.Close()
			t.Errorf("Open(%q) succeeded", dsn)
			continue
		}
		if strings.Contains(err.Error(), "hunter2secret") {
			t.Errorf("Open err = %q names the password", err)
		}
		if !strings.Contains(err.Error(), "state store") {
			t.Errorf("Open err = %q does not say what failed", err)
		}
	}
}
