package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/agentproto"
	"github.com/berth-dev/berth/internal/driver/dcv"
	"github.com/berth-dev/berth/internal/hostinfo"
)

// TestDCVDriverWired: agent.driver = "dcv" builds the dcv driver on
// agent.dcv_root; a dcv that cannot run makes the host unhealthy, not the
// agent fail.
func TestDCVDriverWired(t *testing.T) {
	dir := t.TempDir()
	c := testConfig(dir)
	c.Agent.Driver = "dcv"
	c.Agent.StateDir = filepath.Join(dir, "state")
	c.Agent.DCVRoot = filepath.Join(dir, "no-dcv")
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if slices.Contains(plannedDrivers, "dcv") || !slices.Contains(driverNames(), "dcv") {
		t.Errorf("driver names %q, planned %q", driverNames(), plannedDrivers)
	}
	drv, err := drivers["dcv"](&c, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer drv.(io.Closer).Close()
	if _, ok := drv.(*dcv.Driver); !ok || drv.Name() != "dcv" {
		t.Fatalf("driver %T %q", drv, drv.Name())
	}
	ok, reason := drv.(*dcv.Driver).Health(context.Background())
	if ok || !strings.Contains(reason, "could not start") {
		t.Errorf("health %v %q", ok, reason)
	}
}

// TestDCVEndpoints: the report carries dcv.conf's web port and path, and QUIC
// when its frontend is enabled.
func TestDCVEndpoints(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "dcv.conf")
	mustWrite(t, conf, "[connectivity]\nweb-port=8444\nweb-url-path=\"/dcv\"\nenable-quic-frontend=true\nquic-port=9443\n")
	drv, err := dcv.New(dcv.Config{DCVPath: filepath.Join(dir, "no-dcv"), StateDir: filepath.Join(dir, "state"), ConfPath: conf,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer drv.Close()
	r := agentproto.HostReport{IP: "10.0.0.5"}
	dcvEndpoints(&r, drv)
	want := []agentproto.Endpoint{
		{IP: "10.0.0.5", Port: 8444, WebURLPath: "/dcv", Protocol: "HTTP"},
		{IP: "10.0.0.5", Port: 9443, WebURLPath: "/dcv", Protocol: "QUIC"},
	}
	if r.Port != 8444 || r.WebURLPath != "/dcv" || !slices.Equal(r.Endpoints, want) {
		t.Errorf("report %d %q %+v", r.Port, r.WebURLPath, r.Endpoints)
	}
	if err := os.Remove(conf); err != nil {
		t.Fatal(err)
	}
	r = agentproto.HostReport{IP: "10.0.0.5"}
	dcvEndpoints(&r, drv)
	if r.Port != 8443 || r.WebURLPath != "/" || len(r.Endpoints) != 1 {
		t.Errorf("defaults %d %q %+v", r.Port, r.WebURLPath, r.Endpoints)
	}
}

// TestMain_PreferredNetworkInterface: agent.preferred_network_interface gives
// the host's IP in the report and in the dcv endpoints; a missing interface
// falls back to the default route's address with a warning.
func TestMain_PreferredNetworkInterface(t *testing.T) {
	for _, tt := range []struct {
		iface string
		want  func(ip string) bool
		warn  bool
	}{
		{"lo", func(ip string) bool { return ip == "127.0.0.1" }, false},
		{"berth-none0", func(ip string) bool { return ip != "127.0.0.1" }, true},
	} {
		t.Run(tt.iface, func(t *testing.T) {
			dir := t.TempDir()
			m := NewMain()
			m.Config = testConfig(dir)
			m.Config.Agent.BrokerPort = freePort(t) // nothing listens: the agent retries
			m.Config.Agent.Driver = "dcv"
			m.Config.Agent.DCVRoot = filepath.Join(dir, "no-dcv")
			m.Config.Agent.PreferredNetworkInterface = tt.iface
			var logs syncBuffer
			m.Logger = slog.New(slog.NewTextHandler(&logs, nil))
			m.Prober = &hostinfo.Prober{Skip: []string{"aws", "gpu", "users"}}
			if err := m.Run(context.Background()); err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			r, err := m.report(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if !tt.want(r.IP) || len(r.Endpoints) == 0 || r.Endpoints[0].IP != r.IP {
				t.Errorf("IP %q endpoints %+v", r.IP, r.Endpoints)
			}
			if warned := strings.Contains(logs.String(), "preferred network interface unusable"); warned != tt.warn {
				t.Errorf("warning logged: %v, want %v\n%s", warned, tt.warn, logs.String())
			}
		})
	}
}
