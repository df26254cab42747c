package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/pki"
	"github.com/berth-dev/berth/internal/poll"
)

// peerCertificate opens a new TLS connection to addr, trusting the broker's
// CA, and returns the certificate the server presented.
func (b *testBroker) peerCertificate(tb testing.TB, addr string) *x509.Certificate {
	tb.Helper()
	pool, err := pki.LoadPool(filepath.Join(b.dir, "ca.pem"))
	if err != nil {
		tb.Fatal(err)
	}
	c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})
	if err != nil {
		tb.Fatalf("TLS handshake with %s: %v", addr, err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0]
}

// TestBroker_CertificateRenewal gives the broker's own certificate a
// lifetime of 3 seconds and checks that the listeners serve new ones as it
// is renewed, while an agent's link made with the first stays up and the API
// keeps answering.
func TestBroker_CertificateRenewal(t *testing.T) {
	b := MustRunMainWith(t, t.TempDir(), func(m *Main) {
		m.certValidity = 3 * time.Second
		m.certCheck = 100 * time.Millisecond
		m.Config.MetricsPort = 0
		m.statsMaxAge = time.Millisecond
	})
	c := b.MustClient(t)
	b.MustStartSimAgent(t, t.TempDir(), nil, hostReport("host-a", 0, nil))
	poll.Until(t, 10*time.Second, "an available server", func() bool {
		return servers(t, c)["host-a"].Availability == api.AvailabilityAvailable
	})
	first := b.peerCertificate(t, b.AgentAddr())
	if d := time.Until(first.NotAfter); d > 3*time.Second {
		t.Fatalf("the agent port's certificate is valid for another %v, want at most 3s", d)
	}

	seen := map[string]time.Time{first.SerialNumber.String(): first.NotAfter}
	poll.Until(t, 20*time.Second, "3 certificates on the agent port", func() bool {
		cert := b.peerCertificate(t, b.AgentAddr()) // the handshake checks expiry against the CA
		if _, ok := seen[cert.SerialNumber.String()]; !ok {
			seen[cert.SerialNumber.String()] = cert.NotAfter
			if !cert.NotAfter.After(first.NotAfter) {
				t.Errorf("renewed certificate expires %v, not after the first's %v", cert.NotAfter, first.NotAfter)
			}
		}
		// The API answers and the agent's link stays up throughout.
		if s := servers(t, c)["host-a"]; s.Availability != api.AvailabilityAvailable {
			t.Fatalf("server %s while the certificate was renewed", s.UnavailabilityReason)
		}
		return len(seen) >= 3
	})

	// The link made with the first certificate is the one still up.
	s := b.MustScrape(t)
	if v := s.must(t, "berth_broker_agent_connects_total"); v != 1 {
		t.Errorf("agent_connects_total = %v, want 1: the agent had to reconnect", v)
	}
	if v := s.must(t, "berth_broker_agent_disconnects_total"); v != 0 {
		t.Errorf("agent_disconnects_total = %v, want 0", v)
	}
	// Every listener without certificate files serves the renewed certificate.
	now := b.peerCertificate(t, b.AgentAddr())
	for name, addr := range map[string]string{"client": b.ClientAddr(), "metrics": b.MetricsAddr()} {
		if got := b.peerCertificate(t, addr); got.NotAfter.Before(now.NotAfter.Add(-3 * time.Second)) {
			t.Errorf("the %s port serves a certificate expiring %v, the agent port's expires %v", name, got.NotAfter, now.NotAfter)
		}
	}
	if v := s.must(t, "berth_broker_certificate_expiry_timestamp_seconds", "listener", "agent"); v < float64(first.NotAfter.Unix()) {
		t.Errorf("certificate expiry gauge = %v, want after the first certificate's %d", v, first.NotAfter.Unix())
	}
	// The renewed certificate is the one kept in the working path.
	onDisk, err := tls.LoadX509KeyPair(filepath.Join(b.dir, "broker.pem"), filepath.Join(b.dir, "broker.key"))
	if err != nil {
		t.Fatal(err)
	}
	if !onDisk.Leaf.NotAfter.After(first.NotAfter) {
		t.Error("broker.pem still holds the first certificate")
	}
}

