package agentmetrics_test

import (
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/berth-dev/berth/internal/agent"
	"github.com/berth-dev/berth/internal/agentmetrics"
	"github.com/berth-dev/berth/internal/agentmetrics/metricstest"
	"github.com/berth-dev/berth/internal/gateway"
)

func TestNew_SeriesFromTheStart(t *testing.T) {
	m := agentmetrics.New(agentmetrics.Options{Version: "1.2.3", Driver: "vnc"})
	fs := metricstest.Gather(t, m.Registry())
	if v := fs.Must(t, "berth_agent_info", "version", "1.2.3", "driver", "vnc"); v != 1 {
		t.Errorf("info = %v", v)
	}
	for _, tt := range []struct {
		name   string
		labels []string
	}{
		{"berth_agent_session_starts_total", []string{"driver", "vnc"}},
		{"berth_agent_session_create_to_ready_seconds", []string{"driver", "vnc"}},
		{"berth_agent_sessions", []string{"driver", "vnc", "state", "READY"}},
		{"berth_agent_sessions", []string{"driver", "vnc", "state", "CREATING"}},
		{"berth_agent_commands_total", []string{"kind", "screenshot", "result", "ok"}},
		{"berth_agent_broker_connected", nil},
		{"berth_agent_broker_reconnects_total", nil},
		{"berth_agent_gateway_connections", nil},
		{"berth_agent_gateway_connections_total", nil},
		{"berth_agent_gateway_certificate_renewals_total", []string{"result", "failed"}},
	} {
		if v := fs.Must(t, tt.name, tt.labels...); v != 0 {
			t.Errorf("%s%v = %v, want 0", tt.name, tt.labels, v)
		}
	}
	for _, r := range agent.Reasons {
		fs.Must(t, "berth_agent_session_start_failures_total", "driver", "vnc", "reason", r)
	}
	for _, r := range gateway.RefusedReasons {
		fs.Must(t, "berth_agent_gateway_connections_refused_total", "reason", r)
	}
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes"} {
		if _, ok := fs[name]; !ok {
			t.Errorf("no %s (Go and process collectors)", name)
		}
	}
	if problems, err := testutil.GatherAndLint(m.Registry()); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %+v", err, problems)
	}
}

func TestMetrics_Record(t *testing.T) {
	m := agentmetrics.New(agentmetrics.Options{Version: "dev", Driver: "sim"})
	m.CommandDone("create", 2*time.Second, "")
	m.CommandDone("create", time.Second, agent.ReasonInvalidRequest)
	m.CommandDone("create", time.Second, agent.ReasonTimeout)
	m.CommandDone("delete", time.Millisecond, "")
	m.CommandDone("screenshot", 30*time.Millisecond, "")
	m.CommandDone("screenshot", time.Millisecond, agent.ReasonUnsupported)
	m.SessionReady(1500 * time.Millisecond)
	m.SessionStates(map[string]int{"READY": 3, "CREATING": 1, "DELETED": 0})
	m.BrokerLink(true)
	m.BrokerLink(false)
	m.BrokerLink(true)
	m.ConnectionOpened()
	m.ConnectionOpened()
	m.ConnectionClosed()
	m.ConnectionRefused(gateway.RefusedUnauthorized)
	m.CertificateRenewal(nil)
	m.CertificateRenewal(errors.New("broker down"))
	m.CertificateRenewal(nil)
	expiry := time.Unix(1893456000, 0)
	m.CertificateExpiry(func() time.Time { return expiry })
	m.CertificateExpiry(func() time.Time { return time.Time{} }) // ignored

	fs := metricstest.Gather(t, m.Registry())
	for _, tt := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"berth_agent_session_starts_total", []string{"driver", "sim"}, 3},
		{"berth_agent_session_start_failures_total", []string{"driver", "sim", "reason", "invalid_request"}, 1},
		{"berth_agent_session_start_failures_total", []string{"driver", "sim", "reason", "timeout"}, 1},
		{"berth_agent_session_start_failures_total", []string{"driver", "sim", "reason", "driver_error"}, 0},
		{"berth_agent_commands_total", []string{"kind", "create", "result", "ok"}, 1},
		{"berth_agent_commands_total", []string{"kind", "create", "result", "timeout"}, 1},
		{"berth_agent_commands_total", []string{"kind", "delete", "result", "ok"}, 1},
		{"berth_agent_screenshot_duration_seconds", []string{"driver", "sim", "result", "ok"}, 1},
		{"berth_agent_screenshot_duration_seconds", []string{"driver", "sim", "result", "failed"}, 1},
		{"berth_agent_session_create_to_ready_seconds", []string{"driver", "sim"}, 1},
		{"berth_agent_sessions", []string{"state", "READY"}, 3},
		{"berth_agent_sessions", []string{"state", "CREATING"}, 1},
		{"berth_agent_broker_connected", nil, 1},
		{"berth_agent_broker_reconnects_total", nil, 1},
		{"berth_agent_gateway_connections", nil, 1},
		{"berth_agent_gateway_connections_total", nil, 2},
		{"berth_agent_gateway_connections_refused_total", []string{"reason", "unauthorized"}, 1},
		{"berth_agent_gateway_certificate_renewals_total", []string{"result", "ok"}, 2},
		{"berth_agent_gateway_certificate_renewals_total", []string{"result", "failed"}, 1},
		{"berth_agent_gateway_certificate_expiry_timestamp_seconds", nil, 1893456000},
	} {
		if got := fs.Must(t, tt.name, tt.labels...); got != tt.want {
			t.Errorf("%s%v = %v, want %v", tt.name, tt.labels, got, tt.want)
		}
	}

	// The handler serves the same in the text format.
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), `berth_agent_sessions{driver="sim",state="READY"} 3`) {
		t.Errorf("handler: %d\n%s", rec.Code, rec.Body.String())
	}
	parsed := metricstest.Parse(t, strings.NewReader(rec.Body.String()))
	if v := parsed.Must(t, "berth_agent_gateway_connections_total"); v != 2 {
		t.Errorf("scraped total %v", v)
	}
}
