package gateway_test

import (
	"context"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/berth-dev/berth/internal/agentmetrics"
	"github.com/berth-dev/berth/internal/agentmetrics/metricstest"
	"github.com/berth-dev/berth/internal/gateway"
	"github.com/berth-dev/berth/internal/poll"
)

// TestServer_Metrics drives connections through the gateway and checks the
// counters they moved in the agent's Prometheus metrics.
func TestServer_Metrics(t *testing.T) {
	m := agentmetrics.New(agentmetrics.Options{Driver: "vnc"})
	e := newEnvConfig(t, "", 1, func(c *gateway.Config) { c.Metrics = m })
	value := func(name string, labels ...string) float64 {
		t.Helper()
		return metricstest.Gather(t, m.Registry()).Must(t, name, labels...)
	}
	ownerTok := e.broker.token(t, sessID, owner, owner)

	c1, status, body := e.dial(ownerTok, sessID)
	if c1 == nil {
		t.Fatalf("owner: %d %s", status, body)
	}
	handshake(t, c1)
	if v := value("berth_agent_gateway_connections"); v != 1 {
		t.Errorf("active = %v", v)
	}

	// Refusals, one per reason the client can cause.
	e.sessions.set(gatewaySession("gone", "/nonexistent/vnc.sock"))
	for _, tt := range []struct {
		token, session string
		status         int
		reason         string
	}{
		{"", sessID, http.StatusUnauthorized, gateway.RefusedUnauthorized},
		{"not-a-jwt", sessID, http.StatusUnauthorized, gateway.RefusedUnauthorized},
		{ownerTok, "", http.StatusBadRequest, gateway.RefusedBadRequest},
		{e.broker.token(t, "other", owner, owner), sessID, http.StatusForbidden, gateway.RefusedForbidden},
		{e.broker.token(t, sessID, owner, "mallory"), sessID, http.StatusForbidden, gateway.RefusedForbidden},
		{e.broker.token(t, "nope", owner, owner), "nope", http.StatusNotFound, gateway.RefusedNotFound},
		{ownerTok, sessID, http.StatusServiceUnavailable, gateway.RefusedFull}, // MaxClients 1, taken
	} {
		if c, st, _ := e.dial(tt.token, tt.session); c != nil || st != tt.status {
			t.Errorf("%s: status %d, want %d", tt.reason, st, tt.status)
		}
	}
	// An upgrade whose VNC server does not answer is closed at once.
	c2, _, _ := e.dial(e.broker.token(t, "gone", owner, owner), "gone")
	if c2 == nil {
		t.Fatal("refused before the upgrade")
	}
	rctx, rcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer rcancel()
	if _, _, err := c2.Read(rctx); websocket.CloseStatus(err) != websocket.StatusTryAgainLater {
		t.Errorf("unreachable session: %v", err)
	}

	for reason, want := range map[string]float64{
		gateway.RefusedUnauthorized: 2,
		gateway.RefusedBadRequest:   1,
		gateway.RefusedForbidden:    2,
		gateway.RefusedNotFound:     1,
		gateway.RefusedFull:         1,
		gateway.RefusedUnreachable:  1,
		gateway.RefusedUnavailable:  0,
	} {
		if v := value("berth_agent_gateway_connections_refused_total", "reason", reason); v != want {
			t.Errorf("refused{%s} = %v, want %v", reason, v, want)
		}
	}
	if v := value("berth_agent_gateway_connections_total"); v != 1 {
		t.Errorf("total = %v, want 1 (refusals are not connections)", v)
	}

	// The client leaves: active drops to 0, total stays.
	c1.Close(websocket.StatusNormalClosure, "")
	poll.Until(t, 5*time.Second, "active 0", func() bool { return value("berth_agent_gateway_connections") == 0 })
	if v := value("berth_agent_gateway_connections_total"); v != 1 {
		t.Errorf("total = %v after the disconnection", v)
	}
}

// gatewaySession is a session of the test's owner on socket.
func gatewaySession(id, socket string) gateway.Session {
	return gateway.Session{ID: id, Owner: owner, Socket: socket, UID: os.Getuid(), PID: os.Getpid()}
}
