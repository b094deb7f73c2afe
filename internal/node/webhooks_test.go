package node

import (
	"os"
	"strings"
	"testing"

	"github.com/sekisho/sekisho/internal/hardening"
	"github.com/sekisho/sekisho/internal/node/nodetest"
)

// TestWebhookOverPlainHTTPOffLoopback: a webhook over plain http to
// another host is refused by config check, naming the host and the way
// out, never the URL (it may hold a secret); loopback, https and the
// explicit opt-in are accepted.
func TestWebhookOverPlainHTTPOffLoopback(t *testing.T) {
	t.Parallel()
	hook := func(url, extra string) func(string) string {
		return func(c string) string {
			return c + "\nnotifications:\n  webhooks:\n    - name: approvers-chat\n      url: " + url + "\n" + extra
		}
	}
	refused := []struct{ url, host string }{
		{"http://10.0.0.5/services/T0SECRET", "10.0.0.5"},
		{"http://hooks.example.com:8080/services/T0SECRET", "hooks.example.com"},
		{"http://127.0.0.1.example.net/services/T0SECRET", "127.0.0.1.example.net"},
		{"http://0.0.0.0:9000/services/T0SECRET", "0.0.0.0"},
		{"http://[2001:db8::5]/services/T0SECRET", "2001:db8::5"},
	}
	for _, c := range refused {
		path := nodetest.WriteConfig(t, hook(c.url, ""))
		text, _ := os.ReadFile(path)
		_, err := LoadConfig(path)
		nodetest.WantErr(t, err, path, lineOf(t, string(text), "- name: approvers-chat"), "webhook approvers-chat: url is plain http:// to "+c.host+", which is not this host",
			"use https://, or, where that network is trusted with it, set plain_http_off_loopback: true on the entry")
		if err != nil && strings.Contains(err.Error(), "T0SECRET") {
			t.Errorf("%s: the error quotes the URL: %v", c.url, err)
		}
	}
	accepted := []struct{ url, extra string }{
		{"http://127.0.0.1:9000/hook", ""},
		{"http://127.0.0.2/hook", ""},
		{"http://localhost:9000/hook", ""},
		{"http://[::1]:9000/hook", ""},
		{"https://hooks.example.com/services/T0SECRET", ""},
		{"http://10.0.0.5/hook", "      plain_http_off_loopback: true\n"},
	}
	for _, c := range accepted {
		if _, err := LoadConfig(nodetest.WriteConfig(t, hook(c.url, c.extra))); err != nil {
			t.Errorf("%s %s: %v", c.url, strings.TrimSpace(c.extra), err)
		}
	}
	hardening.Report(t, "29", "%d webhooks over plain http to a host off loopback (a private address, a name, a name that starts like loopback, 0.0.0.0, an IPv6 address) refused by config check, naming the host, never the URL; loopback, localhost, https and plain_http_off_loopback: true accepted (%d)", len(refused), len(accepted))
}
