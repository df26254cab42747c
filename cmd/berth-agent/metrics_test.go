package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/agentmetrics/metricstest"
	"github.com/berth-dev/berth/internal/hostinfo"
	"github.com/berth-dev/berth/internal/pki"
	"github.com/berth-dev/berth/internal/poll"
)

// scrape GETs https://addr/metrics, verifying the listener against roots,
// and parses the exposition.
func scrape(t *testing.T, addr string, roots *x509.CertPool) metricstest.Families {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"}}}
	resp, err := c.Get("https://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("scrape: %s", resp.Status)
	}
	return metricstest.Parse(t, resp.Body)
}

// poolOf returns a pool of the certificates in a PEM file.
func poolOf(t *testing.T, file string) *x509.CertPool {
	t.Helper()
	pool, err := pki.LoadPool(file)
	if err != nil {
		t.Fatal(err)
	}
	return pool
}

// TestMain_Metrics runs the agent (sim driver) against a real berth-broker,
// creates a session through the API, and scrapes /metrics over HTTPS with
// the certificate of the agent's own CA: the link, the session start, its
// time to READY and the sessions by state are there.
func TestMain_Metrics(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs berth-broker")
	}
	b := mustStartBroker(t)
	dir := t.TempDir()
	m := NewMain()
	m.Config = testConfig(dir)
	m.Config.Agent.BrokerPort = b.agentPort
	m.Config.Agent.CAFile = filepath.Join(b.dir, "ca.pem")
	m.Config.Agent.SoftwareStatementPath = filepath.Join(b.dir, "agent-software-statement")
	m.Config.Agent.BrokerUpdateInterval, m.Config.Agent.updateIntervalSet = 1, true
	m.Config.Metrics.Port = freePort(t)
	m.Logger = testLogger(t)
	m.Prober = &hostinfo.Prober{Skip: []string{"aws", "gpu"}}
	if err := m.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	roots := poolOf(t, filepath.Join(m.Config.Agent.StateDir, "metrics-ca", "ca.pem"))

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	poll.Until(t, 30*time.Second, "the broker link", func() bool {
		v, _ := scrape(t, m.MetricsAddr(), roots).Value("berth_agent_broker_connected")
		return v == 1
	})
	var id string
	poll.Until(t, 30*time.Second, "a session placed on the agent", func() bool {
		resp, err := b.client.CreateSessions(ctx, []api.CreateSessionRequest{{Name: "metrics", Owner: "alice", Type: "VIRTUAL"}})
		if err != nil || len(resp.SuccessfulList) != 1 {
			return false
		}
		id = resp.SuccessfulList[0].Id
		return true
	})
	poll.Until(t, 30*time.Second, "the session READY", func() bool {
		resp, err := b.client.DescribeSessions(ctx, api.DescribeSessionsRequest{SessionIds: []string{id}})
		return err == nil && len(resp.Sessions) == 1 && resp.Sessions[0].State == "READY"
	})
	var fs metricstest.Families
	poll.Until(t, 10*time.Second, "the READY time", func() bool {
		fs = scrape(t, m.MetricsAddr(), roots)
		v, _ := fs.Value("berth_agent_session_create_to_ready_seconds", "driver", "sim")
		return v == 1
	})
	for _, tt := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"berth_agent_info", []string{"driver", "sim", "version", version}, 1},
		{"berth_agent_broker_connected", nil, 1},
		{"berth_agent_session_starts_total", []string{"driver", "sim"}, 1},
		{"berth_agent_session_start_failures_total", []string{"driver", "sim", "reason", "driver_error"}, 0},
		{"berth_agent_commands_total", []string{"kind", "create", "result", "ok"}, 1},
		{"berth_agent_sessions", []string{"driver", "sim", "state", "READY"}, 1},
		{"berth_agent_gateway_connections", nil, 0},
	} {
		if got := fs.Must(t, tt.name, tt.labels...); got != tt.want {
			t.Errorf("%s%v = %v, want %v", tt.name, tt.labels, got, tt.want)
		}
	}
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes", "berth_agent_gateway_certificate_expiry_timestamp_seconds"} {
		if _, ok := fs[name]; !ok {
			t.Errorf("no %s", name)
		}
	}

	// Only HTTPS: a plain HTTP request gets no metrics.
	resp, err := http.Get("http://" + m.MetricsAddr() + "/metrics")
	if err == nil {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.Contains(string(body), "berth_agent_") {
			t.Error("metrics served over plain HTTP")
		}
	}
	// Nothing but /metrics is served.
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"}}}
	if resp, err := c.Get("https://" + m.MetricsAddr() + "/debug/pprof/"); err != nil || resp.StatusCode != http.StatusNotFound {
		t.Errorf("other path: %v %v", resp, err)
	}
}

