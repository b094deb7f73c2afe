package notify

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Signed webhooks, by the Standard Webhooks scheme
// (https://www.standardwebhooks.com): every request carries
//
//	webhook-id:        msg_<uuid>, the same on every attempt of one event
//	webhook-timestamp: the attempt's time, Unix seconds
//	webhook-signature: v1,<base64 of HMAC-SHA256(key, id "." timestamp "." body)>
//
// with the key from a secret written whsec_<base64>, as the scheme's
// libraries (and many receivers) expect it. A receiver recomputes the
// signature over the raw body, compares in constant time and refuses a
// timestamp more than a few minutes off.

// SecretPrefix starts a webhook secret in the Standard Webhooks format.
const SecretPrefix = "whsec_"

// ParseSecret decodes a webhook secret, whsec_ and the key in base64
// (standard encoding), into the HMAC key. The key must be 24 to 64 bytes.
func ParseSecret(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	b64, ok := strings.CutPrefix(s, SecretPrefix)
	if !ok {
		return nil, errors.New("a webhook secret is whsec_ and base64, e.g. whsec_$(head -c 32 /dev/urandom | base64)")
	}
	key, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil, fmt.Errorf("the part after whsec_ is not base64: %v", err)
	}
	if len(key) < 24 || len(key) > 64 {
		return nil, fmt.Errorf("the key is %d bytes; use 24 to 64 random bytes (32 is usual)", len(key))
	}
	return key, nil
}

// Signature is the webhook-signature header's value for body sent as
// message id at time at, signed with key.
func Signature(key []byte, id string, at time.Time, body []byte) string {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + strconv.FormatInt(at.Unix(), 10) + "."))
	mac.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
}
