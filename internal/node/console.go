package node

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"golang.org/x/net/netutil"

	"github.com/sekisho/sekisho/broker"
	"github.com/sekisho/sekisho/session"
	"github.com/sekisho/sekisho/web"
)

// maxWebConns bounds the console's open connections: it shares the
// process, and its file descriptors, with the SSH side.
const maxWebConns = 512

// killFunc is a web.LiveSessions made of a function.
type killFunc func(id, why string) bool

func (f killFunc) Kill(id, why string) bool { return f(id, why) }

// startConsole serves the web console on web.listen, with TLS when a
// certificate is configured, and indexes ended sessions for its search
// until ctx ends.
func (n *Node) startConsole(ctx context.Context, cfg *Config, console *web.Server) error {
	ln, err := net.Listen("tcp", cfg.Web.Listen)
	if err != nil {
		return fmt.Errorf("web.listen: %w", err)
	}
	// Bounded like the SSH side's pre-authentication: connections in all,
	// and the time to send a request (a live view lifts it for itself).
	ln = netutil.LimitListener(ln, maxWebConns)
	n.web = &http.Server{Handler: n.health.wrap(console), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
		IdleTimeout: 2 * time.Minute, ErrorLog: slog.NewLogLogger(n.log.Handler(), slog.LevelWarn)}
	if cfg.Web.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.Path(cfg.Web.TLSCert), cfg.Path(cfg.Web.TLSKey))
		if err != nil {
			ln.Close()
			return fmt.Errorf("web: tls_cert and tls_key: %w", err)
		}
		n.web.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		ln = tls.NewListener(ln, n.web.TLSConfig)
	}
	go n.web.Serve(ln)
	n.indexer = make(chan struct{})
	go func() {
		defer close(n.indexer)
		console.RunIndexer(ctx)
	}()
	n.log.Info("web console listening", "addr", ln.Addr().String(), "url", cfg.Web.URL)
	return nil
}

// consoleModeration seats the console's moderators at the sessions of
// this node (srv, set once the SSH side exists).
type consoleModeration struct{ srv **session.Server }

func (m consoleModeration) Moderated(name string) []broker.ModeratedSession {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return (*m.srv).ModeratedAnywhere(ctx, name)
}

func (m consoleModeration) Moderate(id, name string) (web.ModeratorSeat, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second) // finding its node
	defer cancel()
	seat, err := (*m.srv).ModerateAnywhere(ctx, id, name, "web")
	if err != nil {
		return nil, err
	}
	return seat, nil
}

func (m consoleModeration) Seated(id, name string) (web.ModeratorSeat, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	seat, err := (*m.srv).SeatedAnywhere(ctx, id, name, "web")
	if err != nil {
		return nil, err
	}
	return seat, nil
}
