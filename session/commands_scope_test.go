package session

import (
	"bytes"
	"log/slog"
	"net/netip"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sekisho/sekisho/broker"
	"github.com/sekisho/sekisho/broker/sqlitestore"
	"github.com/sekisho/sekisho/recording"
)

// scopeCommands is a server on a real broker and state store whose
// commands the tests run as the SSH side would: li (ops-cn) asks for
// db-jp-01 (JP) and web-sg-01 (SG); kenji is an admin and approver
// limited to JP, rin an approver of every residency. 203.0.113.0/24 is
// in CN, 198.51.100.0/24 in SG.
type scopeCommands struct {
	srv   *Server
	brk   *broker.Broker
	store *sqlitestore.Store
	techs map[string]*broker.Technician
}

func newScopeCommands(t *testing.T) *scopeCommands {
	t.Helper()
	cn, jp := broker.Affiliate{Name: "ops-cn", Country: "CN"}, broker.Affiliate{Name: "operator-jp", Country: "JP"}
	techs := map[string]*broker.Technician{
		"li":    {Name: "li", Affiliate: cn},
		"kenji": {Name: "kenji", Affiliate: jp, Groups: []string{"approvers", "admins"}, ReviewResidency: []string{"JP"}},
		"rin":   {Name: "rin", Affiliate: jp, Groups: []string{"approvers", "reviewers"}},
	}
	var list []*broker.Technician
	for _, tc := range techs {
		tc.Keys = append(tc.Keys, newSigner().PublicKey())
		list = append(list, tc)
	}
	targets := []*broker.Target{
		{Name: "db-jp-01", Address: "10.0.0.1:22", Login: "dbadmin", Residency: "JP"},
		{Name: "web-sg-01", Address: "10.0.1.1:22", Login: "www", Residency: "SG"},
	}
	policy, err := broker.NewPolicy([]broker.Rule{{Name: "needs-approval", Effect: broker.Approval,
		Match:    broker.Match{Technicians: []string{"li"}},
		Approval: broker.ApprovalSpec{Approvals: 1, From: []string{"approvers"}, PendingFor: time.Hour, MaxGrant: time.Hour}}})
	if err != nil {
		t.Fatal(err)
	}
	geo := broker.NewGeo([]*broker.Network{
		{Name: "cn-office", Country: "CN", Prefixes: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}},
		{Name: "sg-office", Country: "SG", Prefixes: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}},
	}, nil)
	store, err := sqlitestore.Open(t.Context(), filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	brk := broker.New(broker.Config{Technicians: list, Targets: targets, Policy: policy, Geo: geo, Store: store,
		AdminGroups: []string{"admins"}, ReviewerGroups: []string{"reviewers"}, Logger: slog.New(slog.DiscardHandler)})
	srv, err := NewServer(Config{HostKey: newSigner(), Broker: brk, Access: brk, RecordingDir: t.TempDir(),
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	return &scopeCommands{srv: srv, brk: brk, store: store, techs: techs}
}

// run runs line as tech's command from source and returns its exit
// status, output and error output.
func (sc *scopeCommands) run(t *testing.T, tech, source, line string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	c := &command{srv: sc.srv, tech: sc.techs[tech], key: sc.techs[tech].Keys[0], source: source,
		out: &out, errOut: &errOut, in: strings.NewReader(""), raw: &out}
	code := c.run(t.Context(), line)
	return code, out.String(), errOut.String()
}

func (sc *scopeCommands) audited(t *testing.T, kind broker.EventKind, technician, substr string) bool {
	t.Helper()
	events, err := sc.store.AuditEvents(t.Context(), 1000)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range events {
		if e.Kind == kind && e.Technician == technician && strings.Contains(e.Detail, substr) {
			return true
		}
	}
	return false
}

// An admin and approver limited to JP neither sees nor decides the
// request for the SG target, over SSH; the JP one is theirs.
func TestCommandsFollowTheScope(t *testing.T) {
	t.Parallel()
	sc := newScopeCommands(t)
	const fromCN = "203.0.113.7:40000"
	for _, target := range []string{"db-jp-01", "web-sg-01"} {
		if code, out, errOut := sc.run(t, "li", fromCN, "request "+target+" --reason INC-7 rotate keys"); code != exitOK {
			t.Fatalf("li request %s: %d %q %q", target, code, out, errOut)
		}
	}
	// 1 is for db-jp-01 (JP), 2 for web-sg-01 (SG).
	code, out, _ := sc.run(t, "kenji", "192.0.2.9:1", "requests")
	if code != exitOK || !regexp.MustCompile(`(?m)^1\s+li \(ops-cn\)\s+db-jp-01\s`).MatchString(out) || strings.Contains(out, "web-sg-01") {
		t.Errorf("kenji (JP) requests: %d\n%s\nwant request 1 only", code, out)
	}
	if code, out, _ := sc.run(t, "kenji", "192.0.2.9:1", "requests --all --json"); code != exitOK || !strings.Contains(out, `"target": "db-jp-01"`) || strings.Contains(out, "web-sg-01") {
		t.Errorf("kenji (JP) requests --all: %d\n%s\nwant the JP request only", code, out)
	}
	for _, verb := range []string{"approve 2", "deny 2 --reason not now"} {
		code, out, errOut := sc.run(t, "kenji", "192.0.2.9:1", verb)
		if code != exitRefused || out != "" || !strings.Contains(errOut, "sekisho: request 2 is outside your review_residency (JP): you may not") {
			t.Errorf("kenji %s: %d, stdout %q, stderr %q; want a refusal naming his scope", verb, code, out, errOut)
		}
	}
	if !sc.audited(t, broker.EventRequestRefused, "kenji", `"why":"request 2 is outside your review_residency (JP)`) {
		t.Error("kenji's refused decisions are not audited with why")
	}
	if r, _ := sc.brk.Request(t.Context(), 2); r.State != broker.RequestPending || len(r.Approvals) != 0 {
		t.Errorf("request 2 after kenji's refused decisions: %s, %d approvals", r.State, len(r.Approvals))
	}
	if code, out, errOut := sc.run(t, "rin", "192.0.2.9:1", "approve 2"); code != exitOK || !strings.Contains(out, "granted until") {
		t.Fatalf("rin (all residencies) approve 2: %d %q %q", code, out, errOut)
	}
	if code, out, errOut := sc.run(t, "kenji", "192.0.2.9:1", "approve 1 --comment ok"); code != exitOK || !strings.Contains(out, "granted until") {
		t.Fatalf("kenji approve 1: %d %q %q", code, out, errOut)
	}

	// grants: where each was approved for; kenji's list stays in JP.
	code, out, _ = sc.run(t, "rin", "192.0.2.9:1", "grants")
	if code != exitOK || !strings.Contains(out, "FROM") || !regexp.MustCompile(`(?m)^2\s+li \(ops-cn\)\s+web-sg-01\s.*CN \(203\.0\.113\.7\)\s*$`).MatchString(out) {
		t.Errorf("rin's grants: %d\n%s\nwant request 2 from CN (203.0.113.7)", code, out)
	}
	if code, out, _ := sc.run(t, "kenji", "192.0.2.9:1", "grants --json"); code != exitOK || strings.Contains(out, "web-sg-01") || !strings.Contains(out, `"source_country": "CN"`) {
		t.Errorf("kenji's grants: %d\n%s\nwant the JP one only, with its source country", code, out)
	}
	if code, _, errOut := sc.run(t, "kenji", "192.0.2.9:1", "revoke 2 --reason INC-7 done"); code != exitRefused || !strings.Contains(errOut, "outside your review_residency (JP): you may not revoke it") {
		t.Errorf("kenji revoke 2: %d %q", code, errOut)
	}
}

// watch of a session outside the scope: not found, as in the console;
// the audit log says why.
func TestWatchOutsideTheScope(t *testing.T) {
	t.Parallel()
	sc := newScopeCommands(t)
	const id = "7e0c3b7a-2f1d-4a8e-8f5e-6b7d2c1e9b02"
	w, err := recording.Create(sc.srv.cfg.RecordingDir, recording.Meta{ID: id, Technician: "li", Target: "web-sg-01", Residency: "SG", Start: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.End(time.Now(), "test over", 0, 0) })
	code, out, errOut := sc.run(t, "kenji", "192.0.2.9:1", "watch "+id)
	if code != exitRefused || out != "" || errOut != "sekisho: watch: no session "+id+" on this node (see sessions --live)\n" {
		t.Errorf("kenji (JP) watch of an SG session: %d, stdout %q, stderr %q", code, out, errOut)
	}
	if !sc.audited(t, broker.EventRefused, "kenji", "of residency SG is outside the reviewer's residencies (JP)") {
		t.Error("the refused watch is not audited with why")
	}
}

// A grant approved for CN does not let li in from SG; from SG he files a
// new request, which the approvers see as from SG.
func TestGrantFromAnotherCountryOverSSH(t *testing.T) {
	t.Parallel()
	sc := newScopeCommands(t)
	const fromCN, fromSG = "203.0.113.7:40000", "198.51.100.7:40000"
	if code, _, errOut := sc.run(t, "li", fromCN, "request db-jp-01 --reason INC-8 disk full"); code != exitOK {
		t.Fatalf("li request from CN: %q", errOut)
	}
	if code, _, errOut := sc.run(t, "rin", "192.0.2.9:1", "approve 1"); code != exitOK {
		t.Fatalf("rin approve 1: %q", errOut)
	}
	d, _, err := sc.brk.Authorize(t.Context(), "li", "db-jp-01", fromSG)
	if err != nil || d.Allowed() || d.Reason != "request 1 was approved for connections from CN; you are connecting from SG: file a new request" {
		t.Errorf("li from SG: %s %q, %v", d.Effect, d.Reason, err)
	}
	code, out, errOut := sc.run(t, "li", fromSG, "request db-jp-01 --reason INC-8 from the Singapore office")
	if code != exitOK || !strings.Contains(out, "request 2 filed") {
		t.Fatalf("li request from SG: %d %q %q; want request 2 filed", code, out, errOut)
	}
	code, out, _ = sc.run(t, "rin", "192.0.2.9:1", "requests")
	if code != exitOK || !regexp.MustCompile(`(?m)^2\s+li \(ops-cn\)\s+db-jp-01\s.*pending.*SG \(198\.51\.100\.7\)\s*$`).MatchString(out) {
		t.Errorf("rin's requests: %d\n%s\nwant request 2 pending, from SG", code, out)
	}
}
