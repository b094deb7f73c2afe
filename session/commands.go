package session

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sekisho/sekisho/broker"
	"github.com/sekisho/sekisho/recording"
)

// LiveSession describes a session relaying now, on this node.
type LiveSession struct {
	ID         string    `json:"id"`
	Technician string    `json:"technician"`
	Affiliate  string    `json:"affiliate"`
	Target     string    `json:"target"`
	Residency  string    `json:"residency"`
	Source     string    `json:"source"`
	Rule       string    `json:"rule"`
	Request    int64     `json:"request,omitempty"` // the grant it runs under
	Started    time.Time `json:"started"`
	BytesIn    int64     `json:"bytes_in"`
	BytesOut   int64     `json:"bytes_out"`
}

// Live lists the sessions relaying now, oldest first.
func (s *Server) Live() []LiveSession {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]LiveSession, 0, len(s.live))
	for c := range s.live {
		l := LiveSession{ID: c.sessionID, Technician: c.id.tech.Name, Affiliate: c.id.tech.Affiliate.Name,
			Target: c.id.target.Name, Residency: c.id.target.Residency, Source: c.source, Rule: c.id.decision.Rule, Started: c.started,
			BytesIn: c.bytesIn.Load(), BytesOut: c.bytesOut.Load()}
		if g := c.id.decision.Grant; g != nil {
			l.Request = g.RequestID
		}
		out = append(out, l)
	}
	slices.SortFunc(out, func(a, b LiveSession) int { return a.Started.Compare(b.Started) })
	return out
}

// Kill ends live session id with why, telling the technician. It reports
// whether such a session was live on this node.
func (s *Server) Kill(id, why string) bool {
	s.mu.Lock()
	var target *conn
	for c := range s.live {
		if c.sessionID == id {
			target = c
		}
	}
	s.mu.Unlock()
	if target == nil {
		return false
	}
	go target.terminate(why)
	return true
}

// runCommands serves a connection without a target: sekisho's own
// commands, run as exec requests (ssh TECHNICIAN@bastion COMMAND), or a
// summary for a shell. Nothing is relayed anywhere.
func (s *Server) runCommands(sc *ssh.ServerConn, id *identity, source string, chans <-chan ssh.NewChannel, reqs <-chan *ssh.Request) {
	go ssh.DiscardRequests(reqs)
	stop := context.AfterFunc(s.ctx, func() { sc.Close() })
	defer stop()
	// A client gone without a word (a laptop off the network) is noticed:
	// a moderator's seat, a watch, an approval's wait end with it.
	defer keepAlive(sc, s.cfg.KeepaliveInterval, s.cfg.KeepaliveCountMax, func(string) { sc.Close() })()
	// Locks and key removals end command connections too (Revalidate).
	s.mu.Lock()
	s.commands[sc] = id
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.commands, sc)
		s.mu.Unlock()
	}()
	var jumpPending atomic.Int32
	var refused atomic.Int64
	for nch := range chans {
		if nch.ChannelType() == "direct-tcpip" && s.openJump(sc, id, source, nch, &jumpPending, &refused) {
			continue
		}
		if nch.ChannelType() == "direct-tcpip" {
			s.refuseForward(id, source, nch, refused.Add(1) <= refusedAudited)
			continue
		}
		if nch.ChannelType() != "session" {
			nch.Reject(ssh.Prohibited, "sekisho: a login without a target runs sekisho's commands only; log in as "+id.tech.Name+"+TARGET to reach a target")
			continue
		}
		ch, chReqs, err := nch.Accept()
		if err != nil {
			continue
		}
		go s.commandChannel(id, source, ch, chReqs)
	}
}

