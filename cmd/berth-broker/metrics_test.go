package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/driver/sim"
	"github.com/berth-dev/berth/internal/poll"
	"github.com/berth-dev/berth/internal/postgres/pgtest"
)

// MustRunMetricsBroker starts a broker with its metrics listener on a free
// loopback port and figures read afresh on each scrape.
func MustRunMetricsBroker(tb testing.TB, edit func(*Main)) *testBroker {
	tb.Helper()
	return MustRunMainWith(tb, tb.TempDir(), func(m *Main) {
		m.Config.MetricsPort, m.Config.MetricsBindHost = 0, "127.0.0.1"
		m.statsMaxAge = time.Millisecond
		if edit != nil {
			edit(m)
		}
	})
}

// scrape is one scrape of /metrics, by family name.
type scrape map[string]*dto.MetricFamily

// MustScrape fetches https://METRICS_ADDR/metrics, trusting the broker's CA,
// and parses the text format.
func (b *testBroker) MustScrape(tb testing.TB) scrape {
	tb.Helper()
	resp, err := b.hc.Get("https://" + b.MetricsAddr() + "/metrics")
	if err != nil {
		tb.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		tb.Fatalf("scrape: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		tb.Fatalf("parse scrape: %v", err)
	}
	return fams
}

// value returns the value of the series of family name whose labels include
// labels (name, value pairs), summed over the matching series: a counter's
// or gauge's value, a histogram's sample count. ok is false when no series
// matches.
func (s scrape) value(name string, labels ...string) (v float64, ok bool) {
	f := s[name]
	if f == nil {
		return 0, false
	}
	for _, m := range f.GetMetric() {
		if !hasLabels(m, labels) {
			continue
		}
		ok = true
		switch {
		case m.Counter != nil:
			v += m.GetCounter().GetValue()
		case m.Gauge != nil:
			v += m.GetGauge().GetValue()
		case m.Histogram != nil:
			v += float64(m.GetHistogram().GetSampleCount())
		case m.Untyped != nil:
			v += m.GetUntyped().GetValue()
		}
	}
	return v, ok
}

func hasLabels(m *dto.Metric, labels []string) bool {
	for i := 0; i+1 < len(labels); i += 2 {
		found := false
		for _, lp := range m.GetLabel() {
			if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// must returns value's result, failing when the series is missing.
func (s scrape) must(tb testing.TB, name string, labels ...string) float64 {
	tb.Helper()
	v, ok := s.value(name, labels...)
	if !ok {
		tb.Fatalf("metrics: no series %s%v", name, labels)
	}
	return v
}

// waitMetric scrapes until the series has want, and fails after 15s.
func (b *testBroker) waitMetric(tb testing.TB, want float64, name string, labels ...string) {
	tb.Helper()
	var got float64
	poll.Until(tb, 15*time.Second, fmt.Sprintf("%s%v = %v", name, labels, want), func() bool {
		got, _ = b.MustScrape(tb).value(name, labels...)
		return got == want
	})
}

func TestMetrics_OffByDefault(t *testing.T) {
	b := MustRunMain(t, t.TempDir(), nil)
	if addr := b.MetricsAddr(); addr != "" {
		t.Fatalf("metrics listener on %s without metrics-port", addr)
	}
}

// TestMetrics_Listener checks the listener: HTTPS with a certificate of the
// broker's CA, plain HTTP refused, the Go and process collectors and the
// build information present, the other listeners without /metrics.
func TestMetrics_Listener(t *testing.T) {
	b := MustRunMetricsBroker(t, nil)
	s := b.MustScrape(t)
	for _, name := range []string{"go_goroutines", "process_cpu_seconds_total", "berth_broker_build_info"} {
		if s[name] == nil {
			t.Errorf("no %s in the scrape", name)
		}
	}
	if v := s.must(t, "berth_broker_build_info", "version", version); v != 1 {
		t.Errorf("build_info = %v, want 1", v)
	}
	resp, err := http.Get("http://" + b.MetricsAddr() + "/metrics")
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Error("the metrics listener answered plain HTTP")
		}
	}
	for _, addr := range []string{b.ClientAddr(), b.AgentAddr()} {
		resp, err := b.hc.Get("https://" + addr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Errorf("https://%s/metrics answered 200: metrics belong on their own listener", addr)
		}
	}
}

// TestMetrics_ServersAndSessions checks the gauges read at scrape time
// against what DescribeServers and DescribeSessions show.
func TestMetrics_ServersAndSessions(t *testing.T) {
	ctx := context.Background()
	b := MustRunMetricsBroker(t, nil)
	c := b.MustClient(t)
	b.MustStartSimAgent(t, t.TempDir(), nil, hostReport("host-a", 1, nil))
	b.MustStartSimAgent(t, t.TempDir(), nil, hostReport("host-b", 0, map[string]string{"pool": "b"}))
	poll.Until(t, 10*time.Second, "two servers", func() bool { return len(servers(t, c)) == 2 })

	resp := create(t, c,
		api.CreateSessionRequest{Name: "a", Owner: "alice", Type: "VIRTUAL", Requirements: "server:Hostname = 'host-a'"},
		api.CreateSessionRequest{Name: "b1", Owner: "bob", Type: "VIRTUAL", Requirements: "tag:pool = 'b'"},
		api.CreateSessionRequest{Name: "b2", Owner: "bob", Type: "CONSOLE", Requirements: "tag:pool = 'b'"},
		api.CreateSessionRequest{Name: "b3", Owner: "carol", Type: "VIRTUAL", Requirements: "tag:pool = 'b'"},
	)
	if len(resp.SuccessfulList) != 4 {
		t.Fatalf("create: %+v", resp.UnsuccessfulList)
	}
	for _, s := range resp.SuccessfulList {
		waitState(t, c, s.Id, api.StateReady)
	}
	del, err := c.DeleteSessions(ctx, []api.DeleteSessionRequest{{SessionId: resp.SuccessfulList[3].Id, Owner: "carol"}})
	if err != nil || len(del.SuccessfulList) != 1 {
		t.Fatalf("delete: %v %+v", err, del)
	}
	waitState(t, c, resp.SuccessfulList[3].Id, api.StateDeleted)

	// Sessions by state: the scrape equals DescribeSessions.
	var want, got map[string]float64
	poll.Until(t, 10*time.Second, "sessions by state as DescribeSessions shows them", func() bool {
		want = map[string]float64{}
		for _, s := range describe(t, c) {
			want[s.State]++
		}
		sc := b.MustScrape(t)
		got = map[string]float64{}
		for _, st := range []string{"CREATING", "READY", "DELETING", "DELETED", "UNKNOWN"} {
			if v, _ := sc.value("berth_broker_sessions", "state", st); v != 0 {
				got[st] = v
			}
		}
		return fmt.Sprint(want) == fmt.Sprint(got)
	})
	if want["READY"] != 3 || want["DELETED"] != 1 {
		t.Fatalf("DescribeSessions shows %v, want 3 READY and 1 DELETED", want)
	}

	s := b.MustScrape(t)
	checks := []struct {
		name   string
		labels []string
		want   float64
	}{
		{"berth_broker_servers", nil, 2},
		{"berth_broker_servers_ready", nil, 1},
		{"berth_broker_servers_unavailable", []string{"reason", "SERVER_FULL"}, 1},
		{"berth_broker_servers_unavailable", []string{"reason", "UNREACHABLE_AGENT"}, 0},
		{"berth_broker_sessions_active", []string{"type", "VIRTUAL"}, 2},
		{"berth_broker_sessions_active", []string{"type", "CONSOLE"}, 1},
		{"berth_broker_queue_length", nil, 0},
		{"berth_broker_agent_links", nil, 2},
		{"berth_broker_lease_holder", nil, 1},
	}
	for _, ck := range checks {
		if got := s.must(t, ck.name, ck.labels...); got != ck.want {
			t.Errorf("%s%v = %v, want %v", ck.name, ck.labels, got, ck.want)
		}
	}

	// A closed server counts as SERVER_CLOSED.
	id := servers(t, c)["host-b"].Id
	if _, err := c.CloseServers(ctx, []api.CloseServerRequest{{ServerId: id, Force: true}}); err != nil {
		t.Fatal(err)
	}
	b.waitMetric(t, 1, "berth_broker_servers_unavailable", "reason", "SERVER_CLOSED")
	b.waitMetric(t, 0, "berth_broker_servers_ready")
}

// TestMetrics_Placement drives each placement outcome and reads its
// counter: placements, failures by reason, the queue and its wait times,
// create failures on an agent.
func TestMetrics_Placement(t *testing.T) {
	t.Parallel() // it mostly waits for the broker's timeouts: overlap it with the others that do
	ctx := context.Background()
	b := MustRunMetricsBroker(t, func(m *Main) { m.Config.Retries = 0 })
	c := b.MustClient(t)

	// No server at all.
	if r := create(t, c, api.CreateSessionRequest{Name: "n", Owner: "alice", Type: "VIRTUAL"}); len(r.UnsuccessfulList) != 1 {
		t.Fatalf("create without servers: %+v", r)
	}
	b.waitMetric(t, 1, "berth_broker_placement_failures_total", "reason", "no_servers")

	flaky := sim.New()
	flaky.FailOwners = map[string]string{"flaky": "simulated failure"}
	b.MustStartSimAgent(t, t.TempDir(), nil, hostReport("host-a", 1, map[string]string{"pool": "a"}))
	b.MustStartSimAgent(t, t.TempDir(), flaky, hostReport("host-f", 0, map[string]string{"pool": "f"}))
	poll.Until(t, 10*time.Second, "two servers", func() bool { return len(servers(t, c)) == 2 })

	first := create(t, c, api.CreateSessionRequest{Name: "a1", Owner: "alice", Type: "VIRTUAL", Requirements: "tag:pool = 'a'"})
	if len(first.SuccessfulList) != 1 {
		t.Fatalf("create: %+v", first.UnsuccessfulList)
	}
	waitState(t, c, first.SuccessfulList[0].Id, api.StateReady)
	b.waitMetric(t, 1, "berth_broker_placements_total")

	// No match, then full.
	create(t, c, api.CreateSessionRequest{Name: "x", Owner: "alice", Type: "VIRTUAL", Requirements: "tag:pool = 'none'"})
	create(t, c, api.CreateSessionRequest{Name: "a2", Owner: "alice", Type: "VIRTUAL", Requirements: "tag:pool = 'a'"})
	b.waitMetric(t, 1, "berth_broker_placement_failures_total", "reason", "no_match")
	b.waitMetric(t, 1, "berth_broker_placement_failures_total", "reason", "full")

	// Queued until host-a has room: the queue length, then the wait.
	queued := create(t, c, api.CreateSessionRequest{Name: "q", Owner: "bob", Type: "VIRTUAL", Requirements: "tag:pool = 'a'", EnqueueRequest: true})
	if len(queued.SuccessfulList) != 1 {
		t.Fatalf("enqueue: %+v", queued.UnsuccessfulList)
	}
	b.waitMetric(t, 1, "berth_broker_queue_length")
	//sleep-ok: the session waits 500 ms in the queue, which the wait histogram must show
	time.Sleep(500 * time.Millisecond)
	if _, err := c.DeleteSessions(ctx, []api.DeleteSessionRequest{{SessionId: first.SuccessfulList[0].Id, Owner: "alice"}}); err != nil {
		t.Fatal(err)
	}
	waitState(t, c, queued.SuccessfulList[0].Id, api.StateReady)
	b.waitMetric(t, 1, "berth_broker_queue_wait_seconds")
	b.waitMetric(t, 0, "berth_broker_queue_length")
	b.waitMetric(t, 2, "berth_broker_placements_total")
	if h := b.MustScrape(t)["berth_broker_queue_wait_seconds"].GetMetric()[0].GetHistogram(); h.GetSampleSum() < 0.4 {
		t.Errorf("queue wait = %vs, want at least the 0.5s the session waited", h.GetSampleSum())
	}

	// Queued for longer than create-sessions-queue-max-time-seconds (3s).
	late := create(t, c, api.CreateSessionRequest{Name: "late", Owner: "bob", Type: "VIRTUAL", Requirements: "tag:pool = 'none'", EnqueueRequest: true})
	waitState(t, c, late.SuccessfulList[0].Id, api.StateDeleted)
	b.waitMetric(t, 1, "berth_broker_placement_failures_total", "reason", "queue_timeout")

	// The agent fails the create and no retry is left (retries 0).
	failed := create(t, c, api.CreateSessionRequest{Name: "f", Owner: "flaky", Type: "VIRTUAL", Requirements: "tag:pool = 'f'"})
	waitState(t, c, failed.SuccessfulList[0].Id, api.StateDeleted)
	b.waitMetric(t, 1, "berth_broker_create_failures_total", "reason", "agent_error")
	b.waitMetric(t, 1, "berth_broker_placement_failures_total", "reason", "create_failed")

	// Reasons are a fixed set: every one is reported, even at 0.
	s := b.MustScrape(t)
	var reasons []string
	for _, m := range s["berth_broker_placement_failures_total"].GetMetric() {
		reasons = append(reasons, m.GetLabel()[0].GetValue())
	}
	sort.Strings(reasons)
	if got, want := strings.Join(reasons, ","), "create_failed,full,no_match,no_servers,queue_full,queue_timeout,quota,store_error"; got != want {
		t.Errorf("placement failure reasons = %s, want %s", got, want)
	}
}

// TestMetrics_API checks the request duration histogram and the token
// counters through real requests.
func TestMetrics_API(t *testing.T) {
	ctx := context.Background()
	b := MustRunMetricsBroker(t, nil)
	c := b.MustClient(t)
	b.MustStartSimAgent(t, t.TempDir(), nil, hostReport("host-a", 0, nil))
	poll.Until(t, 10*time.Second, "a server", func() bool { return len(servers(t, c)) == 1 })
	r := create(t, c, api.CreateSessionRequest{Name: "s", Owner: "alice", Type: "VIRTUAL"})
	id := r.SuccessfulList[0].Id
	waitState(t, c, id, api.StateReady)
	if _, err := c.GetSessionConnectionData(ctx, id, "alice"); err != nil {
		t.Fatal(err)
	}
	var ae *api.Error
	if _, err := c.DescribeSessions(ctx, api.DescribeSessionsRequest{MaxResults: new(int)}); !errors.As(err, &ae) || ae.StatusCode != 400 {
		t.Fatalf("DescribeSessions with MaxResults 0: %v, want 400", err)
	}

	// A token request with a wrong secret, and an API request with a bad token.
	bad := &api.Client{BrokerURL: c.BrokerURL, ClientID: c.ClientID, ClientSecret: "wrong", HTTPClient: b.hc}
	if _, err := bad.Token(ctx); err == nil {
		t.Fatal("token with a wrong secret")
	}
	req, _ := http.NewRequest("POST", c.BrokerURL+"/describeSessions", strings.NewReader("{}"))
	req.Header.Set("Authorization", "Bearer not.a.token")
	resp, err := b.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("bad bearer token: %s", resp.Status)
	}

	s := b.MustScrape(t)
	checks := []struct {
		name   string
		labels []string
		min    float64
		max    float64
	}{
		{"berth_broker_api_request_duration_seconds", []string{"operation", "CreateSessions", "code", "2xx"}, 1, 1},
		{"berth_broker_api_request_duration_seconds", []string{"operation", "DescribeSessions", "code", "2xx"}, 1, 1e9},
		{"berth_broker_api_request_duration_seconds", []string{"operation", "DescribeSessions", "code", "4xx"}, 2, 2},
		{"berth_broker_api_request_duration_seconds", []string{"operation", "GetSessionConnectionData", "code", "2xx"}, 1, 1},
		{"berth_broker_api_request_duration_seconds", []string{"operation", "Token", "code", "2xx"}, 1, 1e9},
		{"berth_broker_api_request_duration_seconds", []string{"operation", "Token", "code", "4xx"}, 1, 1},
		{"berth_broker_api_request_duration_seconds", []string{"operation", "CloseServers", "code", "2xx"}, 0, 0},
		{"berth_broker_tokens_issued_total", []string{"kind", "access"}, 1, 1e9},
		{"berth_broker_tokens_issued_total", []string{"kind", "connection"}, 1, 1},
		{"berth_broker_tokens_refused_total", []string{"kind", "token_request", "reason", "invalid_client"}, 1, 1},
		{"berth_broker_tokens_refused_total", []string{"kind", "access", "reason", "malformed"}, 1, 1},
	}
	for _, ck := range checks {
		if got := s.must(t, ck.name, ck.labels...); got < ck.min || got > ck.max {
			t.Errorf("%s%v = %v, want %v..%v", ck.name, ck.labels, got, ck.min, ck.max)
		}
	}
}

// TestMetrics_AgentLinks checks the link gauge and the connect, reconnect,
// disconnect and refusal counters.
func TestMetrics_AgentLinks(t *testing.T) {
	b := MustRunMetricsBroker(t, nil)
	state := t.TempDir()
	a := b.MustStartSimAgent(t, state, nil, hostReport("host-a", 0, nil))
	b.waitMetric(t, 1, "berth_broker_agent_links")
	b.waitMetric(t, 1, "berth_broker_agent_connects_total")
	a.Stop()
	b.waitMetric(t, 0, "berth_broker_agent_links")
	b.waitMetric(t, 1, "berth_broker_agent_disconnects_total")
	b.MustStartSimAgent(t, state, nil, hostReport("host-a", 0, nil))
	b.waitMetric(t, 1, "berth_broker_agent_links")
	b.waitMetric(t, 2, "berth_broker_agent_connects_total")
	b.waitMetric(t, 1, "berth_broker_agent_reconnects_total")

	req, _ := http.NewRequest("GET", "https://"+b.AgentAddr()+"/agent/connect", nil)
	req.SetBasicAuth("nobody", "wrong")
	resp, err := b.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("agent with wrong credentials: %s", resp.Status)
	}
	b.waitMetric(t, 1, "berth_broker_agent_refused_total", "reason", "auth")
}