// TestMain_Metrics_VNCGateway: with the vnc driver the metrics listener
// serves the web gateway's certificate, issued by the broker's web gateway
// CA, so a scraper trusts gateway-ca.pem (and not ca.pem, the CA of the
// broker's own listeners); the gateway's own handshake presents the same
// certificate, whose expiry is a metric.
func TestMain_Metrics_VNCGateway(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs berth-broker")
	}
	b := mustStartBroker(t)
	dir := t.TempDir()
	m := NewMain()
	m.Config = testConfig(dir)
	m.Config.Agent.Driver = "vnc"
	m.Config.Agent.BrokerPort = b.agentPort
	m.Config.Agent.CAFile = filepath.Join(b.dir, "ca.pem")
	m.Config.Agent.SoftwareStatementPath = filepath.Join(b.dir, "agent-software-statement")
	m.Config.VNC.WebPort = freePort(t)
	m.Config.VNC.WebBindHost = "127.0.0.1"
	m.Config.Metrics.Port = freePort(t)
	m.Logger = testLogger(t)
	m.Prober = &hostinfo.Prober{Skip: []string{"aws", "gpu"}}
	if err := m.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	roots := poolOf(t, filepath.Join(b.dir, "gateway-ca.pem"))
	fs := scrape(t, m.MetricsAddr(), roots)
	if c, err := tls.Dial("tcp", "127.0.0.1:"+itoa(m.webGatewayPort), &tls.Config{RootCAs: poolOf(t, filepath.Join(b.dir, "ca.pem")), ServerName: "127.0.0.1"}); err == nil {
		c.Close()
		t.Error("the web gateway's certificate verifies against the broker's own ca.pem")
	}
	gw, err := tls.Dial("tcp", "127.0.0.1:"+itoa(m.webGatewayPort), &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatalf("gateway handshake: %v", err)
	}
	defer gw.Close()
	leaf := gw.ConnectionState().PeerCertificates[0]
	mc, err := tls.Dial("tcp", m.MetricsAddr(), &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	defer mc.Close()
	if got := mc.ConnectionState().PeerCertificates[0].SerialNumber; got.Cmp(leaf.SerialNumber) != 0 {
		t.Errorf("metrics serial %v, gateway serial %v", got, leaf.SerialNumber)
	}
	if v := fs.Must(t, "berth_agent_gateway_certificate_expiry_timestamp_seconds"); v != float64(leaf.NotAfter.Unix()) {
		t.Errorf("expiry %v, want %v", v, leaf.NotAfter.Unix())
	}
	if v := fs.Must(t, "berth_agent_info", "driver", "vnc"); v != 1 {
		t.Errorf("info %v", v)
	}
}

