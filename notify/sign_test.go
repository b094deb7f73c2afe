package notify

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sekisho/sekisho/broker"
)

// The secret of the Standard Webhooks specification's example, whose
// signature the spec gives for a known message.
const specSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

func TestSignatureMatchesTheSpecExample(t *testing.T) {
	key, err := ParseSecret(specSecret)
	if err != nil {
		t.Fatal(err)
	}
	body := []byte(`{"test": 2432232314}`)
	got := Signature(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", time.Unix(1614265330, 0), body)
	if want := "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="; got != want {
		t.Errorf("Signature = %s, want the specification's %s", got, want)
	}
}

func TestParseSecret(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{specSecret + "\n", ""},
		{"MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "a webhook secret is whsec_ and base64"},
		{"whsec_not base64!", "is not base64"},
		{"whsec_" + base64.StdEncoding.EncodeToString([]byte("short")), "the key is 5 bytes"},
	} {
		_, err := ParseSecret(tc.in)
		if (tc.want == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseSecret(%q) = %v, want %q", tc.in, err, tc.want)
		}
	}
}

// A receiver checks a signed webhook as the scheme says, here computed
// independently of Signature: the signature over id.timestamp.body, a
// timestamp near now, and the same webhook-id on a retry.
func TestSignedWebhooksVerifyAndKeepTheirIDOnRetry(t *testing.T) {
	t.Parallel()
	key, _ := ParseSecret(specSecret)
	r := newReceiver(t, func(n int64) int {
		if n == 1 {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})
	n, _ := start(t, []Webhook{{Name: "siem", URL: r.URL, Backoff: 10 * time.Millisecond, Secret: key}}, Options{})
	n.Notify(event(broker.EventRequestCreated, 7))
	first, second := r.next(t), r.next(t)
	for i, h := range []hit{first, second} {
		id, ts := h.header.Get("webhook-id"), h.header.Get("webhook-timestamp")
		sec, err := strconv.ParseInt(ts, 10, 64)
		if !strings.HasPrefix(id, "msg_") || err != nil || time.Since(time.Unix(sec, 0)).Abs() > time.Minute {
			t.Fatalf("attempt %d: webhook-id %q, webhook-timestamp %q", i+1, id, ts)
		}
		mac := hmac.New(sha256.New, key)
		mac.Write([]byte(id + "." + ts + "." + string(h.body)))
		want := "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
		if got := h.header.Get("webhook-signature"); got != want {
			t.Errorf("attempt %d: webhook-signature %q, want %q", i+1, got, want)
		}
	}
	if first.header.Get("webhook-id") != second.header.Get("webhook-id") {
		t.Errorf("a retry has another webhook-id: %q, then %q", first.header.Get("webhook-id"), second.header.Get("webhook-id"))
	}
	// Unsigned webhooks carry none of the headers.
	u := newReceiver(t, always(http.StatusOK))
	n2, _ := start(t, []Webhook{{Name: "plain", URL: u.URL}}, Options{})
	n2.Notify(event(broker.EventRequestCreated, 8))
	if h := u.next(t); h.header.Get("webhook-signature") != "" || h.header.Get("webhook-id") != "" {
		t.Errorf("an unsigned webhook carried %v", h.header)
	}
}
