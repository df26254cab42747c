package metrics

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/oauth"
)

func TestStatusClass(t *testing.T) {
	tests := []struct {
		status int
		want   string
	}{
		{200, "2xx"}, {201, "2xx"}, {400, "4xx"}, {401, "4xx"}, {413, "4xx"}, {500, "5xx"}, {503, "5xx"}, {0, "other"}, {999, "other"},
	}
	for _, tt := range tests {
		if got := statusClass(tt.status); got != tt.want {
			t.Errorf("statusClass(%d) = %q, want %q", tt.status, got, tt.want)
		}
	}
}

// mustScrape serves b.Handler once and parses the answer.
func mustScrape(t *testing.T, b *Broker) map[string]*dto.MetricFamily {
	t.Helper()
	rec := httptest.NewRecorder()
	b.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("scrape: %d %s", rec.Code, rec.Body)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(rec.Body)
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	return fams
}

// TestBroker_StatsCached checks that scrapes within StatsMaxAge share one
// read of the broker's figures.
func TestBroker_StatsCached(t *testing.T) {
	var reads atomic.Int32
	b := New(Source{Stats: func(context.Context) (broker.Stats, error) {
		reads.Add(1)
		return broker.Stats{Servers: 3, Available: 2, ByState: map[string]int{broker.StateReady: 4}}, nil
	}}, Options{StatsMaxAge: time.Hour})
	for range 3 {
		s := mustScrape(t, b)
		if v := s["berth_broker_servers"].GetMetric()[0].GetGauge().GetValue(); v != 3 {
			t.Fatalf("servers = %v, want 3", v)
		}
	}
	if n := reads.Load(); n != 1 {
		t.Errorf("Stats read %d times for 3 scrapes within StatsMaxAge, want 1", n)
	}
}

// TestBroker_StatsError checks that a store failure leaves the broker's
// figures out of the scrape and keeps the rest.
func TestBroker_StatsError(t *testing.T) {
	b := New(Source{
		Stats:      func(context.Context) (broker.Stats, error) { return broker.Stats{}, errors.New("store down") },
		AgentLinks: func() int { return 7 },
	}, Options{Version: "v-test"})
	b.Placed(2)
	s := mustScrape(t, b)
	if s["berth_broker_servers"] != nil {
		t.Error("servers reported although Stats failed")
	}
	if v := s["berth_broker_agent_links"].GetMetric()[0].GetGauge().GetValue(); v != 7 {
		t.Errorf("agent_links = %v, want 7", v)
	}
	if v := s["berth_broker_placements_total"].GetMetric()[0].GetCounter().GetValue(); v != 2 {
		t.Errorf("placements_total = %v, want 2", v)
	}
}

// TestBroker_AuthServers checks the gauges of the registered external
// authorization servers and the refusals of their tokens.
func TestBroker_AuthServers(t *testing.T) {
	fetched := time.Date(2030, 1, 2, 3, 4, 5, 500_000_000, time.UTC)
	b := New(Source{AuthServers: func() []oauth.AuthServerStatus {
		return []oauth.AuthServerStatus{
			{URL: "https://idp.test/jwks", FetchedAt: fetched, Keys: 2},
			{URL: "https://down.test/jwks"},
		}
	}}, Options{})
	b.TokenRefused(oauth.TokenExternal, oauth.RefusedAudience)
	s := mustScrape(t, b)
	got := map[string][2]float64{}
	for _, m := range s["berth_broker_auth_server_last_fetch_timestamp_seconds"].GetMetric() {
		v := got[m.GetLabel()[0].GetValue()]
		v[0] = m.GetGauge().GetValue()
		got[m.GetLabel()[0].GetValue()] = v
	}
	for _, m := range s["berth_broker_auth_server_keys"].GetMetric() {
		v := got[m.GetLabel()[0].GetValue()]
		v[1] = m.GetGauge().GetValue()
		got[m.GetLabel()[0].GetValue()] = v
	}
	want := map[string][2]float64{"https://idp.test/jwks": {1893553445.5, 2}, "https://down.test/jwks": {0, 0}}
	if len(got) != 2 || got["https://idp.test/jwks"] != want["https://idp.test/jwks"] || got["https://down.test/jwks"] != want["https://down.test/jwks"] {
		t.Errorf("auth server gauges = %v, want %v", got, want)
	}
	refused := map[string]float64{}
	for _, m := range s["berth_broker_tokens_refused_total"].GetMetric() {
		l := m.GetLabel()
		refused[l[0].GetValue()+" "+l[1].GetValue()] = m.GetCounter().GetValue()
	}
	if refused["external audience"] != 1 {
		t.Errorf("tokens_refused_total = %v, want external audience 1", refused)
	}
}
