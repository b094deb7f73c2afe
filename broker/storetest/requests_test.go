package storetest

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sekisho/sekisho/broker"
)

// fullRequest has every field set, times ticks apart in base's zone.
func fullRequest(e env) broker.AccessRequest {
	base, tick := e.base, e.tick
	return broker.AccessRequest{
		ID:         99, // ignored by CreateRequest
		Technician: "li", Affiliate: "ops-cn", AffiliateCountry: "CN", Target: "db-jp-01", Rule: "pii-needs-approval",
		Source: "198.51.100.9:40022", SourceCountry: "CN", Reason: "INC-4711: replica lag", Duration: 45*time.Minute + 7,
		State: broker.RequestApproved, Needed: 2,
		Approvals: []broker.RequestApproval{
			{By: "aiko", Affiliate: "ops-jp", Comment: "ok for INC-4711", At: base.Add(time.Minute + 1*tick)},
			{By: "kenji", Affiliate: "ops-jp", At: base.Add(2*time.Minute + 2*tick)},
		},
		Created:    base,
		Expires:    base.Add(15 * time.Minute),
		DecidedBy:  "kenji",
		DecidedAt:  base.Add(2*time.Minute + 3*tick),
		Note:       "second approval",
		GrantStart: base.Add(2*time.Minute + 4*tick),
		GrantEnd:   base.Add(47*time.Minute + 5*tick),
		Revised:    `rule "pii-needs-approval" now grants at most 45m0s`,
	}
}

// pending is a minimal pending request: no approvals, no optional times.
func pending(e env, tech, target string) broker.AccessRequest {
	return broker.AccessRequest{
		Technician: tech, Affiliate: "ops-" + tech, AffiliateCountry: "JP", Target: target, Rule: "r",
		Source: "192.0.2.7:50022", Reason: "maintenance", Duration: time.Hour, State: broker.RequestPending, Needed: 1,
		Created: e.base, Expires: e.base.Add(broker.DefaultPendingFor),
	}
}

// inUTC checks that a request's times are read back in UTC.
func inUTC(t *testing.T, r broker.AccessRequest) {
	t.Helper()
	for name, tm := range map[string]time.Time{"Created": r.Created, "Expires": r.Expires, "DecidedAt": r.DecidedAt,
		"GrantStart": r.GrantStart, "GrantEnd": r.GrantEnd} {
		if !tm.IsZero() && tm.Location() != time.UTC {
			t.Errorf("request %d: %s is in %v, want UTC as stored", r.ID, name, tm.Location())
		}
	}
	for i, a := range r.Approvals {
		if a.At.Location() != time.UTC {
			t.Errorf("request %d: Approvals[%d].At is in %v, want UTC as stored", r.ID, i, a.At.Location())
		}
	}
}