// TestMetrics_Cluster runs two brokers on one PostgreSQL schema: exactly one
// reports holding the lease, each counts only its own agent links, and both
// report the sessions and servers they share.
func TestMetrics_Cluster(t *testing.T) {
	dsn := pgtest.DSN(t)
	var brokers []*testBroker
	for _, id := range []string{"m1", "m2"} {
		brokers = append(brokers, MustRunMainWith(t, filepath.Join(t.TempDir(), id), func(m *Main) {
			m.Config.PersistenceDB, m.Config.PersistenceDSN, m.Config.BrokerID = "postgresql", dsn, id
			m.Config.MetricsPort = 0
			m.statsMaxAge = time.Millisecond
		}))
	}
	c := brokers[0].MustClient(t)
	brokers[1].MustStartSimAgent(t, t.TempDir(), nil, hostReport("host-a", 0, nil))
	poll.Until(t, 10*time.Second, "a server", func() bool { return len(servers(t, c)) == 1 })
	r := create(t, c, api.CreateSessionRequest{Name: "s", Owner: "alice", Type: "VIRTUAL"})
	if len(r.SuccessfulList) != 1 {
		t.Fatalf("create: %+v", r.UnsuccessfulList)
	}
	waitState(t, c, r.SuccessfulList[0].Id, api.StateReady)

	poll.Until(t, 15*time.Second, "one lease holder", func() bool {
		a, _ := brokers[0].MustScrape(t).value("berth_broker_lease_holder")
		b, _ := brokers[1].MustScrape(t).value("berth_broker_lease_holder")
		return a+b == 1
	})
	for i, b := range brokers {
		b.waitMetric(t, 1, "berth_broker_sessions", "state", "READY")
		b.waitMetric(t, 1, "berth_broker_servers_ready")
		b.waitMetric(t, float64(i), "berth_broker_agent_links") // the agent is linked to the second
	}
}
