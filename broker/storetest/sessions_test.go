package storetest

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/sekisho/sekisho/broker"
)

func record(id, tech, target string, started time.Time) *broker.SessionRecord {
	return &broker.SessionRecord{
		ID: id, Technician: tech, Affiliate: "ops-jp", AffiliateCountry: "JP", Source: "192.0.2.7:50022",
		Target: target, TargetAddress: "10.0.0.1:22", Residency: "JP", Login: "dbadmin", CrossBorder: tech == "li",
		Rule: "pii-in-residency", Trace: `[{"rule":"pii-in-residency","effect":"allow","matched":true,"why":"matched"}]`,
		CertSerial: 7, CertKeyID: "sekisho:" + tech + ":" + id, StartedAt: started, Recording: "2025/03/01/" + id + ".cast",
	}
}

func ids(list []broker.SessionRecord) []string {
	out := []string{}
	for _, r := range list {
		out = append(out, r.ID)
	}
	return out
}

func TestSessions(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e env) {
		ctx := context.Background()
		s := e.open(t)
		base := e.base

		// Inserted out of order; listed newest first.
		inserts := []*broker.SessionRecord{
			record("s2", "aiko", "db-jp-01", base.Add(2*time.Minute)),
			record("s1", "aiko", "web-sg-01", base.Add(1*time.Minute)),
			record("s4", "li", "web-sg-01", base.Add(4*time.Minute)),
			record("s3", "li", "db-jp-01", base.Add(3*time.Minute)),
			// Only a tick later than s4, and with an ID that sorts before
			// it: ordering must not truncate.
			record("s0", "aiko", "db-jp-01", base.Add(4*time.Minute+e.tick)),
		}
		for _, r := range inserts {
			if err := s.StartSession(ctx, r); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.StartSession(ctx, record("s1", "aiko", "x", base)); err == nil {
			t.Error("a second session with ID s1 was accepted")
		}

		yes, no := true, false
		tests := []struct {
			name string
			f    broker.SessionFilter
			want []string
		}{
			{"all", broker.SessionFilter{}, []string{"s0", "s4", "s3", "s2", "s1"}},
			{"technician", broker.SessionFilter{Technician: "li"}, []string{"s4", "s3"}},
			{"target", broker.SessionFilter{Target: "db-jp-01"}, []string{"s0", "s3", "s2"}},
			{"technician and target", broker.SessionFilter{Technician: "aiko", Target: "db-jp-01"}, []string{"s0", "s2"}},
			{"limit", broker.SessionFilter{Limit: 2}, []string{"s0", "s4"}},
			{"limit with filter", broker.SessionFilter{Target: "web-sg-01", Limit: 1}, []string{"s4"}},
			{"since", broker.SessionFilter{Since: base.Add(3 * time.Minute)}, []string{"s0", "s4", "s3"}},
			{"since in UTC", broker.SessionFilter{Since: base.Add(3*time.Minute + e.tick).UTC()}, []string{"s0", "s4"}},
			{"since a tick", broker.SessionFilter{Since: base.Add(4*time.Minute + e.tick)}, []string{"s0"}},
			{"cross-border", broker.SessionFilter{CrossBorder: &yes}, []string{"s4", "s3"}},
			{"domestic", broker.SessionFilter{CrossBorder: &no}, []string{"s0", "s2", "s1"}},
			{"no such technician", broker.SessionFilter{Technician: "bob"}, []string{}},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				got, err := s.Sessions(ctx, tc.f)
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(ids(got), tc.want) {
					t.Errorf("Sessions(%+v) = %v, want %v", tc.f, ids(got), tc.want)
				}
			})
		}
	})
}