// checkRequest compares requests, times with Equal.
func checkRequest(t *testing.T, got, want broker.AccessRequest) {
	t.Helper()
	times := func(r *broker.AccessRequest) []*time.Time {
		return []*time.Time{&r.Created, &r.Expires, &r.DecidedAt, &r.GrantStart, &r.GrantEnd}
	}
	names := []string{"Created", "Expires", "DecidedAt", "GrantStart", "GrantEnd"}
	gt, wt := times(&got), times(&want)
	for i := range gt {
		if !gt[i].Equal(*wt[i]) {
			t.Errorf("%s = %v, want %v", names[i], *gt[i], *wt[i])
		}
		*gt[i], *wt[i] = time.Time{}, time.Time{}
	}
	// Copy the approvals so as not to change the caller's.
	got.Approvals, want.Approvals = slices.Clone(got.Approvals), slices.Clone(want.Approvals)
	if len(got.Approvals) == len(want.Approvals) {
		for i := range got.Approvals {
			if !got.Approvals[i].At.Equal(want.Approvals[i].At) {
				t.Errorf("Approvals[%d].At = %v, want %v", i, got.Approvals[i].At, want.Approvals[i].At)
			}
			got.Approvals[i].At, want.Approvals[i].At = time.Time{}, time.Time{}
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("request differs:\n got %+v\nwant %+v", got, want)
	}
}

func TestRequestRoundTrip(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e env) {
		ctx := context.Background()
		s := e.open(t)

		want := fullRequest(e)
		created, err := s.CreateRequest(ctx, want)
		if err != nil {
			t.Fatal(err)
		}
		if created.ID != 1 {
			t.Fatalf("first request has ID %d, want 1", created.ID)
		}
		want.ID = 1
		checkRequest(t, created, want)

		got, err := s.Request(ctx, 1)
		if err != nil {
			t.Fatal(err)
		}
		checkRequest(t, got, want)
		inUTC(t, got)
		list, err := s.Requests(ctx, broker.RequestFilter{})
		if err != nil {
			t.Fatal(err)
		}
		if len(list) != 1 {
			t.Fatalf("Requests returned %d requests, want 1", len(list))
		}
		checkRequest(t, list[0], want)
		inUTC(t, list[0])

		// No approvals, nil or empty, read back as nil; zero times as zero.
		for _, approvals := range [][]broker.RequestApproval{nil, {}} {
			min := pending(e, "aiko", "web-sg-01")
			min.Expires = time.Time{}
			min.Approvals = approvals
			c, err := s.CreateRequest(ctx, min)
			if err != nil {
				t.Fatal(err)
			}
			got, err := s.Request(ctx, c.ID)
			if err != nil {
				t.Fatal(err)
			}
			if got.Approvals != nil {
				t.Errorf("approvals %#v read back as %#v, want nil", approvals, got.Approvals)
			}
			for name, tm := range map[string]time.Time{"Expires": got.Expires, "DecidedAt": got.DecidedAt,
				"GrantStart": got.GrantStart, "GrantEnd": got.GrantEnd} {
				if !tm.IsZero() {
					t.Errorf("zero %s read back as %v", name, tm)
				}
			}
			min.ID, min.Approvals = c.ID, nil
			checkRequest(t, got, min)
		}
	})
}

func TestRequestIDsCountUp(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e env) {
		ctx := context.Background()
		s := e.open(t)
		for want := int64(1); want <= 3; want++ {
			r, err := s.CreateRequest(ctx, pending(e, "aiko", "db-jp-01"))
			if err != nil {
				t.Fatal(err)
			}
			if r.ID != want {
				t.Errorf("request %d got ID %d", want, r.ID)
			}
		}
		// Another handle on the data continues the count.
		other := e.open(t)
		if r, err := other.CreateRequest(ctx, pending(e, "li", "db-jp-01")); err != nil || r.ID != 4 {
			t.Errorf("CreateRequest on a second handle: ID %d, %v; want 4", r.ID, err)
		}
	})
}

func requestIDs(list []broker.AccessRequest) []int64 {
	out := []int64{}
	for _, r := range list {
		out = append(out, r.ID)
	}
	return out
}

func TestRequestsFilter(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e env) {
		ctx := context.Background()
		s := e.open(t)
		// IDs 1..6.
		for _, c := range []struct {
			tech, target string
			state        broker.RequestState
		}{
			{"aiko", "db-jp-01", broker.RequestPending},
			{"li", "db-jp-01", broker.RequestApproved},
			{"aiko", "web-sg-01", broker.RequestDenied},
			{"li", "web-sg-01", broker.RequestPending},
			{"aiko", "db-jp-01", broker.RequestApproved},
			{"li", "db-jp-01", broker.RequestExpired},
		} {
			r := pending(e, c.tech, c.target)
			r.State = c.state
			// Created times run backwards: the order is by ID, not by time.
			r.Created = e.base.Add(-time.Duration(len(c.tech)) * time.Minute)
			if _, err := s.CreateRequest(ctx, r); err != nil {
				t.Fatal(err)
			}
		}
		tests := []struct {
			name string
			f    broker.RequestFilter
			want []int64
		}{
			{"all", broker.RequestFilter{}, []int64{6, 5, 4, 3, 2, 1}},
			{"technician", broker.RequestFilter{Technician: "li"}, []int64{6, 4, 2}},
			{"target", broker.RequestFilter{Target: "web-sg-01"}, []int64{4, 3}},
			{"technician and target", broker.RequestFilter{Technician: "aiko", Target: "db-jp-01"}, []int64{5, 1}},
			{"one state", broker.RequestFilter{States: []broker.RequestState{broker.RequestPending}}, []int64{4, 1}},
			{"states", broker.RequestFilter{States: []broker.RequestState{broker.RequestApproved, broker.RequestExpired}}, []int64{6, 5, 2}},
			{"states and technician", broker.RequestFilter{Technician: "li", States: []broker.RequestState{broker.RequestPending, broker.RequestApproved}}, []int64{4, 2}},
			{"empty states", broker.RequestFilter{States: []broker.RequestState{}}, []int64{6, 5, 4, 3, 2, 1}},
			{"no match", broker.RequestFilter{Technician: "nobody"}, []int64{}},
			{"state no match", broker.RequestFilter{States: []broker.RequestState{broker.RequestRevoked}}, []int64{}},
			{"limit", broker.RequestFilter{Limit: 2}, []int64{6, 5}},
			{"limit with filter", broker.RequestFilter{Target: "db-jp-01", Limit: 3}, []int64{6, 5, 2}},
			{"limit over count", broker.RequestFilter{Technician: "aiko", Limit: 10}, []int64{5, 3, 1}},
			{"targets", broker.RequestFilter{Targets: []string{"web-sg-01", "db-xx-99"}}, []int64{4, 3}},
			{"targets and limit", broker.RequestFilter{Targets: []string{"db-jp-01"}, Limit: 2}, []int64{6, 5}},
			{"no target", broker.RequestFilter{Targets: []string{}}, []int64{}},
			{"a viewer is the broker's", broker.RequestFilter{Viewer: "nobody", Limit: 1}, []int64{6}},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				got, err := s.Requests(ctx, tc.f)
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(requestIDs(got), tc.want) {
					t.Errorf("Requests(%+v) = %v, want %v", tc.f, requestIDs(got), tc.want)
				}
			})
		}
	})
}