// commandChannel runs one command on a channel and closes it with the
// command's exit status.
func (s *Server) commandChannel(id *identity, source string, ch ssh.Channel, reqs <-chan *ssh.Request) {
	defer ch.Close()
	pty := false
	for req := range reqs {
		switch req.Type {
		case "pty-req":
			pty = true
			req.Reply(true, nil)
			continue
		case "env", "window-change":
			req.Reply(req.Type == "window-change", nil)
			continue
		case "shell", "exec":
		default:
			req.Reply(false, nil)
			continue
		}
		var line string
		if req.Type == "exec" {
			var sr stringRequest
			if ssh.Unmarshal(req.Payload, &sr) != nil {
				req.Reply(false, nil)
				return
			}
			line = sr.Value
		}
		req.Reply(true, nil)
		// The command's context ends with the channel: its requests end
		// when the technician closes it or goes away.
		ctx, cancel := context.WithCancel(s.ctx)
		defer cancel()
		go func() {
			ssh.DiscardRequests(reqs)
			cancel()
		}()
		var out, errOut io.Writer = ch, ch.Stderr()
		if pty {
			out, errOut = crlf{ch}, crlf{ch.Stderr()}
		}
		cmd := &command{srv: s, tech: id.tech, key: id.key, source: source, out: out, errOut: errOut, in: ch, raw: ch, pty: pty}
		code := cmd.run(ctx, line)
		ch.SendRequest("exit-status", false, ssh.Marshal(exitStatus{uint32(code)}))
		ch.CloseWrite()
		return
	}
}

// crlf turns \n into \r\n for a terminal.
type crlf struct{ w io.Writer }

func (c crlf) Write(p []byte) (int, error) {
	if _, err := c.w.Write([]byte(strings.ReplaceAll(string(p), "\n", "\r\n"))); err != nil {
		return 0, err
	}
	return len(p), nil
}

// command is one run of an SSH-native command.
type command struct {
	srv    *Server
	tech   *broker.Technician
	key    ssh.PublicKey // the key that signed the connection
	source string
	out    io.Writer
	errOut io.Writer
	// in is the channel's input, raw its output without the \n to \r\n
	// translation of a terminal, pty whether the channel has one.
	in  io.Reader
	raw io.Writer
	pty bool
}

// Exit statuses of commands.
const (
	exitOK      = 0
	exitRefused = 1
	exitUsage   = 2
)

const commandHelp = `sekisho commands (ssh -p PORT %[1]s@BASTION COMMAND):
  request TARGET --reason TEXT [--duration 1h]   file an access request
  requests [--all] [--json]                      your requests, and those you may decide
  cancel N                                       cancel your pending request N
  grants [--json]                                grants in force
Approvers:
  approve N [--comment TEXT]                     approve request N
  deny N --reason TEXT                           deny request N
  revoke N [--reason TEXT]                       end grant N now; its sessions end
Admins:
  sessions --live [--json]                       sessions relaying now on this node
  kill SESSION [--reason TEXT]                   end a live session
Reviewers and admins:
  watch SESSION [--from-start]                   follow a live session read-only (ssh -t for a terminal)
Approvers, reviewers and admins:
  login                                          a one-time link that signs you in to the web console
To reach a target, log in as %[1]s+TARGET.
`

func (c *command) printf(format string, args ...any) { fmt.Fprintf(c.out, format, args...) }

// errorf writes a refusal or a usage error, on stderr.
func (c *command) errorf(format string, args ...any) { fmt.Fprintf(c.errOut, format, args...) }

func (c *command) run(ctx context.Context, line string) int {
	args, err := splitCommand(line)
	if err != nil {
		c.errorf("sekisho: %v\n", err)
		return exitUsage
	}
	if len(args) == 0 {
		c.printf(commandHelp, c.tech.Name)
		c.printf("\n")
		return c.grants(ctx, nil)
	}
	name, rest := args[0], args[1:]
	var fn func(context.Context, *flags) int
	switch name {
	case "help", "--help", "-h":
		c.printf(commandHelp, c.tech.Name)
		return exitOK
	case "request":
		fn = c.request
	case "requests":
		fn = c.requests
	case "cancel", "approve", "deny", "revoke":
		fn = func(ctx context.Context, f *flags) int { return c.decide(ctx, name, f) }
	case "grants":
		fn = c.grants
	case "sessions":
		fn = c.sessions
	case "kill":
		fn = c.kill
	case "watch":
		fn = c.watch
	case "moderate":
		fn = c.moderate
	case "login":
		fn = c.login
	default:
		c.errorf("sekisho: unknown command %q; run `help` for the list; to reach a target, log in as %s+TARGET\n", name, c.tech.Name)
		return exitUsage
	}
	f, err := parseFlags(rest)
	if err != nil {
		c.errorf("sekisho: %s: %v\n", name, err)
		return exitUsage
	}
	return fn(ctx, f)
}

