// Package metrics exposes the broker's figures to Prometheus, on a private
// registry (no global state) served by Handler.
//
// Two kinds of figures: events that the broker's packages report through the
// small observer interfaces each of them owns (broker.Metrics,
// httpapi.RequestObserver, agenthub.Observer, oauth.Observer), which Broker
// implements as counters and histograms; and gauges read when Prometheus
// scrapes (servers, sessions by state, queue length, agent links, lease,
// certificate expiry, the key sets of external authorization servers) from a
// Source, whose broker figures are cached for Options.StatsMaxAge so that
// frequent scrapes cost the store little.
//
// Every metric name starts with berth_broker_. Label values come from fixed
// sets (operations, reasons, states) or from what an admin registered (the
// URLs of external authorization servers), never from request data.
package metrics

import (
	"context"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/berth-dev/berth/internal/agenthub"
	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/httpapi"
	"github.com/berth-dev/berth/internal/oauth"
)

// Interface guards.
var (
	_ broker.Metrics          = (*Broker)(nil)
	_ httpapi.RequestObserver = (*Broker)(nil)
	_ agenthub.Observer       = (*Broker)(nil)
	_ oauth.Observer          = (*Broker)(nil)
)

const namespace = "berth_broker"

// Source gives the figures read at scrape time. Nil fields are left out.
type Source struct {
	// Stats returns the broker core's figures (broker.Service.Stats).
	Stats func(ctx context.Context) (broker.Stats, error)
	// AgentLinks returns the number of agent links this broker holds.
	AgentLinks func() int
	// Leader reports whether this broker holds the maintenance lease.
	Leader func(ctx context.Context) bool
	// CertificateExpiry returns the NotAfter of each listener's certificate,
	// by listener name (client, agent, gateway, metrics).
	CertificateExpiry func() map[string]time.Time
	// AuthServers returns the key set of each registered external
	// authorization server (oauth.External.Status).
	AuthServers func() []oauth.AuthServerStatus
	// Capacity returns the last check of the scaling signals
	// (broker.Service.LastCapacity).
	Capacity func() broker.Capacity
}

// Options tune a Broker. Zero values take the defaults noted.
type Options struct {
	// Version is the broker's version, the label of berth_broker_build_info.
	Version string
	// StatsMaxAge is how long Source.Stats is reused (5s).
	StatsMaxAge time.Duration
	// Logger receives scrape errors (slog.Default()).
	Logger *slog.Logger
}

// Broker is the broker's metrics: a registry with the Go and process
// collectors, the event metrics and the scrape-time gauges of a Source.
type Broker struct {
	reg *prometheus.Registry
	log *slog.Logger

	apiDuration       *prometheus.HistogramVec
	placements        prometheus.Counter
	placementFailures *prometheus.CounterVec
	createFailures    *prometheus.CounterVec
	queueWait         prometheus.Histogram
	agentConnects     prometheus.Counter
	agentReconnects   prometheus.Counter
	agentDisconnects  prometheus.Counter
	agentRefused      *prometheus.CounterVec
	tokensIssued      *prometheus.CounterVec
	tokensRefused     *prometheus.CounterVec
	agentCerts        prometheus.Counter
	connsRefused      *prometheus.CounterVec
	policyWarnings    *prometheus.CounterVec
	policyActions     *prometheus.CounterVec
}

