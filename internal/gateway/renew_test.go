package gateway_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/berth-dev/berth/internal/agent"
	"github.com/berth-dev/berth/internal/agentmetrics"
	"github.com/berth-dev/berth/internal/agentmetrics/metricstest"
	"github.com/berth-dev/berth/internal/driver/sim"
	"github.com/berth-dev/berth/internal/gateway"
	"github.com/berth-dev/berth/internal/pki"
	"github.com/berth-dev/berth/internal/poll"
)

// certBroker is the part of a broker that registers agents and signs their
// gateway certificates (POST /agent/register, POST /agent/certificate), with
// its CA, at a validity of a few seconds.
func certBroker(t *testing.T, ca *pki.CA, validity time.Duration) (url string, tlsConf *tls.Config) {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("POST /agent/register", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusCreated)
		json.NewEncoder(w).Encode(map[string]string{"client_id": "agent-1", "client_secret": "s3cret"})
	})
	mux.HandleFunc("POST /agent/certificate", func(w http.ResponseWriter, r *http.Request) {
		if id, secret, ok := r.BasicAuth(); !ok || id != "agent-1" || secret != "s3cret" {
			http.Error(w, "invalid agent client credentials", http.StatusUnauthorized)
			return
		}
		csr, _ := io.ReadAll(io.LimitReader(r.Body, 16<<10))
		cert, err := ca.SignCSR(csr, validity)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Write(append(cert, ca.CertPEM...))
	})
	srv := httptest.NewTLSServer(mux)
	t.Cleanup(srv.Close)
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	return "wss://" + srv.Listener.Addr().String(), &tls.Config{RootCAs: pool}
}

// TestServer_CertificateRenewal serves the gateway with a certificate from the
// broker's CA valid for 3 s, renewed by the agent: every new TLS handshake
// gets the current certificate, while a WebSocket bridged before the
// renewals, and a plain HTTPS connection opened before them, stay up and
// keep working on the certificate they started with.
func TestServer_CertificateRenewal(t *testing.T) {
	t.Parallel() // it mostly waits on real time: overlap it with the others that do
	certPEM, keyPEM, err := pki.NewCAPEM()
	if err != nil {
		t.Fatal(err)
	}
	ca, err := pki.ParseCA(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	brokerURL, brokerTLS := certBroker(t, ca, 3*time.Second)
	m := agentmetrics.New(agentmetrics.Options{Driver: "vnc"})
	ag := &agent.Agent{BrokerURLs: []string{brokerURL}, TLSConfig: brokerTLS, ServerID: "srv-1", StateDir: t.TempDir(),
		SoftwareStatement: "stmt", Driver: sim.New(), Metrics: m}
	names := []string{"localhost", "127.0.0.1"}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cert, err := ag.GatewayCertificate(ctx, names)
	if err != nil {
		t.Fatal(err)
	}
	holder := pki.NewHolder(cert)
	renewDone := make(chan struct{})
	go func() {
		defer close(renewDone)
		ag.RenewGatewayCertificate(ctx, holder, func() []string { return names })
	}()
	defer func() { cancel(); <-renewDone }()

	e := newEnv(t, "", 0)
	gw := gateway.New(gateway.Config{
		GetCertificate: holder.GetCertificate,
		Verifier:       e.broker.verifier,
		Sessions:       e.sessions,
		Metrics:        m,
		Logger:         slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- gw.Serve(ctx, ln) }()
	defer func() {
		gw.Close()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	addr := ln.Addr().String()
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	clientTLS := &tls.Config{RootCAs: roots, ServerName: "127.0.0.1", NextProtos: []string{"http/1.1"}}

	// handshakeSerial opens a new TLS connection, verified against the
	// broker's CA, and returns the serial the gateway presented.
	handshakeSerial := func() *big.Int {
		t.Helper()
		c, err := tls.Dial("tcp", addr, clientTLS)
		if err != nil {
			t.Fatalf("new handshake: %v", err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber
	}
	first := handshakeSerial()

	// A bridged WebSocket and a keep-alive HTTPS connection, before any renewal.
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: clientTLS}}
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	wsURL := "wss://" + addr + "/websockify?authToken=" + url.QueryEscape(e.broker.token(t, sessID, owner, owner)) + "&sessionId=" + sessID
	ws, _, err := websocket.Dial(wctx, wsURL, &websocket.DialOptions{HTTPClient: hc})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	rfb, _, _, _ := handshake(t, ws)
	keep, err := tls.Dial("tcp", addr, clientTLS)
	if err != nil {
		t.Fatal(err)
	}
	defer keep.Close()
	keepReader := bufio.NewReader(keep)
	get := func() {
		t.Helper()
		req, _ := http.NewRequest("GET", "https://"+addr+"/", nil)
		keep.SetDeadline(time.Now().Add(5 * time.Second))
		if err := req.Write(keep); err != nil {
			t.Fatalf("request on the old connection: %v", err)
		}
		resp, err := http.ReadResponse(keepReader, req)
		if err != nil {
			t.Fatalf("response on the old connection: %v", err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("page on the old connection: %s", resp.Status)
		}
	}
	get()

	// Two renewals: after each, a new handshake sees the new certificate.
	seen := []*big.Int{first}
	for len(seen) < 3 {
		poll.Until(t, 15*time.Second, fmt.Sprintf("renewal %d", len(seen)), func() bool {
			return holder.Leaf().SerialNumber.Cmp(seen[len(seen)-1]) != 0
		})
		got := handshakeSerial()
		if got.Cmp(holder.Leaf().SerialNumber) != 0 {
			t.Fatalf("renewal %d: a new handshake got serial %v, the holder has %v", len(seen), got, holder.Leaf().SerialNumber)
		}
		for _, s := range seen {
			if got.Cmp(s) == 0 {
				t.Fatalf("renewal %d: an old certificate again", len(seen))
			}
		}
		seen = append(seen, got)
		t.Logf("renewal %d: serial %v", len(seen)-1, got)
	}

	// The connections made before both renewals still work, on their first
	// certificate.
	get()
	if got := keep.ConnectionState().PeerCertificates[0].SerialNumber; got.Cmp(first) != 0 {
		t.Errorf("the old connection now shows serial %v", got)
	}
	rfb.write(keyEvent)
	poll.Until(t, 5*time.Second, "the key event through the old bridge", func() bool {
		return string(e.rfb.received(0)) == string(keyEvent)
	})
	if n := gw.Connections(sessID); n != 1 {
		t.Errorf("%d bridged connections, want the first one still", n)
	}
	fs := metricstest.Gather(t, m.Registry())
	if v := fs.Must(t, "berth_agent_gateway_certificate_renewals_total", "result", "ok"); v < 2 {
		t.Errorf("renewals_total{ok} = %v", v)
	}
	if v := fs.Must(t, "berth_agent_gateway_connections"); v != 1 {
		t.Errorf("gateway_connections = %v", v)
	}
}
