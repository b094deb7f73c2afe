package main

import (
	"crypto/tls"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"github.com/sekisho/sekisho/notify"
	"github.com/sekisho/sekisho/recording"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
	"golang.org/x/crypto/ssh"
	"golang.org/x/net/netutil"

	"github.com/sekisho/sekisho/broker"
	"github.com/sekisho/sekisho/broker/sqlitestore"
	"github.com/sekisho/sekisho/session"
	"github.com/sekisho/sekisho/web"
)

func cmdServe(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	configPath := fs.String("config", "", "config file")
	if err := fs.Parse(args); err != nil {
		return flagError(err)
	}
	path, err := findConfig(*configPath)
	if err != nil {
		return err
	}
	cfg, err := LoadConfig(path)
	if err != nil {
		return err
	}
	logger := newLogger(cfg, os.Stderr)
	// SIGHUP reloads: ask for it before anyone can find this server.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	b, err := startBastion(ctx, cfg, logger, nil)
	if err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return b.stop()
		case <-hup:
			b.reload(path)
		case err := <-b.done:
			// The listener failed: stop rather than run without serving.
			b.done <- err
			if serr := b.stop(); serr != nil {
				return serr
			}
			return fmt.Errorf("ssh listener: %w", err)
		}
	}
}

func newLogger(cfg *Config, w io.Writer) *slog.Logger {
	level := slog.LevelInfo
	switch cfg.LogLevel {
	case "debug":
		level = slog.LevelDebug
	case "warn":
		level = slog.LevelWarn
	case "error":
		level = slog.LevelError
	}
	opts := &slog.HandlerOptions{Level: level}
	w = inertWriter{w} // technicians and targets choose some of what is logged
	if cfg.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// bastion is a running sekisho server.
type bastion struct {
	srv     *session.Server
	brk     *broker.Broker
	store   *sqlitestore.Store
	ln      net.Listener
	done    chan error
	log     *slog.Logger
	cancel  context.CancelFunc // ends the lock watcher
	watcher chan struct{}      // closed when the lock watcher has ended

	notifier *notify.Notifier
	metrics  *http.Server        // nil without metrics.listen
	web      *http.Server        // nil without web.listen
	indexer  chan struct{}       // closed when the console's indexer has ended
	uploader *recording.Uploader // nil without recording stores

	retention retentionJob
	pidFile   string // removed on stop; empty if it could not be written
}

// retentionJob is what the retention job needs of the config at start.
type retentionJob struct {
	cfg    *Config
	recDir string
	routes *recording.Routes
	key    ed25519.PublicKey
}

// runRetention deletes recordings past their zone's retention every
// interval (default 1h), keeping those under a legal hold, and audits
// every deletion.
func (b *bastion) runRetention(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		interval = time.Hour
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		b.expireRecordings(ctx)
	}
}

func (b *bastion) expireRecordings(ctx context.Context) {
	j := b.retention
	holds, err := b.store.Holds(ctx)
	if err != nil {
		b.log.Error("legal holds unreadable: no recording is deleted", "err", err)
		return
	}
	held := map[string]bool{}
	for _, h := range holds {
		held[h.Session] = true
	}
	p := recording.RetentionPolicy{For: j.cfg.retentionFor, Held: func(id string) bool { return held[id] }, Key: j.key}
	now := time.Now()
	deleted, errs := recording.ExpireLocal(j.recDir, p, now)
	for _, st := range j.routes.ObjectStores() {
		d, e := st.Expire(ctx, p, now)
		deleted, errs = append(deleted, d...), append(errs, e...)
	}
	for _, err := range errs {
		b.log.Error("retention: recording not deleted", "err", err)
	}
	for _, m := range deleted {
		b.brk.Audit(ctx, broker.AuditEvent{Kind: "recording.deleted", Technician: m.Technician, Target: m.Target, Session: m.ID,
			Detail: broker.JSONDetail(struct {
				Residency string `json:"residency"`
				Ended     string `json:"ended"`
				Retention string `json:"retention"`
			}{m.Residency, m.End.Format(time.RFC3339), j.cfg.retentionFor(m.Residency).String()})})
		b.log.Info("retention: recording deleted", "session", m.ID, "residency", m.Residency)
	}
}

// lockPoll is how often the store is asked for locks: a lock added by
// `sekisho lock` ends matching sessions within about this long.
const lockPoll = 250 * time.Millisecond