// New returns the metrics of a broker whose scrape-time figures come from
// src.
func New(src Source, opts Options) *Broker {
	if opts.StatsMaxAge <= 0 {
		opts.StatsMaxAge = 5 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	reg := prometheus.NewRegistry()
	b := &Broker{reg: reg, log: opts.Logger.With("component", "metrics")}
	f := factory{reg}

	b.apiDuration = f.histogramVec("api_request_duration_seconds",
		"Time to answer Session Manager API and token requests, by operation and status class (2xx, 4xx, 5xx).",
		prometheus.DefBuckets, "operation", "code")
	for _, op := range httpapi.Operations() {
		for _, c := range []string{"2xx", "4xx", "5xx"} {
			b.apiDuration.WithLabelValues(op, c)
		}
	}
	b.placements = f.counter("placements_total", "Sessions committed on a server: new, queued and retried ones.")
	b.placementFailures = f.counterVec("placement_failures_total",
		"Sessions refused a server or that ended without one, by reason.", "reason")
	for _, r := range broker.PlacementFailureReasons() {
		b.placementFailures.WithLabelValues(r)
	}
	b.createFailures = f.counterVec("create_failures_total",
		"Create commands that failed on a server (the session may be retried on another), by reason.", "reason")
	for _, r := range broker.CreateFailureReasons() {
		b.createFailures.WithLabelValues(r)
	}
	b.queueWait = f.histogram("queue_wait_seconds",
		"Time queued sessions (EnqueueRequest) waited, from entering the queue to their placement.",
		[]float64{0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600})
	b.agentConnects = f.counter("agent_connects_total", "Agent links that completed their handshake.")
	b.agentReconnects = f.counter("agent_reconnects_total",
		"Agent links of a server that had a link to this broker before, since it started.")
	b.agentDisconnects = f.counter("agent_disconnects_total", "Agent links that closed.")
	b.agentRefused = f.counterVec("agent_refused_total", "Agent connections refused, by reason.", "reason")
	for _, r := range agenthub.RefusalReasons() {
		b.agentRefused.WithLabelValues(r)
	}
	b.tokensIssued = f.counterVec("tokens_issued_total", "Tokens issued, by kind (access, connection).", "kind")
	for _, k := range []string{oauth.TokenAccess, oauth.TokenConnection} {
		b.tokensIssued.WithLabelValues(k)
	}
	b.tokensRefused = f.counterVec("tokens_refused_total",
		"Token requests refused (kind token_request) and tokens that failed verification (access: the broker's; connection; external: a registered authorization server's), by reason.",
		"kind", "reason")
	b.tokensRefused.WithLabelValues(oauth.TokenRequest, oauth.RefusedInvalidClient)
	b.tokensRefused.WithLabelValues(oauth.TokenAccess, oauth.RefusedExpired)
	b.tokensRefused.WithLabelValues(oauth.TokenExternal, oauth.RefusedUnknownKey)
	b.agentCerts = f.counter("agent_certificates_issued_total", "Gateway certificates issued to agents.")
	b.connsRefused = f.counterVec("connections_refused_total",
		"Connections closed by a listener before any request, by listener (client, agent, gateway, metrics) and reason (total, per_address: connection limits; handshake_queue: waited too long for a TLS handshake slot).",
		"listener", "reason")

	b.policyWarnings = f.counterVec("session_policy_warnings_total",
		"Warnings sent to a session's clients before a lifetime policy acts, by policy.", "policy")
	b.policyActions = f.counterVec("session_policy_actions_total",
		"Actions of the session lifetime policies (disconnect: an idle session's clients; delete: the session), by policy and action.",
		"policy", "action")
	for _, p := range []string{broker.PolicyIdle, broker.PolicyLifetime} {
		b.policyWarnings.WithLabelValues(p)
	}
	b.policyActions.WithLabelValues(broker.PolicyIdle, broker.ActionDisconnect)
	b.policyActions.WithLabelValues(broker.PolicyDisconnected, broker.ActionDelete)
	b.policyActions.WithLabelValues(broker.PolicyLifetime, broker.ActionDelete)

	buildInfo := f.gaugeVec("build_info", "Always 1; the label is the broker's version.", "version")
	buildInfo.WithLabelValues(opts.Version).Set(1)

	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&scrapeCollector{src: src, maxAge: opts.StatsMaxAge, log: b.log},
	)
	return b
}

// ConnectionRefused implements netlimit.Observer: a listener closed a
// connection on accept because of its limits. The listeners' names and the
// reasons are fixed sets, so the labels stay bounded.
func (b *Broker) ConnectionRefused(listener, reason string) {
	b.connsRefused.WithLabelValues(listener, reason).Inc()
}

// Handler serves the metrics in the Prometheus text format. A figure that
// cannot be read is left out and logged; the others are served.
func (b *Broker) Handler() http.Handler {
	return promhttp.HandlerFor(b.reg, promhttp.HandlerOpts{
		ErrorHandling: promhttp.ContinueOnError,
		ErrorLog:      slog.NewLogLogger(b.log.Handler(), slog.LevelWarn),
		Registry:      b.reg, // promhttp_metric_handler_errors_total
	})
}

// Registry returns the registry (for tests).
func (b *Broker) Registry() *prometheus.Registry { return b.reg }

// Placed implements broker.Metrics.
func (b *Broker) Placed(n int) { b.placements.Add(float64(n)) }

// PlacementFailed implements broker.Metrics.
func (b *Broker) PlacementFailed(reason string) { b.placementFailures.WithLabelValues(reason).Inc() }

// CreateFailed implements broker.Metrics.
func (b *Broker) CreateFailed(reason string) { b.createFailures.WithLabelValues(reason).Inc() }

// PolicyWarned implements broker.PolicyMetrics.
func (b *Broker) PolicyWarned(policy string) { b.policyWarnings.WithLabelValues(policy).Inc() }

// PolicyActed implements broker.PolicyMetrics.
func (b *Broker) PolicyActed(policy, action string) {
	b.policyActions.WithLabelValues(policy, action).Inc()
}