func TestRequestNotFound(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e env) {
		ctx := context.Background()
		s := e.open(t)
		if _, err := s.CreateRequest(ctx, pending(e, "aiko", "db-jp-01")); err != nil {
			t.Fatal(err)
		}
		_, err := s.Request(ctx, 42)
		if !errors.Is(err, broker.ErrNotFound) {
			t.Errorf("Request(42) err = %v, want ErrNotFound", err)
		}
		if err != nil && !strings.Contains(err.Error(), "access request 42") {
			t.Errorf("Request(42) err = %q, want it to name access request 42", err)
		}
		called := false
		_, err = s.UpdateRequest(ctx, 42, func(*broker.AccessRequest) error { called = true; return nil })
		if !errors.Is(err, broker.ErrNotFound) {
			t.Errorf("UpdateRequest(42) err = %v, want ErrNotFound", err)
		}
		if called {
			t.Error("UpdateRequest(42) called fn")
		}
		// The failed update left the store writable.
		if _, err := s.UpdateRequest(ctx, 1, func(r *broker.AccessRequest) error { r.Note = "x"; return nil }); err != nil {
			t.Errorf("UpdateRequest(1) after a missing one: %v", err)
		}
	})
}

func TestUpdateRequest(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e env) {
		ctx := context.Background()
		s := e.open(t)
		for range 2 {
			if _, err := s.CreateRequest(ctx, pending(e, "li", "db-jp-01")); err != nil {
				t.Fatal(err)
			}
		}
		full := fullRequest(e)
		got, err := s.UpdateRequest(ctx, 1, func(r *broker.AccessRequest) error {
			if r.ID != 1 || r.Technician != "li" || r.State != broker.RequestPending {
				t.Errorf("fn got %+v", r)
			}
			full.Created = r.Created
			*r = full
			r.ID = 2 // may not change the ID
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		want := full
		want.ID = 1
		checkRequest(t, got, want)
		inUTC(t, got)
		stored, err := s.Request(ctx, 1)
		if err != nil {
			t.Fatal(err)
		}
		checkRequest(t, stored, want)
		inUTC(t, stored)
		// Request 2 is untouched.
		other, err := s.Request(ctx, 2)
		if err != nil {
			t.Fatal(err)
		}
		w2 := pending(e, "li", "db-jp-01")
		w2.ID = 2
		checkRequest(t, other, w2)
		if list, _ := s.Requests(ctx, broker.RequestFilter{}); !reflect.DeepEqual(requestIDs(list), []int64{2, 1}) {
			t.Errorf("requests after the update: %v", requestIDs(list))
		}

		// Removing the approvals stores none.
		got, err = s.UpdateRequest(ctx, 1, func(r *broker.AccessRequest) error { r.Approvals = r.Approvals[:0]; return nil })
		if err != nil {
			t.Fatal(err)
		}
		if got.Approvals != nil {
			t.Errorf("emptied approvals read back as %#v", got.Approvals)
		}
	})
}