// watchLocks refreshes the locks in force and re-checks live sessions
// whenever they change, until ctx ends.
func (b *bastion) watchLocks(ctx context.Context) {
	defer close(b.watcher)
	t := time.NewTicker(lockPoll)
	defer t.Stop()
	// Rules can depend on the time (hours, days, now): live sessions are
	// re-checked every minute too.
	minute := time.NewTicker(time.Minute)
	defer minute.Stop()
	// Pending access requests expire on time even with nobody waiting.
	second := time.NewTicker(time.Second)
	defer second.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-second.C:
			if _, err := b.brk.ExpireRequests(ctx); err != nil && ctx.Err() == nil {
				b.log.Error("pending access requests cannot be expired", "err", err)
			}
			// Grants revoked elsewhere (another node) end sessions here.
			if n := b.srv.RevalidateGrants(); n > 0 {
				b.log.Warn("grants no longer in force: live sessions ended", "sessions", n)
			}
			continue
		case <-minute.C:
			if n := b.srv.Revalidate(); n > 0 {
				b.log.Warn("rules no longer allow live sessions: ended", "sessions", n)
			}
			continue
		case <-t.C:
		}
		changed, err := b.brk.RefreshLocks(ctx)
		if err != nil {
			if !failing && ctx.Err() == nil {
				b.log.Error("locks cannot be read; the last known locks stay in force", "err", err)
			}
			failing = true
			continue
		}
		failing = false
		if changed {
			if n := b.srv.Revalidate(); n > 0 {
				b.log.Warn("locks changed: live sessions ended", "sessions", n)
			}
		}
	}
}

// reload reads the config again and puts its technicians, targets, rules
// and networks in force, ending live sessions they no longer allow. A
// config that does not load leaves the old one in force.
func (b *bastion) reload(path string) error {
	cfg, err := LoadConfig(path)
	if err != nil {
		b.log.Error("config reload failed; the previous config stays in force", "err", err)
		return err
	}
	techs, targets, policy := cfg.domain()
	b.brk.Replace(techs, targets, policy, cfg.geo)
	b.brk.SetAdminGroups(cfg.AdminGroups)
	b.brk.SetReviewerGroups(cfg.ReviewerGroups)
	b.brk.SetPowersWithoutMFA(cfg.PowersWithoutMFA)
	// What is filed follows the new rules before live sessions are
	// checked against them: a grant cut or revoked ends its sessions.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := b.brk.ReviseRequests(ctx); err != nil {
		b.log.Error("pending requests and grants not all held to the new rules; each is when next decided", "err", err)
	}
	n := b.srv.Revalidate()
	b.log.Info("config reloaded (listen, host key, vault, state, recordings, webhooks and metrics need a restart)",
		"technicians", len(techs), "targets", len(targets), "rules", len(policy.Rules), "sessions_ended", n)
	return nil
}

// Addr returns the address the bastion listens on.
func (b *bastion) Addr() net.Addr { return b.ln.Addr() }

