package storetest

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sekisho/sekisho/broker"
)

func consoleLink(hash, tech string, created time.Time) broker.ConsoleLink {
	return broker.ConsoleLink{TokenHash: hash, Technician: tech, KeyFingerprint: "SHA256:" + tech,
		Created: created, Expires: created.Add(time.Minute)}
}

func consoleSession(hash, tech string, created time.Time) broker.ConsoleSession {
	return broker.ConsoleSession{TokenHash: hash, Technician: tech, KeyFingerprint: "SHA256:" + tech, CSRF: "csrf-" + hash,
		Created: created, Seen: created, IdleTimeout: 30 * time.Minute, Expires: created.Add(8 * time.Hour)}
}

// A link put through one node is read through another, and used once
// only, whichever node uses it; an expired one is not.
func TestConsoleLinks(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e env) {
		ctx := t.Context()
		node1, node2 := e.open(t), e.open(t)
		now := e.base
		want := consoleLink("h1", "rin", now)
		if err := node1.PutConsoleLink(ctx, want, 3, now); err != nil {
			t.Fatal(err)
		}
		got, err := node2.PeekConsoleLink(ctx, "h1", now.Add(time.Minute))
		if err != nil || !sameLink(got, want) {
			t.Fatalf("peek through node 2 at the last instant: %+v, %v; want %+v", got, err, want)
		}
		if _, err := node2.PeekConsoleLink(ctx, "h1", now.Add(time.Minute+e.tick)); !errors.Is(err, broker.ErrNotFound) {
			t.Errorf("peek a tick after it expired: %v, want ErrNotFound", err)
		}
		// Peeking does not use it up.
		if got, err := node2.TakeConsoleLink(ctx, "h1", now); err != nil || !sameLink(got, want) {
			t.Fatalf("take through node 2: %+v, %v", got, err)
		}
		for _, s := range []store{node1, node2} {
			if _, err := s.TakeConsoleLink(ctx, "h1", now); !errors.Is(err, broker.ErrNotFound) {
				t.Errorf("second take: %v, want ErrNotFound", err)
			}
		}
		// An expired link signs nobody in, and is gone.
		if err := node1.PutConsoleLink(ctx, consoleLink("h2", "rin", now), 3, now); err != nil {
			t.Fatal(err)
		}
		if _, err := node2.TakeConsoleLink(ctx, "h2", now.Add(time.Minute+e.tick)); !errors.Is(err, broker.ErrNotFound) {
			t.Errorf("take of an expired link: %v, want ErrNotFound", err)
		}
		if _, err := node1.PeekConsoleLink(ctx, "h2", now); !errors.Is(err, broker.ErrNotFound) {
			t.Errorf("an expired link taken is still there: %v", err)
		}
	})
}

func sameLink(a, b broker.ConsoleLink) bool {
	return a.TokenHash == b.TokenHash && a.Technician == b.Technician && a.KeyFingerprint == b.KeyFingerprint &&
		a.Created.Equal(b.Created) && a.Expires.Equal(b.Expires)
}

// Of parallel uses of one link on several nodes, exactly one signs in.
func TestConsoleLinkUsedOnceAcrossNodes(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e env) {
		ctx := t.Context()
		nodes := []store{e.open(t), e.open(t), e.open(t)}
		for round := range 10 {
			hash := fmt.Sprintf("race-%d", round)
			if err := nodes[round%3].PutConsoleLink(ctx, consoleLink(hash, "kenji", e.base), 3, e.base); err != nil {
				t.Fatal(err)
			}
			var won atomic.Int32
			var wg sync.WaitGroup
			for i := range 30 {
				wg.Go(func() {
					_, err := nodes[i%3].TakeConsoleLink(ctx, hash, e.base)
					switch {
					case err == nil:
						won.Add(1)
					case !errors.Is(err, broker.ErrNotFound):
						t.Error(err)
					}
				})
			}
			wg.Wait()
			if n := won.Load(); n != 1 {
				t.Fatalf("round %d: %d of 30 parallel uses of one link on 3 nodes signed in, want 1", round, n)
			}
		}
	})
}