type refusal struct{ why string }

func (e *refusal) Error() string { return "refused: " + e.why }

func TestUpdateRequestFnErrorAborts(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e env) {
		ctx := context.Background()
		s := e.open(t)
		before, err := s.CreateRequest(ctx, pending(e, "aiko", "db-jp-01"))
		if err != nil {
			t.Fatal(err)
		}
		mutate := func(r *broker.AccessRequest) {
			r.State = broker.RequestApproved
			r.Approvals = append(r.Approvals, broker.RequestApproval{By: "li", At: e.base})
			r.Note = "should not be stored"
			r.GrantEnd = e.base.Add(time.Hour)
		}
		// More failures than a pool has connections (SQLite's 4,
		// PostgreSQL's at least 4 and one per CPU): a failed update that
		// left its transaction open would hold the write lock, or the
		// request's row.
		for i := range 10 + runtime.NumCPU() {
			want := &refusal{fmt.Sprint(i)}
			got, err := s.UpdateRequest(ctx, before.ID, func(r *broker.AccessRequest) error {
				mutate(r)
				return want
			})
			if err != want {
				t.Fatalf("UpdateRequest err = %v, want fn's error as is", err)
			}
			var ref *refusal
			if !errors.As(err, &ref) {
				t.Fatalf("errors.As(%v, *refusal) is false", err)
			}
			if got.ID != 0 || got.State != "" {
				t.Errorf("failed UpdateRequest returned %+v", got)
			}
		}
		// A panic in fn rolls back too.
		func() {
			defer func() {
				if p := recover(); p != "boom" {
					t.Errorf("recovered %v, want the panic of fn", p)
				}
			}()
			s.UpdateRequest(ctx, before.ID, func(r *broker.AccessRequest) error { mutate(r); panic("boom") })
		}()

		stored, err := s.Request(ctx, before.ID)
		if err != nil {
			t.Fatal(err)
		}
		checkRequest(t, stored, before)

		// Another handle can still write, promptly (not after a lock
		// timeout).
		other := e.open(t)
		start := time.Now()
		if _, err := other.UpdateRequest(ctx, before.ID, func(r *broker.AccessRequest) error { r.Note = "ok"; return nil }); err != nil {
			t.Fatalf("update from a second handle after failed updates: %v", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("update from a second handle took %v: the write lock was held", d)
		}
		if got, _ := s.Request(ctx, before.ID); got.Note != "ok" {
			t.Errorf("note after the update = %q", got.Note)
		}
	})
}

// Concurrent read-modify-write updates, from two handles on the same data
// (the CLI and the server, or two nodes), lose none.
func TestUpdateRequestConcurrent(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e env) {
		ctx := context.Background()
		s := e.open(t)
		other := e.open(t)
		r, err := s.CreateRequest(ctx, pending(e, "li", "db-jp-01"))
		if err != nil {
			t.Fatal(err)
		}
		// A decoy request that must not be affected.
		if _, err := s.CreateRequest(ctx, pending(e, "aiko", "db-jp-01")); err != nil {
			t.Fatal(err)
		}

		const n = 24
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for i := range n {
			st := s
			if i%2 == 1 {
				st = other
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := st.UpdateRequest(ctx, r.ID, func(r *broker.AccessRequest) error {
					// Widen the window between read and write.
					time.Sleep(time.Millisecond)
					r.Approvals = append(r.Approvals, broker.RequestApproval{By: fmt.Sprintf("approver-%02d", i), At: e.base.Add(time.Duration(i) * e.tick)})
					return nil
				})
				errs <- err
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Error(err)
			}
		}

		var want []string
		for i := range n {
			want = append(want, fmt.Sprintf("approver-%02d", i))
		}
		for _, st := range []store{s, other} {
			got, err := st.Request(ctx, r.ID)
			if err != nil {
				t.Fatal(err)
			}
			var by []string
			for _, a := range got.Approvals {
				by = append(by, a.By)
			}
			slices.Sort(by)
			if !reflect.DeepEqual(by, want) {
				t.Errorf("after %d concurrent updates, %d approvals: %v", n, len(by), by)
			}
		}
		if decoy, _ := s.Request(ctx, 2); decoy.Approvals != nil {
			t.Errorf("decoy request got approvals %v", decoy.Approvals)
		}
	})
}
