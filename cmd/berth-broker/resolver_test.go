package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/agentproto"
	"github.com/berth-dev/berth/internal/cgresolver"
	"github.com/berth-dev/berth/internal/pki"
	"github.com/berth-dev/berth/internal/poll"
)

// resolverReport is a host with an HTTP and a QUIC endpoint.
func resolverReport(hostname string) agentproto.HostReport {
	r := hostReport(hostname, 0, nil)
	r.IP = "127.0.0.1"
	r.Endpoints = []agentproto.Endpoint{
		{IP: "127.0.0.1", Port: 8443, WebURLPath: "/dcv", Protocol: agentproto.ProtocolHTTP},
		{IP: "127.0.0.1", Port: 8444, Protocol: agentproto.ProtocolQUIC},
	}
	r.WebURLPath = "/dcv"
	return r
}

func resolverBroker(t *testing.T, edit func(*Config)) *testBroker {
	t.Helper()
	return MustRunMain(t, t.TempDir(), func(c *Config) {
		c.EnableConnectionGateway = true
		c.ConnectionGatewayBindHost, c.ConnectionGatewayPort = "127.0.0.1", 0
		if edit != nil {
			edit(c)
		}
	})
}

// resolve posts to the resolver and returns the status and the decoded body.
func resolve(t *testing.T, hc *http.Client, b *testBroker, q url.Values) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, "https://"+b.ResolverAddr()+"/resolveSession?"+q.Encode(), nil)
	req.Header.Set("Accept", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("content type %q", ct)
	}
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("decode answer (status %d): %v", resp.StatusCode, err)
	}
	return resp.StatusCode, out
}

