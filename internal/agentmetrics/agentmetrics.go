// Package agentmetrics exports berth-agent's measurements to Prometheus: it
// implements the small interfaces the agent's packages own (agent.Metrics,
// gateway.Metrics) as counters, gauges and histograms on a private registry
// (no global state), with the Go runtime and process collectors, served by
// Handler. cmd/berth-agent wires it; internal/agent and internal/gateway
// never import Prometheus.
//
// Every agent metric name starts with berth_agent_. Label values come from
// fixed sets (driver names, command kinds, failure reasons, session states),
// never from request data or error text.
package agentmetrics

import (
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/berth-dev/berth/internal/agent"
	"github.com/berth-dev/berth/internal/agentproto"
	"github.com/berth-dev/berth/internal/gateway"
)

// Interface guards.
var (
	_ agent.Metrics       = (*Metrics)(nil)
	_ gateway.Metrics     = (*Metrics)(nil)
	_ gateway.FileMetrics = (*Metrics)(nil)
)

// Results of commands and renewals besides the agent's failure reasons.
const (
	resultOK     = "ok"
	resultFailed = "failed"
)

// Histogram buckets, in seconds.
var (
	// readyBuckets span a simulated session (milliseconds) to a slow
	// desktop start (minutes).
	readyBuckets = []float64{0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300}
	// screenshotBuckets span a small PNG to a large one on a busy host.
	screenshotBuckets = []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}
)

// Options configure New.
type Options struct {
	// Version is the agent's version, the berth_agent_info label.
	Version string
	// Driver is the session driver's name ("vnc", "dcv", "sim"), the driver
	// label of the session metrics.
	Driver string
}

// Metrics is the agent's Prometheus registry and its metrics. Create it with
// New; it is safe for concurrent use.
type Metrics struct {
	reg    *prometheus.Registry
	driver string

	sessionStarts   *prometheus.CounterVec
	sessionFailures *prometheus.CounterVec
	sessionReady    *prometheus.HistogramVec
	sessions        *prometheus.GaugeVec
	commands        *prometheus.CounterVec
	screenshot      *prometheus.HistogramVec

	brokerConnected  prometheus.Gauge
	brokerReconnects prometheus.Counter

	gatewayActive  prometheus.Gauge
	gatewayTotal   prometheus.Counter
	gatewayRefused *prometheus.CounterVec
	fileTransfers  *prometheus.CounterVec
	fileBytes      *prometheus.CounterVec

	certRenewals *prometheus.CounterVec

	mu         sync.Mutex
	linkWasUp  bool // the broker link has been up once
	certExpiry bool // the expiry gauge is registered
}

// New returns the agent's metrics, every series of a fixed label set present
// from the start at zero so that rates and alerts work from the first scrape.
func New(o Options) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry(), driver: o.Driver}
	driver := prometheus.Labels{"driver": o.Driver}
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	info := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "berth_agent_info",
		Help:        "Always 1: the agent's version and session driver as labels.",
		ConstLabels: prometheus.Labels{"version": o.Version, "driver": o.Driver},
	})
	info.Set(1)
	m.sessionStarts = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "berth_agent_session_starts_total",
		Help: "Create commands the agent ran (each a session start attempt), by driver.",
	}, []string{"driver"})
	m.sessionFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "berth_agent_session_start_failures_total",
		Help: "Create commands that failed, by driver and reason: invalid_request, timeout, canceled, busy, unsupported, panic, driver_error.",
	}, []string{"driver", "reason"})
	m.sessionReady = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "berth_agent_session_create_to_ready_seconds",
		Help:    "Time from a create command's arrival to the first listing of its session as READY, by driver.",
		Buckets: readyBuckets,
	}, []string{"driver"})
	m.sessions = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "berth_agent_sessions",
		Help: "Sessions on the host by state (CREATING, READY, DELETED), as the driver last listed them.",
	}, []string{"driver", "state"})
	m.commands = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "berth_agent_commands_total",
		Help: "Broker commands the agent answered, by kind (create, delete, permissions, screenshot) and result (ok or the failure reason).",
	}, []string{"kind", "result"})
	m.screenshot = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "berth_agent_screenshot_duration_seconds",
		Help:    "Time to answer a screenshot command, by driver and result (ok, failed).",
		Buckets: screenshotBuckets,
	}, []string{"driver", "result"})
	m.brokerConnected = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "berth_agent_broker_connected",
		Help: "1 while the agent has a link to a broker that welcomed it, else 0.",
	})
	m.brokerReconnects = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "berth_agent_broker_reconnects_total",
		Help: "Broker links established after the first one (after a link was lost).",
	})
	m.gatewayActive = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "berth_agent_gateway_connections",
		Help: "Web gateway connections bridged to a session now (vnc driver).",
	})
	m.gatewayTotal = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "berth_agent_gateway_connections_total",
		Help: "Web gateway connections bridged to a session since start (vnc driver).",
	})
	m.gatewayRefused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "berth_agent_gateway_connections_refused_total",
		Help: "Web gateway connections refused, by reason: bad_request, unauthorized, forbidden, not_found, full, unavailable, unreachable.",
	}, []string{"reason"})
	m.fileTransfers = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "berth_agent_gateway_file_transfers_total",
		Help: "Files moved through the session page's files panel, by direction (upload, download).",
	}, []string{"direction"})
	m.fileBytes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "berth_agent_gateway_file_bytes_total",
		Help: "Bytes of the files moved through the session page's files panel, by direction (upload, download).",
	}, []string{"direction"})
	m.certRenewals = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "berth_agent_gateway_certificate_renewals_total",
		Help: "Attempts to renew the web gateway certificate from the broker, by result (ok, failed).",
	}, []string{"result"})
	m.reg.MustRegister(info, m.sessionStarts, m.sessionFailures, m.sessionReady, m.sessions, m.commands,
		m.screenshot, m.brokerConnected, m.brokerReconnects, m.gatewayActive, m.gatewayTotal,
		m.gatewayRefused, m.fileTransfers, m.fileBytes, m.certRenewals)

	m.sessionStarts.With(driver)
	for _, r := range agent.Reasons {
		m.sessionFailures.WithLabelValues(o.Driver, r)
	}
	m.sessionReady.With(driver)
	for _, s := range []string{agentproto.StateCreating, agentproto.StateReady, agentproto.StateDeleted} {
		m.sessions.WithLabelValues(o.Driver, s)
	}
	for _, k := range []string{agentproto.KindCreate, agentproto.KindDelete, agentproto.KindPermissions, agentproto.KindScreenshot} {
		m.commands.WithLabelValues(k, resultOK)
	}
	for _, r := range gateway.RefusedReasons {
		m.gatewayRefused.WithLabelValues(r)
	}
	for _, d := range []string{gateway.FileUpload, gateway.FileDownload} {
		m.fileTransfers.WithLabelValues(d)
		m.fileBytes.WithLabelValues(d)
	}
	for _, r := range []string{resultOK, resultFailed} {
		m.certRenewals.WithLabelValues(r)
	}
	return m
}

