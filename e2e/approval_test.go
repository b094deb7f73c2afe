package e2e

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sekisho/sekisho/internal/hardening"
)

// approvalRules put li's and wei's access to db-jp-01 behind one approval
// and li's access to web-sg-01 behind two; aiko and kenji approve.
const approvalRules = `rules:
  - name: db-needs-approval
    effect: approval
    technicians: [li, wei]
    targets: [db-jp-01]
    approval:
      from: [approvers]
      pending_for: PENDING
      max_grant: 2h
  - name: web-needs-two
    effect: approval
    technicians: [li]
    targets: [web-sg-01]
    approval:
      approvals: 2
      from: [approvers]
  - name: aiko-anywhere
    effect: allow
    technicians: [aiko]
`

// waitingTerminal runs tech's ssh to login with a terminal in tmux; the
// pane stays after ssh exits, showing its exit status.
func waitingTerminal(t *testing.T, v *variant, tech, login string) *tmux {
	t.Helper()
	ssh := strings.Join(append(v.ssh(ctxT(t), tech, login).Args, "-tt"), " ")
	return newTmux(t, 160, 40, "sh -c '"+ssh+"; echo ssh-exited-$?; sleep 3600'")
}

// approvalVariant starts a server on approvalRules, with aiko an approver
// too and pending requests expiring after pending.
func approvalVariant(t testing.TB, pending string, edit func(string) string) *variant {
	t.Helper()
	return startVariant(t, func(cfg string) string {
		i := strings.Index(cfg, "\nrules:\n")
		cfg = cfg[:i+1] + strings.Replace(approvalRules, "PENDING", pending, 1)
		cfg = strings.Replace(cfg, "  - name: aiko\n    affiliate: ops-jp\n", "  - name: aiko\n    affiliate: ops-jp\n    groups: [approvers]\n", 1)
		cfg = strings.Replace(cfg, "    groups: [dba]\n", "    groups: [dba, approvers]\n", 1)
		if edit != nil {
			cfg = edit(cfg)
		}
		return cfg
	})
}

// command runs an SSH-native command: ssh TECH@bastion ARGS, with a
// verification code for a holder of powers (see commandLogins).
func (v *variant) command(t *testing.T, tech string, args ...string) result {
	t.Helper()
	return v.logins(t).command(t, tech, args...)
}

var requestNumber = regexp.MustCompile(`request (\d+)`)

