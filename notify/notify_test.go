package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sekisho/sekisho/broker"
)

// deadline bounds every wait, so a broken test fails instead of hanging.
const deadline = 10 * time.Second

// hit is one request a receiver got.
type hit struct {
	header http.Header
	body   []byte
}

// receiver is a webhook endpoint that reports every request on hits and
// answers with status(n) for the n-th request (1-based).
type receiver struct {
	*httptest.Server
	hits  chan hit
	count atomic.Int64
}

func newReceiver(t *testing.T, status func(n int64) int) *receiver {
	t.Helper()
	r := &receiver{hits: make(chan hit, 100)}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		n := r.count.Add(1)
		r.hits <- hit{header: req.Header.Clone(), body: body}
		w.WriteHeader(status(n))
	}))
	t.Cleanup(r.Close)
	return r
}

func always(code int) func(int64) int { return func(int64) int { return code } }

// next waits for the receiver's next request.
func (r *receiver) next(t *testing.T) hit {
	t.Helper()
	select {
	case h := <-r.hits:
		return h
	case <-time.After(deadline):
		t.Fatal("webhook request not received")
		return hit{}
	}
}

// start makes a Notifier logging to the test and exporting metrics to a
// fresh registry. It is closed at the end of the test.
func start(t *testing.T, hooks []Webhook, opt Options) (*Notifier, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.NewTextHandler(t.Output(), nil))
	}
	opt.Registerer = reg
	n, err := New(hooks, opt)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), deadline)
		defer cancel()
		_ = n.Close(ctx)
	})
	return n, reg
}

// closeNow delivers what is queued and waits for the workers, so metrics
// are final.
func closeNow(t *testing.T, n *Notifier) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	if err := n.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// metric reads a sekisho_webhook_* series of webhook from reg; label and
// value pick the result or outcome, and are empty for the queue gauge.
func metric(t *testing.T, reg *prometheus.Registry, name, webhook, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			want := map[string]string{"webhook": webhook}
			if label != "" {
				want[label] = value
			}
			for _, lp := range m.GetLabel() {
				if v, ok := want[lp.GetName()]; ok && v != lp.GetValue() {
					continue series
				}
			}
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("metric %s{webhook=%q,%s=%q} not found", name, webhook, label, value)
	return 0
}

func event(kind broker.EventKind, id int64) broker.Event {
	return broker.Event{
		Kind: kind,
		At:   time.Date(2026, 11, 26, 5, 0, 0, 0, time.UTC),
		Request: &broker.AccessRequest{
			ID: id, Technician: "li", Affiliate: "affiliate-cn", AffiliateCountry: "CN",
			Target: "db-jp-01", Rule: "db-with-approval", Reason: "INC-4711 disk full",
			Duration: time.Hour, State: broker.RequestPending, Needed: 1,
		},
		By:        "li",
		Note:      "please",
		Approvers: []string{"kenji"},
	}
}

func TestJSONBody(t *testing.T) {
	t.Parallel()
	r := newReceiver(t, always(http.StatusNoContent))
	n, _ := start(t, []Webhook{{
		Name: "ops", URL: r.URL + "/hook",
		Headers: map[string]string{"Authorization": "Bearer t0ken"},
	}}, Options{})
	n.Notify(event(broker.EventRequestCreated, 42))

	h := r.next(t)
	for k, want := range map[string]string{
		"Content-Type": "application/json", "User-Agent": "sekisho", "Authorization": "Bearer t0ken",
	} {
		if got := h.header.Get(k); got != want {
			t.Errorf("header %s = %q, want %q", k, got, want)
		}
	}
	var got struct {
		Event     string               `json:"event"`
		At        time.Time            `json:"at"`
		Request   broker.AccessRequest `json:"request"`
		By        string               `json:"by"`
		Note      string               `json:"note"`
		Approvers []string             `json:"approvers"`
		Text      string               `json:"text"`
		Extra     map[string]any       `json:"-"`
	}
	if err := json.Unmarshal(h.body, &got); err != nil {
		t.Fatalf("body %s: %v", h.body, err)
	}
	e := event(broker.EventRequestCreated, 42)
	if got.Event != string(e.Kind) || !got.At.Equal(e.At) || got.Request.ID != 42 || got.Request.Technician != "li" ||
		got.Request.Duration != time.Hour || got.By != "li" || got.Note != "please" || !slices.Equal(got.Approvers, []string{"kenji"}) {
		t.Errorf("body = %s", h.body)
	}
	if got.Text != summary(e) {
		t.Errorf("text = %q, want %q", got.Text, summary(e))
	}
	if !bytes.Contains(h.body, []byte(`"at":"2026-11-26T05:00:00Z"`)) {
		t.Errorf("at is not RFC 3339: %s", h.body)
	}
}

