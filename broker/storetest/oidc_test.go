package storetest

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sekisho/sekisho/broker"
)

func oidcLogin(hash string, created time.Time) broker.OIDCLogin {
	return broker.OIDCLogin{StateHash: hash, BrowserHash: "browser-" + hash, Nonce: "nonce-" + hash, Verifier: "verifier-" + hash,
		Next: "requests", Created: created, Expires: created.Add(10 * time.Minute)}
}

// A browser session started by single sign-on keeps how it was started,
// read through another node: the provider's account, the roles granted
// and the ID token for the sign-out.
func TestConsoleSessionViaOIDC(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e env) {
		ctx := t.Context()
		node1, node2 := e.open(t), e.open(t)
		want := consoleSession("sso", "kenji", e.base)
		want.KeyFingerprint = ""
		want.Via, want.Issuer, want.Subject = broker.ViaOIDC, "https://idp.example.com/realms/ops", "f3c1-77"
		want.Roles, want.IDToken = []string{"admin", "reviewer"}, "eyJhbGciOiJSUzI1NiJ9.e30.c2ln"
		if err := node1.PutConsoleSession(ctx, want, 5, e.base); err != nil {
			t.Fatal(err)
		}
		got, err := node2.ConsoleSession(ctx, "sso")
		if err != nil || !sameSession(got, want) {
			t.Fatalf("through node 2: %+v, %v; want %+v", got, err, want)
		}
		// A session started by a link has no roles of its own.
		link := consoleSession("link", "kenji", e.base)
		if err := node1.PutConsoleSession(ctx, link, 5, e.base); err != nil {
			t.Fatal(err)
		}
		if got, err := node2.ConsoleSession(ctx, "link"); err != nil || got.Via != "" || got.Roles != nil {
			t.Errorf("a link's session through node 2: via %q, roles %q, %v; want none", got.Via, got.Roles, err)
		}
	})
}

// A sign-on put through one node is taken through another once, whole;
// taken again, on any node, or after it expired, it is not there: a
// replayed callback finds nothing.
func TestOIDCLoginTakenOnce(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e env) {
		ctx := t.Context()
		node1, node2 := e.open(t), e.open(t)
		want := oidcLogin("s1", e.base)
		if err := node1.PutOIDCLogin(ctx, want, e.base); err != nil {
			t.Fatal(err)
		}
		got, err := node2.TakeOIDCLogin(ctx, "s1", want.Expires)
		if err != nil || got.StateHash != want.StateHash || got.BrowserHash != want.BrowserHash || got.Nonce != want.Nonce ||
			got.Verifier != want.Verifier || got.Next != want.Next || !got.Created.Equal(want.Created) || !got.Expires.Equal(want.Expires) {
			t.Fatalf("take through node 2 at the last instant: %+v, %v; want %+v", got, err, want)
		}
		for i, s := range []store{node1, node2} {
			if _, err := s.TakeOIDCLogin(ctx, "s1", e.base); !errors.Is(err, broker.ErrNotFound) {
				t.Errorf("second take through node %d: %v, want ErrNotFound", i+1, err)
			}
		}
		// Expired: refused, and gone.
		if err := node1.PutOIDCLogin(ctx, oidcLogin("s2", e.base), e.base); err != nil {
			t.Fatal(err)
		}
		if _, err := node2.TakeOIDCLogin(ctx, "s2", e.base.Add(10*time.Minute+e.tick)); !errors.Is(err, broker.ErrNotFound) {
			t.Errorf("take a tick after it expired: %v, want ErrNotFound", err)
		}
		if _, err := node1.TakeOIDCLogin(ctx, "s2", e.base); !errors.Is(err, broker.ErrNotFound) {
			t.Errorf("an expired sign-on taken is still there: %v", err)
		}
		// A put drops what expired before it.
		if err := node1.PutOIDCLogin(ctx, oidcLogin("old", e.base), e.base); err != nil {
			t.Fatal(err)
		}
		later := e.base.Add(time.Hour)
		if err := node2.PutOIDCLogin(ctx, oidcLogin("new", later), later); err != nil {
			t.Fatal(err)
		}
		if _, err := node1.TakeOIDCLogin(ctx, "old", e.base); !errors.Is(err, broker.ErrNotFound) {
			t.Errorf("an expired sign-on outlived a later put: %v", err)
		}
	})
}

// Of parallel callbacks with one state on several nodes, exactly one
// gets the sign-on.
func TestOIDCLoginTakenOnceAcrossNodes(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e env) {
		ctx := t.Context()
		nodes := []store{e.open(t), e.open(t), e.open(t)}
		for round := range 10 {
			hash := fmt.Sprintf("race-%d", round)
			if err := nodes[round%3].PutOIDCLogin(ctx, oidcLogin(hash, e.base), e.base); err != nil {
				t.Fatal(err)
			}
			var won atomic.Int32
			var wg sync.WaitGroup
			for i := range 30 {
				wg.Go(func() {
					_, err := nodes[i%3].TakeOIDCLogin(ctx, hash, e.base)
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
				t.Fatalf("round %d: %d of 30 parallel callbacks with one state on 3 nodes signed in, want 1", round, n)
			}
		}
	})
}