// TestMain_CertificateFiles: certificate files named in the configuration
// are read again when they change: new handshakes (web gateway and metrics)
// get the new certificate, a connection made before keeps working, and a
// half-written pair is ignored until it is whole.
func TestMain_CertificateFiles(t *testing.T) {
	defer func(d time.Duration) { certFileCheck = d }(certFileCheck)
	certFileCheck = 20 * time.Millisecond
	dir := t.TempDir()
	caDir := filepath.Join(dir, "ca")
	ca, err := pki.LoadOrCreateCA(caDir)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, "tls.pem"), filepath.Join(dir, "tls.key")
	issue := func() *big.Int {
		t.Helper()
		certPEM, keyPEM, err := ca.Issue([]string{"127.0.0.1", "localhost"}, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		mustWrite(t, keyFile, string(keyPEM))
		mustWrite(t, certFile, string(certPEM))
		c, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		return c.Leaf.SerialNumber
	}
	first := issue()

	m := NewMain()
	m.Config = testConfig(dir)
	m.Config.Agent.BrokerPort = freePort(t) // nothing listens: the agent retries
	m.Config.Agent.Driver = "vnc"
	m.Config.VNC.WebPort = freePort(t)
	m.Config.VNC.WebBindHost = "127.0.0.1"
	m.Config.VNC.CertFile, m.Config.VNC.KeyFile = certFile, keyFile
	m.Config.Metrics.Port = freePort(t)
	m.Config.Metrics.CertFile, m.Config.Metrics.KeyFile = certFile, keyFile
	logs := &syncBuffer{}
	m.Logger = slog.New(slog.NewTextHandler(io.MultiWriter(testWriter{t}, logs), &slog.HandlerOptions{Level: slog.LevelInfo}))
	m.Prober = &hostinfo.Prober{Skip: []string{"aws", "gpu"}}
	if err := m.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	roots := poolOf(t, filepath.Join(caDir, "ca.pem"))
	conf := &tls.Config{RootCAs: roots, ServerName: "127.0.0.1", NextProtos: []string{"http/1.1"}}
	addrs := map[string]string{"gateway": "127.0.0.1:" + itoa(m.webGatewayPort), "metrics": m.MetricsAddr()}
	serial := func(addr string) *big.Int {
		t.Helper()
		c, err := tls.Dial("tcp", addr, conf)
		if err != nil {
			t.Fatalf("handshake with %s: %v", addr, err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber
	}
	for name, addr := range addrs {
		if got := serial(addr); got.Cmp(first) != 0 {
			t.Errorf("%s serves serial %v, want %v", name, got, first)
		}
	}
	// A keep-alive connection to the gateway, from before the change.
	old, err := tls.Dial("tcp", addrs["gateway"], conf)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	oldReader := bufio.NewReader(old)
	get := func() {
		t.Helper()
		req, _ := http.NewRequest("GET", "https://127.0.0.1/", nil)
		old.SetDeadline(time.Now().Add(5 * time.Second))
		if err := req.Write(old); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(oldReader, req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	get()

	// Half a pair (a new key, the old certificate) is not taken.
	certPEM, keyPEM, err := ca.Issue([]string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	mustWrite(t, keyFile, string(keyPEM))
	// Each listener's watcher logs once that it keeps its certificate.
	poll.Until(t, 5*time.Second, "both listeners to refuse the half-written pair", func() bool {
		return strings.Count(logs.String(), "certificate files changed but do not load") >= 2
	})
	for name, addr := range addrs {
		if got := serial(addr); got.Cmp(first) != 0 {
			t.Errorf("%s took a half-written pair", name)
		}
	}
	mustWrite(t, certFile, string(certPEM))
	c, _ := tls.X509KeyPair(certPEM, keyPEM)
	second := c.Leaf.SerialNumber
	for name, addr := range addrs {
		poll.Until(t, 5*time.Second, name+" serving the new certificate", func() bool { return serial(addr).Cmp(second) == 0 })
	}
	get() // the connection from before still works
	if got := old.ConnectionState().PeerCertificates[0].SerialNumber; got.Cmp(first) != 0 {
		t.Errorf("the old connection shows %v", got)
	}
	// And once more.
	third := issue()
	for name, addr := range addrs {
		poll.Until(t, 5*time.Second, name+" serving the third certificate", func() bool { return serial(addr).Cmp(third) == 0 })
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// TestMain_GatewayCAMigration upgrades a deployment of a release whose
// broker CA also signed the web gateways' certificates: the broker's working
// path has only ca.pem and ca.key, and the agent's state directory a gateway
// certificate from that CA. With no manual step, the broker makes its web
// gateway CA at start and the agent, told its key ID in the link's Welcome,
// replaces its certificate with one of the gateway CA.
func TestMain_GatewayCAMigration(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs berth-broker")
	}
	dir := t.TempDir()
	stateDir := filepath.Join(dir, "state")
	host, _ := os.Hostname()
	var oldCA *pki.CA
	b := mustStartBrokerWith(t, func(brokerDir string) {
		var err error
		if oldCA, err = pki.LoadOrCreateCA(brokerDir); err != nil {
			t.Fatal(err)
		}
		certPEM, keyPEM, err := oldCA.Issue([]string{host, "127.0.0.1"}, 90*24*time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		mustWrite(t, filepath.Join(stateDir, "gateway.pem"), string(certPEM)+string(oldCA.CertPEM))
		mustWrite(t, filepath.Join(stateDir, "gateway.key"), string(keyPEM))
	})
	if _, err := os.Stat(filepath.Join(b.dir, "gateway-ca.key")); err != nil {
		t.Fatalf("the upgraded broker made no web gateway CA: %v", err)
	}
	m := NewMain()
	m.Config = testConfig(dir)
	m.Config.Agent.Driver = "vnc"
	m.Config.Agent.StateDir = stateDir
	m.Config.Agent.BrokerPort = b.agentPort
	m.Config.Agent.CAFile = filepath.Join(b.dir, "ca.pem")
	m.Config.Agent.SoftwareStatementPath = filepath.Join(b.dir, "agent-software-statement")
	m.Config.VNC.WebPort = freePort(t)
	m.Config.VNC.WebBindHost = "127.0.0.1"
	m.Logger = testLogger(t)
	m.Prober = &hostinfo.Prober{Skip: []string{"aws", "gpu"}}
	if err := m.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	gatewayRoots := poolOf(t, filepath.Join(b.dir, "gateway-ca.pem"))
	handshake := func(roots *x509.CertPool) error {
		c, err := tls.Dial("tcp", "127.0.0.1:"+itoa(m.webGatewayPort), &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"})
		if err == nil {
			c.Close()
		}
		return err
	}
	// Before the link the agent serves what it has.
	deadline := time.Now().Add(30 * time.Second)
	for handshake(gatewayRoots) != nil {
		if time.Now().After(deadline) {
			t.Fatal("the agent's web gateway did not move to a certificate of the web gateway CA within 30 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	old := x509.NewCertPool()
	old.AddCert(oldCA.Cert)
	if err := handshake(old); err == nil {
		t.Error("the web gateway still serves a certificate of the broker's own CA")
	}
	stored, err := os.ReadFile(filepath.Join(stateDir, "gateway.pem"))
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(stored)
	leaf, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: gatewayRoots, DNSName: "127.0.0.1"}); err != nil {
		t.Errorf("the stored gateway certificate: %v", err)
	}
}
