package notify

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/sekisho/sekisho/broker"
)

// worker delivers one webhook's events, one at a time, in order.
type worker struct {
	hook    Webhook
	events  map[string]bool // kinds to send; empty means all
	queue   chan broker.Event
	client  *http.Client
	log     *slog.Logger
	metrics *metrics
}

func newWorker(h Webhook, opt Options) *worker {
	h = cloneHook(h)
	w := &worker{
		hook:   h,
		events: make(map[string]bool),
		queue:  make(chan broker.Event, opt.QueueSize),
		client: opt.Client,
		log:    opt.Logger.With("webhook", h.Name),
	}
	for _, k := range h.Events {
		w.events[k] = true
	}
	return w
}

func (w *worker) wants(kind string) bool {
	return len(w.events) == 0 || w.events[kind]
}

// run delivers queued events until the queue is closed. Once ctx ends it
// abandons what is left.
func (w *worker) run(ctx context.Context) {
	abandoned := 0
	for e := range w.queue {
		if ctx.Err() != nil || !w.deliver(ctx, e) {
			abandoned++
		}
	}
	if abandoned > 0 {
		w.metrics.deliveries.WithLabelValues(w.hook.Name, resultDropped).Add(float64(abandoned))
		w.log.Warn("webhook events abandoned at shutdown", "events", abandoned)
	}
}

// deliver tries e until it is delivered, fails for good or ctx ends. It
// reports false only if ctx ended first, leaving e undelivered.
func (w *worker) deliver(ctx context.Context, e broker.Event) bool {
	body, err := encode(w.hook.Format, e)
	if err != nil {
		w.log.Error("webhook event not encoded", append(about(e), "err", err)...)
		w.metrics.deliveries.WithLabelValues(w.hook.Name, resultFailed).Inc()
		return true
	}
	log := w.log.With(about(e)...)
	id := "msg_" + uuid.NewString() // the same on every attempt, so that receivers can drop repeats
	for attempt := 1; ; attempt++ {
		err := w.post(ctx, id, body)
		if err == nil {
			w.metrics.attempts.WithLabelValues(w.hook.Name, outcomeOK).Inc()
			w.metrics.deliveries.WithLabelValues(w.hook.Name, resultDelivered).Inc()
			if attempt > 1 {
				log.Info("webhook event delivered after retries", "attempt", attempt)
			}
			return true
		}
		if ctx.Err() != nil {
			return false // abandoned at Close; counted by run
		}
		var fe *failure
		errors.As(err, &fe)
		attrs := []any{"attempt", attempt, "max_attempts", w.hook.MaxAttempts, "err", err}
		if fe.status != 0 {
			attrs = append(attrs, "status", fe.status)
		}
		if !fe.retry || attempt >= w.hook.MaxAttempts {
			w.metrics.attempts.WithLabelValues(w.hook.Name, outcomeError).Inc()
			w.metrics.deliveries.WithLabelValues(w.hook.Name, resultFailed).Inc()
			msg := "webhook event not delivered; giving up after the last attempt"
			if !fe.retry {
				msg = "webhook event refused; not retrying"
			}
			log.Error(msg, attrs...)
			return true
		}
		w.metrics.attempts.WithLabelValues(w.hook.Name, outcomeRetry).Inc()
		delay := fe.retryAfter
		if delay == 0 {
			delay = backoff(w.hook.Backoff, attempt)
		}
		log.Warn("webhook attempt failed; will retry", append(attrs, "retry_in", delay)...)
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return false
		}
	}
}

// failure is why an attempt failed, and whether to try again.
type failure struct {
	status     int           // HTTP status; 0 if there was no response
	retry      bool          // the failure may pass
	retryAfter time.Duration // the server's Retry-After, capped; 0 if none
	err        error
}

func (f *failure) Error() string { return f.err.Error() }
func (f *failure) Unwrap() error { return f.err }

// post makes one attempt at sending body as message id. Errors are
// *failure and never contain the URL.
func (w *worker) post(ctx context.Context, id string, body []byte) error {
	ctx, cancel := context.WithTimeout(ctx, w.hook.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.hook.URL, bytes.NewReader(body))
	if err != nil {
		return &failure{err: errors.New("building the request failed")}
	}
	for k, v := range w.hook.Headers {
		req.Header.Set(k, v)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "sekisho")
	if w.hook.Secret != nil {
		now := time.Now()
		req.Header.Set("webhook-id", id)
		req.Header.Set("webhook-timestamp", strconv.FormatInt(now.Unix(), 10))
		req.Header.Set("webhook-signature", Signature(w.hook.Secret, id, now, body))
	}
	resp, err := w.client.Do(req)
	if err != nil {
		// *url.Error quotes the whole URL, query string and all.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return &failure{retry: true, err: err}
	}
	defer resp.Body.Close()
	// Read a little of the body: it often says what is wrong, and reading
	// it lets the connection be reused.
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return nil
	}
	f := &failure{status: resp.StatusCode, err: fmt.Errorf("http status %s", resp.Status)}
	if s := strings.TrimSpace(string(snippet)); s != "" {
		f.err = fmt.Errorf("http status %s: %.200q", resp.Status, s)
	}
	switch {
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		f.retry = true
		if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
			f.retryAfter = retryAfter(resp.Header.Get("Retry-After"))
		}
	}
	return f
}

// retryAfter parses a Retry-After of delay-seconds, capped at maxDelay. It
// returns 0 (use the backoff) for a missing or unparsable value.
func retryAfter(v string) time.Duration {
	s, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || s <= 0 {
		return 0
	}
	return min(time.Duration(s)*time.Second, maxDelay)
}

// backoff is the delay after the given failed attempt (1-based): first
// doubled attempt-1 times, jittered by ±20%, capped at maxDelay.
func backoff(first time.Duration, attempt int) time.Duration {
	d := first
	for i := 1; i < attempt && d < maxDelay; i++ {
		d *= 2
	}
	d = time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
	return min(d, maxDelay)
}
