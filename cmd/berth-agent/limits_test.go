package main

import (
	"context"
	"errors"
	"io"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/hostinfo"
	"github.com/berth-dev/berth/internal/netlimit"
)

// TestMain_ListenerLimits runs the agent (vnc driver) with
// vnc.gateway_max_connections_per_address = 2 and a metrics listener, fills
// each listener's per-address limit from 127.0.0.2 and expects the next
// connection from it closed on accept.
func TestMain_ListenerLimits(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs berth-broker")
	}
	b := mustStartBroker(t)
	m := NewMain()
	m.Config = testConfig(t.TempDir())
	m.Config.Agent.Driver = "vnc"
	m.Config.Agent.BrokerPort = b.agentPort
	m.Config.Agent.CAFile = filepath.Join(b.dir, "ca.pem")
	m.Config.Agent.SoftwareStatementPath = filepath.Join(b.dir, "agent-software-statement")
	m.Config.VNC.WebPort = freePort(t)
	m.Config.VNC.WebBindHost = "127.0.0.1"
	m.Config.VNC.GatewayMaxConnectionsPerAddress = 2
	m.Config.Metrics.Port = freePort(t)
	m.Logger = testLogger(t)
	m.Prober = &hostinfo.Prober{Skip: []string{"aws", "gpu"}}
	if err := m.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	for _, tc := range []struct {
		name, addr string
		limit      int
	}{
		{"gateway", "127.0.0.1:" + itoa(m.webGatewayPort), 2},
		{"metrics", m.MetricsAddr(), metricsLimits.MaxPerAddr},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dial := func() net.Conn {
				d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}, Timeout: 10 * time.Second}
				c, err := d.Dial("tcp", tc.addr)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { c.Close() })
				return c
			}
			held := make([]net.Conn, tc.limit)
			for i := range held {
				held[i] = dial()
			}
			over := dial()
			over.SetReadDeadline(time.Now().Add(5 * time.Second)) // well within the 10 s handshake timeout
			_, err := io.Copy(io.Discard, over)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("connection %d from one address (limit %d) was left open", tc.limit+1, tc.limit)
			}
		})
	}
}

func TestVNCConfig_GatewayLimits(t *testing.T) {
	for _, tc := range []struct {
		max, perAddr int
		want         netlimit.Limits
	}{
		{1024, 256, netlimit.Limits{Max: 1024, MaxPerAddr: 256}},
		{0, 0, netlimit.Limits{Max: -1, MaxPerAddr: -1}}, // 0 in agent.conf: no limit (gateway.Config: negative)
		{10, 0, netlimit.Limits{Max: 10, MaxPerAddr: -1}},
	} {
		v := VNCConfig{GatewayMaxConnections: tc.max, GatewayMaxConnectionsPerAddress: tc.perAddr}
		if got := v.gatewayLimits(); got != tc.want {
			t.Errorf("gatewayLimits(%d, %d) = %+v, want %+v", tc.max, tc.perAddr, got, tc.want)
		}
	}
}
