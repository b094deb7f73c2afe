package e2e

import (
	"os/exec"
	"regexp"
	"runtime"
	"strings"
	"testing"
)

// `sekisho version` and the sekisho_build_info metric name the commit
// the binary was built from (make build stamps it from git), and the Go
// version.
func TestVersionNamesTheCommit(t *testing.T) {
	t.Parallel()
	head, err := exec.Command("git", "-C", env.root, "rev-parse", "HEAD").Output()
	if err != nil {
		t.Fatalf("git rev-parse HEAD: %v (the tests run in a git checkout)", err)
	}
	commit := strings.TrimSpace(string(head))[:12]
	out, err := exec.Command(env.sekisho, "version").Output()
	if err != nil {
		t.Fatalf("sekisho version: %v", err)
	}
	line := regexp.MustCompile(`^sekisho (v\S+) \(commit ([0-9a-f]{12})(\+dirty)?, \S+, (go\S+) linux/\w+\)\n$`).FindStringSubmatch(string(out))
	if line == nil || line[2] != commit || line[4] != runtime.Version() {
		t.Fatalf("sekisho version printed %q; want the commit %s and %s", out, commit, runtime.Version())
	}
	port := freePort(t)
	startVariant(t, func(cfg string) string {
		return strings.Replace(cfg, "\nrules:\n", "\nmetrics:\n  listen: 127.0.0.1:"+port+"\nrules:\n", 1)
	})
	waitMetrics(t, port, `sekisho_build_info{commit="`+commit+line[3]+`",goversion="`+runtime.Version()+`",version="`+line[1]+`"} 1`)
}
