package node

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/crypto/ssh"

	"github.com/sekisho/sekisho/broker"
	"github.com/sekisho/sekisho/internal/syslog"
	"github.com/sekisho/sekisho/notify"
	"github.com/sekisho/sekisho/recording"
	"github.com/sekisho/sekisho/session"
	"github.com/sekisho/sekisho/web"
)

// A Node is one running sekisho bastion: the SSH server, its broker and
// state store, the web console and metrics when configured, and the jobs
// that run beside them (lock watch, request expiry, retention). Several
// nodes may run in one process, each from its own config.
type Node struct {
	srv      *session.Server
	brk      *broker.Broker
	store    Store
	ln       net.Listener
	served   chan struct{} // closed when the SSH listener has ended
	serveErr error         // why it ended; read after served is closed
	log      *slog.Logger
	cancel   context.CancelFunc // ends the lock watcher
	watcher  chan struct{}      // closed when the lock watcher has ended
	lockKick chan struct{}      // has the lock watcher re-read locks at once

	notifier *notify.Notifier
	metrics  *http.Server        // nil without metrics.listen
	web      *http.Server        // nil without web.listen
	indexer  chan struct{}       // closed when the console's indexer has ended
	uploader *recording.Uploader // nil without recording stores

	retention retentionJob
	pidFile   string        // removed on stop; empty if it could not be written
	peer      *peerListener // nil without cluster.listen

	// The node's place in a cluster (PostgreSQL state): its name and
	// start in the nodes' register, the door it closes when it cannot
	// write its heartbeat, and the recovery of lost nodes' sessions.
	name      string
	started   time.Time
	fence     *fenceListener
	health    *health        // answers /healthz and /readyz
	auditCopy *syslog.Sender // nil without audit.syslog
	lost      lostNodeJob
	jobs      sync.WaitGroup     // the heartbeat, the lost-node watch, the write spool, the listener for changes
	stopBeats context.CancelFunc // ends the heartbeat, after the sessions
}

// Reload reads the config at path again and puts its technicians,
// targets, rules and networks in force, ending live sessions they no
// longer allow. A config that does not load leaves the old one in force,
// and the error is logged as well as returned. What else the config says
// (listen, host key, vault, state, recordings, webhooks, metrics) needs
// a restart.
func (n *Node) Reload(path string) error {
	cfg, err := LoadConfig(path)
	if err != nil {
		n.log.Error("config reload failed; the previous config stays in force", "err", err)
		return err
	}
	techs, targets, policy := cfg.Domain()
	n.brk.Replace(techs, targets, policy, cfg.geo)
	n.brk.SetAdminGroups(cfg.AdminGroups)
	n.brk.SetReviewerGroups(cfg.ReviewerGroups)
	n.brk.SetPowersWithoutMFA(cfg.PowersWithoutMFA)
	// What is filed follows the new rules before live sessions are
	// checked against them: a grant cut or revoked ends its sessions.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := n.brk.ReviseRequests(ctx); err != nil {
		n.log.Error("pending requests and grants not all held to the new rules; each is when next decided", "err", err)
	}
	ended := n.srv.Revalidate()
	n.log.Info("config reloaded (listen, host key, vault, state, recordings, webhooks, audit.syslog and metrics need a restart)",
		"technicians", len(techs), "targets", len(targets), "rules", len(policy.Rules), "sessions_ended", ended)
	return nil
}

// Addr returns the address the node's SSH server listens on.
func (n *Node) Addr() net.Addr { return n.ln.Addr() }

// Broker returns the node's broker, for what the command line does on a
// node it started (the demo enrolls its technicians' second factor).
func (n *Node) Broker() *broker.Broker { return n.brk }

// Done is closed when the node's SSH listener has ended: after Stop, or
// before it when the listener failed; Err then says why. A node whose
// listener failed serves no one and should be stopped.
func (n *Node) Done() <-chan struct{} { return n.served }

// Err returns why the SSH listener ended, once Done is closed.
func (n *Node) Err() error {
	<-n.served
	return n.serveErr
}

