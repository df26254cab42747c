package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/agent"
	"github.com/berth-dev/berth/internal/agentproto"
	"github.com/berth-dev/berth/internal/apispec"
	"github.com/berth-dev/berth/internal/driver/sim"
	"github.com/berth-dev/berth/internal/pki"
)

// testBroker is a broker running in-process on loopback with a temp SQLite store.
type testBroker struct {
	*Main
	dir string
	hc  *http.Client
}

// MustRunMain starts a broker on 127.0.0.1:0 in dir with test-friendly timings.
func MustRunMain(tb testing.TB, dir string, edit func(*Config)) *testBroker {
	tb.Helper()
	return MustRunMainWith(tb, dir, func(m *Main) {
		if edit != nil {
			edit(&m.Config)
		}
	})
}

// MustRunMainWith is MustRunMain with edit given the whole Main (its
// unexported tunables too). With edit leaving Logger nil, the broker opens
// its own logger from the configuration.
func MustRunMainWith(tb testing.TB, dir string, edit func(*Main)) *testBroker {
	tb.Helper()
	m := NewMain()
	m.Config.WorkingPath = dir
	m.Config.ClientBindHost, m.Config.AgentBindHost = "127.0.0.1", "127.0.0.1"
	m.Config.ClientPort, m.Config.AgentPort = 0, 0
	m.Config.AgentHeartbeatTimeout = 3 * time.Second
	m.Config.QueueMaxTime = 3 * time.Second
	m.Logger = slog.New(slog.NewTextHandler(testWriter{tb}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if edit != nil {
		edit(m)
	}
	if err := m.Run(context.Background()); err != nil {
		tb.Fatalf("run broker: %v", err)
	}
	tb.Cleanup(func() { m.Close() })
	hc, err := api.NewHTTPClient(filepath.Join(dir, "ca.pem"), false)
	if err != nil {
		tb.Fatal(err)
	}
	return &testBroker{Main: m, dir: dir, hc: hc}
}

type testWriter struct{ tb testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.tb.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// MustClient registers an API client and returns a Go client whose every answer
// is validated against berth's and Amazon's OpenAPI documents.
func (b *testBroker) MustClient(tb testing.TB) *api.Client {
	tb.Helper()
	var out bytes.Buffer
	code := run(context.Background(), []string{"register-api-client", "--config", b.writeConfig(tb), "--client-name", "test"}, &out, io.Discard)
	if code != 0 {
		tb.Fatalf("register-api-client exited %d", code)
	}
	var id, secret string
	for _, line := range strings.Split(out.String(), "\n") {
		if v, ok := strings.CutPrefix(line, "client-id: "); ok {
			id = v
		}
		if v, ok := strings.CutPrefix(line, "client-password: "); ok {
			secret = v
		}
	}
	if id == "" || secret == "" {
		tb.Fatalf("register-api-client printed %q", out.String())
	}
	hc := *b.hc
	hc.Transport = &validatingTransport{tb: tb, next: b.hc.Transport}
	return &api.Client{BrokerURL: "https://" + b.ClientAddr(), ClientID: id, ClientSecret: secret, HTTPClient: &hc}
}

// writeConfig writes a properties file pointing at the broker's state, for the
// admin commands.
func (b *testBroker) writeConfig(tb testing.TB) string {
	tb.Helper()
	p := filepath.Join(b.dir, "broker.properties")
	props := "session-manager-working-path = " + b.dir + "\n"
	if b.Config.PersistenceDB == "postgresql" {
		props += "persistence-db = postgresql\npersistence-dsn = " + b.Config.PersistenceDSN + "\n"
	}
	if err := os.WriteFile(p, []byte(props), 0o600); err != nil {
		tb.Fatal(err)
	}
	return p
}

var (
	specOnce         sync.Once
	berthDoc, refDoc *apispec.Doc
	specErr          error
)

// validatingTransport checks every API answer against both OpenAPI documents.
type validatingTransport struct {
	tb   testing.TB
	next http.RoundTripper
}

func (v *validatingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	specOnce.Do(func() {
		if berthDoc, specErr = apispec.Berth(); specErr == nil {
			refDoc, specErr = apispec.Reference()
		}
	})
	var reqBody []byte
	if req.Body != nil {
		reqBody, _ = io.ReadAll(req.Body)
		req.Body = io.NopCloser(bytes.NewReader(reqBody))
	}
	resp, err := v.next.RoundTrip(req)
	if err != nil || req.URL.Path == "/oauth2/token" {
		return resp, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	if err != nil {
		return resp, err
	}
	if specErr != nil {
		v.tb.Errorf("load OpenAPI documents: %v", specErr)
		return resp, nil
	}
	if err := berthDoc.ValidateResponse(req, reqBody, resp.StatusCode, resp.Header, body); err != nil {
		v.tb.Errorf("%s %s: answer does not match berth's OpenAPI document: %v", req.Method, req.URL.Path, err)
	}
	if err := refDoc.ValidateResponse(req, reqBody, resp.StatusCode, resp.Header, body); err != nil && !errors.Is(err, apispec.ErrUndocumentedStatus) {
		v.tb.Errorf("%s %s: answer does not match the reference OpenAPI document: %v", req.Method, req.URL.Path, err)
	}
	return resp, nil
}

// simAgent is an agent speaking the real protocol over a real WebSocket, with the
// sim driver (load simulation only; never a stand-in for the vnc driver in e2e).
type simAgent struct {
	*agent.Agent
	Driver *sim.Driver
	cancel context.CancelFunc
	done   chan struct{}
}

// MustStartSimAgent starts an agent whose state lives in stateDir.
func (b *testBroker) MustStartSimAgent(tb testing.TB, stateDir string, drv *sim.Driver, report agentproto.HostReport) *simAgent {
	tb.Helper()
	pool, err := pki.LoadPool(filepath.Join(b.dir, "ca.pem"))
	if err != nil {
		tb.Fatal(err)
	}
	stmt, err := os.ReadFile(filepath.Join(b.dir, SoftwareStatementFile))
	if err != nil {
		tb.Fatal(err)
	}
	id, err := agent.LoadOrCreateServerID(stateDir)
	if err != nil {
		tb.Fatal(err)
	}
	if drv == nil {
		drv = sim.New()
	}
	a := &agent.Agent{
		BrokerURLs:        []string{"wss://" + b.AgentAddr()},
		TLSConfig:         tlsConfig(pool),
		ServerID:          id,
		StateDir:          stateDir,
		SoftwareStatement: strings.TrimSpace(string(stmt)),
		Driver:            drv,
		Report: func(ctx context.Context) (agentproto.HostReport, error) {
			return report, nil
		},
		UpdateInterval: time.Second,
		Logger:         slog.New(slog.NewTextHandler(testWriter{tb}, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	ctx, cancel := context.WithCancel(context.Background())
	sa := &simAgent{Agent: a, Driver: drv, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(sa.done)
		_ = a.Run(ctx)
	}()
	tb.Cleanup(sa.Stop)
	return sa
}

// Stop ends the agent and waits for it.
func (a *simAgent) Stop() {
	a.cancel()
	<-a.done
}

func tlsConfig(pool *x509.CertPool) *tls.Config {
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
}