// adminSplit runs an admin command and returns its exit code, stdout and stderr.
func (b *testBroker) adminSplit(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(context.Background(), append([]string{args[0], "--config", b.writeConfig(t)}, args[1:]...), &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestConnectionGatewayResolver(t *testing.T) {
	ctx := context.Background()
	b := resolverBroker(t, nil)
	c, ids := readySessions(t, b, resolverReport("gw-host"), "alice", "bob")
	alice, bob := ids[0], ids[1]
	serverID := servers(t, c)["gw-host"].Id

	t.Run("READY session", func(t *testing.T) {
		for _, tc := range []struct {
			transport string
			port      float64
			path      string
		}{{"HTTP", 8443, "/dcv"}, {"QUIC", 8444, "/dcv"}, {"quic", 8444, "/dcv"}} {
			code, out := resolve(t, b.hc, b, url.Values{"sessionId": {alice}, "transport": {tc.transport}, "clientIpAddress": {"203.0.113.9"}})
			want := map[string]any{"SessionId": alice, "TransportProtocol": strings.ToUpper(tc.transport),
				"DcvServerEndpoint": "127.0.0.1", "Port": tc.port, "WebUrlPath": tc.path}
			if code != http.StatusOK || !equalJSON(out, want) {
				t.Fatalf("%s: %d %v, want %v", tc.transport, code, out, want)
			}
		}
		// clientIpAddress is optional.
		if code, _ := resolve(t, b.hc, b, url.Values{"sessionId": {alice}, "transport": {"HTTP"}}); code != http.StatusOK {
			t.Fatalf("without clientIpAddress: %d", code)
		}
	})

	t.Run("bad parameters", func(t *testing.T) {
		for _, tc := range []struct {
			q     url.Values
			field string
		}{
			{url.Values{"transport": {"HTTP"}}, "sessionId"},
			{url.Values{"sessionId": {strings.Repeat("x", 300)}, "transport": {"HTTP"}}, "sessionId"},
			{url.Values{"sessionId": {alice}}, "transport"},
			{url.Values{"sessionId": {alice}, "transport": {"UDP"}}, "transport"},
			{url.Values{"sessionId": {alice}, "transport": {"HTTP"}, "clientIpAddress": {"not an ip"}}, "clientIpAddress"},
		} {
			code, out := resolve(t, b.hc, b, tc.q)
			if msg, _ := out["error"].(string); code != http.StatusBadRequest || !strings.HasPrefix(msg, tc.field+":") {
				t.Fatalf("%v: %d %v, want 400 naming %s", tc.q, code, out, tc.field)
			}
		}
	})

	t.Run("unknown and deleted sessions", func(t *testing.T) {
		if code, out := resolve(t, b.hc, b, url.Values{"sessionId": {"no-such-session"}, "transport": {"HTTP"}}); code != http.StatusNotFound || out["error"] == nil {
			t.Fatalf("unknown: %d %v", code, out)
		}
		if _, err := c.DeleteSessions(ctx, []api.DeleteSessionRequest{{SessionId: bob, Owner: "bob"}}); err != nil {
			t.Fatal(err)
		}
		poll.Until(t, 10*time.Second, "deleted session not resolved", func() bool {
			code, _ := resolve(t, b.hc, b, url.Values{"sessionId": {bob}, "transport": {"HTTP"}})
			return code == http.StatusNotFound
		})
	})

	t.Run("health and methods", func(t *testing.T) {
		resp, err := b.hc.Get("https://" + b.ResolverAddr() + "/health")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("health: %d", resp.StatusCode)
		}
		resp, err = b.hc.Get("https://" + b.ResolverAddr() + "/resolveSession?sessionId=" + alice + "&transport=HTTP")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Fatalf("GET /resolveSession: %d", resp.StatusCode)
		}
	})

	t.Run("dns mappings", func(t *testing.T) {
		endpoint := func() string {
			code, out := resolve(t, b.hc, b, url.Values{"sessionId": {alice}, "transport": {"HTTP"}})
			if code != http.StatusOK {
				t.Fatalf("resolve: %d %v", code, out)
			}
			return out["DcvServerEndpoint"].(string)
		}
		register := func(content string) {
			t.Helper()
			f := filepath.Join(t.TempDir(), "map.json")
			if err := os.WriteFile(f, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			code, out, errOut := b.adminSplit(t, "register-server-dns-mappings", "--file-path", f)
			if code != 0 || !strings.Contains(out, "Successfully loaded") || !strings.Contains(out, "mappings from file "+f) {
				t.Fatalf("register: exit %d, %q %q", code, out, errOut)
			}
		}
		register(`[{"ServerIdType": "Id", "ServerId": "` + serverID + `", "DnsNames": {"InternalDnsName": "by-id.internal", "ExternalDnsName": "by-id.example.com"}},
			{"ServerIdType": "Ip", "ServerId": "10.9.9.9", "DnsNames": {"InternalDnsName": "other.internal"}}]`)
		if got := endpoint(); got != "by-id.internal" {
			t.Fatalf("after an Id mapping: %q", got)
		}
		code, out, _ := b.adminSplit(t, "describe-server-dns-mappings")
		var rows []map[string]any
		if err := json.Unmarshal([]byte(out), &rows); code != 0 || err != nil || len(rows) != 2 {
			t.Fatalf("describe: exit %d, %q: %v", code, out, err)
		}
		want := map[string]any{"serverIdType": "Id", "serverId": serverID,
			"dnsNames": map[string]any{"internalDnsName": "by-id.internal", "externalDnsName": "by-id.example.com"}}
		if !equalJSON(rows[0], want) {
			t.Fatalf("describe row 0: %v, want %v", rows[0], want)
		}
		if fi, err := os.Stat(filepath.Join(b.dir, cgresolver.DNSMappingsFile)); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("mapping file: %v %v", fi, err)
		}

		register(`[{"ServerIdType": "Ip", "ServerId": "127.0.0.1", "DnsNames": {"InternalDnsName": "by-ip.internal"}}]`)
		if got := endpoint(); got != "by-ip.internal" {
			t.Fatalf("after an Ip mapping: %q", got)
		}
		register(`[]`)
		if got := endpoint(); got != "127.0.0.1" {
			t.Fatalf("without mappings: %q", got)
		}
	})
}

func TestRegisterDNSMappings_Invalid(t *testing.T) {
	b := MustRunMain(t, t.TempDir(), nil)
	for _, tc := range []struct{ content, want string }{
		{`{}`, "must be a JSON array"},
		{`[{"ServerIdType": "Mac", "ServerId": "x", "DnsNames": {"InternalDnsName": "a"}}]`, "entry 0: ServerIdType"},
		{`[{"ServerIdType": "Id", "ServerId": "x", "DnsNames": {"InternalDnsName": "a"}}, {"ServerIdType": "Id", "DnsNames": {"InternalDnsName": "a"}}]`, "entry 1: ServerId: is required"},
		{`[{"ServerIdType": "Ip", "ServerId": "host-1", "DnsNames": {"InternalDnsName": "a"}}]`, "entry 0: ServerId"},
		{`[{"ServerIdType": "Id", "ServerId": "x"}]`, "entry 0: DnsNames.InternalDnsName: is required"},
		{`[{"ServerIdType": "Id", "ServerId": "x", "DnsNames": {"InternalDnsName": "bad name!"}}]`, "entry 0: DnsNames.InternalDnsName"},
		{`[{"ServerIdType": "Id", "ServerId": "x", "DnsNames": {"InternalDnsName": "a", "ExternalDnsName": "-x"}}]`, "entry 0: DnsNames.ExternalDnsName"},
		{`[{"ServerIdType": "Id", "ServerId": "x", "Extra": 1, "DnsNames": {"InternalDnsName": "a"}}]`, `entry 0: json: unknown field "Extra"`},
		{`[{"ServerIdType": "Id", "ServerId": "x", "DnsNames": {"InternalDnsName": "a"}}, {"ServerIdType": "Id", "ServerId": "x", "DnsNames": {"InternalDnsName": "b"}}]`, "entry 1: ServerId"},
	} {
		f := filepath.Join(t.TempDir(), "map.json")
		if err := os.WriteFile(f, []byte(tc.content), 0o600); err != nil {
			t.Fatal(err)
		}
		code, _, errOut := b.adminSplit(t, "register-server-dns-mappings", "--file-path", f)
		if code != 1 || !strings.Contains(errOut, tc.want) {
			t.Errorf("%s: exit %d, %q; want %q", tc.content, code, errOut, tc.want)
		}
	}
	if code, _, _ := b.adminSplit(t, "register-server-dns-mappings"); code != 2 {
		t.Errorf("without --file-path: exit %d, want 2", code)
	}
	if _, err := os.Stat(filepath.Join(b.dir, cgresolver.DNSMappingsFile)); !os.IsNotExist(err) {
		t.Errorf("a refused file was stored: %v", err)
	}
	code, out, _ := b.adminSplit(t, "describe-server-dns-mappings")
	if code != 0 || strings.TrimSpace(out) != "[]" {
		t.Errorf("describe with none: exit %d, %q", code, out)
	}
	if b.ResolverAddr() != "" {
		t.Errorf("ResolverAddr with the gateway off: %q", b.ResolverAddr())
	}
}

