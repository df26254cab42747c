package e2e

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/agentmetrics/metricstest"
	"github.com/berth-dev/berth/internal/poll"
)

// scrape reads https://127.0.0.1:port/metrics with hc: e.HTTP (ca.pem) for
// the broker's listener, e.GatewayHTTP (gateway-ca.pem) for a vnc agent's,
// which serves its web gateway's certificate.
func scrape(tb testing.TB, hc *http.Client, port int) metricstest.Families {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("https://127.0.0.1:%d/metrics", port), nil)
	resp, err := hc.Do(req)
	if err != nil {
		tb.Fatalf("scrape :%d: %v", port, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		tb.Fatalf("scrape :%d: %s", port, resp.Status)
	}
	return metricstest.Parse(tb, resp.Body)
}

// TestE2E_Metrics scrapes the broker's and the agent's /metrics during a run
// with real vnc sessions and checks every family against what the API and
// the run did.
func TestE2E_Metrics(t *testing.T) {
	brokerPort, agentPort := mustFreePort(t), mustFreePort(t)
	e := MustStartEnvWith(t, EnvOptions{
		BrokerProps: []string{fmt.Sprintf("metrics-port = %d", brokerPort), "metrics-bind-host = 127.0.0.1"},
		AgentTables: fmt.Sprintf("[metrics]\nport = %d\nbind_host = '127.0.0.1'\n", agentPort),
	})
	ctx := apiCtx(t)
	ss := e.MustCreate(t,
		api.CreateSessionRequest{Name: "m1", Owner: user1, Type: api.TypeVirtual},
		api.CreateSessionRequest{Name: "m2", Owner: user2, Type: api.TypeVirtual})
	for _, s := range ss {
		e.MustWaitState(t, s.Id, api.StateReady, readyTimeout)
	}
	conn, err := e.Client.GetSessionConnectionData(ctx, ss[0].Id, user1)
	if err != nil {
		t.Fatal(err)
	}
	ws := e.MustConnect(t, ss[0].Id, conn.ConnectionToken, user1)
	e.MustRefuse(t, ss[0].Id, conn.ConnectionToken+"x", "a damaged token", http.StatusUnauthorized)
	if _, err := e.Client.GetSessionScreenshots(ctx, []api.GetSessionScreenshotRequest{{SessionId: ss[0].Id}}); err != nil {
		t.Fatal(err)
	}
	// A request that no server matches fails placement.
	out, err := e.Client.CreateSessions(ctx, []api.CreateSessionRequest{{Name: "none", Owner: user1, Type: api.TypeVirtual, Requirements: "server:Host.Os.Family = 'windows'"}})
	if err != nil || len(out.UnsuccessfulList) != 1 {
		t.Fatalf("unplaceable CreateSessions: %v %+v", err, out)
	}
	e.MustDelete(t, ss[1].Id)
	bad := &api.Client{BrokerURL: e.BrokerURL, ClientID: e.Client.ClientID, ClientSecret: "wrong", HTTPClient: e.HTTP}
	if _, err := bad.DescribeSessions(ctx, api.DescribeSessionsRequest{}); err == nil {
		t.Fatal("a wrong secret was accepted")
	}
	// The broker: what DescribeSessions and DescribeServers say. It caches
	// its scrape-time figures for up to 5 s: scrape until the session counts
	// are those of now.
	byState := map[string]float64{}
	var b metricstest.Families
	poll.Until(t, 15*time.Second, "the broker's session figures to match DescribeSessions", func() bool {
		desc, err := e.Client.DescribeSessions(apiCtx(t), api.DescribeSessionsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		clear(byState)
		for _, s := range desc.Sessions {
			byState[s.State]++
		}
		b = scrape(t, e.HTTP, brokerPort)
		ready, _ := b.Value("berth_broker_sessions", "state", "READY")
		deleted, _ := b.Value("berth_broker_sessions", "state", "DELETED")
		return ready == byState["READY"] && deleted == byState["DELETED"]
	})
	for _, c := range []struct {
		name   string
		labels []string
		want   func(float64) bool
		says   string
	}{
		{"berth_broker_servers", nil, eq(1), "1 server"},
		{"berth_broker_servers_ready", nil, eq(1), "1 ready server"},
		{"berth_broker_sessions", []string{"state", "READY"}, eq(byState["READY"]), "READY as DescribeSessions lists"},
		{"berth_broker_sessions", []string{"state", "DELETED"}, eq(byState["DELETED"]), "DELETED as DescribeSessions lists"},
		{"berth_broker_sessions_active", []string{"type", "VIRTUAL"}, eq(byState["READY"]), "active virtual sessions"},
		{"berth_broker_sessions_active", []string{"type", "CONSOLE"}, eq(0), "no console session"},
		{"berth_broker_queue_length", nil, eq(0), "an empty queue"},
		{"berth_broker_placements_total", nil, atLeast(2), "the two placements"},
		{"berth_broker_placement_failures_total", []string{"reason", "no_match"}, atLeast(1), "the unplaceable request"},
		{"berth_broker_api_request_duration_seconds", []string{"operation", "CreateSessions", "code", "2xx"}, atLeast(2), "CreateSessions calls"},
		{"berth_broker_api_request_duration_seconds", []string{"operation", "DescribeSessions", "code", "2xx"}, atLeast(1), "DescribeSessions calls"},
		{"berth_broker_api_request_duration_seconds", []string{"operation", "GetSessionScreenshots", "code", "2xx"}, atLeast(1), "the screenshot call"},
		{"berth_broker_agent_links", nil, eq(1), "one agent link"},
		{"berth_broker_agent_connects_total", nil, atLeast(1), "the agent's connect"},
		{"berth_broker_tokens_issued_total", []string{"kind", "access"}, atLeast(1), "access tokens"},
		{"berth_broker_tokens_issued_total", []string{"kind", "connection"}, atLeast(1), "the connection token"},
		{"berth_broker_lease_holder", nil, eq(1), "a single broker holds the work"},
	} {
		v, ok := b.Value(c.name, c.labels...)
		if !ok || !c.want(v) {
			t.Errorf("broker %s%v = %v (present %v), want %s", c.name, c.labels, v, ok, c.says)
		}
	}
	if v, ok := total(b, "berth_broker_tokens_refused_total"); !ok || v < 1 {
		t.Errorf("broker tokens refused: %v %v, want the wrong secret counted", v, ok)
	}
	if v, ok := b.Value("berth_broker_queue_wait_seconds"); !ok {
		t.Errorf("broker queue_wait_seconds missing (%v)", v)
	}

	// The agent.
	a := scrape(t, e.GatewayHTTP, agentPort)
	for _, c := range []struct {
		name   string
		labels []string
		want   func(float64) bool
		says   string
	}{
		{"berth_agent_broker_connected", nil, eq(1), "linked"},
		{"berth_agent_gateway_connections", nil, eq(1), "the open gateway connection"},
		{"berth_agent_gateway_connections_total", nil, atLeast(1), "gateway connections"},
	} {
		v, ok := a.Value(c.name, c.labels...)
		if !ok || !c.want(v) {
			t.Errorf("agent %s%v = %v (present %v), want %s", c.name, c.labels, v, ok, c.says)
		}
	}
	for _, c := range []struct {
		name string
		want func(float64) bool
		says string
	}{
		{"berth_agent_session_starts_total", atLeast(2), "two starts"},
		{"berth_agent_session_create_to_ready_seconds", atLeast(2), "two create-to-READY times"},
		{"berth_agent_gateway_connections_refused_total", atLeast(1), "the damaged token"},
		{"berth_agent_screenshot_duration_seconds", atLeast(1), "the screenshot"},
		{"berth_agent_sessions", eq(1), "one live session"},
	} {
		v, ok := total(a, c.name)
		if !ok || !c.want(v) {
			t.Errorf("agent %s = %v (present %v), want %s", c.name, v, ok, c.says)
		}
	}
	if v, ok := total(a, "berth_agent_session_start_failures_total"); !ok || v != 0 {
		t.Errorf("agent start failures %v (present %v), want 0", v, ok)
	}
	ws.CloseNow()
	if t.Failed() {
		t.Logf("broker families: %s\nagent families: %s", strings.Join(b.Names(), " "), strings.Join(a.Names(), " "))
	}
}

func eq(want float64) func(float64) bool { return func(v float64) bool { return v == want } }
func atLeast(want float64) func(float64) bool {
	return func(v float64) bool { return v >= want }
}

// total adds up every series of a family: counter and gauge values,
// histogram sample counts.
func total(fs metricstest.Families, name string) (float64, bool) {
	f := fs[name]
	if f == nil {
		return 0, false
	}
	var sum float64
	for _, m := range f.GetMetric() {
		switch {
		case m.Counter != nil:
			sum += m.Counter.GetValue()
		case m.Gauge != nil:
			sum += m.Gauge.GetValue()
		case m.Histogram != nil:
			sum += float64(m.Histogram.GetSampleCount())
		}
	}
	return sum, true
}