// startBastion wires the parts from cfg and starts serving. When ln is
// nil it listens on cfg.Listen.
func startBastion(ctx context.Context, cfg *Config, logger *slog.Logger, ln net.Listener) (*bastion, error) {
	hostKey, err := loadOrCreateHostKey(cfg.Path(cfg.HostKey), logger)
	if err != nil {
		return nil, err
	}
	recKey, err := loadOrCreateRecordingKey(cfg.Path(cfg.RecordingKey), logger)
	if err != nil {
		return nil, err
	}
	recDir := cfg.Path(cfg.Recordings)
	if err := checkWritableDir(recDir); err != nil {
		return nil, fmt.Errorf("recordings directory %s: %w", recDir, err)
	}
	statePath := cfg.Path(cfg.State)
	if err := os.MkdirAll(filepath.Dir(statePath), 0o700); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	store, err := sqlitestore.Open(ctx, statePath)
	if err != nil {
		return nil, err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	counts := newBastionMetrics(reg)
	issuer, err := broker.NewIssuer(cfg.vaultConfig())
	if err != nil {
		store.Close()
		return nil, err
	}
	issuer.OnCall(counts.vaultCall)
	checkCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = issuer.Check(checkCtx)
	cancel()
	if err != nil {
		store.Close()
		return nil, fmt.Errorf("vault at %s: %w", cfg.Vault.Address, err)
	}
	techs, targets, policy := cfg.domain()
	notifier, err := notify.New(cfg.webhooks(), notify.Options{Logger: logger, Registerer: reg})
	if err != nil {
		store.Close()
		return nil, err
	}
	brk := broker.New(broker.Config{Technicians: techs, Targets: targets, Policy: policy, Geo: cfg.geo, Issuer: issuer, Store: store,
		Logger: logger, Notifier: notifier, AdminGroups: cfg.AdminGroups, ReviewerGroups: cfg.ReviewerGroups,
		PowersWithoutMFA: cfg.PowersWithoutMFA, OnAudit: counts.observe})
	counts.registerState(reg, brk, store)
	// Second-factor secrets stored in the clear by an older sekisho are
	// sealed now. Those Vault will not seal yet keep working, and only
	// those.
	if n, err := brk.SealTOTPSecrets(ctx); err != nil {
		logger.Warn("some TOTP secrets are left in the clear; run `sekisho vault setup` again so that Vault seals them at the next start", "sealed", n, "err", err)
	} else if n > 0 {
		logger.Info("sealed TOTP secrets stored in the clear by an older sekisho", "sealed", n)
	}
	// Recordings left unsealed by a crash are sealed as incomplete first;
	// a broken one does not stop the others, nor the server. One whose
	// seal the register knows was stripped of it, and is not re-sealed.
	sealed, errs := recording.Recover(recDir, recKey, "the server stopped before the session ended (crash or kill)", func(id string) error {
		r, err := store.Session(ctx, id)
		switch {
		case errors.Is(err, broker.ErrNotFound):
			return fmt.Errorf("the register has no such session: made up, or cut off before it was registered; %w", recording.ErrNotRecoverable)
		case err != nil:
			return err
		case r.RecordingHead != "":
			return fmt.Errorf("the register holds its seal but seal.json is gone: it was removed, not lost in a crash; %w (check it with sekisho verify)", recording.ErrNotRecoverable)
		case r.Ended() && r.EndReason != session.EndRecordingFailed:
			return fmt.Errorf("the session ended (%s) but its recording was never sealed; %w", r.EndReason, recording.ErrNotRecoverable)
		}
		return nil
	})
	for _, err := range errs {
		logger.Error("recording not recovered", "err", err)
		if errors.Is(err, recording.ErrNotRecoverable) {
			brk.Audit(ctx, broker.AuditEvent{Kind: "recording.seal_missing", Detail: err.Error()})
		}
	}
	recoverSessions(ctx, brk, store, sealed, logger)
	finishRegistrations(ctx, brk, store, recDir, logger)
	routes, err := cfg.recordingRoutes()
	if err != nil {
		store.Close()
		return nil, err
	}
	var uploader *recording.Uploader
	if len(cfg.RecordingStores) > 0 {
		uploader = recording.NewUploader(recDir, routes, logger)
		// Uploads a crash or a stop interrupted, to the store they started
		// to and for the zone the register gives.
		uploader.Resume(func(id string) (string, error) {
			r, err := store.Session(ctx, id)
			return r.Residency, err
		})
	}
	// The console ends live sessions through srv, made next; it knows the
	// SSH side by this one function only.
	var srv *session.Server
	var console *web.Server
	var consoleIface session.Console
	if cfg.Web.Listen != "" {
		console, err = web.New(web.Config{Broker: brk, Store: store, RecordingDir: recDir, RecordingKey: recKey.Public().(ed25519.PublicKey),
			Live: killFunc(func(id, why string) bool { return srv.Kill(id, why) }), URL: cfg.Web.URL,
			IdleTimeout: time.Duration(cfg.Web.IdleTimeout), SessionTTL: time.Duration(cfg.Web.SessionTTL), Logger: logger})
		if err != nil {
			store.Close()
			return nil, err
		}
		consoleIface = console
	}
	srv, err = session.NewServer(session.Config{
		Access: brk, RecordingKey: recKey, Uploader: uploader, Console: consoleIface,
		HostKey: hostKey, Broker: brk, RecordingDir: recDir, Logger: logger, ForwardBlocked: vaultAddrs(ctx, cfg.Vault.Address),
		Resolver:    forwardResolver(cfg.ForwardResolver),
		AuthTimeout: time.Duration(cfg.SSH.AuthTimeout), MaxAuthTries: cfg.SSH.MaxAuthTries,
		MaxUnauthenticated: cfg.SSH.MaxUnauthenticated, MaxUnauthenticatedPerSource: cfg.SSH.MaxUnauthenticatedPerSource,
		MaxAuthFailuresPerSource: cfg.SSH.MaxAuthFailuresPerSource,
		DialTimeout:              time.Duration(cfg.SSH.DialTimeout), EnvAllow: cfg.SSH.EnvAllow,
		KeepaliveInterval: time.Duration(cfg.SSH.KeepaliveInterval), KeepaliveCountMax: cfg.SSH.KeepaliveCountMax,
	})
	if err != nil {
		store.Close()
		return nil, err
	}
	if ln == nil {
		ln, err = net.Listen("tcp", cfg.Listen)
		if err != nil {
			store.Close()
			return nil, fmt.Errorf("listen: %w", err)
		}
	}
	if len(cfg.proxies) > 0 {
		ln = proxyListener(ln, cfg.proxies)
	}
	if _, err := brk.RefreshLocks(ctx); err != nil {
		store.Close()
		return nil, err
	}
	// The config may have changed while the server was stopped.
	if _, err := brk.ReviseRequests(ctx); err != nil {
		logger.Error("pending requests and grants not all held to the rules; each is when next decided", "err", err)
	}
	brk.OnGrantsChanged(func() {
		if n := srv.Revalidate(); n > 0 {
			logger.Warn("grants revoked: live sessions ended", "sessions", n)
		}
	})
	b := &bastion{srv: srv, brk: brk, store: store, ln: ln, done: make(chan error, 1), log: logger, watcher: make(chan struct{}), notifier: notifier, uploader: uploader}
	if cfg.Metrics.Listen != "" {
		mln, err := net.Listen("tcp", cfg.Metrics.Listen)
		if err != nil {
			store.Close()
			return nil, fmt.Errorf("metrics.listen: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		b.metrics = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go b.metrics.Serve(mln)
		logger.Info("metrics listening", "addr", mln.Addr().String())
	}
	var wctx context.Context
	wctx, b.cancel = context.WithCancel(context.Background())
	if console != nil {
		if err := b.startConsole(wctx, cfg, console); err != nil {
			b.cancel()
			store.Close()
			return nil, err
		}
	}
	go b.watchLocks(wctx)
	b.retention = retentionJob{cfg: cfg, recDir: recDir, routes: routes, key: recKey.Public().(ed25519.PublicKey)}
	go b.runRetention(wctx, time.Duration(cfg.RetentionInterval))
	go func() { b.done <- srv.Serve(ln) }()
	// The pid file is whole before "listening" is logged: whoever waits
	// for that line may read it at once.
	b.pidFile = cfg.Path(cfg.State) + ".pid"
	if err := writeFileAtomic(b.pidFile, []byte(strconv.Itoa(os.Getpid())+"\n")); err != nil {
		logger.Warn("pid file not written; `sekisho reload` will not find this server", "path", b.pidFile, "err", err)
		b.pidFile = ""
	}
	logger.Info("sekisho listening", "addr", ln.Addr().String(), "host_key", ssh.FingerprintSHA256(hostKey.PublicKey()),
		"vault", cfg.Vault.Address, "technicians", len(techs), "targets", len(targets), "rules", len(policy.Rules))
	return b, nil
}

// maxWebConns bounds the console's open connections: it shares the
// process, and its file descriptors, with the SSH side.
const maxWebConns = 512

// killFunc is a web.LiveSessions made of a function.
type killFunc func(id, why string) bool

func (f killFunc) Kill(id, why string) bool { return f(id, why) }

// startConsole serves the web console on web.listen, with TLS when a
// certificate is configured, and indexes ended sessions for its search
// until ctx ends.
func (b *bastion) startConsole(ctx context.Context, cfg *Config, console *web.Server) error {
	ln, err := net.Listen("tcp", cfg.Web.Listen)
	if err != nil {
		return fmt.Errorf("web.listen: %w", err)
	}
	// Bounded like the SSH side's pre-authentication: connections in all,
	// and the time to send a request (a live view lifts it for itself).
	ln = netutil.LimitListener(ln, maxWebConns)
	b.web = &http.Server{Handler: console, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
		IdleTimeout: 2 * time.Minute, ErrorLog: slog.NewLogLogger(b.log.Handler(), slog.LevelWarn)}
	if cfg.Web.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.Path(cfg.Web.TLSCert), cfg.Path(cfg.Web.TLSKey))
		if err != nil {
			ln.Close()
			return fmt.Errorf("web: tls_cert and tls_key: %w", err)
		}
		b.web.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		ln = tls.NewListener(ln, b.web.TLSConfig)
	}
	go b.web.Serve(ln)
	b.indexer = make(chan struct{})
	go func() {
		defer close(b.indexer)
		console.RunIndexer(ctx)
	}()
	b.log.Info("web console listening", "addr", ln.Addr().String(), "url", cfg.Web.URL)
	return nil
}

// stop shuts the server down, ending sessions and closing recordings.
func (b *bastion) stop() error {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	b.cancel()
	<-b.watcher
	err := b.srv.Shutdown(ctx)
	if serr := <-b.done; serr != nil && err == nil {
		err = serr
	}
	if b.metrics != nil {
		b.metrics.Close()
	}
	if b.web != nil {
		b.web.Close()
		<-b.indexer
	}
	if b.uploader != nil {
		b.uploader.Close()
	}
	nctx, ncancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer ncancel()
	if nerr := b.notifier.Close(nctx); nerr != nil {
		b.log.Warn("webhook notifications not all delivered before stopping", "err", nerr)
	}
	if cerr := b.store.Close(); err == nil {
		err = cerr
	}
	if b.pidFile != "" {
		os.Remove(b.pidFile)
	}
	b.log.Info("sekisho stopped")
	return err
}

// loadOrCreateHostKey reads the server's host key, generating an ed25519
// key (mode 0600) on first start. A key file readable by others is refused,
// as OpenSSH does.
func loadOrCreateHostKey(path string, logger *slog.Logger) (ssh.Signer, error) {
	raw, err := loadOrCreateKey(path, "host key", logger)
	if err != nil {
		return nil, err
	}
	return ssh.NewSignerFromKey(raw)
}

// loadOrCreateRecordingKey reads the ed25519 key that signs recordings,
// generating it on first start.
func loadOrCreateRecordingKey(path string, logger *slog.Logger) (ed25519.PrivateKey, error) {
	raw, err := loadOrCreateKey(path, "recording key", logger)
	if err != nil {
		return nil, err
	}
	switch k := raw.(type) {
	case ed25519.PrivateKey:
		return k, nil
	case *ed25519.PrivateKey:
		return *k, nil
	}
	return nil, fmt.Errorf("recording key %s: must be an ed25519 key (ssh-keygen -t ed25519)", path)
}

// loadOrCreateKey reads an OpenSSH private key file, generating an
// ed25519 key (mode 0600) if there is none. A key file readable by others
// is refused, as OpenSSH does.
func loadOrCreateKey(path, what string, logger *slog.Logger) (any, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, err
		}
		block, err := ssh.MarshalPrivateKey(priv, "sekisho "+what)
		if err != nil {
			return nil, err
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		pub, _ := ssh.NewPublicKey(priv.Public())
		logger.Info("generated "+what, "path", path, "fingerprint", ssh.FingerprintSHA256(pub))
		return priv, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%s %s has mode %04o; it must not be readable by others (chmod 600 %s)", what, path, st.Mode().Perm(), path)
	}
	raw, err := ssh.ParseRawPrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", what, path, err)
	}
	return raw, nil
}