// refused prints err for the user: a refusal as it is, anything else as
// an internal failure (logged).
func (c *command) refused(what string, err error) int {
	var rf *broker.Refusal
	if errors.As(err, &rf) {
		c.errorf("sekisho: %s\n", rf.Msg)
		return exitRefused
	}
	c.srv.log.Error("command failed", "technician", c.tech.Name, "command", what, "err", err)
	c.errorf("sekisho: %s failed; tell the sekisho operator\n", what)
	return exitRefused
}

func (c *command) request(ctx context.Context, f *flags) int {
	if err := f.allow("reason", "duration"); err != nil || len(f.args) != 1 {
		c.errorf("sekisho: usage: request TARGET --reason TEXT [--duration 1h]\n")
		return exitUsage
	}
	var d time.Duration
	if s := f.get("duration"); s != "" {
		var err error
		if d, err = time.ParseDuration(s); err != nil || d <= 0 {
			c.errorf("sekisho: --duration %q: write it as 30m, 1h or 1h30m\n", s)
			return exitUsage
		}
	}
	access := c.srv.cfg.Access
	r, existing, err := access.RequestAccess(ctx, c.tech.Name, f.args[0], c.source, f.get("reason"), d)
	if err != nil {
		return c.refused("request", err)
	}
	switch {
	case existing && r.State == broker.RequestApproved:
		c.printf("you already hold request %d for %s: %s\n", r.ID, r.Target, r.Status(time.Now()))
	case existing:
		c.printf("you already have request %d pending for %s (filed %s: %s)\n", r.ID, r.Target, r.Created.UTC().Format(time.RFC3339), r.Reason)
	default:
		approvers, hooks := access.Notified(&r)
		c.printf("request %d filed: %s for %s, needs %d approval(s); expires %s if undecided\n",
			r.ID, r.Target, r.Duration, r.Needed, r.Expires.UTC().Format(time.RFC3339))
		c.printf("notified: approvers %s", listOrNone(approvers))
		if len(hooks) > 0 {
			c.printf("; webhooks %s", strings.Join(hooks, ", "))
		}
		c.printf("\nonce approved, connect with: ssh %s+%s@BASTION\n", c.tech.Name, r.Target)
	}
	return exitOK
}

// requests lists the technician's own requests and, for an approver,
// the pending ones they may decide; --all (admins) lists every request.
func (c *command) requests(ctx context.Context, f *flags) int {
	if err := f.allow("all", "json"); err != nil || len(f.args) != 0 {
		c.errorf("sekisho: usage: requests [--all] [--json]\n")
		return exitUsage
	}
	access := c.srv.cfg.Access
	all := f.has("all")
	if all && !access.IsAdmin(c.tech.Name) {
		return c.notAllowed("requests --all", "admins")
	}
	var out []broker.AccessRequest
	if all {
		list, err := access.Requests(ctx, broker.RequestFilter{Limit: 500, Viewer: c.tech.Name})
		if err != nil {
			return c.refused("requests", err)
		}
		out = list
	} else {
		mine, err := access.Requests(ctx, broker.RequestFilter{Technician: c.tech.Name, Limit: 100})
		if err != nil {
			return c.refused("requests", err)
		}
		pending, err := access.Requests(ctx, broker.RequestFilter{States: []broker.RequestState{broker.RequestPending}})
		if err != nil {
			return c.refused("requests", err)
		}
		out = mine
		// Approvers are those who may decide a request: within their
		// scope among other things.
		for _, r := range pending {
			if r.Technician != c.tech.Name && slices.Contains(access.Approvers(&r), c.tech.Name) {
				out = append(out, r)
			}
		}
		slices.SortFunc(out, func(a, b broker.AccessRequest) int { return int(b.ID - a.ID) })
	}
	return c.printRequests(out, f.has("json"), "no requests")
}

// printRequests lists requests (or grants), or says none in words.
func (c *command) printRequests(list []broker.AccessRequest, asJSON bool, none string) int {
	if asJSON {
		if list == nil {
			list = []broker.AccessRequest{}
		}
		b, _ := json.MarshalIndent(list, "", "  ")
		c.printf("%s\n", b)
		return exitOK
	}
	if len(list) == 0 {
		c.printf("%s\n", none)
		return exitOK
	}
	// FROM is where the request was filed from: its grant is used from
	// that country only. The reason is the technician's words, quoted so
	// that they cannot pose as sekisho's.
	tw := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "ID\tTECHNICIAN\tTARGET\tDURATION\tSTATE\tREASON\tFROM\n")
	now := time.Now()
	for _, r := range list {
		fmt.Fprintf(tw, "%d\t%s (%s)\t%s\t%s\t%s\t%q\t%s\n", r.ID, r.Technician, r.Affiliate, r.Target, r.Duration, r.Status(now), r.Reason, r.From())
	}
	tw.Flush()
	return exitOK
}