func TestSessionRoundTrip(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e env) {
		ctx := context.Background()
		s := e.open(t)
		want := record("0195d3f4-7c1e-7000-8000-000000000001", "li", "db-jp-01", e.base)
		want.CertSerial = 1<<63 + 12345 // larger than int64
		want.SourceCountry, want.SourceNetwork, want.Request = "CN", "cn-vpn", 1<<62+3
		want.Moderated = true
		if err := s.StartSession(ctx, want); err != nil {
			t.Fatal(err)
		}

		got, err := s.Session(ctx, want.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Ended() {
			t.Errorf("a session that did not end reports Ended, EndedAt %v", got.EndedAt)
		}
		checkRecord(t, got, *want)

		end := broker.SessionEnd{At: e.base.Add(17*time.Minute + 987654321*e.tick), BytesIn: 1 << 40, BytesOut: 123456789012, Reason: "target closed the connection"}
		if err := s.EndSession(ctx, want.ID, end); err != nil {
			t.Fatal(err)
		}
		got, err = s.Session(ctx, want.ID)
		if err != nil {
			t.Fatal(err)
		}
		if !got.Ended() {
			t.Error("ended session does not report Ended")
		}
		want.EndedAt, want.BytesIn, want.BytesOut, want.EndReason = end.At, end.BytesIn, end.BytesOut, end.Reason
		checkRecord(t, got, *want)

		list, err := s.Sessions(ctx, broker.SessionFilter{})
		if err != nil {
			t.Fatal(err)
		}
		if len(list) != 1 {
			t.Fatalf("Sessions returned %d records, want 1", len(list))
		}
		checkRecord(t, list[0], *want)
	})
}

// checkRecord compares records, times with Equal, and checks that the
// store returns them in UTC.
func checkRecord(t *testing.T, got, want broker.SessionRecord) {
	t.Helper()
	if !got.StartedAt.Equal(want.StartedAt) {
		t.Errorf("StartedAt = %v, want %v", got.StartedAt, want.StartedAt)
	}
	if !got.EndedAt.Equal(want.EndedAt) {
		t.Errorf("EndedAt = %v, want %v", got.EndedAt, want.EndedAt)
	}
	for name, tm := range map[string]time.Time{"StartedAt": got.StartedAt, "EndedAt": got.EndedAt} {
		if !tm.IsZero() && tm.Location() != time.UTC {
			t.Errorf("%s is in %v, want UTC", name, tm.Location())
		}
	}
	got.StartedAt, want.StartedAt = time.Time{}, time.Time{}
	got.EndedAt, want.EndedAt = time.Time{}, time.Time{}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("record differs:\n got %+v\nwant %+v", got, want)
	}
}

func TestNotFound(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e env) {
		ctx := context.Background()
		s := e.open(t)
		if err := s.StartSession(ctx, record("s1", "aiko", "db-jp-01", e.base)); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Session(ctx, "nope"); !errors.Is(err, broker.ErrNotFound) {
			t.Errorf("Session(unknown) err = %v, want ErrNotFound", err)
		}
		err := s.EndSession(ctx, "nope", broker.SessionEnd{At: e.base, Reason: "x"})
		if !errors.Is(err, broker.ErrNotFound) {
			t.Errorf("EndSession(unknown) err = %v, want ErrNotFound", err)
		}
		if err := s.SetRecordingSeal(ctx, "nope", "head", 1, true); !errors.Is(err, broker.ErrNotFound) {
			t.Errorf("SetRecordingSeal(unknown) err = %v, want ErrNotFound", err)
		}
		// The unknown ID did not touch the known session.
		got, err := s.Session(ctx, "s1")
		if err != nil {
			t.Fatal(err)
		}
		if got.Ended() || got.EndReason != "" || got.RecordingHead != "" {
			t.Errorf("s1 changed by EndSession or SetRecordingSeal of another ID: %+v", got)
		}
	})
}

