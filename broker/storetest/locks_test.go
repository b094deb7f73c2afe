package storetest

import (
	"context"
	"errors"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/sekisho/sekisho/broker"
)

func TestLocksExpireAndAreRemoved(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e env) {
		ctx := context.Background()
		s := e.open(t)
		now := e.base
		forever, err := s.AddLock(ctx, broker.Lock{Kind: broker.LockAffiliate, Name: "ops-cn", Reason: "incident", By: "op", Created: now})
		if err != nil {
			t.Fatal(err)
		}
		hour, err := s.AddLock(ctx, broker.Lock{Kind: broker.LockTarget, Name: "db", Reason: "maintenance", By: "op", Created: now, Expires: now.Add(time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		if forever.ID == 0 || hour.ID == forever.ID {
			t.Fatalf("lock IDs %d and %d", forever.ID, hour.ID)
		}
		locks, err := s.Locks(ctx, now)
		if err != nil {
			t.Fatal(err)
		}
		if len(locks) != 2 {
			t.Fatalf("Locks = %+v, want 2", locks)
		}
		for i, want := range []broker.Lock{forever, hour} {
			got := locks[i]
			if !got.Created.Equal(want.Created) || !got.Expires.Equal(want.Expires) {
				t.Errorf("lock %d times: %v, %v; want %v, %v", want.ID, got.Created, got.Expires, want.Created, want.Expires)
			}
			got.Created, got.Expires, want.Created, want.Expires = time.Time{}, time.Time{}, time.Time{}, time.Time{}
			if got != want {
				t.Errorf("lock read back as %+v, want %+v", got, want)
			}
		}
		lockIDs := func(at time.Time) []int64 {
			t.Helper()
			locks, err := s.Locks(ctx, at)
			if err != nil {
				t.Fatal(err)
			}
			var out []int64
			for _, l := range locks {
				out = append(out, l.ID)
			}
			return out
		}
		if got := lockIDs(now.Add(time.Hour - e.tick)); !reflect.DeepEqual(got, []int64{forever.ID, hour.ID}) {
			t.Errorf("locks a tick before the expiry: %v", got)
		}
		if got := lockIDs(now.Add(time.Hour)); !reflect.DeepEqual(got, []int64{forever.ID}) {
			t.Errorf("locks at the expiry: %v", got)
		}
		if got := lockIDs(now.Add(2 * time.Hour)); !reflect.DeepEqual(got, []int64{forever.ID}) {
			t.Errorf("locks after the expiry: %v", got)
		}
		if err := s.RemoveLock(ctx, forever.ID); err != nil {
			t.Fatal(err)
		}
		if err := s.RemoveLock(ctx, forever.ID); !errors.Is(err, broker.ErrNotFound) {
			t.Errorf("removing twice: %v", err)
		}
		if err := s.RemoveLock(ctx, 9999); !errors.Is(err, broker.ErrNotFound) {
			t.Errorf("removing a lock that never was: %v", err)
		}
		if got := lockIDs(now); !reflect.DeepEqual(got, []int64{hour.ID}) {
			t.Errorf("locks after the removal: %v", got)
		}
	})
}

func TestTOTP(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e env) {
		ctx := context.Background()
		s := e.open(t)
		if _, err := s.TOTP(ctx, "aiko"); !errors.Is(err, broker.ErrNotFound) {
			t.Errorf("TOTP of one not enrolled: %v, want ErrNotFound", err)
		}
		if ok, err := s.ClaimTOTPStep(ctx, "aiko", 5); ok || err != nil {
			t.Errorf("claim of one not enrolled: %v, %v; want false", ok, err)
		}
		if err := s.SetTOTP(ctx, "aiko", "vault:v1:a"); err != nil {
			t.Fatal(err)
		}
		if err := s.SetTOTP(ctx, "li", "vault:v1:l"); err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			step int64
			want bool
		}{{1000, true}, {1000, false}, {999, false}, {1001, true}} {
			if ok, err := s.ClaimTOTPStep(ctx, "aiko", c.step); ok != c.want || err != nil {
				t.Errorf("claim step %d: %v, %v; want %v", c.step, ok, err, c.want)
			}
		}
		if st, err := s.TOTP(ctx, "aiko"); err != nil || st.Secret != "vault:v1:a" || st.LastStep != 1001 {
			t.Errorf("TOTP(aiko) = %+v, %v", st, err)
		}
		if st, err := s.TOTP(ctx, "li"); err != nil || st.Secret != "vault:v1:l" || st.LastStep != 0 {
			t.Errorf("TOTP(li) = %+v, %v; a claim of aiko's changed it", st, err)
		}
		// Enrolling again replaces the secret and forgets the codes used.
		if err := s.SetTOTP(ctx, "aiko", "vault:v1:b"); err != nil {
			t.Fatal(err)
		}
		if st, err := s.TOTP(ctx, "aiko"); err != nil || st.Secret != "vault:v1:b" || st.LastStep != 0 {
			t.Errorf("TOTP(aiko) after enrolling again = %+v, %v", st, err)
		}
		if ok, err := s.ClaimTOTPStep(ctx, "aiko", 1000); !ok || err != nil {
			t.Errorf("claim of a step used with the old secret: %v, %v; want true", ok, err)
		}
		all, err := s.TOTPSecrets(ctx)
		if want := map[string]string{"aiko": "vault:v1:b", "li": "vault:v1:l"}; err != nil || !reflect.DeepEqual(all, want) {
			t.Errorf("TOTPSecrets = %v, %v; want %v", all, err, want)
		}
	})
}