// decide runs approve, deny, cancel and revoke.
func (c *command) decide(ctx context.Context, verb string, f *flags) int {
	note := map[string]string{"approve": "comment", "deny": "reason", "revoke": "reason", "cancel": "reason"}[verb]
	usage := map[string]string{"approve": "approve N [--comment TEXT]", "deny": "deny N --reason TEXT",
		"revoke": "revoke N [--reason TEXT]", "cancel": "cancel N"}[verb]
	if err := f.allow(note); err != nil || len(f.args) != 1 {
		c.errorf("sekisho: usage: %s\n", usage)
		return exitUsage
	}
	id, err := strconv.ParseInt(strings.TrimPrefix(f.args[0], "#"), 10, 64)
	if err != nil || id < 1 {
		c.errorf("sekisho: %s: %q is not a request number\n", verb, f.args[0])
		return exitUsage
	}
	access := c.srv.cfg.Access
	text := f.get(note)
	var r broker.AccessRequest
	switch verb {
	case "approve":
		r, err = access.Approve(ctx, c.tech.Name, id, text)
	case "deny":
		r, err = access.Deny(ctx, c.tech.Name, id, text)
	case "cancel":
		if text == "" {
			text = "cancelled by " + c.tech.Name
		}
		r, err = access.Cancel(ctx, c.tech.Name, id, text)
	case "revoke":
		if text == "" {
			text = "revoked without a reason given"
		}
		r, err = access.Revoke(ctx, c.tech.Name, id, text)
	}
	if err != nil {
		return c.refused(verb, err)
	}
	c.printf("request %d (%s → %s): %s\n", r.ID, r.Technician, r.Target, r.Status(time.Now()))
	return exitOK
}

// grants lists the grants in force: the technician's own, or, for an
// approver or admin, all of them.
func (c *command) grants(ctx context.Context, f *flags) int {
	if f != nil {
		if err := f.allow("json"); err != nil || len(f.args) != 0 {
			c.errorf("sekisho: usage: grants [--json]\n")
			return exitUsage
		}
	}
	access := c.srv.cfg.Access
	approved := []broker.RequestState{broker.RequestApproved}
	list, err := access.Requests(ctx, broker.RequestFilter{States: approved, Technician: c.tech.Name})
	if err != nil {
		return c.refused("grants", err)
	}
	admin := access.IsAdmin(c.tech.Name)
	if admin || access.IsApprover(c.tech.Name) {
		others, err := access.Requests(ctx, broker.RequestFilter{States: approved, Viewer: c.tech.Name})
		if err != nil {
			return c.refused("grants", err)
		}
		for _, r := range others {
			if r.Technician != c.tech.Name {
				list = append(list, r)
			}
		}
		slices.SortFunc(list, func(a, b broker.AccessRequest) int { return int(b.ID - a.ID) })
	}
	// Technicians see their own grants; admins every other one within
	// their scope; approvers those they could have decided.
	var active []broker.AccessRequest
	now := time.Now()
	for _, r := range list {
		if r.ActiveGrant(now) && (admin || r.Technician == c.tech.Name || slices.Contains(access.Approvers(&r), c.tech.Name)) {
			active = append(active, r)
		}
	}
	if f == nil && len(active) == 0 {
		c.printf("no grants in force\n")
		return exitOK
	}
	return c.printRequests(active, f != nil && f.has("json"), "no grants in force")
}

func (c *command) notAllowed(what, who string) int {
	c.srv.cfg.Broker.Audit(context.Background(), broker.AuditEvent{Kind: broker.EventRefused, Technician: c.tech.Name,
		Source: c.source, Detail: fmt.Sprintf("command %q refused: %s only", what, who)})
	c.errorf("sekisho: %s is for %s only\n", what, who)
	return exitRefused
}

