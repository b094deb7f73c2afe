package notify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sekisho/sekisho/broker"
)

// Format is the shape of a webhook's request body.
type Format string

// Body formats.
const (
	// FormatJSON posts the event as JSON: broker.Event plus a
	// "text" field with one human-readable line.
	FormatJSON Format = "json"
	// FormatSlack posts {"text": line}, which Slack incoming webhooks (and
	// Mattermost, Rocket.Chat and others) accept.
	FormatSlack Format = "slack"
)

// Defaults for zero fields of Webhook and Options.
const (
	DefaultTimeout     = 5 * time.Second
	DefaultMaxAttempts = 6
	DefaultBackoff     = time.Second
	DefaultQueueSize   = 1000

	// maxDelay caps the backoff and a server's Retry-After.
	maxDelay = time.Minute
)

// Webhook is one destination of events: access requests and
// cross-border sessions.
type Webhook struct {
	// Name identifies the webhook in logs and metrics, and is shown to
	// technicians as "notified: <name>".
	Name string
	// URL is where events are posted, an absolute http or https URL. It
	// may hold a secret, so it is never logged.
	URL string
	// Format is the body format; empty means FormatJSON.
	Format Format
	// Events lists the event kinds (broker.EventRequest*,
	// broker.EventSessionCrossBorder*) to send; empty means all.
	Events []string
	// Headers are added to every request, e.g. Authorization. They are
	// never logged. Content-Type and User-Agent are always sekisho's.
	Headers map[string]string
	// Timeout bounds one attempt; zero means DefaultTimeout.
	Timeout time.Duration
	// MaxAttempts is how many times an event is tried before it is given
	// up; zero means DefaultMaxAttempts.
	MaxAttempts int
	// Backoff is the delay before the first retry; zero means
	// DefaultBackoff. It doubles with each retry up to a minute, with ±20%
	// jitter so that retries of many events do not arrive together.
	Backoff time.Duration
	// Secret, when set, is the HMAC key (see ParseSecret) that signs
	// every request by the Standard Webhooks scheme: webhook-id,
	// webhook-timestamp and webhook-signature headers.
	Secret []byte
}

// Options are the settings shared by all webhooks.
type Options struct {
	// Logger receives delivery failures and drops; nil means slog.Default.
	Logger *slog.Logger
	// Registerer, if not nil, gets the sekisho_webhook_* metrics.
	Registerer prometheus.Registerer
	// QueueSize bounds the events waiting per webhook; zero means
	// DefaultQueueSize. Events beyond it are dropped.
	QueueSize int
	// Client sends the requests; nil means a client that does not follow
	// redirects and bounds connecting and the TLS handshake.
	Client *http.Client
}

// Notifier delivers events to webhooks in the background. It
// implements broker.Notifier. Call Close to stop it.
type Notifier struct {
	log     *slog.Logger
	metrics *metrics
	workers []*worker
	wg      sync.WaitGroup
	cancel  context.CancelFunc // abandons deliveries at Close

	mu     sync.RWMutex // guards closed and sending on the queues
	closed bool
}

var _ broker.Notifier = (*Notifier)(nil)