// A code is used once: of claims of one step at once, from two handles
// (two nodes), one wins.
func TestClaimTOTPStepConcurrent(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e env) {
		ctx := context.Background()
		s, other := e.open(t), e.open(t)
		if err := s.SetTOTP(ctx, "aiko", "vault:v1:a"); err != nil {
			t.Fatal(err)
		}
		const n = 16
		var wg sync.WaitGroup
		won := make(chan bool, n)
		for i := range n {
			st := s
			if i%2 == 1 {
				st = other
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				ok, err := st.ClaimTOTPStep(ctx, "aiko", 1000)
				if err != nil {
					t.Error(err)
				}
				won <- ok
			}()
		}
		wg.Wait()
		close(won)
		wins := 0
		for ok := range won {
			if ok {
				wins++
			}
		}
		if wins != 1 {
			t.Errorf("%d of %d claims of one step won, want 1", wins, n)
		}
	})
}

// A secret is replaced only while it is the one the caller read, and the
// step of the last code used stays.
func TestReplaceTOTPSecret(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e env) {
		ctx := context.Background()
		s := e.open(t)
		if err := s.SetTOTP(ctx, "aiko", "PLAIN"); err != nil {
			t.Fatal(err)
		}
		if ok, err := s.ClaimTOTPStep(ctx, "aiko", 1000); !ok || err != nil {
			t.Fatalf("claim step 1000: %v, %v", ok, err)
		}
		if ok, err := s.ReplaceTOTPSecret(ctx, "aiko", "OTHER", "vault:v1:x"); ok || err != nil {
			t.Fatalf("replacing a secret that is not stored: %v, %v; want false", ok, err)
		}
		if ok, err := s.ReplaceTOTPSecret(ctx, "li", "PLAIN", "vault:v1:x"); ok || err != nil {
			t.Fatalf("replacing the secret of one not enrolled: %v, %v; want false", ok, err)
		}
		if ok, err := s.ReplaceTOTPSecret(ctx, "aiko", "PLAIN", "vault:v1:x"); !ok || err != nil {
			t.Fatalf("replacing the stored secret: %v, %v; want true", ok, err)
		}
		all, err := s.TOTPSecrets(ctx)
		if err != nil || len(all) != 1 || all["aiko"] != "vault:v1:x" {
			t.Fatalf("TOTPSecrets = %v, %v", all, err)
		}
		if st, _ := s.TOTP(ctx, "aiko"); st.LastStep != 1000 {
			t.Errorf("last step %d after the replacement, want 1000", st.LastStep)
		}
	})
}

func TestHolds(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e env) {
		ctx := context.Background()
		s := e.open(t)
		if got, err := s.Holds(ctx); err != nil || len(got) != 0 {
			t.Fatalf("Holds of a new store = %v, %v", got, err)
		}
		// Held in reverse order of their times: listed oldest first.
		later := broker.LegalHold{Session: "s1", Reason: "case 7", By: "legal", At: e.base.Add(time.Hour + e.tick)}
		earlier := broker.LegalHold{Session: "s2", Reason: "case 8", By: "legal", At: e.base}
		for _, h := range []broker.LegalHold{later, earlier} {
			if err := s.SetHold(ctx, h); err != nil {
				t.Fatal(err)
			}
		}
		check := func(want ...broker.LegalHold) {
			t.Helper()
			got, err := s.Holds(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(want) {
				t.Fatalf("Holds = %+v, want %+v", got, want)
			}
			for i := range got {
				if !got[i].At.Equal(want[i].At) || got[i].At.Location() != time.UTC {
					t.Errorf("hold %s at %v, want %v in UTC", got[i].Session, got[i].At, want[i].At)
				}
				g, w := got[i], want[i]
				g.At, w.At = time.Time{}, time.Time{}
				if g != w {
					t.Errorf("hold %d = %+v, want %+v", i, g, w)
				}
			}
		}
		check(earlier, later)
		// A second hold of a recording replaces the first.
		again := broker.LegalHold{Session: "s1", Reason: "case 9", By: "dpo", At: e.base.Add(-time.Minute)}
		if err := s.SetHold(ctx, again); err != nil {
			t.Fatal(err)
		}
		check(again, earlier)
		if err := s.RemoveHold(ctx, "s1"); err != nil {
			t.Fatal(err)
		}
		if err := s.RemoveHold(ctx, "s1"); !errors.Is(err, broker.ErrNotFound) {
			t.Errorf("removing a hold twice: %v, want ErrNotFound", err)
		}
		check(earlier)
	})
}
