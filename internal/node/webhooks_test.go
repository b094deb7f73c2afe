package node

import (
	"os"
	"path/filepath"
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

// TestWebhookSecretFile: a webhook's secret_file is read at load and
// must hold a Standard Webhooks secret; what is wrong is said, with the
// webhook's name and its line, and the secret itself never.
func TestWebhookSecretFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	hook := func(file string) func(string) string {
		return func(c string) string {
			return c + "\nnotifications:\n  webhooks:\n    - name: siem\n      url: https://siem.example/hook\n      secret_file: " + file + "\n"
		}
	}
	for _, c := range []struct{ file, want string }{
		{filepath.Join(dir, "absent"), "webhook siem: secret_file: open "},
		{write("raw", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n"), "a webhook secret is whsec_ and base64"},
		{write("short", "whsec_c2hvcnQ=\n"), "the key is 5 bytes; use 24 to 64 random bytes"},
	} {
		path := nodetest.WriteConfig(t, hook(c.file))
		text, _ := os.ReadFile(path)
		_, err := LoadConfig(path)
		nodetest.WantErr(t, err, path, lineOf(t, string(text), "- name: siem"), c.want)
		if err != nil && strings.Contains(err.Error(), "MfKQ9r8G") {
			t.Errorf("the error quotes the secret: %v", err)
		}
	}
	cfg, err := LoadConfig(nodetest.WriteConfig(t, hook(write("good", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n"))))
	if err != nil {
		t.Fatal(err)
	}
	if hooks := cfg.webhooks(); len(hooks) != 1 || len(hooks[0].Secret) != 24 {
		t.Errorf("the webhook's key: %v", hooks)
	}
}