func TestSlackBody(t *testing.T) {
	t.Parallel()
	r := newReceiver(t, always(http.StatusOK))
	n, _ := start(t, []Webhook{{Name: "slack", URL: r.URL, Format: FormatSlack}}, Options{})
	e := event(broker.EventRequestCreated, 42)
	e.Request.Reason = "<!channel> & co"
	n.Notify(e)

	var got map[string]any
	if err := json.Unmarshal(r.next(t).body, &got); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 {
		t.Errorf("slack body has %v, want only text", got)
	}
	text, _ := got["text"].(string)
	if !strings.HasPrefix(text, "sekisho: li (affiliate-cn, CN) requests db-jp-01") {
		t.Errorf("text = %q", text)
	}
	if !strings.Contains(text, "&lt;!channel&gt; &amp; co") {
		t.Errorf("text = %q, want Slack's control characters escaped", text)
	}
}

func TestRetryThenDelivered(t *testing.T) {
	t.Parallel()
	r := newReceiver(t, func(n int64) int {
		if n == 1 {
			return http.StatusInternalServerError
		}
		return http.StatusOK
	})
	n, reg := start(t, []Webhook{{Name: "ops", URL: r.URL, Backoff: 10 * time.Millisecond}}, Options{})
	n.Notify(event(broker.EventRequestCreated, 1))
	first, second := r.next(t), r.next(t)
	if !bytes.Equal(first.body, second.body) {
		t.Errorf("retry sent a different body:\n%s\n%s", first.body, second.body)
	}
	closeNow(t, n)

	if got := r.count.Load(); got != 2 {
		t.Errorf("attempts = %d, want 2", got)
	}
	for _, c := range []struct {
		name, label, value string
		want               float64
	}{
		{"sekisho_webhook_deliveries_total", "result", "delivered", 1},
		{"sekisho_webhook_deliveries_total", "result", "failed", 0},
		{"sekisho_webhook_attempts_total", "outcome", "retry", 1},
		{"sekisho_webhook_attempts_total", "outcome", "ok", 1},
		{"sekisho_webhook_attempts_total", "outcome", "error", 0},
	} {
		if got := metric(t, reg, c.name, "ops", c.label, c.value); got != c.want {
			t.Errorf("%s{%s=%q} = %v, want %v", c.name, c.label, c.value, got, c.want)
		}
	}
}

func TestClientErrorNotRetried(t *testing.T) {
	t.Parallel()
	r := newReceiver(t, always(http.StatusBadRequest))
	n, reg := start(t, []Webhook{{Name: "ops", URL: r.URL, Backoff: 10 * time.Millisecond}}, Options{})
	n.Notify(event(broker.EventRequestCreated, 1))
	r.next(t)
	closeNow(t, n)

	if got := r.count.Load(); got != 1 {
		t.Errorf("attempts = %d, want 1", got)
	}
	if got := metric(t, reg, "sekisho_webhook_deliveries_total", "ops", "result", "failed"); got != 1 {
		t.Errorf("failed = %v, want 1", got)
	}
	if got := metric(t, reg, "sekisho_webhook_attempts_total", "ops", "outcome", "error"); got != 1 {
		t.Errorf("error attempts = %v, want 1", got)
	}
}

