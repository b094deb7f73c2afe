package e2e

import (
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sekisho/sekisho/internal/hardening"
)

// rsyslog is a real syslog collector (Debian's rsyslogd) listening on a
// loopback TCP port, writing each message's RFC 5424 parts, as it parsed
// them, one line each.
type rsyslog struct {
	dir, port, out string
	cmd            *exec.Cmd
	exited         chan struct{}
}

func startRsyslog(t *testing.T) *rsyslog {
	t.Helper()
	if _, err := exec.LookPath("rsyslogd"); err != nil {
		t.Fatal("rsyslogd is missing: run `make deps-test` (Debian's rsyslog)")
	}
	r := &rsyslog{dir: t.TempDir(), port: freePort(t)}
	r.out = filepath.Join(r.dir, "out.log")
	conf := `global(workDirectory="` + r.dir + `")
module(load="imtcp")
input(type="imtcp" address="127.0.0.1" port="` + r.port + `" ruleset="audit")
template(name="parts" type="string" string="%pri%|%hostname%|%app-name%|%msgid%|%structured-data%|%msg%\n")
ruleset(name="audit") { action(type="omfile" file="` + r.out + `" template="parts") }
`
	if err := os.WriteFile(filepath.Join(r.dir, "rsyslog.conf"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.stop)
	r.start(t)
	return r
}

func (r *rsyslog) start(t *testing.T) {
	t.Helper()
	out := &syncBuffer{}
	r.cmd = exec.Command("rsyslogd", "-n", "-f", filepath.Join(r.dir, "rsyslog.conf"), "-i", filepath.Join(r.dir, "pid"))
	r.cmd.Stdout, r.cmd.Stderr = out, out
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r.exited = make(chan struct{})
	exited, cmd := r.exited, r.cmd
	go func() { cmd.Wait(); close(exited) }()
	waitUntil(t, 20*time.Second, "rsyslogd to listen", func() bool {
		select {
		case <-exited:
			t.Fatalf("rsyslogd exited:\n%s", out.String())
		default:
		}
		return listening("127.0.0.1:" + r.port)
	})
}

func (r *rsyslog) stop() {
	if r.cmd == nil {
		return
	}
	r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.exited:
	case <-time.After(10 * time.Second):
		r.cmd.Process.Kill()
		<-r.exited
	}
	r.cmd = nil
}

// syslogLine is one message as rsyslog parsed it.
type syslogLine struct {
	pri, host, app, msgid, sd string
	event                     map[string]string
}

func (r *rsyslog) lines(t *testing.T) []syslogLine {
	t.Helper()
	b, _ := os.ReadFile(r.out)
	var out []syslogLine
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if l == "" {
			continue
		}
		p := strings.SplitN(l, "|", 6)
		if len(p) != 6 {
			t.Fatalf("rsyslog wrote %q", l)
		}
		sl := syslogLine{pri: p[0], host: p[1], app: p[2], msgid: p[3], sd: p[4]}
		if err := json.Unmarshal([]byte(strings.TrimSpace(p[5])), &sl.event); err != nil {
			t.Fatalf("the message of %q is not the event as JSON: %v", l, err)
		}
		out = append(out, sl)
	}
	return out
}

// Every audit event, of the server and of a command, reaches a real
// syslog collector as RFC 5424 that it parses: the kind as MSGID, the
// fields as structured data, severity warning for refusals; events
// written while the collector is down arrive once it is back; nothing
// the store has is missing there.
func TestAuditCopiedToSyslog(t *testing.T) {
	t.Parallel()
	rs := startRsyslog(t)
	v := startVariant(t, func(cfg string) string {
		return strings.Replace(cfg, "\nrules:\n", "\naudit:\n  syslog:\n    address: tcp://127.0.0.1:"+rs.port+
			"\n    facility: local3\nnode_name: node-syslog\nrules:\n", 1)
	})
	servedAgain(t, v, "with syslog")
	r := run(t, v.ssh(ctxT(t), "aiko", "aiko+no-such-target", "true"), nil)
	if r.code == 0 {
		t.Fatal("a login to an unknown target was served")
	}
	if out, err := v.cli(t, "lock", "--target", "db-jp-01", "--reason", "syslog test"); err != nil {
		t.Fatalf("sekisho lock: %v\n%s", err, out)
	}

	// The collector stops; a session meanwhile; it comes back.
	rs.stop()
	servedAgain(t, v, "with the collector down")
	rs.start(t)

	stored := v.audit(t)
	var got []syslogLine
	waitUntil(t, 60*time.Second, "every stored audit event at the collector", func() bool {
		got = rs.lines(t)
		return len(got) >= len(stored)
	})
	at := map[string]syslogLine{}
	for _, l := range got {
		at[l.event["at"]+" "+l.event["kind"]] = l
	}
	for _, e := range stored {
		l, ok := at[e["at"]+" "+e["kind"]]
		if !ok {
			t.Errorf("stored but not at the collector: %v", e)
			continue
		}
		if l.msgid != e["kind"] || l.app != "sekisho" || l.host != "node-syslog" {
			t.Errorf("header of %s: msgid %q app %q host %q", e["kind"], l.msgid, l.app, l.host)
		}
		for _, f := range []string{"technician", "target", "source", "session"} {
			if e[f] != "" && !strings.Contains(l.sd, f+`="`+e[f]+`"`) {
				t.Errorf("%s: structured data %s lacks %s=%q", e["kind"], l.sd, f, e[f])
			}
		}
		if l.event["detail"] != e["detail"] {
			t.Errorf("%s: detail %q at the collector, %q stored", e["kind"], l.event["detail"], e["detail"])
		}
		// local3 is 19: 19*8+4 for warnings, +5 for the others.
		want := "157"
		if e["kind"] == "refused" || e["kind"] == "auth.failed" {
			want = "156"
		}
		if l.pri != want {
			t.Errorf("%s: PRI %s, want %s", e["kind"], l.pri, want)
		}
	}
	kinds := map[string]int{}
	for _, l := range got {
		kinds[l.msgid]++
	}
	for _, k := range []string{"session.start", "session.end", "cert.issued", "refused", "lock.added"} {
		if kinds[k] == 0 {
			t.Errorf("no %s event at the collector (got %v)", k, kinds)
		}
	}
	if kinds["session.start"] < 2 {
		t.Errorf("%d session.start at the collector, want both sessions' (one while it was down)", kinds["session.start"])
	}
	hardening.Report(t, "audit", "syslog copy: %d audit events (server's and `sekisho lock`'s) reached rsyslog over TCP as RFC 5424 it parsed (MSGID = kind, structured data, severity warning for refusals), including those written while it was stopped; none the store has is missing", len(stored))
}

// listening reports whether something accepts TCP connections at addr.
func listening(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err == nil {
		c.Close()
	}
	return err == nil
}
