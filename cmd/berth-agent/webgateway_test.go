package main

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/agent"
	"github.com/berth-dev/berth/internal/driver/sim"
	"github.com/berth-dev/berth/internal/gateway"
	"github.com/berth-dev/berth/internal/hostinfo"
	"github.com/berth-dev/berth/internal/pki"
)

// gatewaySim is the sim driver offering the web gateway its sessions (none
// can be connected to): a driver other than vnc's that has a web gateway.
type gatewaySim struct {
	*sim.Driver
	watchers atomic.Int32
}

func (d *gatewaySim) Session(string) (gateway.Session, bool)   { return gateway.Session{}, false }
func (d *gatewaySim) ConnectionChanged(string, int, time.Time) {}
func (d *gatewaySim) Watch(func(string)) func() {
	d.watchers.Add(1)
	return func() { d.watchers.Add(-1) }
}

// TestMain_WebGatewayForAnyDriver: the agent finds the web gateway's
// sessions through an interface (webGatewayDriver), not by the vnc driver's
// type: a driver offering gateway.Sessions gets a web gateway on
// vnc.web_port, registered with the driver and advertised in the host
// report; a driver without them gets none.
func TestMain_WebGatewayForAnyDriver(t *testing.T) {
	gw := &gatewaySim{Driver: sim.New()}
	drivers["sim-gateway"] = func(*Config, *slog.Logger) (agent.Driver, error) { return gw, nil }
	t.Cleanup(func() { delete(drivers, "sim-gateway") })

	dir := t.TempDir()
	ca, err := pki.LoadOrCreateCA(filepath.Join(dir, "ca"))
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := ca.Issue([]string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, "tls.pem"), filepath.Join(dir, "tls.key")
	mustWrite(t, certFile, string(certPEM))
	mustWrite(t, keyFile, string(keyPEM))

	start := func(t *testing.T, driver string) *Main {
		t.Helper()
		m := NewMain()
		m.Config = testConfig(t.TempDir())
		m.Config.Agent.Driver = driver
		m.Config.Agent.BrokerPort = freePort(t) // nothing listens: the agent retries
		m.Config.VNC.WebPort = freePort(t)
		m.Config.VNC.WebBindHost = "127.0.0.1"
		m.Config.VNC.CertFile, m.Config.VNC.KeyFile = certFile, keyFile
		m.Logger = testLogger(t)
		m.Prober = &hostinfo.Prober{Skip: []string{"aws", "gpu", "users"}}
		if err := m.Run(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		return m
	}

	t.Run("with sessions", func(t *testing.T) {
		m := start(t, "sim-gateway")
		if m.webGatewayPort != m.Config.VNC.WebPort {
			t.Fatalf("web gateway port %d, want vnc.web_port %d", m.webGatewayPort, m.Config.VNC.WebPort)
		}
		if n := gw.watchers.Load(); n != 1 {
			t.Errorf("the web gateway watches the driver %d times, want 1", n)
		}
		roots := poolOf(t, filepath.Join(dir, "ca", "ca.pem"))
		hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
		resp, err := hc.Get("https://127.0.0.1:" + itoa(m.webGatewayPort) + "/session-info?sessionId=s1")
		if err != nil {
			t.Fatalf("web gateway: %v", err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("session-info without a token: %d, want the gateway's 401", resp.StatusCode)
		}
		r, err := m.report(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if r.Port != m.webGatewayPort || len(r.Endpoints) != 1 || r.Endpoints[0].Port != m.webGatewayPort {
			t.Errorf("report advertises port %d, endpoints %+v; want the web gateway's %d", r.Port, r.Endpoints, m.webGatewayPort)
		}
		m.Close()
		if n := gw.watchers.Load(); n != 0 {
			t.Errorf("after Close the web gateway still watches the driver (%d)", n)
		}
	})

	t.Run("without", func(t *testing.T) {
		m := start(t, "sim")
		if m.webGatewayPort != 0 || m.webGateway != nil {
			t.Fatalf("the sim driver got a web gateway on port %d", m.webGatewayPort)
		}
	})
}