func TestGiveUpAfterMaxAttempts(t *testing.T) {
	t.Parallel()
	r := newReceiver(t, always(http.StatusServiceUnavailable))
	n, reg := start(t, []Webhook{{Name: "ops", URL: r.URL, MaxAttempts: 3, Backoff: 10 * time.Millisecond}}, Options{})
	n.Notify(event(broker.EventRequestCreated, 1))
	for range 3 {
		r.next(t)
	}
	closeNow(t, n)

	if got := r.count.Load(); got != 3 {
		t.Errorf("attempts = %d, want 3", got)
	}
	if got := metric(t, reg, "sekisho_webhook_deliveries_total", "ops", "result", "failed"); got != 1 {
		t.Errorf("failed = %v, want 1", got)
	}
	if got := metric(t, reg, "sekisho_webhook_attempts_total", "ops", "outcome", "retry"); got != 2 {
		t.Errorf("retry attempts = %v, want 2", got)
	}
}

func TestNotifyNeverBlocks(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	arrived := make(chan struct{}, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		arrived <- struct{}{}
		select {
		case <-release:
		case <-req.Context().Done():
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) }) // runs before srv.Close

	const size = 5
	n, reg := start(t, []Webhook{{Name: "slow", URL: srv.URL, Timeout: time.Hour}}, Options{QueueSize: size})
	// Hold the worker in a request, so the queue's fill is known.
	n.Notify(event(broker.EventRequestCreated, 0))
	select {
	case <-arrived:
	case <-time.After(deadline):
		t.Fatal("first request not received")
	}

	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range size + 10 {
			n.Notify(event(broker.EventRequestCreated, int64(i+1)))
		}
	}()
	select {
	case <-done:
	case <-time.After(deadline):
		t.Fatal("Notify blocked on a hanging webhook")
	}
	if got := metric(t, reg, "sekisho_webhook_deliveries_total", "slow", "result", "dropped"); got != 10 {
		t.Errorf("dropped = %v, want 10", got)
	}
	if got := metric(t, reg, "sekisho_webhook_queue_length", "slow", "", ""); got != size {
		t.Errorf("queue length = %v, want %d", got, size)
	}

	// Close with no time left abandons the request in flight and the queue.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := n.Close(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Close = %v, want context.Canceled", err)
	}
	if got := metric(t, reg, "sekisho_webhook_deliveries_total", "slow", "result", "dropped"); got != 10+size+1 {
		t.Errorf("dropped after Close = %v, want %d", got, 10+size+1)
	}
}

func TestEventsFilter(t *testing.T) {
	t.Parallel()
	some := newReceiver(t, always(http.StatusOK))
	all := newReceiver(t, always(http.StatusOK))
	n, _ := start(t, []Webhook{
		{Name: "decisions", URL: some.URL, Events: []string{string(broker.EventRequestApproved), string(broker.EventRequestDenied)}},
		{Name: "all", URL: all.URL},
	}, Options{})
	kinds := []broker.EventKind{broker.EventRequestCreated, broker.EventRequestApproved, broker.EventRequestUsed, broker.EventRequestDenied}
	for i, k := range kinds {
		n.Notify(event(k, int64(i+1)))
	}
	closeNow(t, n)

	got := func(r *receiver) []broker.EventKind {
		close(r.hits)
		var kinds []broker.EventKind
		for h := range r.hits {
			var e broker.Event
			if err := json.Unmarshal(h.body, &e); err != nil {
				t.Fatal(err)
			}
			kinds = append(kinds, e.Kind)
		}
		return kinds
	}
	if g, want := got(some), []broker.EventKind{broker.EventRequestApproved, broker.EventRequestDenied}; !slices.Equal(g, want) {
		t.Errorf("filtered webhook got %v, want %v", g, want)
	}
	if g := got(all); !slices.Equal(g, kinds) {
		t.Errorf("unfiltered webhook got %v, want %v", g, kinds)
	}
}

func TestCloseDeliversQueued(t *testing.T) {
	t.Parallel()
	r := newReceiver(t, always(http.StatusOK))
	n, reg := start(t, []Webhook{{Name: "ops", URL: r.URL}}, Options{})
	const events = 20
	for i := range events {
		n.Notify(event(broker.EventRequestCreated, int64(i+1)))
	}
	closeNow(t, n)
	n.Notify(event(broker.EventRequestCreated, 99)) // after Close: ignored

	close(r.hits)
	var ids []int64
	for h := range r.hits {
		var e broker.Event
		if err := json.Unmarshal(h.body, &e); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, e.Request.ID)
	}
	if len(ids) != events || !slices.IsSorted(ids) {
		t.Errorf("delivered %v, want 1..%d in order", ids, events)
	}
	if got := metric(t, reg, "sekisho_webhook_deliveries_total", "ops", "result", "delivered"); got != events {
		t.Errorf("delivered = %v, want %d", got, events)
	}
}

