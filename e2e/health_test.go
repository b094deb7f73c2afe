package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/sekisho/sekisho/internal/hardening"
)

// probe is one answer of a health endpoint.
type probe struct {
	code   int
	status string
	checks map[string]string
}

// getHealth asks http://127.0.0.1:port/path, as a balancer's check does.
func getHealth(t *testing.T, port, path string) probe {
	t.Helper()
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get("http://127.0.0.1:" + port + path)
	if err != nil {
		t.Fatalf("GET %s on port %s: %v", path, port, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var body struct {
		Status string            `json:"status"`
		Checks map[string]string `json:"checks"`
	}
	if err := json.Unmarshal(b, &body); err != nil {
		t.Fatalf("GET %s: not JSON: %v: %q", path, err, b)
	}
	return probe{code: resp.StatusCode, status: body.Status, checks: body.Checks}
}

// waitReady waits until /readyz on both the console's and the metrics
// listener answers code with the checks in want, and returns the answer.
func waitReady(t *testing.T, ports []string, code int, want map[string]string) probe {
	t.Helper()
	var last probe
	waitUntil(t, 30*time.Second, "/readyz to answer "+http.StatusText(code), func() bool {
		for _, port := range ports {
			last = getHealth(t, port, "/readyz")
			if last.code != code {
				return false
			}
			for k, v := range want {
				if last.checks[k] != v {
					return false
				}
			}
		}
		return true
	})
	return last
}

// /healthz and /readyz on the console's and the metrics listener: ready
// with everything up; not ready, saying why, while Vault is stopped or the
// recording directory's disk is full, and ready again after; alive all
// along. Balancers ask without signing in, and nothing is audited.
func TestHealthEndpointsFollowVaultAndDisk(t *testing.T) {
	t.Parallel()
	disk := tinyDisk(t)
	dv := startDevVault(t)
	tg := startOwnTarget(t, dv.caFile(), "ed25519")
	webPort, metricsPort := freePort(t), freePort(t)
	v := startVariant(t, func(cfg string) string {
		cfg = tg.asWebTarget(t)(dv.edit(cfg))
		cfg = strings.Replace(cfg, "\nrecordings: recordings\n", "\nrecordings: "+disk+"/recordings\n", 1)
		return strings.Replace(cfg, "\nrules:\n", "\nmetrics:\n  listen: 127.0.0.1:"+metricsPort+
			"\nweb:\n  listen: 127.0.0.1:"+webPort+"\nrules:\n", 1)
	})
	ports := []string{webPort, metricsPort}
	allOK := map[string]string{"vault": "ok", "store": "ok", "recordings": "ok", "node": "ok"}

	up := waitReady(t, ports, http.StatusOK, allOK)
	if up.status != "ready" {
		t.Errorf("/readyz with everything up: status %q, want ready", up.status)
	}
	for _, port := range ports {
		if h := getHealth(t, port, "/healthz"); h.code != http.StatusOK || h.status != "alive" {
			t.Errorf("/healthz on port %s: %d %q, want 200 alive", port, h.code, h.status)
		}
	}
	servedAgain(t, v, "with everything up")

	// Vault stopped: not ready, the rest still fine, alive.
	dv.stop()
	down := waitReady(t, ports, http.StatusServiceUnavailable, map[string]string{"vault": "unreachable", "store": "ok", "recordings": "ok"})
	if down.status != "not ready" {
		t.Errorf("/readyz with Vault stopped: status %q, want not ready", down.status)
	}
	if h := getHealth(t, webPort, "/healthz"); h.code != http.StatusOK {
		t.Errorf("/healthz with Vault stopped: %d, want 200 (the process is alive)", h.code)
	}
	dv.start(t)
	waitReady(t, ports, http.StatusOK, allOK)

	// The recording directory's disk full.
	filler := fill(t, disk)
	full := waitReady(t, ports, http.StatusServiceUnavailable, map[string]string{"vault": "ok", "recordings": "not writable"})
	if strings.Contains(strings.Join(mapValues(full.checks), " "), disk) {
		t.Errorf("/readyz names a path of the machine: %v", full.checks)
	}
	if !strings.Contains(v.out.String(), "not ready") {
		t.Errorf("the log does not say the node is not ready:\n%s", v.out.String())
	}
	os.Remove(filler)
	waitReady(t, ports, http.StatusOK, allOK)
	servedAgain(t, v, "with room on the disk again")

	// Other methods are not health checks.
	req, _ := http.NewRequest(http.MethodPost, "http://127.0.0.1:"+webPort+"/readyz", nil)
	if resp, err := http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	} else if resp.Body.Close(); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /readyz: %d, want 405", resp.StatusCode)
	}
	for _, e := range v.audit(t) {
		if strings.HasPrefix(e["kind"], "web.") || strings.Contains(e["detail"], "readyz") || strings.Contains(e["detail"], "healthz") {
			t.Errorf("a health check was audited: %+v", e)
		}
	}
	hardening.Report(t, "health", "/readyz on the console's and the metrics listener: 200 with Vault, state store and recording directory up; 503 (vault: unreachable) with Vault stopped and 503 (recordings: not writable) with the disk full, 200 again after each, /healthz 200 throughout; nothing audited")
}

func mapValues(m map[string]string) []string {
	var out []string
	for _, v := range m {
		out = append(out, v)
	}
	return out
}
