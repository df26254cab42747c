package agentcert

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/pki"
)

// agents authenticates "agent-a" and "agent-b" with the secret "s".
type agents struct{}

func (agents) AuthenticateAgent(_ context.Context, id, secret string) (string, error) {
	if (id == "agent-a" || id == "agent-b") && secret == "s" {
		return id, nil
	}
	return "", errors.New("bad credentials")
}

// reports holds what each agent client's server reported.
type reports map[string][]string

func (r reports) ReportedNames(_ context.Context, client, server string) ([]string, error) {
	names, ok := r[client+"/"+server]
	if !ok {
		return nil, ErrUnknownServer
	}
	return names, nil
}

func TestHandler(t *testing.T) {
	dir := t.TempDir()
	keyPEM, err := pki.LoadOrCreateKeyFile(filepath.Join(dir, "gateway-ca.key"))
	if err != nil {
		t.Fatal(err)
	}
	cons, _ := pki.ParseConstraints([]string{"fleet.example", "10.0.0.0/8", "192.0.2.0/24"})
	ca, _, err := pki.ConstrainedCA(keyPEM, filepath.Join(dir, "gateway-ca.pem"), cons)
	if err != nil {
		t.Fatal(err)
	}
	brokerCA, err := pki.LoadOrCreateCA(filepath.Join(dir, "broker"))
	if err != nil {
		t.Fatal(err)
	}
	issued := 0
	h := &Handler{
		Auth: agents{},
		Reports: reports{
			"agent-a/srv-a": {"desk-a", "desk-a.fleet.example", "10.1.2.3"},
			"agent-a/":      {"desk-a", "desk-a.fleet.example", "10.1.2.3"},
			// An agent that reports the broker's own address.
			"agent-b/srv-b": {"desk-b.fleet.example", "192.0.2.1"},
		},
		CA:       ca,
		Validity: time.Hour,
		OwnNames: func() []string { return []string{"broker.fleet.example", "192.0.2.1", "127.0.0.1", "localhost"} },
		IsLocal:  func(a netip.Addr) bool { return a == netip.MustParseAddr("192.0.2.1") },
		Issued:   func() { issued++ },
	}
	tests := []struct {
		name       string
		client     string
		server     string
		from       string
		names      []string
		status     int
		want       []string // names in the certificate
		omitted    string   // in Berth-Omitted-Names
		bodyWants  string
		noAuth     bool
		badCSR     bool
		wrongCreds bool
	}{
		{name: "reported names", client: "agent-a", server: "srv-a", names: []string{"desk-a.fleet.example", "10.1.2.3"},
			status: 200, want: []string{"desk-a.fleet.example", "10.1.2.3"}},
		{name: "reported, not permitted: left out", client: "agent-a", server: "srv-a", names: []string{"desk-a", "10.1.2.3"},
			status: 200, want: []string{"10.1.2.3"}, omitted: "desk-a: outside"},
		{name: "agent of an older release, no server_id", client: "agent-a", names: []string{"10.1.2.3"}, status: 200, want: []string{"10.1.2.3"}},
		{name: "public site", client: "agent-a", server: "srv-a", names: []string{"10.1.2.3", "www.google.com"},
			status: 403, bodyWants: `"www.google.com", which this agent did not report`},
		{name: "localhost", client: "agent-a", server: "srv-a", names: []string{"localhost"}, status: 403, bodyWants: "did not report"},
		{name: "loopback address", client: "agent-a", server: "srv-a", names: []string{"127.0.0.1"}, status: 403, bodyWants: "did not report"},
		{name: "the broker's name", client: "agent-a", server: "srv-a", names: []string{"broker.fleet.example"}, status: 403, bodyWants: "did not report"},
		{name: "another agent's host", client: "agent-b", server: "srv-b", names: []string{"desk-a.fleet.example"}, status: 403, bodyWants: "did not report"},
		{name: "another agent's server", client: "agent-b", server: "srv-a", names: []string{"10.1.2.3"}, status: 403, bodyWants: "server_id"},
		{name: "the broker's address from another host", client: "agent-b", server: "srv-b", from: "10.9.9.9",
			names: []string{"desk-b.fleet.example", "192.0.2.1"}, status: 200, want: []string{"desk-b.fleet.example"}, omitted: "192.0.2.1: a name of the broker itself"},
		{name: "only the broker's address from another host", client: "agent-b", server: "srv-b", from: "10.9.9.9",
			names: []string{"192.0.2.1"}, status: 403, bodyWants: "none of the requested names"},
		{name: "the broker's address from the broker's host", client: "agent-b", server: "srv-b", from: "192.0.2.1",
			names: []string{"192.0.2.1"}, status: 200, want: []string{"192.0.2.1"}},
		{name: "no credentials", noAuth: true, status: 401},
		{name: "wrong credentials", client: "agent-a", wrongCreds: true, names: []string{"10.1.2.3"}, status: 401},
		{name: "not a request", client: "agent-a", server: "srv-a", badCSR: true, status: 400, bodyWants: "certificate request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			body := []byte("not a request")
			if !tt.badCSR {
				body = csrPEM(t, key, tt.names)
			}
			u := "/agent/certificate"
			if tt.server != "" {
				u += "?server_id=" + tt.server
			}
			req := httptest.NewRequest("POST", u, bytes.NewReader(body))
			req.RemoteAddr = net.JoinHostPort(cmpOr(tt.from, "10.1.2.3"), "40000")
			if !tt.noAuth {
				secret := "s"
				if tt.wrongCreds {
					secret = "x"
				}
				req.SetBasicAuth(tt.client, secret)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			out, _ := io.ReadAll(rec.Body)
			if rec.Code != tt.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tt.status, out)
			}
			if tt.bodyWants != "" && !strings.Contains(string(out), tt.bodyWants) {
				t.Errorf("answer %q does not say %q", out, tt.bodyWants)
			}
			if got := rec.Header().Get("Berth-Omitted-Names"); !strings.Contains(got, tt.omitted) {
				t.Errorf("Berth-Omitted-Names = %q, want %q", got, tt.omitted)
			}
			if tt.status != http.StatusOK {
				return
			}
			leaf, chainCA := parseChain(t, out)
			if !chainCA.Equal(ca.Cert) {
				t.Error("the answer's second certificate is not the gateway CA")
			}
			got := slices.Concat(leaf.DNSNames, ipStrings(leaf.IPAddresses))
			if !slices.Equal(got, tt.want) {
				t.Errorf("certificate names %v, want %v", got, tt.want)
			}
			if leaf.Subject.CommonName != CommonName {
				t.Errorf("common name %q", leaf.Subject.CommonName)
			}
			roots := x509.NewCertPool()
			roots.AddCert(ca.Cert)
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: tt.want[0]}); err != nil {
				t.Errorf("verify against the gateway CA: %v", err)
			}
			broker := x509.NewCertPool()
			broker.AddCert(brokerCA.Cert)
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: broker, DNSName: tt.want[0]}); err == nil {
				t.Error("a gateway certificate verifies against the broker's own CA")
			}
		})
	}
	if issued != 5 {
		t.Errorf("Issued called %d times, want 5", issued)
	}
}

func TestHandler_LargeRequest(t *testing.T) {
	h := &Handler{Auth: agents{}, Reports: reports{}}
	req := httptest.NewRequest("POST", "/agent/certificate", bytes.NewReader(make([]byte, MaxRequestBytes+1)))
	req.SetBasicAuth("agent-a", "s")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusRequestEntityTooLarge {
		t.Errorf("status %d, want 413", rec.Code)
	}
}

func csrPEM(t *testing.T, key *ecdsa.PrivateKey, names []string) []byte {
	t.Helper()
	tmpl := &x509.CertificateRequest{}
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
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func parseChain(t *testing.T, data []byte) (leaf, ca *x509.Certificate) {
	t.Helper()
	var certs []*x509.Certificate
	for rest := data; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		certs = append(certs, c)
	}
	if len(certs) != 2 {
		t.Fatalf("answer holds %d certificates, want the leaf and the CA", len(certs))
	}
	return certs[0], certs[1]
}

func ipStrings(ips []net.IP) []string {
	var out []string
	for _, ip := range ips {
		out = append(out, ip.String())
	}
	return out
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
