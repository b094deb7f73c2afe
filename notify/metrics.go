package notify

import "github.com/prometheus/client_golang/prometheus"

// Delivery results and attempt outcomes, the label values of the metrics.
const (
	resultDelivered = "delivered"
	resultFailed    = "failed"
	resultDropped   = "dropped" // queue full, or abandoned at Close

	outcomeOK    = "ok"
	outcomeRetry = "retry" // failed, will be retried
	outcomeError = "error" // failed, given up
)

// metrics are the webhook counters. They are always kept, and exported only
// when Options.Registerer is set.
type metrics struct {
	deliveries *prometheus.CounterVec
	attempts   *prometheus.CounterVec
	queues     []prometheus.Collector
}

func newMetrics(ws []*worker) *metrics {
	m := &metrics{
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sekisho_webhook_deliveries_total",
			Help: "Events per webhook, by result: delivered, failed (given up) or dropped (queue full or abandoned at shutdown).",
		}, []string{"webhook", "result"}),
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sekisho_webhook_attempts_total",
			Help: "HTTP delivery attempts per webhook, by outcome: ok, retry (failed, retried) or error (failed, given up).",
		}, []string{"webhook", "outcome"}),
	}
	for _, w := range ws {
		// Create every series up front so dashboards see zeros, not gaps.
		for _, r := range []string{resultDelivered, resultFailed, resultDropped} {
			m.deliveries.WithLabelValues(w.hook.Name, r)
		}
		for _, o := range []string{outcomeOK, outcomeRetry, outcomeError} {
			m.attempts.WithLabelValues(w.hook.Name, o)
		}
		queue := w.queue
		m.queues = append(m.queues, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "sekisho_webhook_queue_length",
			Help:        "Events waiting to be delivered to the webhook.",
			ConstLabels: prometheus.Labels{"webhook": w.hook.Name},
		}, func() float64 { return float64(len(queue)) }))
	}
	return m
}

func (m *metrics) register(r prometheus.Registerer) error {
	cs := append([]prometheus.Collector{m.deliveries, m.attempts}, m.queues...)
	for i, c := range cs {
		if err := r.Register(c); err != nil {
			for _, done := range cs[:i] {
				r.Unregister(done)
			}
			return err
		}
	}
	return nil
}