func TestRecordingSeal(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e env) {
		ctx := context.Background()
		s := e.open(t)
		for _, id := range []string{"s1", "s2"} {
			if err := s.StartSession(ctx, record(id, "aiko", "db-jp-01", e.base)); err != nil {
				t.Fatal(err)
			}
		}
		for _, seal := range []struct {
			head     string
			chunks   int
			complete bool
		}{{"sha256:aa", 3, false}, {"sha256:bb", 1 << 20, true}} {
			if err := s.SetRecordingSeal(ctx, "s1", seal.head, seal.chunks, seal.complete); err != nil {
				t.Fatal(err)
			}
			got, err := s.Session(ctx, "s1")
			if err != nil {
				t.Fatal(err)
			}
			if got.RecordingHead != seal.head || got.RecordingChunks != seal.chunks || got.RecordingComplete != seal.complete {
				t.Errorf("seal read back as %q, %d, %v; want %q, %d, %v", got.RecordingHead, got.RecordingChunks, got.RecordingComplete,
					seal.head, seal.chunks, seal.complete)
			}
		}
		if other, _ := s.Session(ctx, "s2"); other.RecordingHead != "" || other.RecordingChunks != 0 || other.RecordingComplete {
			t.Errorf("s2 got the seal of s1: %+v", other)
		}
	})
}

// Another handle on the same data (the CLI beside the server, another
// node) sees what the first wrote, before and after it opened.
func TestSecondHandleSeesData(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e env) {
		ctx := context.Background()
		server := e.open(t)
		if err := server.StartSession(ctx, record("s1", "aiko", "db-jp-01", e.base)); err != nil {
			t.Fatal(err)
		}
		if err := server.Audit(ctx, broker.AuditEvent{At: e.base, Kind: "session_start", Session: "s1"}); err != nil {
			t.Fatal(err)
		}

		cli := e.open(t)
		list, err := cli.Sessions(ctx, broker.SessionFilter{})
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(ids(list), []string{"s1"}) {
			t.Fatalf("second handle sees sessions %v, want [s1]", ids(list))
		}
		events, err := cli.AuditEvents(ctx, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(events) != 1 || events[0].Kind != "session_start" || events[0].Session != "s1" {
			t.Fatalf("second handle sees audit events %+v", events)
		}

		// Writes by the server after the CLI opened are seen too.
		end := broker.SessionEnd{At: e.base.Add(time.Minute), BytesIn: 10, BytesOut: 20, Reason: "client closed"}
		if err := server.EndSession(ctx, "s1", end); err != nil {
			t.Fatal(err)
		}
		got, err := cli.Session(ctx, "s1")
		if err != nil {
			t.Fatal(err)
		}
		if !got.EndedAt.Equal(end.At) || got.BytesIn != 10 || got.BytesOut != 20 || got.EndReason != "client closed" {
			t.Fatalf("second handle sees %+v after EndSession", got)
		}

		// And the data survives closing and reopening.
		if err := server.Close(); err != nil {
			t.Fatal(err)
		}
		if err := cli.Close(); err != nil {
			t.Fatal(err)
		}
		again := e.open(t)
		if got, err := again.Session(ctx, "s1"); err != nil || !got.EndedAt.Equal(end.At) {
			t.Fatalf("after reopening: %+v, %v", got, err)
		}
	})
}

func TestSessionRequestRoundTrip(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e env) {
		ctx := context.Background()
		s := e.open(t)
		tests := []struct {
			id      string
			request int64
		}{
			{"granted", 42},
			{"no-grant", 0},
			{"large", 1<<62 + 3},
		}
		for _, tc := range tests {
			r := record(tc.id, "aiko", "db-jp-01", e.base)
			r.Request = tc.request
			if err := s.StartSession(ctx, r); err != nil {
				t.Fatal(err)
			}
		}
		for _, tc := range tests {
			got, err := s.Session(ctx, tc.id)
			if err != nil {
				t.Fatal(err)
			}
			if got.Request != tc.request {
				t.Errorf("session %s: Request = %d, want %d", tc.id, got.Request, tc.request)
			}
		}
	})
}