// recoverSessions ends, in the register, the sessions whose recordings
// were sealed after a crash, and audits each.
func recoverSessions(ctx context.Context, brk *broker.Broker, store broker.Store, seals []recording.Seal, logger *slog.Logger) {
	const reason = "server stopped: the session was cut off (crash or kill); its recording is sealed incomplete"
	for _, seal := range seals {
		id := seal.Session
		r, err := store.Session(ctx, id)
		if err == nil && !r.Ended() {
			if err := brk.SessionEnded(ctx, id, broker.SessionEnd{At: time.Now(), BytesIn: r.BytesIn, BytesOut: r.BytesOut, Reason: reason}); err != nil {
				logger.Error("crashed session not ended in the register", "session", id, "err", err)
			}
		}
		brk.Audit(ctx, broker.AuditEvent{Kind: "recording.recovered", Session: id, Detail: reason})
		err = brk.RecordingSealed(ctx, broker.RecordingSeal{Session: id, Complete: false, Reason: seal.Reason, Chunks: seal.Chunks,
			Head: seal.Head, MetaSHA256: seal.MetaSHA256, Key: seal.Key, Signature: seal.Signature})
		if err != nil && !errors.Is(err, broker.ErrNotFound) {
			logger.Error("recovered seal not registered", "session", id, "err", err)
		}
		logger.Warn("recording of a session cut off by a crash sealed as incomplete", "session", id)
	}
}