func (c *command) sessions(_ context.Context, f *flags) int {
	if err := f.allow("live", "json"); err != nil || len(f.args) != 0 || !f.has("live") {
		c.errorf("sekisho: usage: sessions --live [--json]  (past sessions: sekisho sessions on the server)\n")
		return exitUsage
	}
	if !c.srv.cfg.Access.IsAdmin(c.tech.Name) {
		return c.notAllowed("sessions --live", "admins")
	}
	scope := c.scope()
	live := slices.DeleteFunc(c.srv.Live(), func(l LiveSession) bool { return !scope.Covers(l.Residency) })
	if f.has("json") {
		b, _ := json.MarshalIndent(live, "", "  ")
		c.printf("%s\n", b)
		return exitOK
	}
	if len(live) == 0 {
		c.printf("no live sessions\n")
		return exitOK
	}
	tw := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "SESSION\tTECHNICIAN\tTARGET\tSOURCE\tSINCE\tRULE\tREQUEST\n")
	for _, l := range live {
		req := "-"
		if l.Request != 0 {
			req = strconv.FormatInt(l.Request, 10)
		}
		fmt.Fprintf(tw, "%s\t%s (%s)\t%s\t%s\t%s\t%s\t%s\n", l.ID, l.Technician, l.Affiliate, l.Target, l.Source,
			l.Started.UTC().Format(time.RFC3339), l.Rule, req)
	}
	tw.Flush()
	return exitOK
}

func (c *command) kill(_ context.Context, f *flags) int {
	if err := f.allow("reason"); err != nil || len(f.args) != 1 {
		c.errorf("sekisho: usage: kill SESSION [--reason TEXT]\n")
		return exitUsage
	}
	if !c.srv.cfg.Access.IsAdmin(c.tech.Name) {
		return c.notAllowed("kill", "admins")
	}
	why := "ended by " + c.tech.Name
	if r := f.get("reason"); r != "" {
		if _, err := broker.CheckText("the reason", r); err != nil {
			c.errorf("sekisho: kill: %v\n", err)
			return exitUsage
		}
		why += ": " + r
	}
	live := c.srv.Live()
	if i := slices.IndexFunc(live, func(l LiveSession) bool { return l.ID == f.args[0] }); i >= 0 {
		// Outside the admin's scope a session is not found, as in the
		// console; the audit log says why.
		l := live[i]
		if c.srv.cfg.Access.CheckScope(context.Background(), c.tech.Name, "kill", c.source, broker.SessionConcern(l.ID, l.Target, l.Residency)) != nil {
			c.errorf("sekisho: no live session %s on this node (see sessions --live)\n", f.args[0])
			return exitRefused
		}
	}
	if !c.srv.Kill(f.args[0], why) {
		c.errorf("sekisho: no live session %s on this node (see sessions --live)\n", f.args[0])
		return exitRefused
	}
	c.srv.cfg.Broker.Audit(context.Background(), broker.AuditEvent{Kind: broker.EventSessionKilled, Technician: c.tech.Name,
		Source: c.source, Session: f.args[0], Detail: why})
	c.printf("session %s ended\n", f.args[0])
	return exitOK
}

