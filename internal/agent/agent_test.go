package agent_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/agent"
	"github.com/berth-dev/berth/internal/agentproto"
	"github.com/berth-dev/berth/internal/driver/sim"
	"github.com/berth-dev/berth/internal/pki"
	"github.com/berth-dev/berth/internal/poll"
	"github.com/coder/websocket"
)

// fakeBroker is a small broker that speaks the agent protocol, so that tests
// drive the agent from the other end of a real TLS WebSocket.
type fakeBroker struct {
	srv       *httptest.Server
	url       string
	tls       *tls.Config
	statement string // "" serves no registration
	auth      bool
	// welcome answers a hello; nil sends a Welcome with a 10 s interval.
	welcome func(*agentproto.Hello) agentproto.Body
	// ca signs gateway certificates (POST /agent/certificate) valid for
	// certValidity; nil serves none.
	ca           *pki.CA
	certValidity time.Duration
	// certFailures fails that many certificate requests (503) first.
	certFailures atomic.Int32
	// extend serves POST /agent/sessions/{id}/extend; nil serves none.
	extend http.Handler

	mu            sync.Mutex
	clients       map[string]string
	registrations int
	dials         int
	attempts      []time.Time // when each registration request or dial arrived
	certificates  int         // certificates issued
	conns         chan *brokerConn
	// tcp counts the TCP connections the broker accepted, open those open
	// and not hijacked, resumed the TLS sessions it resumed.
	tcp, open, resumed atomic.Int32
}

type brokerConn struct {
	c        *websocket.Conn
	hello    *agentproto.Hello
	clientID string
}

func mustStartBroker(t *testing.T, fb *fakeBroker) *fakeBroker {
	t.Helper()
	fb.conns = make(chan *brokerConn, 100)
	fb.clients = map[string]string{}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /agent/register", fb.register)
	mux.HandleFunc("GET /agent/connect", func(w http.ResponseWriter, r *http.Request) { fb.connect(t, w, r) })
	mux.HandleFunc("POST /agent/certificate", fb.certificate)
	mux.HandleFunc("POST /agent/sessions/{id}/extend", func(w http.ResponseWriter, r *http.Request) {
		if fb.extend == nil {
			http.NotFound(w, r)
			return
		}
		fb.extend.ServeHTTP(w, r)
	})
	fb.srv = httptest.NewUnstartedServer(mux)
	fb.srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		switch st {
		case http.StateNew:
			fb.tcp.Add(1)
			fb.open.Add(1)
		case http.StateClosed, http.StateHijacked:
			fb.open.Add(-1)
		}
	}
	fb.srv.StartTLS()
	t.Cleanup(fb.srv.Close)
	fb.url = "wss://" + fb.srv.Listener.Addr().String()
	pool := x509.NewCertPool()
	pool.AddCert(fb.srv.Certificate())
	fb.tls = &tls.Config{RootCAs: pool}
	return fb
}