// QueueWait implements broker.Metrics.
func (b *Broker) QueueWait(d time.Duration) { b.queueWait.Observe(d.Seconds()) }

// ObserveRequest implements httpapi.RequestObserver.
func (b *Broker) ObserveRequest(operation string, status int, d time.Duration) {
	b.apiDuration.WithLabelValues(operation, statusClass(status)).Observe(d.Seconds())
}

// LinkUp implements agenthub.Observer.
func (b *Broker) LinkUp(reconnect bool) {
	b.agentConnects.Inc()
	if reconnect {
		b.agentReconnects.Inc()
	}
}

// LinkDown implements agenthub.Observer.
func (b *Broker) LinkDown() { b.agentDisconnects.Inc() }

// LinkRefused implements agenthub.Observer.
func (b *Broker) LinkRefused(reason string) { b.agentRefused.WithLabelValues(reason).Inc() }

// TokenIssued implements oauth.Observer.
func (b *Broker) TokenIssued(kind string) { b.tokensIssued.WithLabelValues(kind).Inc() }

// TokenRefused implements oauth.Observer.
func (b *Broker) TokenRefused(kind, reason string) {
	b.tokensRefused.WithLabelValues(kind, reason).Inc()
}

// AgentCertificateIssued counts a gateway certificate issued to an agent.
func (b *Broker) AgentCertificateIssued() { b.agentCerts.Inc() }

// statusClass turns 404 into "4xx".
func statusClass(status int) string {
	if status < 100 || status > 599 {
		return "other"
	}
	return strconv.Itoa(status/100) + "xx"
}

// factory creates metrics in the broker's namespace and registers them.
type factory struct{ reg *prometheus.Registry }

func (f factory) counter(name, help string) prometheus.Counter {
	c := prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Name: name, Help: help})
	f.reg.MustRegister(c)
	return c
}

func (f factory) counterVec(name, help string, labels ...string) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: name, Help: help}, labels)
	f.reg.MustRegister(c)
	return c
}

func (f factory) gaugeVec(name, help string, labels ...string) *prometheus.GaugeVec {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: namespace, Name: name, Help: help}, labels)
	f.reg.MustRegister(g)
	return g
}

func (f factory) histogram(name, help string, buckets []float64) prometheus.Histogram {
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: namespace, Name: name, Help: help, Buckets: buckets})
	f.reg.MustRegister(h)
	return h
}

func (f factory) histogramVec(name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: namespace, Name: name, Help: help, Buckets: buckets}, labels)
	f.reg.MustRegister(h)
	return h
}

// Descriptions of the scrape-time gauges.
var (
	descServers = prometheus.NewDesc(namespace+"_servers",
		"Servers the broker knows.", nil, nil)
	descServersReady = prometheus.NewDesc(namespace+"_servers_ready",
		"Servers that are AVAILABLE for new sessions.", nil, nil)
	descServersUnavailable = prometheus.NewDesc(namespace+"_servers_unavailable",
		"Servers that are UNAVAILABLE, by reason (UNREACHABLE_AGENT, UNKNOWN: agent not relinked yet after a broker restart, UNHEALTHY_DCV_SERVER, SERVER_CLOSED, SERVER_FULL).", []string{"reason"}, nil)
	descSessions = prometheus.NewDesc(namespace+"_sessions",
		"Sessions by stored state (CREATING, READY, DELETING, DELETED within delete-session-duration-hours); READY includes those shown as UNKNOWN.", []string{"state"}, nil)
	descSessionsActive = prometheus.NewDesc(namespace+"_sessions_active",
		"Sessions placed on a server and not DELETED, by type (VIRTUAL, CONSOLE).", []string{"type"}, nil)
	descQueue = prometheus.NewDesc(namespace+"_queue_length",
		"Sessions waiting for a server: queued with EnqueueRequest, or to be retried after a failed create.", nil, nil)
	descShortfall = prometheus.NewDesc(namespace+"_capacity_shortfall_sessions",
		"Requests that no open, healthy server can take, by requirement class (GET /berth/v1/capacity names the classes): queued sessions that fit no server, and creates refused for want of a server in the last 5 minutes.", []string{"class"}, nil)
	descShortfallWait = prometheus.NewDesc(namespace+"_capacity_shortfall_oldest_wait_seconds",
		"How long the oldest request of each requirement class's shortfall had waited (queued or refused) at the last check of the scaling signals.", []string{"class"}, nil)
	descIdleServers = prometheus.NewDesc(namespace+"_idle_servers",
		"Open servers without sessions for scaling-idle-server-minutes, at the last check of the scaling signals.", nil, nil)
	descAgentLinks = prometheus.NewDesc(namespace+"_agent_links",
		"Agent links this broker holds.", nil, nil)
	descLeader = prometheus.NewDesc(namespace+"_lease_holder",
		"1 if this broker holds the maintenance lease (runs the queue, expiry and cleanup), else 0.", nil, nil)
	descCertExpiry = prometheus.NewDesc(namespace+"_certificate_expiry_timestamp_seconds",
		"When the certificate each listener serves expires (Unix time).", []string{"listener"}, nil)
	descAuthServerFetch = prometheus.NewDesc(namespace+"_auth_server_last_fetch_timestamp_seconds",
		"When the key set of each registered external authorization server was last fetched (Unix time; 0: never).", []string{"url"}, nil)
	descAuthServerKeys = prometheus.NewDesc(namespace+"_auth_server_keys",
		"Usable keys cached from each registered external authorization server's key set.", []string{"url"}, nil)
)