// Start wires a node from cfg and starts serving: it opens the state
// store, checks Vault, recovers what a crash left (recordings unsealed,
// sessions not ended in the register), and starts the SSH server, the
// console and metrics when configured, and the node's jobs. When ln is
// nil it listens on cfg.Listen. The node runs until Stop, whatever
// becomes of ctx, which bounds only the start.
func Start(ctx context.Context, cfg *Config, logger *slog.Logger, ln net.Listener) (*Node, error) {
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
	store, err := OpenStore(ctx, cfg)
	if err != nil {
		return nil, err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	counts := newBastionMetrics(reg)
	issuer, err := broker.NewIssuer(cfg.VaultConfig())
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
	// ProxyJump needs the host CA; the rest of sekisho does not, so a
	// Vault set up before it existed only turns ProxyJump away.
	checkCtx, cancel = context.WithTimeout(ctx, 10*time.Second)
	if cfg.SSH.ProxyJump != nil && !*cfg.SSH.ProxyJump {
		// Off: nothing to check.
	} else if _, err := issuer.HostCA(checkCtx); err != nil {
		logger.Warn("ProxyJump (ssh -J) refused until the host CA exists: run `sekisho vault setup` again", "err", err)
	}
	cancel()
	techs, targets, policy := cfg.Domain()
	notifier, err := notify.New(cfg.webhooks(), notify.Options{Logger: logger, Registerer: reg})
	if err != nil {
		store.Close()
		return nil, err
	}
	// The broker's writes that cannot wait go to a local spool while the
	// store does not take them.
	spool := newWriteSpool(store, filepath.Join(filepath.Dir(recDir), "register-spool.jsonl"), logger)
	onAudit := counts.observe
	var auditCopy *syslog.Sender
	if sc := cfg.SyslogConfig(); sc != nil {
		if auditCopy, err = syslog.New(*sc, logger); err != nil {
			store.Close()
			return nil, fmt.Errorf("audit.syslog: %w", err)
		}
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "sekisho_audit_syslog_dropped_total",
			Help: "Audit events not sent to syslog because its queue was full (the store has them)."},
			func() float64 { return float64(auditCopy.Dropped()) }))
		onAudit = func(e broker.AuditEvent) { counts.observe(e); auditCopy.Send(e) }
	}
	brk := broker.New(broker.Config{Technicians: techs, Targets: targets, Policy: policy, Geo: cfg.geo, Issuer: issuer, Store: spool,
		Logger: logger, Notifier: notifier, AdminGroups: cfg.AdminGroups, ReviewerGroups: cfg.ReviewerGroups,
		PowersWithoutMFA: cfg.PowersWithoutMFA, OnAudit: onAudit})
	counts.registerState(reg, brk, store)
	// A node of a cluster beats before it recovers anything, and goes on
	// beating meanwhile: a survivor that took it for lost has claimed its
	// sessions already, and none does once it beats.
	started := time.Now()
	if cfg.Postgres() {
		if err := store.Heartbeat(ctx, cfg.NodeName, cfg.PeerAddress(), started); err != nil {
			store.Close()
			return nil, err
		}
		stopBeats := beatMeanwhile(store, cfg.NodeName, cfg.PeerAddress(), started, time.Duration(cfg.Cluster.Heartbeat))
		defer stopBeats()
		routes, err := cfg.RecordingRoutes()
		if err != nil {
			store.Close()
			return nil, err
		}
		setAsideSuperseded(ctx, store, recDir, routes, logger)
		// The first node to put a seal wins: a store that does not
		// refuse the second put cannot hold several nodes' recordings.
		for _, st := range routes.ObjectStores() {
			pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err := st.CheckConditionalWrites(pctx)
			cancel()
			if errors.Is(err, recording.ErrNoConditionalWrites) {
				store.Close()
				return nil, err
			}
			if err != nil {
				logger.Warn("a recording store could not be probed for conditional writes; sessions of its zones are refused while it does not answer", "err", err)
			}
		}
	}
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
		case r.Ended() && r.EndReason == broker.EndNodeLost:
			// Another node took this one for lost; the recording of a zone
			// kept in the spool never left here, and is sealed here.
		case r.Ended() && r.EndReason != session.EndRecordingFailed:
			return fmt.Errorf("the session ended (%s) but its recording was never sealed; %w", r.EndReason, recording.ErrNotRecoverable)
		}
		return nil
	})
	for _, err := range errs {
		logger.Error("recording not recovered", "err", err)
		if errors.Is(err, recording.ErrNotRecoverable) {
			brk.Audit(ctx, broker.AuditEvent{Kind: broker.EventRecordingSealMissing, Detail: err.Error()})
		}
	}
	recoverSessions(ctx, brk, store, sealed, logger)
	finishRegistrations(ctx, brk, store, recDir, logger)
	routes, err := cfg.RecordingRoutes()
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
	// A live session another node serves is relayed from it, to the
	// console and to watch over SSH.
	var peers *Peers
	if cfg.Postgres() {
		peers = newPeers(cfg, store, hostKey)
	}
	if cfg.Web.Listen != "" {
		var webPeers web.Peers // nil, not a nil *Peers, when alone
		if peers != nil {
			webPeers = peers
		}
		console, err = web.New(web.Config{Broker: brk, Store: store, RecordingDir: recDir, RecordingKey: recKey.Public().(ed25519.PublicKey),
			Live: killFunc(func(id, why string) bool { return srv.Kill(id, why) }), NodeName: cfg.NodeName, Peers: webPeers, URL: cfg.Web.URL,
			IdleTimeout: time.Duration(cfg.Web.IdleTimeout), SessionTTL: time.Duration(cfg.Web.SessionTTL), Logger: logger,
			OIDC: cfg.consoleOIDC(), Balancers: cfg.proxies, Moderation: consoleModeration{&srv}})
		if err != nil {
			store.Close()
			return nil, err
		}
		consoleIface = console
	}
	var jump session.Jump = brk
	if cfg.SSH.ProxyJump != nil && !*cfg.SSH.ProxyJump {
		jump = nil
	}
	srv, err = session.NewServer(session.Config{
		NodeName: cfg.NodeName, Access: brk, RecordingKey: recKey, Uploader: uploader, Console: consoleIface, Jump: jump,
		Register: store, Peers: sessionPeers(peers),
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
	fence := &fenceListener{Listener: ln}
	ln = fence
	if _, err := brk.RefreshLocks(ctx); err != nil {
		store.Close()
		return nil, err
	}
	// The config may have changed while the server was stopped.
	if _, err := brk.ReviseRequests(ctx); err != nil {
		logger.Error("pending requests and grants not all held to the rules; each is when next decided", "err", err)
	}
	brk.OnGrantsChanged(func() {
		if ended := srv.Revalidate(); ended > 0 {
			logger.Warn("grants revoked: live sessions ended", "sessions", ended)
		}
	})
	n := &Node{srv: srv, brk: brk, store: store, ln: ln, served: make(chan struct{}), log: logger, watcher: make(chan struct{}), lockKick: make(chan struct{}, 1), notifier: notifier, uploader: uploader,
		name: cfg.NodeName, started: started, fence: fence, auditCopy: auditCopy}
	n.health = &health{node: cfg.NodeName, vault: issuer.Reachable, recDir: func() error { return checkWritableDir(recDir) },
		store: func(ctx context.Context) error { return store.ProbeWrite(ctx, cfg.NodeName) }, standing: fence.closed.Load, log: logger}
	if err := n.startPeer(cfg, hostKey, recDir); err != nil {
		store.Close()
		return nil, err
	}
	if cfg.Metrics.Listen != "" {
		mln, err := net.Listen("tcp", cfg.Metrics.Listen)
		if err != nil {
			store.Close()
			return nil, fmt.Errorf("metrics.listen: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		n.metrics = &http.Server{Handler: n.health.wrap(mux), ReadHeaderTimeout: 10 * time.Second}
		go n.metrics.Serve(mln)
		logger.Info("metrics listening", "addr", mln.Addr().String())
	}
	var wctx context.Context
	wctx, n.cancel = context.WithCancel(context.Background())
	if console != nil {
		if err := n.startConsole(wctx, cfg, console); err != nil {
			n.cancel()
			store.Close()
			return nil, err
		}
	}
	go n.watchLocks(wctx)
	go keepGCHeadroom(wctx)
	n.jobs.Add(2)
	go func() { defer n.jobs.Done(); spool.run(wctx, time.Second) }()
	go func() { defer n.jobs.Done(); n.listenForChanges(wctx) }()
	n.retention = retentionJob{cfg: cfg, recDir: recDir, routes: routes, key: recKey.Public().(ed25519.PublicKey)}
	go n.runRetention(wctx, time.Duration(cfg.RetentionInterval))
	if cfg.Postgres() {
		n.lost = lostNodeJob{lostAfter: time.Duration(cfg.Cluster.NodeLostAfter), routes: routes, key: recKey}
		// The heartbeat goes on until the node's sessions have ended
		// (Stop), or a survivor could take them for lost meanwhile.
		var hctx context.Context
		hctx, n.stopBeats = context.WithCancel(context.Background())
		n.jobs.Add(2)
		go func() {
			defer n.jobs.Done()
			n.heartbeat(hctx, time.Duration(cfg.Cluster.Heartbeat), time.Duration(cfg.Cluster.NodeLostAfter), time.Now(), n.endLive)
		}()
		go func() {
			defer n.jobs.Done()
			n.watchLostNodes(wctx, time.Duration(cfg.Cluster.Heartbeat))
		}()
	}
	go func() {
		n.serveErr = srv.Serve(ln)
		close(n.served)
	}()
	// The pid file is whole before "listening" is logged: whoever waits
	// for that line may read it at once.
	n.pidFile = cfg.PidFile()
	if err := writeFileAtomic(n.pidFile, []byte(strconv.Itoa(os.Getpid())+"\n")); err != nil {
		logger.Warn("pid file not written; `sekisho reload` will not find this server", "path", n.pidFile, "err", err)
		n.pidFile = ""
	}
	logger.Info("sekisho listening", "addr", ln.Addr().String(), "host_key", ssh.FingerprintSHA256(hostKey.PublicKey()),
		"vault", cfg.Vault.Address, "technicians", len(techs), "targets", len(targets), "rules", len(policy.Rules))
	return n, nil
}

// sessionPeers is p for the SSH side, or nil (not a nil *Peers) when the
// node is alone.
func sessionPeers(p *Peers) session.Peers {
	if p == nil {
		return nil
	}
	return p
}

// Stop shuts the node down, ending its sessions and closing their
// recordings, and waits for its jobs to end. It is called once.
func (n *Node) Stop() error {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	n.health.stopping.Store(true) // balancers' checks fail from now on
	n.cancel()
	<-n.watcher
	err := n.srv.Shutdown(ctx)
	<-n.served
	if n.stopBeats != nil { // a node on PostgreSQL
		n.stopBeats()
	}
	n.jobs.Wait()
	n.stopPeer()
	if n.serveErr != nil && err == nil {
		err = n.serveErr
	}
	if n.metrics != nil {
		n.metrics.Close()
	}
	if n.web != nil {
		n.web.Close()
		<-n.indexer
	}
	if n.uploader != nil {
		n.uploader.Close()
	}
	nctx, ncancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer ncancel()
	if nerr := n.notifier.Close(nctx); nerr != nil {
		n.log.Warn("webhook notifications not all delivered before stopping", "err", nerr)
	}
	if n.auditCopy != nil {
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		if serr := n.auditCopy.Close(sctx); serr != nil {
			n.log.Warn("audit events not all sent to syslog before stopping (the store has them)", "err", serr)
		}
	}
	if cerr := n.store.Close(); err == nil {
		err = cerr
	}
	if n.pidFile != "" {
		os.Remove(n.pidFile)
	}
	n.log.Info("sekisho stopped")
	return err
}