// fileRequest files li's request for target and returns its number.
func fileRequest(t *testing.T, v *variant, tech, target string) string {
	t.Helper()
	r := v.command(t, tech, "request", target, "--reason", "INC-4711 disk full on", target, "--duration", "30m")
	m := requestNumber.FindStringSubmatch(r.stdout)
	if r.code != 0 || m == nil || !strings.Contains(r.stdout, "filed") {
		t.Fatalf("request: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	return m[1]
}

// startWaiting starts ssh (no terminal) and returns once it waits on a
// request; done yields its result.
func startWaiting(t *testing.T, cmd *exec.Cmd) (stdout, stderr *syncBuffer, done <-chan result) {
	t.Helper()
	stdout, stderr = &syncBuffer{}, &syncBuffer{}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ch := make(chan result, 1)
	go func() {
		err := cmd.Wait()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		ch <- result{stdout: stdout.String(), stderr: stderr.String(), code: code}
	}()
	waitUntil(t, 30*time.Second, "ssh to wait on the request", func() bool {
		return strings.Contains(stderr.String(), "waiting on your request")
	})
	return stdout, stderr, ch
}

func waitResult(t *testing.T, done <-chan result) result {
	t.Helper()
	select {
	case r := <-done:
		return r
	case <-time.After(60 * time.Second):
		t.Fatal("ssh did not end within 60s")
	}
	return result{}
}

func auditKinds(t *testing.T, v *variant) string {
	t.Helper()
	var kinds []string
	for _, e := range v.audit(t) {
		kinds = append(kinds, e["kind"])
	}
	return strings.Join(kinds, " ")
}

// The technician waits in plain ssh with a terminal: asked for a reason
// and a duration, shown the status, and in the shell as soon as an
// approver says yes. The grant then lets scp through without asking; a
// revocation ends the live session with a message.
func TestApprovalWhileWaitingInSSH(t *testing.T) {
	t.Parallel()
	v := approvalVariant(t, "15m", nil)
	tm := waitingTerminal(t, v, "li", "li+db-jp-01")
	tm.waitScreen("Reason (ticket and what you will do):")
	tm.send("INC-4711 disk full", "Enter")
	tm.waitScreen("Duration (at most 2h0m0s)")
	// Too long: only the duration is asked again; the reason stays.
	tm.send("3h", "Enter")
	tm.waitScreen(`duration 3h0m0s is longer than rule "db-needs-approval" allows: ask for at most 2h0m0s`)
	waitUntil(t, 30*time.Second, "the duration to be asked again", func() bool {
		return strings.Count(tm.screen(), "Duration (at most 2h0m0s)") == 2 && strings.Count(tm.screen(), "Reason (ticket") == 1
	})
	tm.send("45m", "Enter")
	tm.waitScreen("is waiting for 1 approval(s); notified: approvers aiko, kenji")
	id := regexp.MustCompile(`request (\d+) is waiting`).FindStringSubmatch(tm.screen())[1]

	// Nothing reached the target while pending: no session registered.
	if out, err := v.cli(t, "sessions", "--json"); err != nil || strings.Contains(out, `"technician": "li"`) {
		t.Fatalf("a session was registered while pending: %v %s", err, out)
	}
	r := v.command(t, "li", "approve", id)
	if r.code != 1 || !strings.Contains(r.stderr, "is your own; another approver must decide it") {
		t.Errorf("self-approval: exit %d, stdout %q", r.code, r.stdout)
	}
	r = v.command(t, "kenji", "requests")
	if r.code != 0 || !regexp.MustCompile(id+`\s+li \(ops-cn\)\s+db-jp-01\s+45m0s\s+pending, 0 of 1 approvals\s+"INC-4711 disk full"`).MatchString(r.stdout) {
		t.Errorf("kenji's requests: exit %d, %q", r.code, r.stdout)
	}
	r = v.command(t, "kenji", "approve", id, "--comment", "go ahead")
	if r.code != 0 || !strings.Contains(r.stdout, "granted until") {
		t.Fatalf("approve: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	tm.waitScreen(`approved by kenji ("go ahead"); connecting to db-jp-01`)
	tm.send("echo marker-$((6*7))", "Enter")
	tm.waitScreen("marker-42")

	// The grant lets later connections through without asking: scp, both
	// protocols, and a command.
	src := filepath.Join(t.TempDir(), "upload")
	os.WriteFile(src, []byte("granted upload\n"), 0o600)
	dst := "/tmp/sekisho-e2e-grant-" + randHex(t)
	defer os.Remove(dst)
	for _, legacy := range []bool{false, true} {
		args := append(scpOpts(t, v, "li"), src, "li+db-jp-01@127.0.0.1:"+dst)
		if legacy {
			args = append([]string{"-O"}, args...)
		}
		if r := run(t, exec.CommandContext(ctxT(t), "scp", args...), nil); r.code != 0 {
			t.Fatalf("scp under the grant (legacy %v): exit %d, %q", legacy, r.code, r.stderr)
		}
		if b, _ := os.ReadFile(dst); string(b) != "granted upload\n" {
			t.Fatalf("uploaded %q", b)
		}
		os.Remove(dst)
	}
	if r := run(t, v.ssh(ctxT(t), "li", "li+db-jp-01", "echo granted"), nil); r.code != 0 || r.stdout != "granted\n" {
		t.Fatalf("command under the grant: exit %d, %q, %q", r.code, r.stdout, r.stderr)
	}
	if r := v.command(t, "li", "grants"); r.code != 0 || !strings.Contains(r.stdout, "granted until") {
		t.Errorf("li's grants: exit %d, %q", r.code, r.stdout)
	}
	r = v.command(t, "kenji", "sessions", "--live")
	if r.code != 0 || !regexp.MustCompile(`li \(ops-cn\)\s+db-jp-01\s+\S+\s+\S+\s+db-needs-approval\s+`+id).MatchString(r.stdout) {
		t.Errorf("sessions --live: exit %d, %q", r.code, r.stdout)
	}
	if r := v.command(t, "li", "sessions", "--live"); r.code != 1 || !strings.Contains(r.stderr, "for admins only") {
		t.Errorf("sessions --live by li: exit %d, %q", r.code, r.stdout)
	}

	// Revoking ends the live session, with the reason.
	r = v.command(t, "kenji", "revoke", id, "--reason", "work done, closing INC-4711")
	if r.code != 0 || !strings.Contains(r.stdout, "revoked by kenji") {
		t.Fatalf("revoke: exit %d, %q, %q", r.code, r.stdout, r.stderr)
	}
	tm.waitScreen("request " + id + " was revoked by kenji: work done, closing INC-4711")
	tm.waitScreen("ssh-exited-")
	// And the grant no longer lets anything through.
	r = run(t, v.ssh(ctxT(t), "li", "li+db-jp-01", "echo after-revoke"), nil)
	if r.code != 1 || strings.Contains(r.stdout, "after-revoke") || !strings.Contains(r.stderr, "file a request first") {
		t.Errorf("after revoke: exit %d, %q, %q", r.code, r.stdout, r.stderr)
	}
	kinds := auditKinds(t, v)
	for _, k := range []string{"request.created", "request.refused", "request.approved", "request.used", "request.revoked", "session.revoked"} {
		if !strings.Contains(kinds, k) {
			t.Errorf("audit lacks %s: %s", k, kinds)
		}
	}
	hardening.Report(t, "10", "a technician waiting in ssh with a terminal: no session registered while pending, self-approval refused; in the shell once approved; the revocation ends the live session with its reason and the next login is refused")
}

func scpOpts(t *testing.T, v *variant, tech string) []string {
	t.Helper()
	cmd := v.ssh(ctxT(t), tech, "x")
	opts := cmd.Args[1 : len(cmd.Args)-3] // without -p PORT LOGIN
	return append(append([]string{}, opts...), "-P", v.port)
}

// A denial ends the waiting session with the approver's reason; the
// requester sees the outcome without a terminal too.
func TestApprovalDenied(t *testing.T) {
	t.Parallel()
	v := approvalVariant(t, "15m", nil)
	id := fileRequest(t, v, "wei", "db-jp-01")
	_, _, done := startWaiting(t, v.ssh(ctxT(t), "wei", "wei+db-jp-01", "echo should-not-run"))
	r := v.command(t, "aiko", "deny", id, "--reason", "not during the change freeze")
	if r.code != 0 || !strings.Contains(r.stdout, "denied by aiko: not during the change freeze") {
		t.Fatalf("deny: exit %d, %q, %q", r.code, r.stdout, r.stderr)
	}
	w := waitResult(t, done)
	if w.code != 1 || strings.Contains(w.stdout, "should-not-run") ||
		!strings.Contains(w.stderr, "request "+id+" denied by aiko: not during the change freeze") {
		t.Errorf("denied: exit %d, stdout %q, stderr %q", w.code, w.stdout, w.stderr)
	}
	if r := v.command(t, "kenji", "approve", id); r.code != 1 || !strings.Contains(r.stderr, "is no longer pending: denied by aiko") {
		t.Errorf("approve after deny: exit %d, %q", r.code, r.stdout)
	}
	if !strings.Contains(auditKinds(t, v), "request.denied") {
		t.Error("no request.denied audit event")
	}
}

// Two approvals from two people: the same approver twice does not count.
func TestTwoApproverRule(t *testing.T) {
	t.Parallel()
	v := approvalVariant(t, "15m", nil)
	id := fileRequest(t, v, "li", "web-sg-01")
	_, stderr, done := startWaiting(t, v.ssh(ctxT(t), "li", "li+web-sg-01", "echo two-approvals"))
	if r := v.command(t, "kenji", "approve", id); r.code != 0 || !strings.Contains(r.stdout, "pending, 1 of 2 approvals") {
		t.Fatalf("first approval: exit %d, %q, %q", r.code, r.stdout, r.stderr)
	}
	waitUntil(t, 30*time.Second, "the waiting session to show 1 of 2", func() bool {
		return strings.Contains(stderr.String(), "1 of 2 approvals (kenji)")
	})
	if r := v.command(t, "kenji", "approve", id); r.code != 1 || !strings.Contains(r.stderr, "you already approved request "+id) {
		t.Errorf("second approval by kenji: exit %d, %q", r.code, r.stdout)
	}
	select {
	case w := <-done:
		t.Fatalf("went through with one approver: %+v", w)
	default:
	}
	// The second approval through the sekisho CLI, which logs in as aiko
	// with aiko's key and pins the server's host key from its config; an
	// approver gives a verification code, here without a terminal.
	cli := exec.CommandContext(ctxT(t), env.sekisho, "approve", "--config", v.config, "--as", "aiko", "-i", env.state.Keys["aiko"], id, "--comment", "checked with the DPO")
	cli.Env = append(os.Environ(), "SSH_AUTH_SOCK=", "SEKISHO_TOTP="+v.logins(t).freshCode(t, "aiko"))
	cli.SysProcAttr = &syscall.SysProcAttr{Setsid: true} // no /dev/tty to ask on
	if r := run(t, cli, nil); r.code != 0 || !strings.Contains(r.stdout, "granted until") {
		t.Fatalf("second approver through the CLI: exit %d, %q, %q", r.code, r.stdout, r.stderr)
	}
	if w := waitResult(t, done); w.code != 0 || w.stdout != "two-approvals\n" {
		t.Errorf("after two approvals: exit %d, %q, %q", w.code, w.stdout, w.stderr)
	}
}

// A request nobody decides expires, and the waiting technician is told.
func TestPendingRequestExpires(t *testing.T) {
	t.Parallel()
	v := approvalVariant(t, "3s", nil)
	tm := waitingTerminal(t, v, "li", "li+db-jp-01")
	tm.waitScreen("Reason (ticket and what you will do):")
	tm.send("INC-9 nobody will answer", "Enter")
	tm.waitScreen("Duration")
	tm.send("Enter")
	tm.waitScreen("is waiting for 1 approval(s)")
	tm.waitScreen("expired by sekisho: no decision within 3s")
	tm.waitScreen("ssh-exited-1")
	r := v.command(t, "li", "requests", "--json")
	var list []struct {
		ID    int64  `json:"id"`
		State string `json:"state"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil || len(list) != 1 || list[0].State != "expired" {
		t.Errorf("requests --json: %v %q", err, r.stdout)
	}
	if !strings.Contains(auditKinds(t, v), "request.expired") {
		t.Error("no request.expired audit event")
	}
}

// Ctrl-C at the status line cancels the request.
func TestCtrlCCancelsTheRequest(t *testing.T) {
	t.Parallel()
	v := approvalVariant(t, "15m", nil)
	tm := waitingTerminal(t, v, "li", "li+db-jp-01")
	tm.waitScreen("Reason (ticket and what you will do):")
	tm.send("INC-10 changed my mind", "Enter")
	tm.waitScreen("Duration")
	tm.send("Enter")
	tm.waitScreen("Ctrl-C cancels the request")
	tm.send("C-c")
	tm.waitScreen("request 1 cancelled")
	tm.waitScreen("ssh-exited-1")
	r := v.command(t, "kenji", "approve", "1")
	if r.code != 1 || !strings.Contains(r.stderr, "is no longer pending: cancelled by li") {
		t.Errorf("approve a cancelled request: exit %d, %q", r.code, r.stdout)
	}
}

// While a request is pending nothing is relayed: no port forward opens,
// no command runs, nothing is registered; after approval the command runs.
func TestNothingRelayedWhilePending(t *testing.T) {
	t.Parallel()
	v := approvalVariant(t, "15m", nil)
	id := fileRequest(t, v, "li", "db-jp-01")
	lport := freePort(t)
	cmd := v.ssh(ctxT(t), "li", "li+db-jp-01", "echo relayed-after-approval")
	cmd.Args = append(cmd.Args[:1], append([]string{"-L", lport + ":localhost:22"}, cmd.Args[1:]...)...)
	stdout, _, done := startWaiting(t, cmd)

	c, err := net.Dial("tcp", "127.0.0.1:"+lport)
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	if b, _ := io.ReadAll(c); len(b) != 0 {
		t.Errorf("the forward relayed %q while pending", b)
	}
	c.Close()
	waitUntil(t, 30*time.Second, "the forward's refusal in the audit log", func() bool {
		for _, e := range v.audit(t) {
			if e["kind"] == "refused" && strings.Contains(e["detail"], "awaits approval") && strings.Contains(e["detail"], "direct-tcpip") {
				return true
			}
		}
		return false
	})
	if stdout.String() != "" {
		t.Errorf("output before approval: %q", stdout.String())
	}
	if out, _ := v.cli(t, "sessions", "--json"); strings.Contains(out, `"technician": "li"`) {
		t.Errorf("a session was registered while pending: %s", out)
	}
	if r := v.command(t, "kenji", "approve", id); r.code != 0 {
		t.Fatalf("approve: exit %d, %q", r.code, r.stdout)
	}
	if w := waitResult(t, done); w.code != 0 || w.stdout != "relayed-after-approval\n" {
		t.Errorf("after approval: exit %d, %q, %q", w.code, w.stdout, w.stderr)
	}
	hardening.Report(t, "10", "an ssh -L forward and a command while the request is pending: the forward relays nothing and its channel is refused and audited as awaiting approval, no output, no session registered; the command runs only after the approval")
}

// Webhooks are told of requests and decisions, with retries after a
// failure; the failure shows in the metrics.
func TestWebhookDeliveredWithRetry(t *testing.T) {
	t.Parallel()
	var (
		mu     sync.Mutex
		bodies []map[string]any
		hits   int
		ids    []string // webhook-id of each request
		badSig []string
	)
	// Signed by the Standard Webhooks scheme: checked here as a receiver
	// would, independently of sekisho's code.
	key := make([]byte, 32)
	rand.Read(key)
	secretFile := filepath.Join(t.TempDir(), "webhook.secret")
	os.WriteFile(secretFile, []byte("whsec_"+base64.StdEncoding.EncodeToString(key)+"\n"), 0o600)
	got := make(chan struct{}, 10)
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		hits++
		raw, _ := io.ReadAll(r.Body)
		id, ts := r.Header.Get("webhook-id"), r.Header.Get("webhook-timestamp")
		mac := hmac.New(sha256.New, key)
		mac.Write([]byte(id + "." + ts + "." + string(raw)))
		if sent, want := r.Header.Get("webhook-signature"), "v1,"+base64.StdEncoding.EncodeToString(mac.Sum(nil)); id == "" || sent != want {
			badSig = append(badSig, fmt.Sprintf("request %d: id %q, signature %q, want %q", hits, id, sent, want))
		}
		ids = append(ids, id)
		if hits == 1 {
			http.Error(w, "receiver down", http.StatusInternalServerError)
			return
		}
		var body map[string]any
		json.Unmarshal(raw, &body)
		bodies = append(bodies, body)
		got <- struct{}{}
	}))
	defer recv.Close()
	metrics := freePort(t)
	v := approvalVariant(t, "15m", func(cfg string) string {
		return strings.Replace(cfg, "\nrules:\n", fmt.Sprintf(`
metrics:
  listen: 127.0.0.1:%s
notifications:
  webhooks:
    - name: security-team
      url: %s/hook
      backoff: 50ms
      secret_file: %s
rules:
`, metrics, recv.URL, secretFile), 1)
	})
	id := fileRequest(t, v, "li", "db-jp-01")
	if r := v.command(t, "kenji", "approve", id, "--comment", "ok"); r.code != 0 {
		t.Fatalf("approve: exit %d, %q", r.code, r.stdout)
	}
	for range 2 {
		select {
		case <-got:
		case <-time.After(30 * time.Second):
			t.Fatal("webhook not delivered within 30s")
		}
	}
	mu.Lock()
	if hits != 3 || len(bodies) != 2 {
		t.Errorf("hits %d, bodies %d; want 3 hits (one failure, retried) and 2 deliveries", hits, len(bodies))
	}
	if len(badSig) > 0 {
		t.Errorf("requests not signed as the Standard Webhooks scheme says: %q", badSig)
	}
	if len(ids) == 3 && (ids[0] != ids[1] || ids[1] == ids[2]) {
		t.Errorf("webhook-ids %q: want the retry to keep its event's id, and the next event another", ids)
	}
	first, second := bodies[0], bodies[1]
	mu.Unlock()
	req, _ := first["request"].(map[string]any)
	if first["event"] != "request.created" || req["technician"] != "li" || req["target"] != "db-jp-01" ||
		req["reason"] != "INC-4711 disk full on db-jp-01" || fmt.Sprint(req["id"]) != id || !strings.Contains(fmt.Sprint(first["text"]), "li") {
		t.Errorf("created event: %v", first)
	}
	if second["event"] != "request.approved" || second["by"] != "kenji" || second["note"] != "ok" {
		t.Errorf("approved event: %v", second)
	}
	// A delivery is counted once its response is read, which may be just
	// after the receiver saw the body.
	want := []string{
		`sekisho_webhook_deliveries_total{result="delivered",webhook="security-team"} 2`,
		`sekisho_webhook_attempts_total{outcome="retry",webhook="security-team"} 1`,
	}
	var b []byte
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://127.0.0.1:" + metrics + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		if bytes.Contains(b, []byte(want[0])) && bytes.Contains(b, []byte(want[1])) {
			hardening.Report(t, "partition", "a webhook receiver failing its first delivery with HTTP 500: retried after the 50 ms backoff, 3 attempts for 2 events, both delivered in order, the retry counted in the metrics")
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics lack %q after 30s:\n%s", want, grepLines(string(b), "sekisho_webhook"))
		}
		time.Sleep(20 * time.Millisecond) // polling the metrics for a condition, with a deadline
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// A locked approver cannot run commands: the lock is the incident tool.
func TestLockedApproverCannotDecide(t *testing.T) {
	t.Parallel()
	v := approvalVariant(t, "15m", nil)
	id := fileRequest(t, v, "li", "db-jp-01")
	// kenji is logged in for commands before the lock (his code given),
	// as an approver at work would be: the lock ends that connection too.
	if r := v.command(t, "kenji", "grants"); r.code != 0 {
		t.Fatalf("kenji's command before the lock: exit %d, %q", r.code, r.stderr)
	}
	if out, err := v.cli(t, "lock", "--technician", "kenji", "--reason", "INC-77 approver key leaked"); err != nil {
		t.Fatalf("lock: %v %s", err, out)
	}
	// The server picks the lock up within a second; a harmless command
	// tells when.
	waitUntil(t, 30*time.Second, "kenji's commands to be refused", func() bool {
		return v.command(t, "kenji", "grants").code == 255
	})
	r := v.command(t, "kenji", "approve", id)
	if r.code != 255 || !strings.Contains(r.stderr, "technician kenji is locked") || !strings.Contains(r.stderr, "INC-77 approver key leaked") {
		t.Errorf("locked approver: stderr %q", r.stderr)
	}
	if out := v.command(t, "li", "requests").stdout; !strings.Contains(out, "pending, 0 of 1 approvals") {
		t.Errorf("the request was decided by a locked approver: %s", out)
	}
}