func TestConnectionGatewayResolver_MutualTLS(t *testing.T) {
	gwCA, err := pki.LoadOrCreateCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	trust := filepath.Join(t.TempDir(), "truststore.pem")
	if err := os.WriteFile(trust, gwCA.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	b := resolverBroker(t, func(c *Config) {
		c.ConnectionGatewayTLSClientAuth = true
		c.ConnectionGatewayTrustStoreFile = trust
		c.ConnectionGatewayTrustStorePass = "ignored"
	})
	_, ids := readySessions(t, b, resolverReport("mtls-host"), "alice")
	q := url.Values{"sessionId": {ids[0]}, "transport": {"HTTP"}}
	pool, err := pki.LoadPool(filepath.Join(b.dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	clientWith := func(ca *pki.CA) *http.Client {
		cfg := tlsConfig(pool)
		if ca != nil {
			certPEM, keyPEM, err := ca.Issue([]string{"gateway"}, time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			pair, err := tls.X509KeyPair(certPEM, keyPEM)
			if err != nil {
				t.Fatal(err)
			}
			cfg.Certificates = []tls.Certificate{pair}
		}
		return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 10 * time.Second}
	}
	refused := func(hc *http.Client) bool {
		resp, err := hc.Post("https://"+b.ResolverAddr()+"/resolveSession?"+q.Encode(), "", nil)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		return err != nil
	}
	if !refused(clientWith(nil)) {
		t.Fatal("a client without a certificate was served")
	}
	if !refused(clientWith(b.ca)) {
		t.Fatal("a client with a certificate from a CA outside the trust store was served")
	}
	if code, out := resolve(t, clientWith(gwCA), b, q); code != http.StatusOK || out["SessionId"] != ids[0] {
		t.Fatalf("trusted client: %d %v", code, out)
	}
}

// TestConnectionGatewayResolver_TrustStoreNotPEM: a JKS (or any non-PEM) trust store
// stops the broker with a message saying what berth reads.
func TestConnectionGatewayResolver_TrustStoreNotPEM(t *testing.T) {
	trust := filepath.Join(t.TempDir(), "truststore.jks")
	if err := os.WriteFile(trust, []byte("\xfe\xed\xfe\xed binary"), 0o600); err != nil {
		t.Fatal(err)
	}
	m := NewMain()
	m.Config.WorkingPath = t.TempDir()
	m.Config.ClientBindHost, m.Config.AgentBindHost, m.Config.ConnectionGatewayBindHost = "127.0.0.1", "127.0.0.1", "127.0.0.1"
	m.Config.ClientPort, m.Config.AgentPort, m.Config.ConnectionGatewayPort = 0, 0, 0
	m.Config.EnableConnectionGateway, m.Config.ConnectionGatewayTLSClientAuth, m.Config.ConnectionGatewayTrustStoreFile = true, true, trust
	m.Logger = stderrLogger("error", os.Stderr)
	err := m.Run(context.Background())
	if err == nil {
		m.Close()
		t.Fatal("the broker started with a JKS trust store")
	}
	if !strings.Contains(err.Error(), "PEM") {
		t.Fatalf("error %q does not say berth reads PEM", err)
	}
}

// equalJSON compares decoded JSON values.
func equalJSON(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}
