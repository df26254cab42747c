package agenthub_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"image/jpeg"
	"image/png"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/agent"
	"github.com/berth-dev/berth/internal/agenthub"
	"github.com/berth-dev/berth/internal/agentproto"
	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/driver/sim"
	"github.com/berth-dev/berth/internal/idlepoll"
	"github.com/berth-dev/berth/internal/poll"
	"github.com/berth-dev/berth/internal/tlsaccept"
	"github.com/coder/websocket"
)

// event is one recorded Service call.
type event struct {
	kind     string // "connected", "update", "changes", "figures", "disconnected"
	clientID string
	serverID string
	info     *broker.ServerInfo
	sessions []broker.SessionReport
	figures  broker.HostFigures
}

// fakeService records the hub's calls; ConnectErr, when set, decides the
// result of AgentConnected.
type fakeService struct {
	events     chan event
	ConnectErr func(clientID, serverID string) error
}

var _ agenthub.Service = (*fakeService)(nil)

func newFakeService() *fakeService { return &fakeService{events: make(chan event, 10000)} }

func (f *fakeService) AgentConnected(ctx context.Context, clientID, serverID string, info broker.ServerInfo, sessions []broker.SessionReport) error {
	if f.ConnectErr != nil {
		if err := f.ConnectErr(clientID, serverID); err != nil {
			return err
		}
	}
	f.events <- event{kind: "connected", clientID: clientID, serverID: serverID, info: &info, sessions: sessions}
	return nil
}

func (f *fakeService) AgentUpdate(ctx context.Context, serverID string, info *broker.ServerInfo, sessions []broker.SessionReport) error {
	f.events <- event{kind: "update", serverID: serverID, info: info, sessions: sessions}
	return nil
}

func (f *fakeService) AgentSessionChanges(ctx context.Context, serverID string, changes []broker.SessionReport) error {
	f.events <- event{kind: "changes", serverID: serverID, sessions: changes}
	return nil
}

func (f *fakeService) AgentFigures(ctx context.Context, serverID string, figures broker.HostFigures) error {
	f.events <- event{kind: "figures", serverID: serverID, figures: figures}
	return nil
}

func (f *fakeService) AgentDisconnected(ctx context.Context, serverID string) {
	f.events <- event{kind: "disconnected", serverID: serverID}
}

// wait returns the next event of kind for serverID that matches ok (nil: any),
// skipping others.
func (f *fakeService) wait(t testing.TB, kind, serverID string, ok func(event) bool) event {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case e := <-f.events:
			if e.kind == kind && e.serverID == serverID && (ok == nil || ok(e)) {
				return e
			}
		case <-timeout:
			t.Fatalf("no %s event for %s", kind, serverID)
		}
	}
}

// none fails if an event of kind for serverID has been recorded; it drains
// the events recorded so far and does not wait for more. Call it once the
// hub is past the point where it would have made the call (a later event, a
// log line, or the hub closed).
func (f *fakeService) none(t testing.TB, kind, serverID string) {
	t.Helper()
	for {
		select {
		case e := <-f.events:
			if e.kind == kind && e.serverID == serverID {
				t.Fatalf("unexpected %s event for %s", kind, serverID)
			}
		default:
			return
		}
	}
}

// fakeAuth is the broker's agent registration and authentication, in small.
type fakeAuth struct {
	statement string
	mu        sync.Mutex
	clients   map[string]string // id → secret
	n         int
}

func (f *fakeAuth) AuthenticateAgent(ctx context.Context, id, secret string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if s, ok := f.clients[id]; ok && secret != "" && s == secret {
		return id, nil
	}
	return "", errors.New("invalid client")
}