// TestBroker_CertificateFilesReloaded configures the client connector with
// certificate files and replaces them while the broker runs: the
// listencert.Manager's checks run under the broker's listener.
func TestBroker_CertificateFilesReloaded(t *testing.T) {
	dir := t.TempDir()
	ca, err := pki.LoadOrCreateCA(dir) // the broker takes this CA
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(t.TempDir(), "client.pem"), filepath.Join(t.TempDir(), "client.key")
	write := func() *x509.Certificate {
		certPEM, keyPEM, err := ca.Issue([]string{"127.0.0.1"}, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		for f, data := range map[string][]byte{certFile: certPEM, keyFile: keyPEM} {
			if err := os.WriteFile(f+".tmp", data, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(f+".tmp", f); err != nil {
				t.Fatal(err)
			}
		}
		c, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		return c.Leaf
	}
	first := write()
	b := MustRunMainWith(t, dir, func(m *Main) {
		m.Config.ClientCertFile, m.Config.ClientKeyFile = certFile, keyFile
		m.certCheck = 50 * time.Millisecond
	})
	c := b.MustClient(t)
	if got := b.peerCertificate(t, b.ClientAddr()); !got.Equal(first) {
		t.Fatal("the client port does not serve the configured certificate")
	}
	// (A half-replaced pair is not taken: listencert.TestManager_FilesReloaded.)
	second := write()
	poll.Until(t, 10*time.Second, "the replaced certificate", func() bool {
		return b.peerCertificate(t, b.ClientAddr()).Equal(second)
	})
	if _, err := c.DescribeServers(t.Context(), api.DescribeServersRequest{}); err != nil {
		t.Fatalf("API after the certificate changed: %v", err)
	}
	// The agent port, without files, kept the broker's own certificate.
	if b.peerCertificate(t, b.AgentAddr()).Equal(second) {
		t.Error("the agent port serves the client port's certificate")
	}
}

// TestBroker_AgentCertificate reproduces the review's attack on POST
// /agent/certificate: a registered agent asks for certificates for
// localhost, a public site, the broker's own address and another agent's
// host, and each is refused; the certificate for what it reported comes
// from the web gateway CA, which is not the broker's CA, so that a client
// trusting ca.pem (the berth CLI, an agent) refuses a server presenting it,
// while a browser trusting gateway-ca.pem accepts it. Renewals are issued,
// valid for agent-certificate-validity-hours.
func TestBroker_AgentCertificate(t *testing.T) {
	b := MustRunMainWith(t, t.TempDir(), func(m *Main) {
		m.Config.AgentCertValidity = 90 * time.Minute
		m.Config.MetricsPort = 0
		m.Config.WebGatewayCASubtrees = "fleet.example, 10.0.0.0/8"
	})
	report := hostReport("desk-a.fleet.example", 10, nil)
	report.IP = "10.1.2.3"
	report.Endpoints[0].IP = "10.1.2.3"
	stateDir := t.TempDir()
	sa := b.MustStartSimAgent(t, stateDir, nil, report)
	c := b.MustClient(t)
	poll.Until(t, 10*time.Second, "the agent's server", func() bool { return len(servers(t, c)) == 1 })
	var creds struct {
		ClientID     string `json:"client_id"`
		ClientSecret string `json:"client_secret"`
	}
	data, err := os.ReadFile(filepath.Join(stateDir, "agent-credentials.json"))
	if err == nil {
		err = json.Unmarshal(data, &creds)
	}
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ask := func(t *testing.T, names ...string) (int, []byte) {
		t.Helper()
		tmpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: names[0]}}
		for _, n := range names {
			if ip := net.ParseIP(n); ip != nil {
				tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			} else {
				tmpl.DNSNames = append(tmpl.DNSNames, n)
			}
		}
		der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
		if err != nil {
			t.Fatal(err)
		}
		csr := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
		req, _ := http.NewRequest("POST", "https://"+b.AgentAddr()+"/agent/certificate?server_id="+sa.ServerID, bytes.NewReader(csr))
		req.SetBasicAuth(creds.ClientID, creds.ClientSecret)
		resp, err := b.hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, out
	}
	for _, foreign := range [][]string{{"localhost"}, {"www.google.com"}, {"127.0.0.1"}, {"desk-a.fleet.example", "desk-b.fleet.example"}} {
		if status, out := ask(t, foreign...); status != http.StatusForbidden || !strings.Contains(string(out), "did not report") {
			t.Errorf("certificate for %v: %d %s, want 403 naming what the agent did not report", foreign, status, out)
		}
	}

	gatewayRoots, err := pki.LoadPool(filepath.Join(b.dir, "gateway-ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	brokerRoots, err := pki.LoadPool(filepath.Join(b.dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	var serials []string
	var chain []byte
	for range 2 {
		status, out := ask(t, "desk-a.fleet.example", "10.1.2.3")
		if status != http.StatusOK {
			t.Fatalf("certificate: %d %s", status, out)
		}
		blk, _ := pem.Decode(out)
		if blk == nil {
			t.Fatalf("certificate answer holds no PEM: %q", out)
		}
		cert, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		if left := time.Until(cert.NotAfter); left > 90*time.Minute || left < 89*time.Minute {
			t.Errorf("gateway certificate valid for another %v, want 90m (agent-certificate-validity-hours)", left)
		}
		for _, n := range []string{"desk-a.fleet.example", "10.1.2.3"} {
			if _, err := cert.Verify(x509.VerifyOptions{Roots: gatewayRoots, DNSName: n}); err != nil {
				t.Errorf("verify %s against gateway-ca.pem: %v", n, err)
			}
			if _, err := cert.Verify(x509.VerifyOptions{Roots: brokerRoots, DNSName: n}); err == nil {
				t.Errorf("a gateway certificate for %s verifies against the broker's ca.pem", n)
			}
		}
		serials = append(serials, cert.SerialNumber.String())
		chain = out
	}
	if serials[0] == serials[1] {
		t.Error("the renewal returned the same certificate")
	}
	if v := b.MustScrape(t).must(t, "berth_broker_agent_certificates_issued_total"); v != 2 {
		t.Errorf("agent_certificates_issued_total = %v, want 2", v)
	}

	// A fake broker serving the gateway certificate: a client that trusts
	// the broker's CA (as berth --ca-bundle ca.pem does) refuses it, so it
	// never sends its credentials; one that trusts gateway-ca.pem accepts it.
	tlsCert, err := tls.X509KeyPair(chain, pemKey(t, key))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{tlsCert}})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				_ = conn.(*tls.Conn).Handshake()
				_, _ = io.Copy(io.Discard, conn)
			}()
		}
	}()
	for _, tc := range []struct {
		roots *x509.CertPool
		ok    bool
	}{{brokerRoots, false}, {gatewayRoots, true}} {
		conn, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: tc.roots, ServerName: "10.1.2.3"})
		if err == nil {
			conn.Close()
		}
		if (err == nil) != tc.ok {
			t.Errorf("handshake with the gateway certificate, ok %v: %v", tc.ok, err)
		}
	}
	if _, err := exec.LookPath("openssl"); err == nil {
		leaf := filepath.Join(t.TempDir(), "leaf.pem")
		if err := os.WriteFile(leaf, chain, 0o600); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("openssl", "verify", "-purpose", "sslserver", "-CAfile", filepath.Join(b.dir, "ca.pem"), leaf).CombinedOutput(); err == nil {
			t.Errorf("openssl verifies a gateway certificate against the broker's ca.pem: %s", out)
		}
		if out, err := exec.Command("openssl", "verify", "-purpose", "sslserver", "-CAfile", filepath.Join(b.dir, "gateway-ca.pem"), leaf).CombinedOutput(); err != nil {
			t.Errorf("openssl verify against gateway-ca.pem: %v: %s", err, out)
		}
	}
}

func pemKey(t *testing.T, key *ecdsa.PrivateKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}
