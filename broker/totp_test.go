package broker_test

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"

	"github.com/sekisho/sekisho/broker"
	"github.com/sekisho/sekisho/internal/hardening"
)

// Wrong codes are counted before they are compared, in the same step as
// the check of the limit, so parallel attempts cannot all pass it; the
// right code, and the right code again, count nothing. That the count
// holds over several nodes is tested with the store (broker/storetest).
func TestThrottleHoldsUnderParallelAttempts(t *testing.T) {
	b, _, _ := sealingBroker(t)
	if _, err := b.EnrollTOTP(t.Context(), "li"); err != nil {
		t.Fatal(err)
	}
	var compared, throttled atomic.Int32
	var wg sync.WaitGroup
	for range 300 {
		wg.Go(func() {
			// Never a code: always wrong.
			switch err := b.VerifyTOTP(t.Context(), "li", "192.0.2.1:4000", "guess!"); {
			case errors.Is(err, broker.ErrWrongCode):
				compared.Add(1)
			case errors.Is(err, broker.ErrThrottled):
				throttled.Add(1)
			default:
				t.Errorf("a wrong code: %v", err)
			}
		})
	}
	wg.Wait()
	if n := compared.Load(); n != 5 {
		t.Errorf("%d of 300 parallel wrong codes were compared, want 5", n)
	}

	// The right code once, then again: neither is a guess.
	uri, err := b.EnrollTOTP(t.Context(), "aiko")
	if err != nil {
		t.Fatal(err)
	}
	code, _ := totp.GenerateCode(secretOf(t, uri), time.Now())
	for i := range 10 {
		err := b.VerifyTOTP(t.Context(), "aiko", "192.0.2.1:4000", code)
		if errors.Is(err, broker.ErrThrottled) || i == 0 && err != nil {
			t.Fatalf("right code %d: %v", i+1, err)
		}
	}
	hardening.Report(t, "6", "300 parallel second-factor attempts for one technician and source: %d checked (the failure limit), %d refused; the right code 10 times in a row never throttled", compared.Load(), throttled.Load())
	hardening.Report(t, "24", "300 parallel wrong-code attempts from one source: only %d reach the code check, %d refused by the throttle", compared.Load(), throttled.Load())
}