// sessionStates are the stored states, always reported (0 when none).
var sessionStates = []string{broker.StateCreating, broker.StateReady, broker.StateDeleting, broker.StateDeleted}

// scrapeCollector reads the Source at scrape time.
type scrapeCollector struct {
	src    Source
	maxAge time.Duration
	log    *slog.Logger

	mu    sync.Mutex // held while reading Stats, so that scrapes share one read
	stats broker.Stats
	at    time.Time
}

// Describe implements prometheus.Collector.
func (c *scrapeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descServers, descServersReady, descServersUnavailable, descSessions,
		descSessionsActive, descQueue, descAgentLinks, descLeader, descCertExpiry, descAuthServerFetch, descAuthServerKeys,
		descShortfall, descShortfallWait, descIdleServers} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *scrapeCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if c.src.Stats != nil {
		st, err := c.readStats(ctx)
		if err != nil {
			c.log.Warn("read broker figures for metrics", "err", err)
			for _, d := range []*prometheus.Desc{descServers, descSessions} {
				ch <- prometheus.NewInvalidMetric(d, err)
			}
		} else {
			gauge := func(d *prometheus.Desc, v int, labels ...string) {
				ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), labels...)
			}
			gauge(descServers, st.Servers)
			gauge(descServersReady, st.Available)
			for reason, n := range st.Unavailable {
				gauge(descServersUnavailable, n, reason)
			}
			for _, state := range sessionStates {
				gauge(descSessions, st.ByState[state], state)
			}
			for state, n := range st.ByState {
				if !slices.Contains(sessionStates, state) {
					gauge(descSessions, n, state)
				}
			}
			gauge(descSessionsActive, st.Virtual, broker.TypeVirtual)
			gauge(descSessionsActive, st.Console, broker.TypeConsole)
			gauge(descQueue, st.Queued)
		}
	}
	if c.src.Capacity != nil {
		capa := c.src.Capacity()
		for _, x := range capa.Shortfall {
			id := x.Class.ID()
			ch <- prometheus.MustNewConstMetric(descShortfall, prometheus.GaugeValue, float64(x.Count), id)
			ch <- prometheus.MustNewConstMetric(descShortfallWait, prometheus.GaugeValue, max(capa.At.Sub(x.OldestSince), 0).Seconds(), id)
		}
		ch <- prometheus.MustNewConstMetric(descIdleServers, prometheus.GaugeValue, float64(len(capa.Idle)))
	}
	if c.src.AgentLinks != nil {
		ch <- prometheus.MustNewConstMetric(descAgentLinks, prometheus.GaugeValue, float64(c.src.AgentLinks()))
	}
	if c.src.Leader != nil {
		v := 0.0
		if c.src.Leader(ctx) {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(descLeader, prometheus.GaugeValue, v)
	}
	if c.src.CertificateExpiry != nil {
		for l, t := range c.src.CertificateExpiry() {
			ch <- prometheus.MustNewConstMetric(descCertExpiry, prometheus.GaugeValue, float64(t.Unix()), l)
		}
	}
	if c.src.AuthServers != nil {
		for _, a := range c.src.AuthServers() {
			at := 0.0
			if !a.FetchedAt.IsZero() {
				at = float64(a.FetchedAt.UnixMilli()) / 1000
			}
			ch <- prometheus.MustNewConstMetric(descAuthServerFetch, prometheus.GaugeValue, at, a.URL)
			ch <- prometheus.MustNewConstMetric(descAuthServerKeys, prometheus.GaugeValue, float64(a.Keys), a.URL)
		}
	}
}

// readStats returns the Source's Stats, read at most once per maxAge.
func (c *scrapeCollector) readStats(ctx context.Context) (broker.Stats, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.at.IsZero() && time.Since(c.at) < c.maxAge {
		return c.stats, nil
	}
	st, err := c.src.Stats(ctx)
	if err != nil {
		return broker.Stats{}, err
	}
	c.stats, c.at = st, time.Now()
	return st, nil
}
