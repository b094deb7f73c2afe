package node

import (
	"context"
	"encoding/json"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sekisho/sekisho/internal/buildinfo"

	"github.com/sekisho/sekisho/broker"
)

// bastionMetrics is what the server tells Prometheus of its sessions,
// decisions, refusals and Vault. Sessions, decisions and refusals are
// counted from the audit events, so a metric and the audit log agree;
// Vault's calls are told by the issuer.
type bastionMetrics struct {
	events    *prometheus.CounterVec
	decisions *prometheus.CounterVec
	started   *prometheus.CounterVec
	active    *prometheus.GaugeVec
	bytes     *prometheus.CounterVec
	vault     *prometheus.CounterVec
	vaultTook *prometheus.HistogramVec
	// unopenable counts second-factor checks that found a sealed secret
	// no longer opening: an alert on it reaches the operator, who alone
	// can mend it (by enrolling the technician again).
	unopenable prometheus.Counter

	mu   sync.Mutex
	live map[string][]string // session ID: its labels of active
}

// sessionLabels name a session's affiliate, the residency of its target
// and whether it crosses a border: the questions security asks first.
var sessionLabels = []string{"affiliate", "residency", "cross_border"}

func newBastionMetrics(reg prometheus.Registerer) *bastionMetrics {
	bi := buildinfo.Get()
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name:        "sekisho_build_info",
		Help:        "Always 1; the labels say which sekisho runs: the module version, the commit it was built from and the Go version.",
		ConstLabels: prometheus.Labels{"version": bi.Version, "commit": bi.ShortCommit(), "goversion": bi.Go},
	}, func() float64 { return 1 }))
	m := &bastionMetrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sekisho_audit_events_total",
			Help: "Audit events by kind, e.g. auth.failed, refused, cert.failed, recording.seal_failed, mfa.tampered.",
		}, []string{"kind"}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sekisho_decisions_total",
			Help: "Access decisions by effect: allow, deny or approval.",
		}, []string{"effect"}),
		started: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sekisho_sessions_started_total",
			Help: "Sessions started.",
		}, sessionLabels),
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sekisho_sessions_active",
			Help: "Sessions being relayed now.",
		}, sessionLabels),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sekisho_relayed_bytes_total",
			Help: "Bytes relayed by ended sessions: in is from the technician, out is to them.",
		}, []string{"direction"}),
		vault: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sekisho_vault_requests_total",
			Help: "Calls to Vault by operation (login, ca, sign, encrypt, decrypt) and result (ok, error).",
		}, []string{"op", "result"}),
		vaultTook: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sekisho_vault_request_seconds",
			Help:    "Time Vault took to answer, by operation.",
			Buckets: []float64{.002, .005, .01, .025, .05, .1, .25, .5, 1, 3},
		}, []string{"op"}),
		unopenable: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sekisho_mfa_unopenable_total",
			Help: "Second-factor checks that found a technician's sealed TOTP secret no longer opens with Vault's transit key (a new or restored Vault): no code of theirs works until they are enrolled again with sekisho technician enroll-totp NAME; the audit event mfa.unopenable names them.",
		}),
		live: map[string][]string{},
	}
	reg.MustRegister(m.events, m.decisions, m.started, m.active, m.bytes, m.vault, m.vaultTook, m.unopenable)
	return m
}

// registerState adds the gauges read from the broker when scraped: the
// pending access requests and the locks in force.
func (m *bastionMetrics) registerState(reg prometheus.Registerer, brk *broker.Broker, store broker.Store) {
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "sekisho_requests_pending",
		Help: "Access requests waiting for a decision.",
	}, func() float64 {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		rs, err := store.Requests(ctx, broker.RequestFilter{States: []broker.RequestState{broker.RequestPending}})
		if err != nil {
			return -1 // the store did not answer; an alert on < 0 sees it
		}
		return float64(len(rs))
	}), prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "sekisho_locks_in_force",
		Help: "Locks of affiliates, technicians or targets in force.",
	}, func() float64 { return float64(brk.LocksInForce()) }))
}

// observe counts one audit event.
func (m *bastionMetrics) observe(e broker.AuditEvent) {
	m.events.WithLabelValues(string(e.Kind)).Inc()
	switch e.Kind {
	case broker.EventMFAUnopenable:
		m.unopenable.Inc()
	case broker.EventDecision:
		var d struct {
			Effect string `json:"effect"`
		}
		if json.Unmarshal([]byte(e.Detail), &d) == nil && d.Effect != "" {
			m.decisions.WithLabelValues(d.Effect).Inc()
		}
	case broker.EventSessionStart:
		var d struct {
			Affiliate   string `json:"affiliate"`
			Residency   string `json:"residency"`
			CrossBorder bool   `json:"cross_border"`
		}
		if json.Unmarshal([]byte(e.Detail), &d) != nil {
			return
		}
		labels := []string{d.Affiliate, d.Residency, strconv.FormatBool(d.CrossBorder)}
		m.started.WithLabelValues(labels...).Inc()
		m.mu.Lock()
		if _, ok := m.live[e.Session]; !ok {
			m.live[e.Session] = labels
			m.active.WithLabelValues(labels...).Inc()
		}
		m.mu.Unlock()
	case broker.EventSessionEnd:
		var d struct {
			BytesIn  int64 `json:"bytes_in"`
			BytesOut int64 `json:"bytes_out"`
		}
		if json.Unmarshal([]byte(e.Detail), &d) == nil {
			m.bytes.WithLabelValues("in").Add(float64(max(d.BytesIn, 0)))
			m.bytes.WithLabelValues("out").Add(float64(max(d.BytesOut, 0)))
		}
		m.mu.Lock()
		if labels, ok := m.live[e.Session]; ok {
			delete(m.live, e.Session)
			m.active.WithLabelValues(labels...).Dec()
		}
		m.mu.Unlock()
	}
}

// vaultCall counts one call to Vault.
func (m *bastionMetrics) vaultCall(op string, took time.Duration, err error) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.vault.WithLabelValues(op, result).Inc()
	m.vaultTook.WithLabelValues(op).Observe(took.Seconds())
}