func (fb *fakeBroker) register(w http.ResponseWriter, r *http.Request) {
	fb.attempt()
	if fb.statement == "" {
		http.NotFound(w, r)
		return
	}
	var req struct {
		Statement string `json:"software_statement"`
		Name      string `json:"client_name"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Statement != fb.statement || req.Name == "" {
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, `{"error":"invalid_software_statement"}`)
		return
	}
	fb.mu.Lock()
	fb.registrations++
	id := fmt.Sprintf("agent-%d", fb.registrations)
	secret := "s3cret-" + id
	fb.clients[id] = secret
	fb.mu.Unlock()
	w.WriteHeader(http.StatusCreated)
	json.NewEncoder(w).Encode(map[string]any{"client_id": id, "client_secret": secret, "client_id_issued_at": 1})
}

// certificate signs a web gateway certificate request as the broker does,
// for registered agents.
func (fb *fakeBroker) certificate(w http.ResponseWriter, r *http.Request) {
	if fb.ca == nil {
		http.NotFound(w, r)
		return
	}
	id, secret, ok := r.BasicAuth()
	fb.mu.Lock()
	good := ok && fb.clients[id] == secret && secret != ""
	fb.mu.Unlock()
	if !good {
		http.Error(w, "invalid agent client credentials", http.StatusUnauthorized)
		return
	}
	if fb.certFailures.Add(-1) >= 0 {
		http.Error(w, "store unavailable", http.StatusServiceUnavailable)
		return
	}
	csr, err := io.ReadAll(io.LimitReader(r.Body, 16<<10))
	if err != nil {
		return
	}
	cert, err := fb.ca.SignCSR(csr, fb.certValidity)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	fb.mu.Lock()
	fb.certificates++
	fb.mu.Unlock()
	w.Write(append(cert, fb.ca.CertPEM...))
}

func (fb *fakeBroker) connect(t *testing.T, w http.ResponseWriter, r *http.Request) {
	fb.attempt()
	fb.mu.Lock()
	fb.dials++
	fb.mu.Unlock()
	if r.TLS != nil && r.TLS.DidResume {
		fb.resumed.Add(1)
	}
	var clientID string
	if fb.auth {
		id, secret, ok := r.BasicAuth()
		fb.mu.Lock()
		good := ok && fb.clients[id] == secret && secret != ""
		fb.mu.Unlock()
		if !good {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		clientID = id
	}
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	c.SetReadLimit(agentproto.MaxMessageSize)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, data, err := c.Read(ctx)
	if err != nil {
		c.CloseNow()
		return
	}
	m, err := agentproto.Decode(data)
	if err != nil {
		t.Errorf("agent sent a bad hello: %v", err)
		c.CloseNow()
		return
	}
	h := m.Body.(*agentproto.Hello)
	var answer agentproto.Body = &agentproto.Welcome{ProtocolVersion: agentproto.ProtocolVersion, UpdateIntervalMS: 10000, HeartbeatTimeoutMS: 30000}
	if fb.welcome != nil {
		answer = fb.welcome(h)
	}
	data, _ = agentproto.Encode("", answer)
	if err := c.Write(ctx, websocket.MessageText, data); err != nil {
		c.CloseNow()
		return
	}
	if _, ok := answer.(*agentproto.Error); ok {
		c.Close(websocket.StatusPolicyViolation, "")
		return
	}
	fb.conns <- &brokerConn{c: c, hello: h, clientID: clientID}
}

// attempt records the arrival of a registration request or a dial.
func (fb *fakeBroker) attempt() {
	fb.mu.Lock()
	defer fb.mu.Unlock()
	fb.attempts = append(fb.attempts, time.Now())
}

// waitBackoff waits for three attempts (registrations or dials) and checks
// that the agent backed off between them: at least backoffMin/2 = 250 ms
// before the second and, the delay doubling, 500 ms before the third. Only
// lower bounds: a busy machine makes the gaps longer, never shorter.
func (fb *fakeBroker) waitBackoff(t *testing.T) {
	t.Helper()
	var at []time.Time
	poll.Until(t, 20*time.Second, "three attempts", func() bool {
		fb.mu.Lock()
		defer fb.mu.Unlock()
		at = slices.Clone(fb.attempts)
		return len(at) >= 3
	})
	for i, least := range []time.Duration{250 * time.Millisecond, 500 * time.Millisecond} {
		if gap := at[i+1].Sub(at[i]); gap < least {
			t.Errorf("attempt %d came %s after attempt %d; want at least %s of backoff", i+2, gap, i+1, least)
		}
	}
}

func (fb *fakeBroker) counts() (registrations, dials int) {
	fb.mu.Lock()
	defer fb.mu.Unlock()
	return fb.registrations, fb.dials
}

func (fb *fakeBroker) next(t *testing.T) *brokerConn {
	t.Helper()
	select {
	case bc := <-fb.conns:
		t.Cleanup(func() { bc.c.CloseNow() })
		return bc
	case <-time.After(20 * time.Second):
		t.Fatal("agent did not connect")
		return nil
	}
}

// read returns the next message of one of types, skipping others.
func (bc *brokerConn) read(t *testing.T, types ...string) *agentproto.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		_, data, err := bc.c.Read(ctx)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		m, err := agentproto.Decode(data)
		if err != nil {
			t.Fatalf("agent sent a bad message: %v", err)
		}
		for _, typ := range types {
			if m.Type == typ {
				return m
			}
		}
	}
}

func (bc *brokerConn) send(t *testing.T, id string, b agentproto.Body) {
	t.Helper()
	data, err := agentproto.Encode(id, b)
	if err != nil {
		t.Fatal(err)
	}
	if err := bc.c.Write(context.Background(), websocket.MessageText, data); err != nil {
		t.Fatal(err)
	}
}

// command sends a command and returns its result, acking updates meanwhile.
func (bc *brokerConn) command(t *testing.T, id string, c *agentproto.Command) *agentproto.Result {
	t.Helper()
	bc.send(t, id, c)
	for {
		m := bc.read(t, agentproto.TypeResult, agentproto.TypeUpdate)
		if m.Type == agentproto.TypeUpdate {
			bc.send(t, m.ID, &agentproto.Ack{})
			continue
		}
		if m.ID != id {
			t.Fatalf("result for %s, want %s", m.ID, id)
		}
		return m.Body.(*agentproto.Result)
	}
}

type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if os.Getenv("BERTH_TEST_LOG") != "" {
		os.Stderr.Write(p)
	}
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// mustRunAgent runs a until the test ends; the returned stop ends it early.
func mustRunAgent(t *testing.T, a *agent.Agent) (stop func(), logs *logBuffer) {
	t.Helper()
	logs = &logBuffer{}
	a.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if a.ServerID == "" {
		a.ServerID = "srv-test"
	}
	if a.Driver == nil {
		a.Driver = sim.New()
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	stop = sync.OnceFunc(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("Run did not return")
		}
	})
	t.Cleanup(stop)
	return stop, logs
}

func TestLoadOrCreateServerID(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	id, err := agent.LoadOrCreateServerID(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !agentproto.ValidID(id) || len(id) < 16 {
		t.Errorf("id %q", id)
	}
	again, err := agent.LoadOrCreateServerID(dir)
	if err != nil || again != id {
		t.Errorf("second call: %q, %v; want %q", again, err, id)
	}
	if _, err := agent.LoadOrCreateServerID(""); err == nil {
		t.Error("empty state dir accepted")
	}
	if err := os.WriteFile(filepath.Join(dir, "server-id"), []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := agent.LoadOrCreateServerID(dir); err == nil {
		t.Error("empty id file accepted")
	}
}

func TestAgent_Run_Misconfigured(t *testing.T) {
	for name, a := range map[string]*agent.Agent{
		"no urls":    {ServerID: "s", Driver: sim.New()},
		"bad scheme": {BrokerURLs: []string{"ftp://b"}, ServerID: "s", Driver: sim.New()},
		"no driver":  {BrokerURLs: []string{"wss://b:1"}, ServerID: "s"},
		"no id":      {BrokerURLs: []string{"wss://b:1"}, Driver: sim.New()},
	} {
		if err := a.Run(context.Background()); err == nil {
			t.Errorf("%s: Run succeeded", name)
		}
	}
}

func TestAgent_Hello(t *testing.T) {
	fb := mustStartBroker(t, &fakeBroker{})
	d := sim.New()
	d.Create(context.Background(), agent.CreateRequest{ID: "s1", Owner: "alice"})
	d.Create(context.Background(), agent.CreateRequest{ID: "s0", Owner: "bob"})
	mustRunAgent(t, &agent.Agent{BrokerURLs: []string{fb.url}, TLSConfig: fb.tls, ServerID: "srv-1", Driver: d, Version: "1.2.3"})
	bc := fb.next(t)
	h := bc.hello
	if h.ServerID != "srv-1" || h.AgentVersion != "1.2.3" || h.ProtocolVersion != agentproto.ProtocolVersion {
		t.Errorf("hello = %+v", h)
	}
	if h.Host.Driver != "sim" || h.Host.AgentVersion != "1.2.3" || !h.Host.Healthy || h.Host.Hostname == "" {
		t.Errorf("host = %+v", h.Host)
	}
	if len(h.Sessions) != 2 || h.Sessions[0].ID != "s0" || h.Sessions[1].ID != "s1" {
		t.Errorf("sessions = %+v", h.Sessions)
	}
}

func TestAgent_Register(t *testing.T) {
	fb := mustStartBroker(t, &fakeBroker{statement: "stmt", auth: true})
	dir := t.TempDir()
	stop, logs := mustRunAgent(t, &agent.Agent{BrokerURLs: []string{fb.url}, TLSConfig: fb.tls, StateDir: dir, SoftwareStatement: "stmt"})
	if bc := fb.next(t); bc.clientID != "agent-1" {
		t.Errorf("client %q", bc.clientID)
	}
	fi, err := os.Stat(filepath.Join(dir, "agent-credentials.json"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("credentials mode %v", fi.Mode())
	}
	stop()
	if strings.Contains(logs.String(), "s3cret") || strings.Contains(logs.String(), "stmt") {
		t.Errorf("logs leak a secret:\n%s", logs)
	}
	// After a restart the stored credentials serve.
	mustRunAgent(t, &agent.Agent{BrokerURLs: []string{fb.url}, TLSConfig: fb.tls, StateDir: dir, SoftwareStatement: "stmt"})
	if bc := fb.next(t); bc.clientID != "agent-1" {
		t.Errorf("client %q after restart", bc.clientID)
	}
	if n, _ := fb.counts(); n != 1 {
		t.Errorf("%d registrations, want 1", n)
	}
}

// TestAgent_LinksResumeTLS: the link that follows a registration is the
// registration's own connection, upgraded (one TLS handshake and one broker
// file descriptor per registering agent; the registration connection used
// to sit idle next to the link, then the agent closed it and dialed anew);
// a reconnect after the link drops resumes the TLS session of the broker's
// earlier answer (no certificate signed or verified: the cheap handshake
// that keeps a relink storm from timing out); and nothing idle stays open.
func TestAgent_LinksResumeTLS(t *testing.T) {
	fb := mustStartBroker(t, &fakeBroker{statement: "stmt", auth: true})
	mustRunAgent(t, &agent.Agent{BrokerURLs: []string{fb.url}, TLSConfig: fb.tls, SoftwareStatement: "stmt"})
	bc := fb.next(t)
	if reg, dials := fb.counts(); reg != 1 || dials != 1 {
		t.Errorf("%d registrations and %d dials, want 1 and 1", reg, dials)
	}
	if n := fb.tcp.Load(); n != 1 {
		t.Errorf("%d connections for a registration and its link, want 1", n)
	}
	if n := fb.open.Load(); n != 0 {
		t.Errorf("%d connections open next to the link, want 0", n)
	}
	bc.c.Close(websocket.StatusGoingAway, "bye")
	fb.next(t)
	if n := fb.resumed.Load(); n != 1 {
		t.Errorf("%d relinks resumed their TLS session, want 1", n)
	}
	if n := fb.tcp.Load(); n != 2 {
		t.Errorf("%d connections, want 2 (registration and link, relink)", n)
	}
}

func TestAgent_Register_RefusedCredentials(t *testing.T) {
	fb := mustStartBroker(t, &fakeBroker{statement: "stmt", auth: true})
	dir := t.TempDir()
	// Credentials the broker no longer knows (unregister-agent-client).
	os.WriteFile(filepath.Join(dir, "agent-credentials.json"), []byte(`{"client_id":"agent-old","client_secret":"gone"}`), 0o600)
	mustRunAgent(t, &agent.Agent{BrokerURLs: []string{fb.url}, TLSConfig: fb.tls, StateDir: dir, SoftwareStatement: "stmt"})
	if bc := fb.next(t); bc.clientID != "agent-1" {
		t.Errorf("client %q", bc.clientID)
	}
	data, _ := os.ReadFile(filepath.Join(dir, "agent-credentials.json"))
	if !strings.Contains(string(data), "agent-1") {
		t.Errorf("stored credentials not replaced: %s", data)
	}
}

func TestAgent_Register_BadStatementBacksOff(t *testing.T) {
	t.Parallel() // it mostly waits on real time: overlap it with the others that do
	fb := mustStartBroker(t, &fakeBroker{statement: "stmt", auth: true})
	_, logs := mustRunAgent(t, &agent.Agent{BrokerURLs: []string{fb.url}, TLSConfig: fb.tls, StateDir: t.TempDir(), SoftwareStatement: "wrong"})
	fb.waitBackoff(t)
	_, dials := fb.counts()
	if dials != 0 {
		t.Errorf("agent dialled %d times without credentials", dials)
	}
	// The agent logs each failure before it backs off.
	if n := strings.Count(logs.String(), "invalid_software_statement"); n < 2 {
		t.Errorf("%d refused registrations logged, want one for each attempt before the last", n)
	}
}

func TestAgent_NoRegistrationServed(t *testing.T) {
	// A broker without agent authorization: the agent connects anonymously.
	fb := mustStartBroker(t, &fakeBroker{})
	mustRunAgent(t, &agent.Agent{BrokerURLs: []string{fb.url}, TLSConfig: fb.tls, SoftwareStatement: "stmt"})
	if bc := fb.next(t); bc.clientID != "" {
		t.Errorf("client %q", bc.clientID)
	}
}

func TestAgent_Failover(t *testing.T) {
	fb := mustStartBroker(t, &fakeBroker{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "wss://" + ln.Addr().String()
	ln.Close()
	mustRunAgent(t, &agent.Agent{BrokerURLs: []string{dead, fb.url}, TLSConfig: fb.tls})
	fb.next(t)
}

func TestAgent_ReconnectAfterLinkLoss(t *testing.T) {
	fb := mustStartBroker(t, &fakeBroker{})
	mustRunAgent(t, &agent.Agent{BrokerURLs: []string{fb.url}, TLSConfig: fb.tls})
	bc := fb.next(t)
	bc.c.CloseNow()
	fb.next(t)
}

func TestAgent_VersionRefusedBacksOff(t *testing.T) {
	t.Parallel() // it mostly waits on real time: overlap it with the others that do
	fb := mustStartBroker(t, &fakeBroker{welcome: func(*agentproto.Hello) agentproto.Body {
		return &agentproto.Error{Code: agentproto.CodeVersionUnsupported, Message: "too old", MinVersion: 7, MaxVersion: 9}
	}})
	_, logs := mustRunAgent(t, &agent.Agent{BrokerURLs: []string{fb.url}, TLSConfig: fb.tls})
	fb.waitBackoff(t)
	if !strings.Contains(logs.String(), "version_unsupported") {
		t.Errorf("refusal not logged:\n%s", logs)
	}
}

func TestAgent_UpdatesAndHeartbeats(t *testing.T) {
	fb := mustStartBroker(t, &fakeBroker{welcome: func(*agentproto.Hello) agentproto.Body {
		return &agentproto.Welcome{ProtocolVersion: 1, UpdateIntervalMS: 200, HeartbeatTimeoutMS: 5000}
	}})
	d := sim.New()
	mustRunAgent(t, &agent.Agent{BrokerURLs: []string{fb.url}, TLSConfig: fb.tls, Driver: d, UpdateInterval: time.Hour})
	bc := fb.next(t)

	// The broker's shorter interval wins: a heartbeat comes soon, with nothing
	// unchanged in it (the sim host report is stable).
	m := bc.read(t, agentproto.TypeUpdate)
	if u := m.Body.(*agentproto.Update); u.Sessions != nil {
		t.Errorf("heartbeat carries sessions: %+v", u)
	}
	bc.send(t, m.ID, &agentproto.Ack{})

	// A change is pushed at once.
	d.Create(context.Background(), agent.CreateRequest{ID: "new", Owner: "u"})
	for {
		m = bc.read(t, agentproto.TypeUpdate)
		bc.send(t, m.ID, &agentproto.Ack{})
		if u := m.Body.(*agentproto.Update); len(u.Sessions) == 1 && u.Sessions[0].State == agentproto.StateReady {
			break
		}
	}
	// An ack with an error makes the agent resend everything.
	m = bc.read(t, agentproto.TypeUpdate)
	bc.send(t, m.ID, &agentproto.Ack{Error: "store down"})
	m = bc.read(t, agentproto.TypeUpdate)
	if u := m.Body.(*agentproto.Update); u.Host == nil || len(u.Sessions) != 1 {
		t.Errorf("update after a failed ack = %+v", u)
	}
}

func TestAgent_DeadBrokerDetected(t *testing.T) {
	t.Parallel() // it mostly waits on real time: overlap it with the others that do
	fb := mustStartBroker(t, &fakeBroker{welcome: func(*agentproto.Hello) agentproto.Body {
		return &agentproto.Welcome{ProtocolVersion: 1, UpdateIntervalMS: 100, HeartbeatTimeoutMS: 300}
	}})
	mustRunAgent(t, &agent.Agent{BrokerURLs: []string{fb.url}, TLSConfig: fb.tls})
	fb.next(t) // never read from or acked
	fb.next(t) // so the agent gives up on the link and reconnects
}

// bigDriver returns screenshots too large for one message, and panics on
// permissions.
type bigDriver struct{ *sim.Driver }

func (bigDriver) Screenshot(ctx context.Context, id string, w, h int, f string) ([]agentproto.Image, error) {
	return []agentproto.Image{{Format: f, Data: make([]byte, agentproto.MaxMessageSize*3/4+1)}}, nil
}

func (bigDriver) SetPermissions(ctx context.Context, id, file string) error { panic("boom") }

func TestAgent_Commands(t *testing.T) {
	fb := mustStartBroker(t, &fakeBroker{})
	d := sim.New()
	d.FailOwners = map[string]string{"eve": "user eve is locked"}
	mustRunAgent(t, &agent.Agent{BrokerURLs: []string{fb.url}, TLSConfig: fb.tls, Driver: d})
	bc := fb.next(t)

	r := bc.command(t, "1", &agentproto.Command{Kind: agentproto.KindCreate, SessionID: "a", Create: &agentproto.CreateCommand{Owner: "u", Type: "VIRTUAL"}})
	if !r.OK {
		t.Fatalf("create: %+v", r)
	}
	r = bc.command(t, "2", &agentproto.Command{Kind: agentproto.KindCreate, SessionID: "b", Create: &agentproto.CreateCommand{Owner: "eve"}})
	if r.OK || r.Error != "user eve is locked" {
		t.Errorf("failing create: %+v", r)
	}
	r = bc.command(t, "3", &agentproto.Command{Kind: agentproto.KindScreenshot, SessionID: "a"})
	if !r.OK || len(r.Images) != 1 || r.Images[0].Format != agentproto.FormatPNG {
		t.Errorf("screenshot: %+v", r)
	}
	r = bc.command(t, "4", &agentproto.Command{Kind: agentproto.KindDelete, SessionID: "a"})
	if !r.OK {
		t.Errorf("delete: %+v", r)
	}
	r = bc.command(t, "5", &agentproto.Command{Kind: agentproto.KindDelete, SessionID: "a"})
	if !r.OK {
		t.Errorf("delete is not idempotent: %+v", r)
	}
}

func TestAgent_Commands_Deadline(t *testing.T) {
	fb := mustStartBroker(t, &fakeBroker{})
	d := sim.New()
	d.CreateDelay = time.Hour
	mustRunAgent(t, &agent.Agent{BrokerURLs: []string{fb.url}, TLSConfig: fb.tls, Driver: d})
	bc := fb.next(t)
	start := time.Now()
	r := bc.command(t, "1", &agentproto.Command{Kind: agentproto.KindCreate, SessionID: "a", TimeoutMS: 200, Create: &agentproto.CreateCommand{Owner: "u"}})
	if r.OK || !strings.Contains(r.Error, "deadline") {
		t.Errorf("result = %+v", r)
	}
	if el := time.Since(start); el > 10*time.Second {
		t.Errorf("took %v", el)
	}
}

func TestAgent_Commands_Concurrent(t *testing.T) {
	fb := mustStartBroker(t, &fakeBroker{})
	d := sim.New()
	d.CreateDelay = 300 * time.Millisecond
	mustRunAgent(t, &agent.Agent{BrokerURLs: []string{fb.url}, TLSConfig: fb.tls, Driver: d})
	bc := fb.next(t)
	const n = 20
	start := time.Now()
	for i := range n {
		bc.send(t, fmt.Sprint(i), &agentproto.Command{Kind: agentproto.KindCreate, SessionID: fmt.Sprint("s", i), Create: &agentproto.CreateCommand{Owner: "u"}})
	}
	for got := 0; got < n; {
		m := bc.read(t, agentproto.TypeResult, agentproto.TypeUpdate)
		if m.Type == agentproto.TypeUpdate {
			bc.send(t, m.ID, &agentproto.Ack{})
			continue
		}
		if r := m.Body.(*agentproto.Result); !r.OK {
			t.Errorf("create %s: %s", m.ID, r.Error)
		}
		got++
	}
	if el := time.Since(start); el > n*300*time.Millisecond/2 {
		t.Errorf("%d creates of 300 ms took %v: not concurrent", n, el)
	}
}

func TestAgent_Commands_Misbehaving(t *testing.T) {
	fb := mustStartBroker(t, &fakeBroker{})
	d := bigDriver{sim.New()}
	d.Create(context.Background(), agent.CreateRequest{ID: "a"})
	mustRunAgent(t, &agent.Agent{BrokerURLs: []string{fb.url}, TLSConfig: fb.tls, Driver: d})
	bc := fb.next(t)
	r := bc.command(t, "1", &agentproto.Command{Kind: agentproto.KindScreenshot, SessionID: "a"})
	if r.OK || !strings.Contains(r.Error, "too large") {
		t.Errorf("oversized screenshot: %+v", r)
	}
	r = bc.command(t, "2", &agentproto.Command{Kind: agentproto.KindPermissions, SessionID: "a", Permissions: &agentproto.PermissionsCommand{File: "x"}})
	if r.OK || r.Error != "internal agent error" {
		t.Errorf("panicking driver: %+v", r)
	}
	// The link survived both.
	r = bc.command(t, "3", &agentproto.Command{Kind: agentproto.KindDelete, SessionID: "a"})
	if !r.OK {
		t.Errorf("delete: %+v", r)
	}
}

func TestAgent_BadBrokerMessage(t *testing.T) {
	fb := mustStartBroker(t, &fakeBroker{})
	mustRunAgent(t, &agent.Agent{BrokerURLs: []string{fb.url}, TLSConfig: fb.tls})
	bc := fb.next(t)
	bc.c.Write(context.Background(), websocket.MessageText, []byte(`{"type":"command","id":"1","body":{"kind":"format-disk","session_id":"x"}}`))
	m := bc.read(t, agentproto.TypeError)
	if e := m.Body.(*agentproto.Error); e.Code != agentproto.CodeBadMessage {
		t.Errorf("error = %+v", e)
	}
	bc.c.CloseNow() // rather than wait for the agent's close handshake
	fb.next(t)      // and reconnects
}

// Unknown message types are skipped, so that a broker may add some.
func TestAgent_UnknownMessageSkipped(t *testing.T) {
	fb := mustStartBroker(t, &fakeBroker{})
	mustRunAgent(t, &agent.Agent{BrokerURLs: []string{fb.url}, TLSConfig: fb.tls})
	bc := fb.next(t)
	bc.c.Write(context.Background(), websocket.MessageText, []byte(`{"type":"future","id":"9","body":{}}`))
	r := bc.command(t, "1", &agentproto.Command{Kind: agentproto.KindDelete, SessionID: "x"})
	if !r.OK {
		t.Errorf("result = %+v", r)
	}
	if _, dials := fb.counts(); dials != 1 {
		t.Errorf("%d dials", dials)
	}
}