// finishRegistrations ends, in the register, the sessions whose
// recordings on this node were sealed but whose end was never registered:
// the node was killed between sealing a recording and registering the
// session's end (or its seal). Nothing is live on a node that is only
// starting, and a recording directory belongs to one node.
func finishRegistrations(ctx context.Context, brk *broker.Broker, store broker.Store, recDir string, logger *slog.Logger) {
	live, err := store.Sessions(ctx, broker.SessionFilter{Live: true})
	if err != nil {
		logger.Error("sessions left live by a crash not checked", "err", err)
		return
	}
	for _, r := range live {
		seal, err := recording.ReadSeal(recDir, r.ID)
		if err != nil {
			continue // not this node's, or recovered above
		}
		end := broker.SessionEnd{At: time.Now(), BytesIn: r.BytesIn, BytesOut: r.BytesOut,
			Reason: "server stopped after the session ended, before registering its end"}
		if m, err := recording.ReadMeta(recDir, r.ID); err == nil && !m.End.IsZero() {
			end.At, end.BytesIn, end.BytesOut = m.End, m.BytesIn, m.BytesOut
			if m.EndReason != "" {
				end.Reason = m.EndReason
			}
		}
		if err := brk.SessionEnded(ctx, r.ID, end); err != nil {
			logger.Error("sealed session not ended in the register", "session", r.ID, "err", err)
			continue
		}
		if r.RecordingHead == "" {
			err = brk.RecordingSealed(ctx, broker.RecordingSeal{Session: r.ID, Complete: seal.Complete, Reason: seal.Reason, Chunks: seal.Chunks,
				Head: seal.Head, MetaSHA256: seal.MetaSHA256, Key: seal.Key, Signature: seal.Signature})
			if err != nil {
				logger.Error("seal not registered", "session", r.ID, "err", err)
			}
		}
		logger.Warn("session whose end a crash kept from the register ended from its sealed recording", "session", r.ID, "reason", end.Reason)
	}
}