// A technician has at most the cap of unused links and of browser
// sessions: the oldest go, and the cap holds when nodes put in parallel.
// What is expired goes first, and counts for nothing.
func TestConsoleCaps(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e env) {
		ctx := t.Context()
		node1, node2 := e.open(t), e.open(t)
		now := e.base
		// Every link at the same instant: order is that of storing.
		for i := range 4 {
			if err := []store{node1, node2}[i%2].PutConsoleLink(ctx, consoleLink(fmt.Sprint("l", i), "rin", now), 3, now); err != nil {
				t.Fatal(err)
			}
		}
		if err := node1.PutConsoleLink(ctx, consoleLink("other", "sara", now), 3, now); err != nil {
			t.Fatal(err)
		}
		for i, want := range []bool{false, true, true, true} {
			_, err := node2.PeekConsoleLink(ctx, fmt.Sprint("l", i), now)
			if (err == nil) != want {
				t.Errorf("link %d of 4: %v, want kept %v", i, err, want)
			}
		}
		if _, err := node2.PeekConsoleLink(ctx, "other", now); err != nil {
			t.Errorf("another technician's link went: %v", err)
		}

		for i := range 6 {
			if err := []store{node1, node2}[i%2].PutConsoleSession(ctx, consoleSession(fmt.Sprint("s", i), "sara", now), 5, now); err != nil {
				t.Fatal(err)
			}
		}
		for i, want := range []bool{false, true, true, true, true, true} {
			_, err := node1.ConsoleSession(ctx, fmt.Sprint("s", i))
			if (err == nil) != want {
				t.Errorf("session %d of 6: %v, want kept %v", i, err, want)
			}
		}
		// Idle sessions go at the next sign-in, and leave room.
		later := now.Add(31 * time.Minute)
		if err := node2.PutConsoleSession(ctx, consoleSession("fresh", "sara", later), 5, later); err != nil {
			t.Fatal(err)
		}
		if _, err := node1.ConsoleSession(ctx, "s5"); !errors.Is(err, broker.ErrNotFound) {
			t.Errorf("an idle session is kept after the next sign-in: %v", err)
		}

		// In parallel on two nodes, 20 sign-ins leave 5.
		var wg sync.WaitGroup
		for i := range 20 {
			wg.Go(func() {
				s := consoleSession(fmt.Sprint("p", i), "mika", now)
				if err := []store{node1, node2}[i%2].PutConsoleSession(ctx, s, 5, now); err != nil {
					t.Error(err)
				}
				l := consoleLink(fmt.Sprint("pl", i), "mika", now)
				if err := []store{node1, node2}[i%2].PutConsoleLink(ctx, l, 3, now); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		sessions, links := 0, 0
		for i := range 20 {
			if _, err := node1.ConsoleSession(ctx, fmt.Sprint("p", i)); err == nil {
				sessions++
			}
			if _, err := node1.PeekConsoleLink(ctx, fmt.Sprint("pl", i), now); err == nil {
				links++
			}
		}
		if sessions != 5 || links != 3 {
			t.Errorf("20 parallel sign-ins and links on 2 nodes left %d sessions and %d links, want 5 and 3", sessions, links)
		}
	})
}

// A browser session put through one node is read, touched and signed out
// through another.
func TestConsoleSessionAcrossNodes(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e env) {
		ctx := t.Context()
		node1, node2 := e.open(t), e.open(t)
		now := e.base
		want := consoleSession("b1", "rin", now)
		if err := node1.PutConsoleSession(ctx, want, 5, now); err != nil {
			t.Fatal(err)
		}
		got, err := node2.ConsoleSession(ctx, "b1")
		if err != nil || !sameSession(got, want) {
			t.Fatalf("read through node 2: %+v, %v; want %+v", got, err, want)
		}
		if !got.InForce(now.Add(30*time.Minute)) || got.InForce(now.Add(30*time.Minute+e.tick)) {
			t.Errorf("idle end: in force at 30 minutes %v, a tick later %v; want true, false",
				got.InForce(now.Add(30*time.Minute)), got.InForce(now.Add(30*time.Minute+e.tick)))
		}
		// Touched through node 2, node 1 sees the new idle end.
		seen := now.Add(20*time.Minute + e.tick)
		if err := node2.TouchConsoleSession(ctx, "b1", seen); err != nil {
			t.Fatal(err)
		}
		// A touch from a node whose clock is behind does not move it back.
		if err := node1.TouchConsoleSession(ctx, "b1", now.Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
		got, err = node1.ConsoleSession(ctx, "b1")
		want.Seen = seen
		if err != nil || !sameSession(got, want) {
			t.Fatalf("after the touches: %+v, %v; want %+v", got, err, want)
		}
		if !got.InForce(now.Add(45 * time.Minute)) {
			t.Error("not in force 25 minutes after the touch")
		}
		if err := node2.TouchConsoleSession(ctx, "gone", seen); err != nil {
			t.Errorf("touch of a session that is gone: %v", err)
		}
		// Signed out through node 2: gone on node 1.
		if err := node2.DeleteConsoleSession(ctx, "b1"); err != nil {
			t.Fatal(err)
		}
		if _, err := node1.ConsoleSession(ctx, "b1"); !errors.Is(err, broker.ErrNotFound) {
			t.Errorf("after sign-out through node 2, node 1 reads %v, want ErrNotFound", err)
		}
		if err := node1.DeleteConsoleSession(ctx, "b1"); err != nil {
			t.Errorf("a second sign-out: %v", err)
		}
	})
}

func sameSession(a, b broker.ConsoleSession) bool {
	return a.TokenHash == b.TokenHash && a.Technician == b.Technician && a.KeyFingerprint == b.KeyFingerprint &&
		a.CSRF == b.CSRF && a.Created.Equal(b.Created) && a.Seen.Equal(b.Seen) && a.IdleTimeout == b.IdleTimeout &&
		a.Expires.Equal(b.Expires) && a.Via == b.Via && a.Issuer == b.Issuer && a.Subject == b.Subject &&
		slices.Equal(a.Roles, b.Roles) && a.IDToken == b.IDToken
}