// watch follows a session's recording as it is written. It is read-only
// by construction: recording.Watch reads files and has no path to the
// live connection, and the watcher's input is read and dropped here.
// Ctrl-C on the watcher's terminal, or the channel closing, stops it.
func (c *command) watch(ctx context.Context, f *flags) int {
	if err := f.allow("from-start"); err != nil || len(f.args) != 1 {
		c.errorf("sekisho: usage: watch SESSION [--from-start]\n")
		return exitUsage
	}
	if !c.mayWatch() {
		return c.notAllowed("watch", "reviewers and admins")
	}
	id, root := f.args[0], c.srv.cfg.RecordingDir
	if _, err := recording.SessionDir(root, id); err != nil {
		c.errorf("sekisho: watch: %q is not a session ID (see sessions --live)\n", id)
		return exitUsage
	}
	meta, err := recording.ReadMeta(root, id)
	if errors.Is(err, fs.ErrNotExist) {
		if r, ok := c.servedElsewhere(id); ok {
			return c.watchElsewhere(ctx, f, r)
		}
	}
	if err == nil && c.srv.cfg.Access.CheckScope(context.Background(), c.tech.Name, "watch", c.source, broker.SessionConcern(id, meta.Target, meta.Residency)) != nil {
		// As in the web console: outside a reviewer's scope a session
		// is not found, and the audit log says why.
		c.errorf("sekisho: watch: no session %s on this node (see sessions --live)\n", id)
		return exitRefused
	}
	if err != nil {
		detail := fmt.Sprintf("command \"watch\" refused: %v", err)
		c.srv.cfg.Broker.Audit(context.Background(), broker.AuditEvent{Kind: broker.EventRefused, Technician: c.tech.Name,
			Source: c.source, Session: id, Detail: detail})
		if errors.Is(err, fs.ErrNotExist) {
			c.errorf("sekisho: watch: no session %s on this node (see sessions --live)\n", id)
		} else {
			c.srv.log.Error("watch failed", "technician", c.tech.Name, "session", id, "err", err)
			c.errorf("sekisho: watch: the recording of session %s cannot be read; tell the sekisho operator\n", id)
		}
		return exitRefused
	}
	c.srv.cfg.Broker.Audit(context.Background(), broker.AuditEvent{Kind: broker.EventSessionWatched, Technician: c.tech.Name,
		Source: c.source, Session: id})
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	go c.dropInput(stop)
	return c.watched("watch", "watching", id, recording.Watch(ctx, c.raw, root, id, recording.WatchOptions{FromStart: f.has("from-start")}))
}

// watched is how a live view of session id ended, for the command name
// (doing it: "watching"): with the session, stopped by the viewer, or
// unreadable.
func (c *command) watched(name, doing, id string, err error) int {
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, context.Canceled):
		io.WriteString(c.raw, "\r\n[sekisho: stopped "+doing+"]\r\n")
		return exitOK
	}
	c.srv.log.Error(name+" failed", "technician", c.tech.Name, "session", id, "err", err)
	c.errorf("sekisho: %s: the recording of session %s cannot be read; tell the sekisho operator\n", name, id)
	return exitRefused
}

// servedElsewhere returns the register's entry of session id if it is
// live on another node of the cluster.
func (c *command) servedElsewhere(id string) (broker.SessionRecord, bool) {
	if c.srv.cfg.Register == nil || c.srv.cfg.Peers == nil {
		return broker.SessionRecord{}, false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := c.srv.cfg.Register.Session(ctx, id)
	if err != nil || r.Ended() || r.Node == "" || r.Node == c.srv.cfg.NodeName {
		return broker.SessionRecord{}, false
	}
	return r, true
}

// watchElsewhere follows session r, which another node serves, over the
// node-to-node link; who may watch what is decided here, as for a
// session of this node.
func (c *command) watchElsewhere(ctx context.Context, f *flags, r broker.SessionRecord) int {
	if c.srv.cfg.Access.CheckScope(context.Background(), c.tech.Name, "watch", c.source, broker.SessionConcern(r.ID, r.Target, r.Residency)) != nil {
		c.errorf("sekisho: watch: no session %s on this node (see sessions --live)\n", r.ID)
		return exitRefused
	}
	c.srv.cfg.Broker.Audit(context.Background(), broker.AuditEvent{Kind: broker.EventSessionWatched, Technician: c.tech.Name,
		Source: c.source, Session: r.ID, Target: r.Target, Detail: "served by node " + r.Node})
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	go c.dropInput(stop)
	err := c.srv.cfg.Peers.Watch(ctx, r.Node, r.ID, c.tech.Name, c.raw, recording.WatchOptions{FromStart: f.has("from-start")})
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, context.Canceled) || ctx.Err() != nil:
		io.WriteString(c.raw, "\r\n[sekisho: stopped watching]\r\n")
		return exitOK
	case errors.Is(err, recording.ErrNoRecording):
		c.errorf("sekisho: watch: session %s is no longer live\n", r.ID)
		return exitRefused
	}
	c.srv.log.Error("watch through another node failed", "technician", c.tech.Name, "session", r.ID, "node", r.Node, "err", err)
	c.errorf("sekisho: watch: session %s is served by node %s, which cannot be reached now; try again, or tell the sekisho operator\n", r.ID, r.Node)
	return exitRefused
}