// checkWritableDir makes dir (mode 0700) and proves it can be written, so
// that a read-only recording store refuses to start rather than refusing
// every session.
func checkWritableDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, ".probe-*")
	if err != nil {
		return err
	}
	name := f.Name()
	_, err = f.Write([]byte("probe"))
	if err == nil {
		err = f.Sync()
	}
	f.Close()
	os.Remove(name)
	return err
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// proxyListener takes the client's address from a PROXY protocol header
// that a trusted load balancer must send; a header from any other peer
// ends the connection, so nobody can claim another address.
func proxyListener(ln net.Listener, trusted []netip.Prefix) net.Listener {
	return &proxyproto.Listener{
		Listener:          ln,
		ReadHeaderTimeout: 10 * time.Second,
		ConnPolicy: func(o proxyproto.ConnPolicyOptions) (proxyproto.Policy, error) {
			if ap, err := netip.ParseAddrPort(o.Upstream.String()); err == nil {
				for _, p := range trusted {
					if p.Contains(ap.Addr().Unmap()) {
						// A balancer must say who the client is: its own
						// address would pass for every client's.
						return proxyproto.REQUIRE, nil
					}
				}
			}
			return proxyproto.REJECT, nil
		},
		ValidateHeader: func(h *proxyproto.Header) error {
			// Only a TCP client's address may stand for the client:
			// LOCAL and UNKNOWN carry none, and an AF_UNIX stream
			// header (IsStream too) carries a path of the balancer's
			// choosing. ErrInvalidUpstream gets the refusal audited.
			if _, tcp := h.SourceAddr.(*net.TCPAddr); h.Command.IsLocal() || !tcp ||
				(h.TransportProtocol != proxyproto.TCPv4 && h.TransportProtocol != proxyproto.TCPv6) {
				return fmt.Errorf("PROXY header without a TCP client address: %w", proxyproto.ErrInvalidUpstream)
			}
			return nil
		},
	}
}

// vaultAddrs returns Vault's addresses, which port forwarding never reaches
// unless a rule names them.
func vaultAddrs(ctx context.Context, address string) []netip.Addr {
	u, err := url.Parse(address)
	if err != nil {
		return nil
	}
	if a, err := netip.ParseAddr(u.Hostname()); err == nil {
		return []netip.Addr{a}
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	addrs, _ := net.DefaultResolver.LookupNetIP(ctx, "ip", u.Hostname())
	return addrs
}

// forwardResolver resolves port-forward destinations with server (IP:port),
// or the system's resolver when server is empty.
func forwardResolver(server string) session.Resolver {
	if server == "" {
		return net.DefaultResolver
	}
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, server)
	}}
}

// writeFileAtomic writes data to a temporary file beside path and renames
// it over path, so a reader sees the old content or the new, never a part.
func writeFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
