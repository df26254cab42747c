package gateway_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/berth-dev/berth/internal/gateway"
	"github.com/berth-dev/berth/internal/oauth"
	"github.com/berth-dev/berth/internal/permfile"
)

// keyStore is an oauth.Store that keeps signing keys in memory (the only
// part an Authority needs to issue and publish connection tokens).
type keyStore struct {
	oauth.Store // nil: the methods not written below are never called
	mu          sync.Mutex
	keys        []*oauth.SigningKey
}

func (s *keyStore) CreateClient(context.Context, *oauth.Client) error { return errors.ErrUnsupported }
func (s *keyStore) GetClient(context.Context, string) (*oauth.Client, error) {
	return nil, oauth.ErrNotFound
}
func (s *keyStore) ListClients(context.Context, string) ([]*oauth.Client, error) { return nil, nil }
func (s *keyStore) SetClientActive(context.Context, string, bool) error {
	return oauth.ErrNotFound
}
func (s *keyStore) AddSigningKey(_ context.Context, k *oauth.SigningKey) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, o := range s.keys {
		if o.RetiredAt.IsZero() {
			o.RetiredAt = k.CreatedAt
		}
	}
	c := *k
	s.keys = append([]*oauth.SigningKey{&c}, s.keys...)
	return nil
}
func (s *keyStore) SigningKeys(context.Context) ([]*oauth.SigningKey, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*oauth.SigningKey, len(s.keys))
	for i, k := range s.keys {
		c := *k
		out[i] = &c
	}
	return out, nil
}
func (s *keyStore) DeleteSigningKeysRetiredBefore(context.Context, time.Time) error { return nil }
func (s *keyStore) CreateSoftwareStatement(context.Context, *oauth.SoftwareStatement) error {
	return errors.ErrUnsupported
}
func (s *keyStore) SoftwareStatements(context.Context) ([]*oauth.SoftwareStatement, error) {
	return nil, nil
}
func (s *keyStore) SetSoftwareStatementActive(context.Context, string, bool) error {
	return oauth.ErrNotFound
}

// broker issues connection tokens as the broker does and publishes its keys
// on a JWKS endpoint; verifier checks them against that endpoint, as a
// gateway on an agent host does.
type broker struct {
	auth     *oauth.Authority
	past     *oauth.Authority // issues tokens that expired an hour ago
	verifier *oauth.RemoteKeySet
}

func newBroker(t testing.TB) *broker {
	t.Helper()
	store := &keyStore{}
	a := oauth.New(store, "test-broker")
	if err := a.EnsureKey(context.Background()); err != nil {
		t.Fatal(err)
	}
	past := oauth.New(store, "test-broker")
	past.Now = func() time.Time { return time.Now().Add(-2 * time.Hour) }
	jwks := httptest.NewTLSServer(a.JWKSHandler())
	t.Cleanup(jwks.Close)
	return &broker{auth: a, past: past, verifier: &oauth.RemoteKeySet{URL: jwks.URL, Client: jwks.Client(), Issuer: "test-broker"}}
}

func (b *broker) token(t testing.TB, session, owner, user string) string {
	t.Helper()
	tok, err := b.auth.IssueConnectionToken(context.Background(), session, owner, user)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// sessions is a gateway.Sessions over a map, recording connection reports.
type sessions struct {
	mu       sync.Mutex
	m        map[string]gateway.Session
	watchers map[int]func(string)
	next     int
	counts   map[string]int
	last     map[string]time.Time
	reports  int
	inputs   map[string][]time.Time // InputSeen calls
}

func newSessions() *sessions {
	return &sessions{m: map[string]gateway.Session{}, watchers: map[int]func(string){}, counts: map[string]int{}, last: map[string]time.Time{}}
}

func (s *sessions) Session(id string) (gateway.Session, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	x, ok := s.m[id]
	return x, ok
}

func (s *sessions) ConnectionChanged(id string, n int, last time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.counts[id] = n
	if !last.IsZero() {
		s.last[id] = last
	}
	s.reports++
}

// InputSeen implements gateway.InputObserver.
func (s *sessions) InputSeen(id string, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.inputs == nil {
		s.inputs = map[string][]time.Time{}
	}
	s.inputs[id] = append(s.inputs[id], at)
}

// input returns the InputSeen times of a session.
func (s *sessions) input(id string) []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.inputs[id])
}