// login prints a one-time link to the web console, bound to this
// technician: the key that signed this connection is the sign-in.
func (c *command) login(_ context.Context, f *flags) int {
	if err := f.allow(); err != nil || len(f.args) != 0 {
		c.errorf("sekisho: usage: login\n")
		return exitUsage
	}
	if c.srv.cfg.Console == nil {
		c.errorf("sekisho: login: the web console is not enabled on this server (web.listen in the config)\n")
		return exitRefused
	}
	link, expires, err := c.srv.cfg.Console.SignInLink(c.tech.Name, ssh.FingerprintSHA256(c.key))
	if err != nil {
		c.errorf("sekisho: login: %v\n", err)
		return exitRefused
	}
	c.printf("Open this link within %s; it works once and signs you in as %s:\n%s\n",
		time.Until(expires).Round(time.Second), c.tech.Name, link)
	return exitOK
}

// scope is the technician's scope as configured now: review_residency
// limits what they see and act on, over SSH as in the web console.
func (c *command) scope() broker.Scope { return c.srv.cfg.Access.ScopeOf(c.tech.Name) }

// mayWatch reports whether the technician, as configured now, is an admin
// or a reviewer.
func (c *command) mayWatch() bool {
	return c.srv.cfg.Access.IsAdmin(c.tech.Name) || c.srv.cfg.Access.IsReviewer(c.tech.Name)
}

// dropInput reads the watcher's input and drops it: nothing a watcher
// types goes anywhere. Ctrl-C on a terminal calls stop. It returns when
// the channel's input ends, at the latest when the channel closes.
func (c *command) dropInput(stop func()) {
	buf := make([]byte, 256)
	for {
		n, err := c.in.Read(buf)
		if c.pty && bytes.IndexByte(buf[:n], 0x03) >= 0 {
			stop()
		}
		if err != nil {
			return // end of input is not the end of the watch: output goes on
		}
	}
}

// flags are a command's arguments: --name VALUE (VALUE runs to the next
// --flag, since ssh joins the words of a remote command with spaces and a
// reason has several), --name=VALUE, bare --name, and positional words.
type flags struct {
	args []string
	vals map[string]string
}

// boolFlags take no value.
var boolFlags = map[string]bool{"all": true, "json": true, "live": true, "from-start": true}

func parseFlags(words []string) (*flags, error) {
	f := &flags{vals: map[string]string{}}
	for i := 0; i < len(words); i++ {
		w := words[i]
		if !strings.HasPrefix(w, "--") || len(w) == 2 {
			f.args = append(f.args, w)
			continue
		}
		name, val, hasVal := strings.Cut(w[2:], "=")
		if _, dup := f.vals[name]; dup {
			return nil, fmt.Errorf("--%s given twice", name)
		}
		if !hasVal && !boolFlags[name] {
			var parts []string
			for i+1 < len(words) && !strings.HasPrefix(words[i+1], "--") {
				i++
				parts = append(parts, words[i])
			}
			if len(parts) == 0 {
				return nil, fmt.Errorf("--%s needs a value", name)
			}
			val = strings.Join(parts, " ")
		}
		f.vals[name] = val
	}
	return f, nil
}

// allow returns an error if a flag other than names was given.
func (f *flags) allow(names ...string) error {
	for n := range f.vals {
		if !slices.Contains(names, n) {
			return fmt.Errorf("unknown flag --%s", n)
		}
	}
	return nil
}

func (f *flags) get(name string) string { return f.vals[name] }

func (f *flags) has(name string) bool { _, ok := f.vals[name]; return ok }

// splitCommand splits a remote command line into words, honouring single
// and double quotes and backslash escapes as a shell would.
func splitCommand(s string) ([]string, error) {
	var (
		words []string
		cur   strings.Builder
		in    bool // inside a word
		quote rune
	)
	rs := []rune(s)
	for i := 0; i < len(rs); i++ {
		r := rs[i]
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote == '\'':
			cur.WriteRune(r)
		case r == '\\' && i+1 < len(rs):
			i++
			cur.WriteRune(rs[i])
			in = true
		case quote == '"':
			cur.WriteRune(r)
		case r == '\'' || r == '"':
			quote, in = r, true
		case r == ' ' || r == '\t' || r == '\n':
			if in {
				words = append(words, cur.String())
				cur.Reset()
				in = false
			}
		default:
			cur.WriteRune(r)
			in = true
		}
	}
	if quote != 0 {
		return nil, fmt.Errorf("unterminated %c quote", quote)
	}
	if in {
		words = append(words, cur.String())
	}
	return words, nil
}