// New validates the webhooks and starts one delivery worker for each. With
// no webhooks it returns a Notifier that does nothing.
func New(hooks []Webhook, opt Options) (*Notifier, error) {
	if err := validate(hooks, opt); err != nil {
		return nil, err
	}
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	if opt.QueueSize == 0 {
		opt.QueueSize = DefaultQueueSize
	}
	if opt.Client == nil {
		opt.Client = defaultClient()
	}
	n := &Notifier{log: opt.Logger}
	for _, h := range hooks {
		n.workers = append(n.workers, newWorker(h, opt))
	}
	n.metrics = newMetrics(n.workers)
	for _, w := range n.workers {
		w.metrics = n.metrics
	}
	if opt.Registerer != nil {
		if err := n.metrics.register(opt.Registerer); err != nil {
			return nil, fmt.Errorf("notify: register metrics: %w", err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	for _, w := range n.workers {
		n.wg.Go(func() { w.run(ctx) })
	}
	return n, nil
}

// Notify queues e for every webhook that wants its kind, and returns at
// once. If a webhook's queue is full the event is dropped for that webhook,
// with a warning and a count. After Close, events are ignored.
func (n *Notifier) Notify(e broker.Event) {
	n.mu.RLock()
	defer n.mu.RUnlock()
	if n.closed {
		return
	}
	for _, w := range n.workers {
		if !w.wants(string(e.Kind)) {
			continue
		}
		select {
		case w.queue <- e:
		default:
			n.metrics.deliveries.WithLabelValues(w.hook.Name, resultDropped).Inc()
			n.log.Warn("webhook queue full; event dropped",
				append([]any{"webhook", w.hook.Name, "queue_size", cap(w.queue)}, about(e)...)...)
		}
	}
}

// Names lists the webhooks' names, in configuration order.
func (n *Notifier) Names() []string {
	names := make([]string, len(n.workers))
	for i, w := range n.workers {
		names[i] = w.hook.Name
	}
	return names
}

// Close stops accepting events and delivers those already queued until ctx
// ends; then it abandons the rest (counted as dropped), waits for the
// workers to stop and returns ctx's error. Close is safe to call more than
// once.
func (n *Notifier) Close(ctx context.Context) error {
	n.mu.Lock()
	if !n.closed {
		n.closed = true
		for _, w := range n.workers {
			close(w.queue)
		}
	}
	n.mu.Unlock()

	done := make(chan struct{})
	go func() {
		n.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		n.cancel()
		return nil
	case <-ctx.Done():
		n.cancel()
		<-done
		return fmt.Errorf("notify: close: %w", ctx.Err())
	}
}

// knownEvent reports whether kind is a kind webhooks are told of.
func knownEvent(kind string) bool {
	for _, k := range []broker.EventKind{broker.EventRequestCreated, broker.EventRequestApproval, broker.EventRequestApproved,
		broker.EventRequestDenied, broker.EventRequestExpired, broker.EventRequestCancelled,
		broker.EventRequestRevoked, broker.EventRequestUsed, broker.EventRequestRefused, broker.EventRequestRevised,
		broker.EventSessionCrossBorder, broker.EventSessionCrossBorderEnded, broker.EventModerationWaiting} {
		if string(k) == kind {
			return true
		}
	}
	return false
}

// validate checks the configuration and reports every problem at once. It
// never quotes a URL, which may hold a secret.
func validate(hooks []Webhook, opt Options) error {
	var errs []error
	if opt.QueueSize < 0 {
		errs = append(errs, fmt.Errorf("notify: queue size %d is negative; use 0 for the default of %d", opt.QueueSize, DefaultQueueSize))
	}
	seen := make(map[string]bool)
	for i, h := range hooks {
		fail := func(format string, args ...any) {
			errs = append(errs, fmt.Errorf("notify: webhook %d (%q): %s", i+1, h.Name, fmt.Sprintf(format, args...)))
		}
		switch {
		case h.Name == "":
			fail("name is empty; give every webhook a name, it is shown to technicians and in metrics")
		case seen[h.Name]:
			fail("name is used by another webhook; names must be unique")
		}
		seen[h.Name] = true
		if u, err := url.Parse(h.URL); err != nil || !u.IsAbs() || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			fail("url is not an absolute http or https URL; use one like https://hooks.example.com/sekisho")
		}
		switch h.Format {
		case "", FormatJSON, FormatSlack:
		default:
			fail("format %q is unknown; use %q or %q", h.Format, FormatJSON, FormatSlack)
		}
		for _, k := range h.Events {
			if !knownEvent(k) {
				fail("event %q is unknown; use request.created, request.approval, request.approved, request.denied, request.expired, request.cancelled, request.revoked, request.used, request.refused, request.revised, session.cross_border or session.cross_border_ended, or none for all", k)
			}
		}
		for k := range h.Headers {
			if k == "" {
				fail("a header has an empty name")
			}
		}
		if h.Timeout < 0 || h.MaxAttempts < 0 || h.Backoff < 0 {
			fail("timeout, max attempts and backoff must not be negative; use 0 for the defaults")
		}
	}
	return errors.Join(errs...)
}

// defaultClient bounds what a per-attempt timeout cannot see (idle
// connections) and refuses redirects: a webhook that moved is a
// configuration error to fix, not something to follow with the payload.
func defaultClient() *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			TLSHandshakeTimeout:   10 * time.Second,
			ResponseHeaderTimeout: 30 * time.Second,
			IdleConnTimeout:       90 * time.Second,
			MaxIdleConnsPerHost:   2,
			ForceAttemptHTTP2:     true,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// cloneHook returns h with defaults filled in and its slices and map
// copied, so the caller may reuse them.
func cloneHook(h Webhook) Webhook {
	if h.Format == "" {
		h.Format = FormatJSON
	}
	if h.Timeout == 0 {
		h.Timeout = DefaultTimeout
	}
	if h.MaxAttempts == 0 {
		h.MaxAttempts = DefaultMaxAttempts
	}
	if h.Backoff == 0 {
		h.Backoff = DefaultBackoff
	}
	h.Events = slices.Clone(h.Events)
	h.Headers = maps.Clone(h.Headers)
	return h
}

// about is what a log line says of e: its kind, and the request or the
// session it is about.
func about(e broker.Event) []any {
	attrs := []any{"event", e.Kind}
	if e.Request != nil {
		attrs = append(attrs, "request", e.Request.ID)
	}
	if e.Session != nil {
		attrs = append(attrs, "session", e.Session.ID)
	}
	if e.Moderation != nil {
		attrs = append(attrs, "session", e.Moderation.Session)
	}
	return attrs
}
