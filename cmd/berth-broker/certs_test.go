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
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/pki"
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
	waitFor(t, "an available server", 10*time.Second, func() bool {
		return servers(t, c)["host-a"].Availability == api.AvailabilityAvailable
	})
	first := b.peerCertificate(t, b.AgentAddr())
	if d := first.NotAfter.Sub(time.Now()); d > 3*time.Second {
		t.Fatalf("the agent port's certificate is valid for another %v, want at most 3s", d)
	}

	seen := map[string]time.Time{first.SerialNumber.String(): first.NotAfter}
	deadline := time.Now().Add(20 * time.Second)
	for len(seen) < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("saw %d certificates on the agent port in 20s, want 3", len(seen))
		}
		time.Sleep(200 * time.Millisecond)
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
	}

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
// certificate files and replaces them while the broker runs.
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
	// A half-replaced pair (certificate without its key) is not taken.
	certPEM, _, err := ca.Issue([]string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if got := b.peerCertificate(t, b.ClientAddr()); !got.Equal(first) {
		t.Fatal("the broker took a certificate whose key was not yet replaced")
	}
	second := write()
	waitFor(t, "the replaced certificate", 10*time.Second, func() bool {
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

// TestBroker_AgentCertificate registers an agent and has it request its
// gateway certificate twice, as a renewal does: both are issued, valid for
// agent-certificate-validity-hours.
func TestBroker_AgentCertificate(t *testing.T) {
	b := MustRunMainWith(t, t.TempDir(), func(m *Main) {
		m.Config.AgentCertValidity = 90 * time.Minute
		m.Config.MetricsPort = 0
	})
	stmt, err := os.ReadFile(filepath.Join(b.dir, SoftwareStatementFile))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(map[string]string{"software_statement": strings.TrimSpace(string(stmt)), "client_name": "host-a"})
	resp, err := b.hc.Post("https://"+b.AgentAddr()+"/agent/register", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	var reg struct {
		ClientID     string `json:"client_id"`
		ClientSecret string `json:"client_secret"`
	}
	err = json.NewDecoder(resp.Body).Decode(&reg)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("register: %s %v", resp.Status, err)
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: "host-a"}, DNSNames: []string{"host-a.example.com"},
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	csr := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	var serials []string
	for range 2 {
		req, _ := http.NewRequest("POST", "https://"+b.AgentAddr()+"/agent/certificate", bytes.NewReader(csr))
		req.SetBasicAuth(reg.ClientID, reg.ClientSecret)
		resp, err := b.hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		out, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("certificate: %s %s", resp.Status, out)
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
		serials = append(serials, cert.SerialNumber.String())
	}
	if serials[0] == serials[1] {
		t.Error("the renewal returned the same certificate")
	}
	if v := b.MustScrape(t).must(t, "berth_broker_agent_certificates_issued_total"); v != 2 {
		t.Errorf("agent_certificates_issued_total = %v, want 2", v)
	}
}