func (f *fakeAuth) register(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Statement string `json:"software_statement"`
		Name      string `json:"client_name"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Statement != f.statement {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, `{"error":"invalid_software_statement"}`)
		return
	}
	f.mu.Lock()
	f.n++
	id, secret := fmt.Sprintf("agent-%d", f.n), fmt.Sprintf("secret-%d-%d", f.n, time.Now().UnixNano())
	if f.clients == nil {
		f.clients = map[string]string{}
	}
	f.clients[id] = secret
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	json.NewEncoder(w).Encode(map[string]any{"client_id": id, "client_secret": secret, "client_id_issued_at": time.Now().Unix()})
}

func (f *fakeAuth) registrations() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n
}

// env is a hub behind a TLS test server.
type env struct {
	hub  *agenthub.Hub
	svc  *fakeService
	srv  *httptest.Server
	url  string // wss://127.0.0.1:port
	tls  *tls.Config
	logs *syncBuffer
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if os.Getenv("BERTH_TEST_LOG") != "" {
		os.Stderr.Write(p)
	}
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// mustStartHub starts a hub behind tlsaccept's listener, as berth-broker's
// agent connector is, so that idle links park on their sockets.
func mustStartHub(t testing.TB, opts agenthub.Options, auth *fakeAuth, configure ...func(*http.Server)) *env {
	t.Helper()
	return mustStartHubOn(t, false, opts, auth, configure...)
}

// mustStartHubOn is mustStartHub; with plain, behind crypto/tls's own
// listener, whose connections cannot park (links block in their reads).
func mustStartHubOn(t testing.TB, plain bool, opts agenthub.Options, auth *fakeAuth, configure ...func(*http.Server)) *env {
	t.Helper()
	e := &env{svc: newFakeService(), logs: &syncBuffer{}}
	opts.Logger = slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var a agenthub.Authenticator
	if auth != nil {
		a = auth
	}
	e.hub = agenthub.New(e.svc, a, opts)
	mux := http.NewServeMux()
	mux.Handle("/agent/connect", e.hub.Handler())
	if auth != nil {
		mux.HandleFunc("POST /agent/register", auth.register)
	}
	e.srv = httptest.NewUnstartedServer(mux)
	for _, f := range configure {
		f(e.srv.Config)
	}
	cert, caPEM := selfSigned(t)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	e.tls = &tls.Config{RootCAs: pool}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}}
	if plain {
		e.srv.Listener = tls.NewListener(e.srv.Listener, cfg)
	} else {
		e.srv.Listener = tlsaccept.New(e.srv.Listener, cfg, tlsaccept.Options{Name: "agent"})
	}
	e.srv.Start() // serves the TLS listener; the client below trusts its certificate
	e.srv.URL = "https://" + e.srv.Listener.Addr().String()
	e.srv.Client().Transport.(*http.Transport).TLSClientConfig = e.tls.Clone()
	t.Cleanup(e.srv.Close)
	t.Cleanup(func() { e.hub.Close() })
	e.url = "wss://" + e.srv.Listener.Addr().String()
	return e
}

// mustStartAgent runs a real agent against the hub until the test ends or
// stop is called.
func (e *env) mustStartAgent(t testing.TB, serverID string, d agent.Driver, mod func(*agent.Agent)) (stop func()) {
	t.Helper()
	a := &agent.Agent{
		BrokerURLs:     []string{e.url},
		TLSConfig:      e.tls,
		ServerID:       serverID,
		Driver:         d,
		UpdateInterval: time.Second,
		Version:        "0.0.1-test",
		Logger:         slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Report: func(ctx context.Context) (agentproto.HostReport, error) {
			return agentproto.HostReport{
				Hostname: "host-" + serverID, IP: "10.1.2.3", WebURLPath: "/",
				Endpoints: []agentproto.Endpoint{{IP: "10.1.2.3", Port: 8443, Protocol: agentproto.ProtocolHTTP}},
				OS:        agentproto.OS{Family: "linux", Name: "Debian"},
				CPU:       agentproto.CPU{Count: 4},
				Tags:      map[string]string{"pool": "test"},
			}, nil
		},
	}
	if mod != nil {
		mod(a)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	stop = sync.OnceFunc(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("agent Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("agent Run did not return")
		}
	})
	t.Cleanup(stop)
	return stop
}

// dial opens a raw protocol connection, for tests that misbehave on purpose.
func (e *env) dial(t testing.TB) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, e.url+"/agent/connect", &websocket.DialOptions{HTTPClient: e.srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadLimit(agentproto.MaxMessageSize)
	t.Cleanup(func() { c.CloseNow() })
	return c
}

func write(t testing.TB, c *websocket.Conn, id string, b agentproto.Body) {
	t.Helper()
	data, err := agentproto.Encode(id, b)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Write(context.Background(), websocket.MessageText, data); err != nil {
		t.Fatal(err)
	}
}

func read(t testing.TB, c *websocket.Conn) *agentproto.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, data, err := c.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	m, err := agentproto.Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func hello(serverID string) *agentproto.Hello {
	return &agentproto.Hello{ProtocolVersion: agentproto.ProtocolVersion, ServerID: serverID, AgentVersion: "raw", Host: agentproto.HostReport{Hostname: "raw"}}
}

func TestHub_Hello(t *testing.T) {
	e := mustStartHub(t, agenthub.Options{}, nil)
	d := sim.New()
	if err := d.Create(context.Background(), agent.CreateRequest{ID: "pre", Owner: "alice"}); err != nil {
		t.Fatal(err)
	}
	e.mustStartAgent(t, "srv-hello", d, nil)
	ev := e.svc.wait(t, "connected", "srv-hello", nil)
	if ev.clientID != "" {
		t.Errorf("client id = %q, want anonymous", ev.clientID)
	}
	i := ev.info
	if i.Hostname != "host-srv-hello" || i.IP != "10.1.2.3" || i.Port != 8443 || i.Driver != "sim" ||
		i.AgentVersion != "0.0.1-test" || !i.Healthy || i.Host.OSFamily != "linux" || i.Host.CPUs != 4 || i.Tags["pool"] != "test" {
		t.Errorf("info = %+v", i)
	}
	if len(ev.sessions) != 1 || ev.sessions[0].ID != "pre" || ev.sessions[0].State != "READY" || ev.sessions[0].Owner != "alice" {
		t.Errorf("sessions = %+v", ev.sessions)
	}
	poll.Until(t, 20*time.Second, "Connected", func() bool { return e.hub.Connected("srv-hello") })
	if n := e.hub.Count(); n != 1 {
		t.Errorf("Count = %d", n)
	}
}

func TestHub_Update(t *testing.T) {
	e := mustStartHub(t, agenthub.Options{UpdateInterval: 300 * time.Millisecond}, nil)
	d := sim.New()
	e.mustStartAgent(t, "srv-up", d, nil)
	e.svc.wait(t, "connected", "srv-up", nil)

	// A change is pushed at once, as a change (protocol version 3).
	if err := d.Create(context.Background(), agent.CreateRequest{ID: "s1", Owner: "bob"}); err != nil {
		t.Fatal(err)
	}
	e.svc.wait(t, "changes", "srv-up", func(ev event) bool {
		return len(ev.sessions) == 1 && ev.sessions[0].ID == "s1" && ev.sessions[0].State == "READY"
	})
	d.SimulateExit("s1")
	e.svc.wait(t, "changes", "srv-up", func(ev event) bool {
		return len(ev.sessions) == 1 && ev.sessions[0].ID == "s1" && ev.sessions[0].State == "DELETED"
	})

	// Health changes travel in the host report.
	d.SetHealth(false, "desktop service down")
	e.svc.wait(t, "update", "srv-up", func(ev event) bool {
		return ev.info != nil && !ev.info.Healthy && ev.info.HealthReason == "desktop service down"
	})
	// With nothing changed the agent still sends heartbeats.
	e.svc.wait(t, "update", "srv-up", func(ev event) bool { return ev.sessions == nil })
}

func TestHub_Disconnect(t *testing.T) {
	e := mustStartHub(t, agenthub.Options{}, nil)
	stop := e.mustStartAgent(t, "srv-bye", sim.New(), nil)
	e.svc.wait(t, "connected", "srv-bye", nil)
	poll.Until(t, 20*time.Second, "Connected", func() bool { return e.hub.Connected("srv-bye") })
	stop()
	e.svc.wait(t, "disconnected", "srv-bye", nil)
	if e.hub.Connected("srv-bye") || e.hub.Count() != 0 {
		t.Error("link still registered")
	}
	_, err := e.hub.Dispatch(context.Background(), "srv-bye", broker.Command{Kind: broker.CommandDelete, SessionID: "x"})
	if !errors.Is(err, broker.ErrAgentUnreachable) {
		t.Errorf("Dispatch after disconnect: %v", err)
	}
}

func TestHub_Dispatch(t *testing.T) {
	e := mustStartHub(t, agenthub.Options{}, nil)
	d := sim.New()
	d.FailOwners = map[string]string{"mallory": "no such user mallory"}
	e.mustStartAgent(t, "srv-cmd", d, nil)
	poll.Until(t, 20*time.Second, "Connected", func() bool { return e.hub.Connected("srv-cmd") })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	create := broker.Command{Kind: broker.CommandCreate, SessionID: "s1", Create: &broker.CreateCommand{
		Name: "one", Owner: "alice", Type: "VIRTUAL", MaxConcurrentClients: 3,
		Spec: broker.SessionSpec{PermissionsFile: "[permissions]\n%owner% allow builtin\n"},
	}}
	if _, err := e.hub.Dispatch(ctx, "srv-cmd", create); err != nil {
		t.Fatalf("create: %v", err)
	}
	list, _ := d.Sessions(ctx)
	if len(list) != 1 || list[0].ID != "s1" || list[0].Owner != "alice" || list[0].MaxConcurrentClients != 3 || list[0].State != "READY" {
		t.Fatalf("sessions after create = %+v", list)
	}
	if p, _ := d.Permissions("s1"); !strings.Contains(p, "%owner%") {
		t.Errorf("initial permissions = %q", p)
	}

	if _, err := e.hub.Dispatch(ctx, "srv-cmd", broker.Command{Kind: broker.CommandPermissions, SessionID: "s1", Permissions: "[permissions]\nbob allow display\n"}); err != nil {
		t.Fatalf("permissions: %v", err)
	}
	if p, _ := d.Permissions("s1"); p != "[permissions]\nbob allow display\n" {
		t.Errorf("permissions = %q", p)
	}

	for _, format := range []string{"png", "jpeg"} {
		res, err := e.hub.Dispatch(ctx, "srv-cmd", broker.Command{Kind: broker.CommandScreenshot, SessionID: "s1",
			Screenshot: &broker.ScreenshotCommand{MaxWidth: 640, MaxHeight: 480, Format: format}})
		if err != nil {
			t.Fatalf("screenshot %s: %v", format, err)
		}
		if len(res.Images) != 1 || res.Images[0].Format != format || !res.Images[0].Primary || res.Images[0].CreationTime.IsZero() {
			t.Fatalf("screenshot %s result = %+v", format, res.Images)
		}
		decode := png.DecodeConfig
		if format == "jpeg" {
			decode = jpeg.DecodeConfig
		}
		cfg, err := decode(bytes.NewReader(res.Images[0].Data))
		if err != nil {
			t.Fatalf("decode %s: %v", format, err)
		}
		if cfg.Width != 640 || cfg.Height != 360 {
			t.Errorf("%s size = %dx%d, want 640x360", format, cfg.Width, cfg.Height)
		}
	}

	if _, err := e.hub.Dispatch(ctx, "srv-cmd", broker.Command{Kind: broker.CommandDelete, SessionID: "s1"}); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if list, _ := d.Sessions(ctx); len(list) != 0 {
		t.Errorf("sessions after delete = %+v", list)
	}

	// Agent failures come back as CommandError with the driver's reason.
	_, err := e.hub.Dispatch(ctx, "srv-cmd", broker.Command{Kind: broker.CommandCreate, SessionID: "s2", Create: &broker.CreateCommand{Owner: "mallory"}})
	var ce *broker.CommandError
	if !errors.As(err, &ce) || ce.Reason != "no such user mallory" {
		t.Errorf("failed create: err = %v, want CommandError", err)
	}
	_, err = e.hub.Dispatch(ctx, "srv-cmd", broker.Command{Kind: broker.CommandScreenshot, SessionID: "gone"})
	if !errors.As(err, &ce) || ce.Reason != sim.ErrNotFound.Error() {
		t.Errorf("screenshot of unknown session: err = %v, want CommandError", err)
	}

	// No link, bad commands.
	if _, err := e.hub.Dispatch(ctx, "srv-none", broker.Command{Kind: broker.CommandDelete, SessionID: "s"}); !errors.Is(err, broker.ErrAgentUnreachable) {
		t.Errorf("unknown server: err = %v", err)
	}
	if _, err := e.hub.Dispatch(ctx, "srv-cmd", broker.Command{Kind: "reboot", SessionID: "s"}); err == nil {
		t.Error("unknown kind accepted")
	}
	if _, err := e.hub.Dispatch(ctx, "srv-cmd", broker.Command{Kind: broker.CommandCreate, SessionID: "s"}); err == nil {
		t.Error("create without body accepted")
	}
}

func TestHub_Dispatch_Deadline(t *testing.T) {
	e := mustStartHub(t, agenthub.Options{}, nil)
	d := sim.New()
	d.CreateDelay = time.Hour
	e.mustStartAgent(t, "srv-slow", d, nil)
	poll.Until(t, 20*time.Second, "Connected", func() bool { return e.hub.Connected("srv-slow") })

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := e.hub.Dispatch(ctx, "srv-slow", broker.Command{Kind: broker.CommandCreate, SessionID: "s1", Create: &broker.CreateCommand{Owner: "alice"}})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want DeadlineExceeded", err)
	}
	// The deadline travelled with the command: the agent gave up too, and the
	// half-created session is gone.
	poll.Until(t, 20*time.Second, "agent to abandon the create", func() bool {
		list, _ := d.Sessions(context.Background())
		return len(list) == 0
	})
	if !e.hub.Connected("srv-slow") {
		t.Error("timed-out dispatch broke the link")
	}
}

func TestHub_Dispatch_Concurrent(t *testing.T) {
	e := mustStartHub(t, agenthub.Options{}, nil)
	d := sim.New()
	d.CreateDelay = 50 * time.Millisecond
	e.mustStartAgent(t, "srv-many", d, nil)
	poll.Until(t, 20*time.Second, "Connected", func() bool { return e.hub.Connected("srv-many") })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	const n = 40
	var wg sync.WaitGroup
	errs := make(chan error, 2*n)
	for i := range n {
		wg.Go(func() {
			id := fmt.Sprintf("s%02d", i)
			if _, err := e.hub.Dispatch(ctx, "srv-many", broker.Command{Kind: broker.CommandCreate, SessionID: id, Create: &broker.CreateCommand{Owner: "u"}}); err != nil {
				errs <- fmt.Errorf("create %s: %w", id, err)
				return
			}
			res, err := e.hub.Dispatch(ctx, "srv-many", broker.Command{Kind: broker.CommandScreenshot, SessionID: id, Screenshot: &broker.ScreenshotCommand{MaxWidth: 160}})
			if err != nil || len(res.Images) != 1 {
				errs <- fmt.Errorf("screenshot %s: %v", id, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if list, _ := d.Sessions(ctx); len(list) != n {
		t.Errorf("%d sessions, want %d", len(list), n)
	}
}

func TestHub_Screenshot4K(t *testing.T) {
	if testing.Short() {
		t.Skip("encodes a 4K PNG of several MB")
	}
	e := mustStartHub(t, agenthub.Options{}, nil)
	d := sim.New()
	d.ScreenWidth, d.ScreenHeight, d.Noise = 3840, 2160, true
	e.mustStartAgent(t, "srv-4k", d, nil)
	poll.Until(t, 20*time.Second, "Connected", func() bool { return e.hub.Connected("srv-4k") })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := d.Create(ctx, agent.CreateRequest{ID: "big", Owner: "alice"}); err != nil {
		t.Fatal(err)
	}
	res, err := e.hub.Dispatch(ctx, "srv-4k", broker.Command{Kind: broker.CommandScreenshot, SessionID: "big", Screenshot: &broker.ScreenshotCommand{Format: "png"}})
	if err != nil {
		t.Fatal(err)
	}
	data := res.Images[0].Data
	cfg, err := png.DecodeConfig(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Width != 3840 || cfg.Height != 2160 {
		t.Errorf("size = %dx%d", cfg.Width, cfg.Height)
	}
	if len(data) < 3<<20 {
		t.Errorf("image is only %d bytes; the test wants several MB", len(data))
	}
	t.Logf("4K noise PNG: %.1f MiB", float64(len(data))/(1<<20))
	if !e.hub.Connected("srv-4k") {
		t.Error("link lost")
	}
}

func TestHub_VersionRefused(t *testing.T) {
	e := mustStartHub(t, agenthub.Options{}, nil)
	for _, v := range []int{agentproto.ProtocolVersion + 1, agentproto.MinProtocolVersion - 1} {
		c := e.dial(t)
		// A future agent's hello: only protocol_version is sure to be readable.
		raw := fmt.Sprintf(`{"type":"hello","body":{"protocol_version":%d,"server_id":"srv-v","future":{"x":1}}}`, v)
		if err := c.Write(context.Background(), websocket.MessageText, []byte(raw)); err != nil {
			t.Fatal(err)
		}
		m := read(t, c)
		er, ok := m.Body.(*agentproto.Error)
		if !ok || er.Code != agentproto.CodeVersionUnsupported || er.MinVersion != agentproto.MinProtocolVersion || er.MaxVersion != agentproto.ProtocolVersion {
			t.Fatalf("version %d: got %#v", v, m.Body)
		}
		_, _, err := c.Read(context.Background())
		if websocket.CloseStatus(err) != websocket.StatusPolicyViolation {
			t.Errorf("version %d: close = %v", v, err)
		}
	}
	e.hub.Close() // waits for the connection handlers
	e.svc.none(t, "connected", "srv-v")
}

func TestHub_BadFirstMessage(t *testing.T) {
	e := mustStartHub(t, agenthub.Options{}, nil)
	c := e.dial(t)
	write(t, c, "1", &agentproto.Update{})
	m := read(t, c)
	if er, ok := m.Body.(*agentproto.Error); !ok || er.Code != agentproto.CodeBadMessage {
		t.Fatalf("got %+v", m.Body)
	}
}

func TestHub_AuthRefused(t *testing.T) {
	auth := &fakeAuth{statement: "stmt", clients: map[string]string{"agent-x": "right-secret"}}
	e := mustStartHub(t, agenthub.Options{RequireAuth: true}, auth)
	for name, set := range map[string]func(*http.Request){
		"none":         func(*http.Request) {},
		"wrong secret": func(r *http.Request) { r.SetBasicAuth("agent-x", "wrong-secret-xyzzy") },
		"unknown":      func(r *http.Request) { r.SetBasicAuth("agent-y", "right-secret") },
	} {
		req, _ := http.NewRequest("GET", e.srv.URL+"/agent/connect", nil)
		req.Header.Set("Connection", "Upgrade")
		req.Header.Set("Upgrade", "websocket")
		req.Header.Set("Sec-WebSocket-Version", "13")
		req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
		set(req)
		resp, err := e.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("WWW-Authenticate") == "" {
			t.Errorf("%s: status %d", name, resp.StatusCode)
		}
	}
	if logs := e.logs.String(); strings.Contains(logs, "wrong-secret-xyzzy") || !strings.Contains(logs, "agent-x") {
		t.Errorf("logs leak the secret or miss the client id:\n%s", logs)
	}
	// A real agent without a software statement is refused and keeps trying.
	const refused = "agent refused: no credentials"
	before := strings.Count(e.logs.String(), refused)
	e.mustStartAgent(t, "srv-noauth", sim.New(), nil)
	poll.Until(t, 20*time.Second, "the agent refused twice", func() bool {
		return strings.Count(e.logs.String(), refused) >= before+2
	})
	e.hub.Close() // waits for the connection handlers
	e.svc.none(t, "connected", "srv-noauth")
}

func TestHub_AuthRegisterAndConnect(t *testing.T) {
	auth := &fakeAuth{statement: "stmt"}
	e := mustStartHub(t, agenthub.Options{RequireAuth: true}, auth)
	dir := t.TempDir()
	stop := e.mustStartAgent(t, "srv-auth", sim.New(), func(a *agent.Agent) {
		a.StateDir = dir
		a.SoftwareStatement = "stmt"
	})
	ev := e.svc.wait(t, "connected", "srv-auth", nil)
	if ev.clientID != "agent-1" {
		t.Errorf("client id = %q, want agent-1", ev.clientID)
	}
	stop()
	// Restarted, the agent reuses its stored credentials.
	e.mustStartAgent(t, "srv-auth", sim.New(), func(a *agent.Agent) {
		a.StateDir = dir
		a.SoftwareStatement = "stmt"
	})
	ev = e.svc.wait(t, "connected", "srv-auth", nil)
	if ev.clientID != "agent-1" || auth.registrations() != 1 {
		t.Errorf("client id = %q after %d registrations", ev.clientID, auth.registrations())
	}
	if logs := e.logs.String(); strings.Contains(logs, "secret-1-") {
		t.Error("logs contain the client secret")
	}
}

func TestHub_Conflict(t *testing.T) {
	e := mustStartHub(t, agenthub.Options{}, nil)
	e.svc.ConnectErr = func(clientID, serverID string) error {
		if serverID == "srv-taken" {
			return fmt.Errorf("record server: %w", broker.ErrConflict)
		}
		return nil
	}
	c := e.dial(t)
	write(t, c, "", hello("srv-taken"))
	m := read(t, c)
	if er, ok := m.Body.(*agentproto.Error); !ok || er.Code != agentproto.CodeConflict {
		t.Fatalf("got %+v", m.Body)
	}
	if e.hub.Connected("srv-taken") {
		t.Error("conflicting link registered")
	}
}

func TestHub_ReconnectReplacesOldLink(t *testing.T) {
	e := mustStartHub(t, agenthub.Options{}, nil)
	old := e.dial(t)
	write(t, old, "", hello("srv-re"))
	if _, ok := read(t, old).Body.(*agentproto.Welcome); !ok {
		t.Fatal("no welcome")
	}
	e.svc.wait(t, "connected", "srv-re", nil)

	// The agent reconnects while the old link still stands.
	nu := e.dial(t)
	write(t, nu, "", hello("srv-re"))
	if _, ok := read(t, nu).Body.(*agentproto.Welcome); !ok {
		t.Fatal("no welcome on the new link")
	}
	e.svc.wait(t, "connected", "srv-re", nil)

	m := read(t, old)
	if er, ok := m.Body.(*agentproto.Error); !ok || er.Code != agentproto.CodeReplaced {
		t.Fatalf("old link got %+v", m.Body)
	}
	if _, _, err := old.Read(context.Background()); websocket.CloseStatus(err) == -1 {
		t.Errorf("old link not closed cleanly: %v", err)
	}
	// The old link's end must not mark the server unreachable: once its
	// handler has logged how it ended, it has made or skipped the call.
	poll.Until(t, 20*time.Second, "the old link's end", func() bool {
		logs := e.logs.String()
		return strings.Contains(logs, "replaced agent link closed") || strings.Contains(logs, "agent disconnected")
	})
	e.svc.none(t, "disconnected", "srv-re")
	if !e.hub.Connected("srv-re") || e.hub.Count() != 1 {
		t.Fatal("new link not current")
	}
	// Updates of the new link flow; commands go to it.
	write(t, nu, "u1", &agentproto.Update{Sessions: []agentproto.Session{}})
	if a, ok := read(t, nu).Body.(*agentproto.Ack); !ok || a.Error != "" {
		t.Fatal("no ack")
	}
	e.svc.wait(t, "update", "srv-re", nil)
	go func() {
		m := read(t, nu)
		write(t, nu, m.ID, &agentproto.Result{OK: true})
	}()
	if _, err := e.hub.Dispatch(context.Background(), "srv-re", broker.Command{Kind: broker.CommandDelete, SessionID: "s"}); err != nil {
		t.Fatal(err)
	}
	nu.Close(websocket.StatusNormalClosure, "")
	e.svc.wait(t, "disconnected", "srv-re", nil)
}

// TestHub_IdleLinkParks: between messages an agent link holds no goroutine:
// the link waits in the shared idle poller (internal/idlepoll), not in a
// goroutine parked on its socket or inside a TLS read. Updates go on
// flowing after the link was idle.
func TestHub_IdleLinkParks(t *testing.T) {
	e := mustStartHub(t, agenthub.Options{UpdateInterval: 300 * time.Millisecond}, nil)
	e.mustStartAgent(t, "srv-park", sim.New(), nil)
	e.svc.wait(t, "update", "srv-park", nil) // a message went through the read path
	p, err := idlepoll.Shared()
	if err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 20*time.Second, "the link idle with no goroutine", func() bool {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		for g := range strings.SplitSeq(string(buf), "\n\n") {
			// The agent's own reader, in this process too, is not the link's.
			if strings.Contains(g, "agenthub.(*link).wait") || strings.Contains(g, "agenthub.(*link).wake") ||
				strings.Contains(g, "agenthub.(*link).readMessages") {
				return false
			}
		}
		return p.Len() >= 1
	})
	e.svc.wait(t, "update", "srv-park", nil) // woken by the poller
	e.svc.wait(t, "update", "srv-park", nil)
}

// TestHub_BlockingReads: behind a listener whose connections cannot park,
// links read, take commands and time out all the same.
func TestHub_BlockingReads(t *testing.T) {
	e := mustStartHubOn(t, true, agenthub.Options{UpdateInterval: 100 * time.Millisecond, HeartbeatTimeout: 400 * time.Millisecond}, nil)
	d := sim.New()
	e.mustStartAgent(t, "srv-blocking", d, nil)
	poll.Until(t, 20*time.Second, "Connected", func() bool { return e.hub.Connected("srv-blocking") })
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	create := broker.Command{Kind: broker.CommandCreate, SessionID: "b1", Create: &broker.CreateCommand{Owner: "alice", Type: "VIRTUAL"}}
	if _, err := e.hub.Dispatch(ctx, "srv-blocking", create); err != nil {
		t.Fatalf("create: %v", err)
	}
	e.svc.wait(t, "update", "srv-blocking", func(ev event) bool { return ev.sessions == nil })

	c := e.dial(t)
	write(t, c, "", hello("srv-blocking-silent"))
	if _, ok := read(t, c).Body.(*agentproto.Welcome); !ok {
		t.Fatal("no welcome")
	}
	e.svc.wait(t, "disconnected", "srv-blocking-silent", nil)
}

func TestHub_HeartbeatTimeout(t *testing.T) {
	e := mustStartHub(t, agenthub.Options{UpdateInterval: 100 * time.Millisecond, HeartbeatTimeout: 300 * time.Millisecond}, nil)
	c := e.dial(t)
	write(t, c, "", hello("srv-silent"))
	m := read(t, c)
	w, ok := m.Body.(*agentproto.Welcome)
	if !ok || w.UpdateIntervalMS != 100 || w.HeartbeatTimeoutMS != 300 {
		t.Fatalf("welcome = %+v", m.Body)
	}
	// Say nothing more: the hub gives up on the link.
	e.svc.wait(t, "disconnected", "srv-silent", nil)
	if e.hub.Connected("srv-silent") {
		t.Error("silent link still registered")
	}
}

func TestHub_LinkLossFailsDispatch(t *testing.T) {
	e := mustStartHub(t, agenthub.Options{}, nil)
	c := e.dial(t)
	write(t, c, "", hello("srv-lost"))
	read(t, c)
	errc := make(chan error, 1)
	go func() {
		_, err := e.hub.Dispatch(context.Background(), "srv-lost", broker.Command{Kind: broker.CommandDelete, SessionID: "s"})
		errc <- err
	}()
	read(t, c) // the command; never answered
	c.CloseNow()
	select {
	case err := <-errc:
		if !errors.Is(err, broker.ErrAgentUnreachable) {
			t.Errorf("err = %v, want ErrAgentUnreachable", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Dispatch still waiting")
	}
}

func TestHub_Close(t *testing.T) {
	e := mustStartHub(t, agenthub.Options{}, nil)
	d := sim.New()
	d.CreateDelay = time.Hour
	e.mustStartAgent(t, "srv-close", d, nil)
	poll.Until(t, 20*time.Second, "Connected", func() bool { return e.hub.Connected("srv-close") })
	errc := make(chan error, 1)
	go func() {
		_, err := e.hub.Dispatch(context.Background(), "srv-close", broker.Command{Kind: broker.CommandCreate, SessionID: "s", Create: &broker.CreateCommand{Owner: "u"}})
		errc <- err
	}()
	poll.Until(t, 20*time.Second, "create to start", func() bool {
		list, _ := d.Sessions(context.Background())
		return len(list) == 1
	})
	if err := e.hub.Close(); err != nil {
		t.Fatal(err)
	}
	// Close waited for the link's teardown, AgentDisconnected included.
	select {
	case ev := <-drain(e.svc.events, "disconnected"):
		if ev.serverID != "srv-close" {
			t.Errorf("disconnected %s", ev.serverID)
		}
	default:
		t.Error("Close returned before AgentDisconnected")
	}
	if err := <-errc; !errors.Is(err, broker.ErrAgentUnreachable) {
		t.Errorf("pending dispatch: err = %v", err)
	}
	if e.hub.Count() != 0 {
		t.Error("links left after Close")
	}
	// The agent keeps retrying, and is turned away.
	resp, err := e.srv.Client().Get(e.srv.URL + "/agent/connect")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("connect after Close: %d", resp.StatusCode)
	}
	e.hub.Close() // twice is fine
}

// Close ends the links still waiting for their hello: it tells the agent
// the broker shuts down and returns without waiting for the hello's
// deadline (an hour here).
func TestHub_CloseDuringHandshake(t *testing.T) {
	e := mustStartHub(t, agenthub.Options{HeartbeatTimeout: time.Hour}, nil)
	c := e.dial(t) // sends no hello
	// The link is in handshake once the hub admitted the upgrade; a hello
	// from another agent passes the same path, so wait for it to link.
	d := sim.New()
	e.mustStartAgent(t, "srv-other", d, nil)
	e.svc.wait(t, "connected", "srv-other", nil)
	closed := make(chan error, 1)
	go func() { closed <- e.hub.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Close still waiting for a link in handshake")
	}
	m := read(t, c)
	if er, ok := m.Body.(*agentproto.Error); !ok || er.Code != agentproto.CodeShuttingDown {
		t.Fatalf("link in handshake got %s %+v, want error %s", m.Type, m.Body, agentproto.CodeShuttingDown)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, _, err := c.Read(ctx); websocket.CloseStatus(err) != websocket.StatusGoingAway {
		t.Errorf("then: %v, want close status going away", err)
	}
}

// drain returns a channel holding the first buffered event of kind, if any.
func drain(events chan event, kind string) chan event {
	out := make(chan event, 1)
	for {
		select {
		case ev := <-events:
			if ev.kind == kind {
				out <- ev
				return out
			}
		default:
			return out
		}
	}
}

// The broker may run its agent port with server-wide timeouts; links must
// outlive them (net/http clears the deadlines of a hijacked connection).
func TestHub_ServerTimeoutsSpareLinks(t *testing.T) {
	e := mustStartHub(t, agenthub.Options{}, nil, func(s *http.Server) {
		s.ReadTimeout, s.WriteTimeout = 300*time.Millisecond, 300*time.Millisecond
	})
	d := sim.New()
	e.mustStartAgent(t, "srv-timeouts", d, nil)
	e.svc.wait(t, "connected", "srv-timeouts", nil)
	//sleep-ok: the scenario is a link older than the server's 300 ms deadlines; nothing to wait for but the clock
	time.Sleep(1200 * time.Millisecond)
	if _, err := e.hub.Dispatch(context.Background(), "srv-timeouts", broker.Command{Kind: broker.CommandDelete, SessionID: "s"}); err != nil {
		t.Fatal(err)
	}
	e.svc.none(t, "disconnected", "srv-timeouts")
}

// TestHub_DispatchWhileConnecting: a command that arrives while the server's
// agent is connecting (the broker still reconciling its sessions) waits for
// the link instead of failing as unreachable.
func TestHub_DispatchWhileConnecting(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	e := mustStartHub(t, agenthub.Options{}, nil)
	var once sync.Once
	e.svc.ConnectErr = func(_, serverID string) error {
		once.Do(func() {
			close(entered)
			<-release
		})
		return nil
	}
	e.mustStartAgent(t, "srv-slow", sim.New(), nil)
	<-entered
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_, err := e.hub.Dispatch(ctx, "srv-slow", broker.Command{Kind: broker.CommandDelete, SessionID: "s1"})
		done <- err
	}()
	time.Sleep(300 * time.Millisecond)
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("Dispatch during the handshake: %v", err)
	}
	// With no handshake under way, an unknown server fails at once.
	if _, err := e.hub.Dispatch(t.Context(), "srv-none", broker.Command{Kind: broker.CommandDelete, SessionID: "s1"}); !errors.Is(err, broker.ErrAgentUnreachable) {
		t.Fatalf("Dispatch to a server without a link: %v", err)
	}
}