func (s *sessions) Watch(f func(string)) func() {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.next
	s.next++
	s.watchers[n] = f
	return func() {
		s.mu.Lock()
		delete(s.watchers, n)
		s.mu.Unlock()
	}
}

// set adds or replaces a session and tells the watchers.
func (s *sessions) set(x gateway.Session) {
	s.mu.Lock()
	s.m[x.ID] = x
	s.mu.Unlock()
	s.notify(x.ID)
}

// remove drops a session and tells the watchers.
func (s *sessions) remove(id string) {
	s.mu.Lock()
	delete(s.m, id)
	s.mu.Unlock()
	s.notify(id)
}

func (s *sessions) notify(id string) {
	s.mu.Lock()
	var fs []func(string)
	for _, f := range s.watchers {
		fs = append(fs, f)
	}
	s.mu.Unlock()
	for _, f := range fs {
		f(id)
	}
}

func (s *sessions) count(id string) (int, time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[id], s.last[id]
}

// rfbServer is a fake RFB 3.8 server (security type None) on a unix socket.
// It records what each client sends after the handshake.
type rfbServer struct {
	path string
	ln   net.Listener
	wg   sync.WaitGroup

	mu    sync.Mutex
	got   []*bytes.Buffer // per connection, in accept order
	conns []net.Conn
}