// FileTransferred implements gateway.FileMetrics: a completed upload or
// download of n bytes through the files panel.
func (m *Metrics) FileTransferred(direction string, n int64) {
	m.fileTransfers.WithLabelValues(direction).Inc()
	m.fileBytes.WithLabelValues(direction).Add(float64(n))
}

// Registry returns the registry, for tests and for other collectors.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the metrics in the Prometheus exposition formats.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// CertificateExpiry publishes berth_agent_gateway_certificate_expiry_timestamp_seconds,
// the expiry that notAfter returns at each scrape (of the certificate the web
// gateway serves now, else of the metrics listener's). Later calls do
// nothing.
func (m *Metrics) CertificateExpiry(notAfter func() time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.certExpiry {
		return
	}
	m.certExpiry = true
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "berth_agent_gateway_certificate_expiry_timestamp_seconds",
		Help: "Expiry (Unix time) of the TLS certificate the web gateway serves now (vnc driver), else the metrics listener's.",
	}, func() float64 { return float64(notAfter().Unix()) }))
}

// CommandDone implements agent.Metrics.
func (m *Metrics) CommandDone(kind string, d time.Duration, reason string) {
	result := resultOK
	if reason != "" {
		result = reason
	}
	m.commands.WithLabelValues(kind, result).Inc()
	switch kind {
	case agentproto.KindCreate:
		m.sessionStarts.WithLabelValues(m.driver).Inc()
		if reason != "" {
			m.sessionFailures.WithLabelValues(m.driver, reason).Inc()
		}
	case agentproto.KindScreenshot:
		r := resultOK
		if reason != "" {
			r = resultFailed
		}
		m.screenshot.WithLabelValues(m.driver, r).Observe(d.Seconds())
	}
}

// SessionReady implements agent.Metrics.
func (m *Metrics) SessionReady(d time.Duration) {
	m.sessionReady.WithLabelValues(m.driver).Observe(d.Seconds())
}

// SessionStates implements agent.Metrics.
func (m *Metrics) SessionStates(counts map[string]int) {
	for state, n := range counts {
		m.sessions.WithLabelValues(m.driver, state).Set(float64(n))
	}
}

// BrokerLink implements agent.Metrics.
func (m *Metrics) BrokerLink(up bool) {
	if !up {
		m.brokerConnected.Set(0)
		return
	}
	m.brokerConnected.Set(1)
	m.mu.Lock()
	again := m.linkWasUp
	m.linkWasUp = true
	m.mu.Unlock()
	if again {
		m.brokerReconnects.Inc()
	}
}

// CertificateRenewal implements agent.Metrics.
func (m *Metrics) CertificateRenewal(err error) {
	r := resultOK
	if err != nil {
		r = resultFailed
	}
	m.certRenewals.WithLabelValues(r).Inc()
}

// ConnectionOpened implements gateway.Metrics.
func (m *Metrics) ConnectionOpened() {
	m.gatewayActive.Inc()
	m.gatewayTotal.Inc()
}

// ConnectionClosed implements gateway.Metrics.
func (m *Metrics) ConnectionClosed() { m.gatewayActive.Dec() }

// ConnectionRefused implements gateway.Metrics.
func (m *Metrics) ConnectionRefused(reason string) { m.gatewayRefused.WithLabelValues(reason).Inc() }