func TestSecretsNotLogged(t *testing.T) {
	t.Parallel()
	refusing := newReceiver(t, always(http.StatusUnauthorized))
	gone := httptest.NewServer(http.NotFoundHandler())
	gone.Close() // connection refused

	var (
		mu  sync.Mutex
		buf bytes.Buffer
	)
	logger := slog.New(slog.NewTextHandler(&lockedWriter{mu: &mu, w: &buf}, nil))
	headers := map[string]string{"Authorization": "Bearer s3cret"}
	n, _ := start(t, []Webhook{
		{Name: "refusing", URL: refusing.URL + "/hook?token=s3cret", Headers: headers},
		{Name: "gone", URL: gone.URL + "/hook?token=s3cret", Headers: headers, MaxAttempts: 2, Backoff: 10 * time.Millisecond},
	}, Options{Logger: logger})
	n.Notify(event(broker.EventRequestCreated, 1))
	closeNow(t, n)

	mu.Lock()
	defer mu.Unlock()
	logs := buf.String()
	if strings.Contains(logs, "s3cret") {
		t.Errorf("log holds a secret:\n%s", logs)
	}
	for _, want := range []string{"webhook=refusing", "status=401", "webhook=gone", "attempt=2", "event=request.created", "request=1"} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func TestNames(t *testing.T) {
	t.Parallel()
	n, _ := start(t, []Webhook{{Name: "b", URL: "http://127.0.0.1:1"}, {Name: "a", URL: "http://127.0.0.1:1"}}, Options{})
	if got := n.Names(); !slices.Equal(got, []string{"b", "a"}) {
		t.Errorf("Names = %v", got)
	}
}

func TestNewValidation(t *testing.T) {
	t.Parallel()
	ok := Webhook{Name: "ops", URL: "https://hooks.example.com/x"}
	with := func(f func(*Webhook)) []Webhook {
		h := ok
		f(&h)
		return []Webhook{h}
	}
	for _, c := range []struct {
		name  string
		hooks []Webhook
		opt   Options
		want  string
	}{
		{"no name", with(func(h *Webhook) { h.Name = "" }), Options{}, "name is empty"},
		{"duplicate", []Webhook{ok, ok}, Options{}, "webhook 2 (\"ops\"): name is used by another webhook"},
		{"relative url", with(func(h *Webhook) { h.URL = "/hook?token=s3cret" }), Options{}, "absolute http or https URL"},
		{"ftp url", with(func(h *Webhook) { h.URL = "ftp://example.com/?token=s3cret" }), Options{}, "absolute http or https URL"},
		{"bad url", with(func(h *Webhook) { h.URL = "https://exa mple.com/?token=s3cret" }), Options{}, "absolute http or https URL"},
		{"no url", with(func(h *Webhook) { h.URL = "" }), Options{}, "absolute http or https URL"},
		{"format", with(func(h *Webhook) { h.Format = "teams" }), Options{}, `format "teams" is unknown`},
		{"event", with(func(h *Webhook) { h.Events = []string{"request.create"} }), Options{}, `event "request.create" is unknown`},
		{"negative", with(func(h *Webhook) { h.MaxAttempts = -1 }), Options{}, "must not be negative"},
		{"queue", []Webhook{ok}, Options{QueueSize: -1}, "queue size -1 is negative"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := New(c.hooks, c.opt)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("New = %v, want an error with %q", err, c.want)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("error quotes the URL: %v", err)
			}
		})
	}
	n, err := New(with(func(h *Webhook) { h.Events = []string{string(broker.EventRequestRefused)} }), Options{})
	if err != nil {
		t.Fatalf("New of a good config: %v", err)
	}
	_ = n.Close(context.Background())
}

func TestMetricsRegisteredOnce(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	hooks := []Webhook{{Name: "ops", URL: "https://hooks.example.com/x"}}
	n, err := New(hooks, Options{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close(context.Background())
	if _, err := New(hooks, Options{Registerer: reg}); err == nil {
		t.Error("second New on the same registry succeeded, want a registration error")
	}
}