func newRFBServer(t testing.TB) *rfbServer {
	t.Helper()
	dir, err := os.MkdirTemp("", "rfb")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	s := &rfbServer{path: filepath.Join(dir, "vnc.sock")}
	s.ln, err = net.Listen("unix", s.path)
	if err != nil {
		t.Fatal(err)
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := s.ln.Accept()
			if err != nil {
				return
			}
			buf := &bytes.Buffer{}
			s.mu.Lock()
			s.got = append(s.got, buf)
			s.conns = append(s.conns, c)
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				s.serve(c, buf)
			}()
		}
	}()
	t.Cleanup(func() {
		s.ln.Close()
		s.mu.Lock()
		for _, c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

func (s *rfbServer) serve(c net.Conn, buf *bytes.Buffer) {
	b := make([]byte, 12)
	if _, err := c.Write([]byte("RFB 003.008\n")); err != nil {
		return
	}
	if _, err := io.ReadFull(c, b[:12]); err != nil {
		return
	}
	c.Write([]byte{1, 1})
	if _, err := io.ReadFull(c, b[:1]); err != nil || b[0] != 1 {
		return
	}
	c.Write([]byte{0, 0, 0, 0})
	if _, err := io.ReadFull(c, b[:1]); err != nil {
		return
	}
	init := []byte{2, 128, 1, 224, 32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0, 0, 0, 0, 4}
	c.Write(append(init, "fake"...))
	for {
		n, err := c.Read(b)
		s.mu.Lock()
		buf.Write(b[:n])
		s.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// accepted returns the number of connections the server accepted.
func (s *rfbServer) accepted() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.got)
}

// received returns what connection i sent after its handshake.
func (s *rfbServer) received(i int) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	if i >= len(s.got) {
		return nil
	}
	return bytes.Clone(s.got[i].Bytes())
}

// env is a gateway on an httptest TLS server with a fake session.
type env struct {
	t        *testing.T
	broker   *broker
	sessions *sessions
	rfb      *rfbServer
	gw       *gateway.Server
	srv      *httptest.Server
}

const (
	sessID = "s-1"
	owner  = "alice"
)

func newEnv(t *testing.T, perms string, maxClients int) *env {
	t.Helper()
	return newEnvConfig(t, perms, maxClients, nil)
}

// newEnvConfig is newEnv with mod applied to the gateway's configuration.
func newEnvConfig(t *testing.T, perms string, maxClients int, mod func(*gateway.Config)) *env {
	t.Helper()
	e := &env{t: t, broker: newBroker(t), sessions: newSessions(), rfb: newRFBServer(t)}
	e.sessions.set(gateway.Session{ID: sessID, Owner: owner, Socket: e.rfb.path, UID: os.Getuid(), PID: os.Getpid(), MaxClients: maxClients, Permissions: mustPerms(t, perms)})
	cfg := gateway.Config{
		Verifier: e.broker.verifier,
		Sessions: e.sessions,
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	if mod != nil {
		mod(&cfg)
	}
	e.gw = gateway.New(cfg)
	e.srv = httptest.NewUnstartedServer(e.gw.Handler())
	e.srv.StartTLS()
	t.Cleanup(func() {
		e.gw.Close()
		e.srv.Close()
	})
	return e
}

func mustPerms(t testing.TB, text string) *permfile.File {
	t.Helper()
	if text == "" {
		return permfile.Default()
	}
	f, err := permfile.Parse(text)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// dial opens the session's WebSocket with token; it returns the HTTP status
// when the upgrade was refused.
func (e *env) dial(token, session string) (*websocket.Conn, int, string) {
	return dialWS(e.t, e.srv, token, session)
}

func dialWS(t testing.TB, srv *httptest.Server, token, session string) (*websocket.Conn, int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	u := "wss" + srv.URL[len("https"):] + "/websockify?authToken=" + url.QueryEscape(token) + "&sessionId=" + url.QueryEscape(session)
	c, resp, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPClient: srv.Client()})
	if err != nil {
		if resp == nil {
			t.Fatalf("dial: %v", err)
		}
		body, _ := io.ReadAll(resp.Body)
		return nil, resp.StatusCode, string(body)
	}
	t.Cleanup(func() { c.CloseNow() })
	return c, http.StatusSwitchingProtocols, ""
}

// rfbClient is the client side of an RFB connection through the bridge.
type rfbClient struct {
	t  testing.TB
	nc net.Conn
}

// handshake runs the client handshake (security None) and returns the
// desktop size and name.
func handshake(t testing.TB, c *websocket.Conn) (*rfbClient, int, int, string) {
	t.Helper()
	nc := websocket.NetConn(context.Background(), c, websocket.MessageBinary)
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	r := &rfbClient{t: t, nc: nc}
	v := r.read(12)
	if string(v) != "RFB 003.008\n" {
		t.Fatalf("server version %q", v)
	}
	r.write([]byte("RFB 003.008\n"))
	n := r.read(1)[0]
	types := r.read(int(n))
	if !slices.Contains(types, 1) {
		t.Fatalf("security types %v", types)
	}
	r.write([]byte{1})
	if res := r.read(4); binary.BigEndian.Uint32(res) != 0 {
		t.Fatalf("security result %v", res)
	}
	r.write([]byte{1})
	init := r.read(24)
	w, h := int(binary.BigEndian.Uint16(init)), int(binary.BigEndian.Uint16(init[2:]))
	name := r.read(int(binary.BigEndian.Uint32(init[20:])))
	nc.SetDeadline(time.Time{})
	return r, w, h, string(name)
}

func (r *rfbClient) read(n int) []byte {
	r.t.Helper()
	b := make([]byte, n)
	if _, err := io.ReadFull(r.nc, b); err != nil {
		r.t.Fatalf("read: %v", err)
	}
	return b
}

func (r *rfbClient) write(b []byte) {
	r.t.Helper()
	if _, err := r.nc.Write(b); err != nil {
		r.t.Fatalf("write: %v", err)
	}
}
