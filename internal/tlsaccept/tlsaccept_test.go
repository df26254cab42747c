package tlsaccept

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/berth-dev/berth/internal/poll"
)

// testCert returns a self-signed certificate for 127.0.0.1 and a pool that
// trusts it.
func testCert(t testing.TB) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "tlsaccept test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:              []string{"localhost"},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

// gate holds handshakes in GetConfigForClient until released, recording
// the order they arrive in (by SNI) and the most held at once.
type gate struct {
	mu      sync.Mutex
	entered []string
	held    int
	maxHeld int
	release chan struct{}
	open    chan struct{} // closed at the end of the test: nothing held
}

// newGate returns a gate; call its done once the listener is made, so that
// it lets everything through at the end of the test, before the listener's
// Close (which waits for its workers).
func newGate() *gate {
	g := &gate{release: make(chan struct{}, 100), open: make(chan struct{})}
	return g
}

func (g *gate) hook(hello *tls.ClientHelloInfo) (*tls.Config, error) {
	g.mu.Lock()
	g.entered = append(g.entered, hello.ServerName)
	g.held++
	g.maxHeld = max(g.maxHeld, g.held)
	g.mu.Unlock()
	select {
	case <-g.release:
	case <-g.open:
	}
	g.mu.Lock()
	g.held--
	g.mu.Unlock()
	return nil, nil
}

func (g *gate) done(t *testing.T) { t.Cleanup(func() { close(g.open) }) }

func (g *gate) state() ([]string, int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.entered), g.maxHeld
}

type refusals struct{ n atomic.Int64 }

func (r *refusals) ConnectionRefused(listener, reason string) {
	if listener == "agent" && reason == ReasonHandshakeQueue {
		r.n.Add(1)
	}
}

// fakeClock is an injected Now.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

type env struct {
	ln   *Listener
	pool *x509.CertPool
}

func newEnv(t *testing.T, cfg *tls.Config, opts Options) *env {
	t.Helper()
	cert, pool := testCert(t)
	return newEnvCert(t, cfg, opts, cert, pool)
}

// newEnvCert is newEnv with the certificate cert, trusted by pool: that of
// an earlier env, as a restarted broker keeps its certificate.
func newEnvCert(t *testing.T, cfg *tls.Config, opts Options, cert tls.Certificate, pool *x509.CertPool) *env {
	t.Helper()
	cfg.Certificates = []tls.Certificate{cert}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var inner net.Listener = tcp
	if waitOnGoroutines {
		inner = unparkable{tcp}
	}
	ln := New(inner, cfg, opts)
	t.Cleanup(func() { ln.Close() })
	return &env{ln: ln, pool: pool}
}

// waitOnGoroutines makes newEnv's listener accept connections that cannot
// notify (unparkable), so that they wait for their ClientHello and slot on
// goroutines (forEachWait).
var waitOnGoroutines bool

// forEachWait runs test with connections that wait without goroutines
// (parked in the poller) and with connections that wait on goroutines.
func forEachWait(t *testing.T, test func(t *testing.T)) {
	for _, tt := range []struct {
		name       string
		goroutines bool
	}{{"parked", false}, {"goroutines", true}} {
		t.Run(tt.name, func(t *testing.T) {
			waitOnGoroutines = tt.goroutines
			defer func() { waitOnGoroutines = false }()
			test(t)
		})
	}
}

// unparkable is a listener whose connections hide their socket
// (syscall.Conn), as a wrapped connection may.
type unparkable struct{ net.Listener }

func (l unparkable) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return struct{ net.Conn }{c}, nil
}

// dial connects to the listener (the TCP connection is established, so
// queued in order, when it returns) and starts a handshake naming sni;
// the handshake's outcome arrives on the channel.
func (e *env) dial(t *testing.T, sni string, cache tls.ClientSessionCache) (*tls.Conn, chan error) {
	t.Helper()
	raw, err := net.Dial("tcp", e.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c := tls.Client(raw, &tls.Config{ServerName: sni, RootCAs: e.pool, InsecureSkipVerify: sni != "localhost" && sni != "127.0.0.1",
		ClientSessionCache: cache})
	t.Cleanup(func() { c.Close() })
	done := make(chan error, 1)
	go func() {
		c.SetDeadline(time.Now().Add(30 * time.Second))
		done <- c.Handshake()
	}()
	return c, done
}

func TestListener_FIFOBoundedConcurrency(t *testing.T) {
	forEachWait(t, testListenerFIFOBoundedConcurrency)
}

func testListenerFIFOBoundedConcurrency(t *testing.T) {
	g := newGate()
	const workers, clients = 2, 6
	e := newEnv(t, &tls.Config{GetConfigForClient: g.hook}, Options{Name: "agent", Workers: workers})
	g.done(t)
	var names []string
	for i := range clients {
		name := fmt.Sprintf("c%d.test", i)
		names = append(names, name)
		e.dial(t, name, nil)
		// One ClientHello at a time, so that their order is known.
		poll.Until(t, 10*time.Second, name+"'s ClientHello", func() bool {
			entered, _ := g.state()
			return len(entered)+e.ln.Stats().Queued == i+1
		})
	}
	poll.Until(t, 10*time.Second, "the first handshakes held and the rest queued", func() bool {
		entered, _ := g.state()
		return len(entered) == workers && e.ln.Stats().Queued == clients-workers
	})
	var accepted []string
	for released := 0; released < clients; released++ {
		g.release <- struct{}{}
		c, err := e.ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		accepted = append(accepted, c.(*tls.Conn).ConnectionState().ServerName)
		c.Close()
		want := min(released+1+workers, clients)
		poll.Until(t, 10*time.Second, "the next handshake to start", func() bool {
			entered, _ := g.state()
			return len(entered) == want
		})
		entered, maxHeld := g.state()
		if maxHeld > workers {
			t.Fatalf("%d handshakes at once, want at most %d", maxHeld, workers)
		}
		// The handshakes started are the oldest connections, whatever
		// order the workers reached the hook in.
		got := slices.Sorted(slices.Values(entered))
		if !slices.Equal(got, names[:want]) {
			t.Fatalf("after %d released, handshakes started for %v, want %v", released+1, got, names[:want])
		}
	}
	if got := slices.Sorted(slices.Values(accepted)); !slices.Equal(got, names) {
		t.Errorf("accepted %v, want %v", accepted, names)
	}
	if s := e.ln.Stats(); s.Handshakes != clients || s.Shed != 0 || s.Failed != 0 {
		t.Errorf("Stats = %+v, want %d handshakes, none shed or failed", s, clients)
	}
}

func TestListener_Sheds(t *testing.T) { forEachWait(t, testListenerSheds) }

func testListenerSheds(t *testing.T) {
	tests := []struct {
		name string
		// queue and the clock's step once the later clients are queued
		queue   int
		advance time.Duration
		clients int
		shed    int
	}{
		{"waited past MaxWait", 0, 2 * time.Second, 3, 2},
		{"within MaxWait", 0, 500 * time.Millisecond, 3, 0},
		{"queue full", 1, 0, 3, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := newGate()
			clock := &fakeClock{now: time.Unix(1e9, 0)}
			var obs refusals
			e := newEnv(t, &tls.Config{GetConfigForClient: g.hook}, Options{
				Name: "agent", Workers: 1, MaxWait: time.Second, Queue: tt.queue, Now: clock.Now, Observer: &obs,
			})
			g.done(t)
			_, first := e.dial(t, "first.test", nil)
			poll.Until(t, 10*time.Second, "the first handshake held", func() bool {
				entered, _ := g.state()
				return len(entered) == 1
			})
			var later []chan error
			for i := 1; i < tt.clients; i++ {
				_, done := e.dial(t, fmt.Sprintf("c%d.test", i), nil)
				later = append(later, done)
				poll.Until(t, 10*time.Second, "the client's ClientHello", func() bool {
					s := e.ln.Stats()
					return s.Queued+int(s.Shed) == i
				})
			}
			poll.Until(t, 10*time.Second, "the later clients queued or shed", func() bool {
				s := e.ln.Stats()
				return s.Queued+int(s.Shed) == tt.clients-1
			})
			clock.Add(tt.advance)
			for range tt.clients + 1 {
				g.release <- struct{}{}
			}
			if c, err := e.ln.Accept(); err != nil {
				t.Fatal(err)
			} else {
				c.Close()
			}
			if err := <-first; err != nil {
				t.Fatalf("first handshake: %v", err)
			}
			failed := 0
			for _, done := range later {
				if err := <-done; err != nil {
					failed++
				} else if c, err := e.ln.Accept(); err != nil {
					t.Fatal(err)
				} else {
					c.Close()
				}
			}
			if failed != tt.shed {
				t.Errorf("%d later clients failed their handshake, want %d", failed, tt.shed)
			}
			s := e.ln.Stats()
			if int(s.Shed) != tt.shed || int(obs.n.Load()) != tt.shed {
				t.Errorf("shed %d, observer told of %d, want %d", s.Shed, obs.n.Load(), tt.shed)
			}
			// A client arriving now is not held to the earlier wait.
			_, done := e.dial(t, "after.test", nil)
			if err := <-done; err != nil {
				t.Fatalf("handshake after the shedding: %v", err)
			}
		})
	}
}

func TestListener_HandshakeTimeout(t *testing.T) { forEachWait(t, testListenerHandshakeTimeout) }

func testListenerHandshakeTimeout(t *testing.T) {
	e := newEnv(t, &tls.Config{}, Options{Name: "agent", Workers: 1, HandshakeTimeout: 300 * time.Millisecond})
	// One client sends nothing, another part of a record: neither holds
	// the only slot, and both are closed once their handshake timed out.
	silent, err := net.Dial("tcp", e.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	partial, err := net.Dial("tcp", e.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer partial.Close()
	if _, err := partial.Write([]byte{22, 3, 1, 2, 0, 1}); err != nil { // a 512-byte handshake record's first byte
		t.Fatal(err)
	}
	poll.Until(t, 10*time.Second, "two connections in handshake", func() bool { return e.ln.Stats().Pending == 2 })
	_, done := e.dial(t, "localhost", nil)
	if err := <-done; err != nil {
		t.Fatalf("handshake beside stalled clients: %v", err)
	}
	for name, c := range map[string]net.Conn{"silent": silent, "partial": partial} {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err != io.EOF {
			t.Errorf("%s connection read %v, want EOF (closed by the listener)", name, err)
		}
	}
	poll.Until(t, 10*time.Second, "two failed handshakes", func() bool { return e.ln.Stats().Failed == 2 })
}

func TestListener_HTTPServer(t *testing.T) {
	e := newEnv(t, &tls.Config{}, Options{Name: "client"})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /tls", func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || !r.TLS.HandshakeComplete {
			http.Error(w, "no TLS state", http.StatusInternalServerError)
			return
		}
		fmt.Fprintf(w, "%s %x", r.TLS.ServerName, r.TLS.Version)
	})
	mux.HandleFunc("GET /ws", func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		typ, b, err := c.Read(r.Context())
		if err != nil {
			return
		}
		c.Write(r.Context(), typ, append([]byte("echo "), b...))
		c.Close(websocket.StatusNormalClosure, "")
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(e.ln)
	t.Cleanup(func() { srv.Close() })

	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: e.pool}}}
	base := "https://localhost:" + fmt.Sprint(e.ln.Addr().(*net.TCPAddr).Port)
	resp, err := client.Get(base + "/tls")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := fmt.Sprintf("localhost %x", tls.VersionTLS13); resp.StatusCode != http.StatusOK || string(body) != want {
		t.Fatalf("GET /tls: %d %q, want 200 %q", resp.StatusCode, body, want)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "wss"+base[len("https"):]+"/ws", &websocket.DialOptions{HTTPClient: client})
	if err != nil {
		t.Fatalf("WebSocket upgrade: %v", err)
	}
	defer ws.CloseNow()
	if err := ws.Write(ctx, websocket.MessageText, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	if _, b, err := ws.Read(ctx); err != nil || string(b) != "echo hi" {
		t.Fatalf("WebSocket read %q, %v; want \"echo hi\"", b, err)
	}
}

func TestListener_Close(t *testing.T) { forEachWait(t, testListenerClose) }

func testListenerClose(t *testing.T) {
	g := newGate()
	e := newEnv(t, &tls.Config{GetConfigForClient: g.hook}, Options{Name: "agent", Workers: 1})
	g.done(t)
	heldConn, held := e.dial(t, "held.test", nil)
	queuedConn, queued := e.dial(t, "queued.test", nil)
	poll.Until(t, 10*time.Second, "one handshake held, one queued", func() bool {
		entered, _ := g.state()
		return len(entered) == 1 && e.ln.Stats().Queued == 1
	})
	go func() {
		// The hook returns once Close cut the handshake's connection.
		<-e.ln.done
		g.release <- struct{}{}
	}()
	if err := e.ln.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := e.ln.Accept(); err != net.ErrClosed {
		t.Errorf("Accept after Close: %v, want net.ErrClosed", err)
	}
	for name, cl := range map[string]struct {
		c    *tls.Conn
		done chan error
	}{"held": {heldConn, held}, "queued": {queuedConn, queued}} {
		// The handshake fails, or the connection closes after it.
		if err := <-cl.done; err == nil {
			if _, err := cl.c.Read(make([]byte, 1)); err == nil {
				t.Errorf("%s connection served after Close", name)
			}
		}
	}
}

// TestListener_Nonblocking: after SetNonblocking a TLS read with nothing
// to read fails at once with EAGAIN and leaves the connection usable, also
// midway through a record; WaitReadable waits for bytes and honours the
// read deadline.
func TestListener_Nonblocking(t *testing.T) {
	for _, notify := range []bool{false, true} {
		name := "WaitReadable"
		if notify {
			name = "NotifyReadable"
		}
		t.Run(name, func(t *testing.T) { testNonblocking(t, notify) })
	}
}

// testNonblocking is TestListener_Nonblocking with one of the two waits.
func testNonblocking(t *testing.T, notify bool) {
	e := newEnv(t, &tls.Config{}, Options{Name: "agent"})
	type parker interface {
		SetNonblocking(bool) bool
		WaitReadable() error
		NotifyReadable(func(error)) bool
	}
	accepted := make(chan *tls.Conn, 1)
	go func() {
		c, err := e.ln.Accept()
		if err == nil {
			accepted <- c.(*tls.Conn)
		}
	}()
	raw, err := net.Dial("tcp", e.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	// The client's TLS runs over a pipe, so the test can hold back part of
	// a record: the client writes records into w, the test forwards them.
	pr, pw := net.Pipe()
	go func() { _, _ = io.Copy(pw, raw) }()
	var sent bytes.Buffer
	split := &splitConn{Conn: pr, raw: raw, out: &sent}
	client := tls.Client(split, &tls.Config{RootCAs: e.pool, ServerName: "localhost"})
	if err := client.Handshake(); err != nil {
		t.Fatal(err)
	}
	split.hold = true
	sc := <-accepted
	defer sc.Close()
	p, ok := sc.NetConn().(parker)
	if !ok || !p.SetNonblocking(true) {
		t.Fatal("accepted connection cannot read without blocking")
	}
	// wait is the wait under test; arm starts a notification and returns
	// where its error comes.
	arm := func() <-chan error {
		ch := make(chan error, 1)
		if !p.NotifyReadable(func(err error) { ch <- err }) {
			t.Fatal("NotifyReadable: cannot")
		}
		return ch
	}
	wait := func() error {
		if !notify {
			return p.WaitReadable()
		}
		select {
		case err := <-arm():
			return err
		case <-time.After(10 * time.Second):
			return errors.New("no notification")
		}
	}
	buf := make([]byte, 64)
	if _, err := sc.Read(buf); !errors.Is(err, syscall.EAGAIN) {
		t.Fatalf("read with nothing to read: %v, want EAGAIN", err)
	}
	// Half a record: still EAGAIN, and the half is kept.
	sent.Reset()
	if _, err := client.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	rec := sent.Bytes()
	if _, err := raw.Write(rec[:len(rec)/2]); err != nil {
		t.Fatal(err)
	}
	if err := wait(); err != nil {
		t.Fatal(err)
	}
	if _, err := sc.Read(buf); !errors.Is(err, syscall.EAGAIN) {
		t.Fatalf("read of half a record: %v, want EAGAIN", err)
	}
	if _, err := raw.Write(rec[len(rec)/2:]); err != nil {
		t.Fatal(err)
	}
	if err := wait(); err != nil {
		t.Fatal(err)
	}
	if n, err := sc.Read(buf); err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("read after the rest: %q, %v", buf[:n], err)
	}
	// Nothing more: the wait ends at the read deadline.
	_ = sc.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if err := wait(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("wait past the deadline: %v", err)
	}
	if !notify {
		return
	}
	// A deadline set while armed applies; so does a close.
	_ = sc.SetReadDeadline(time.Time{})
	ch := arm()
	_ = sc.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
	if err := <-ch; !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("armed, then a deadline: %v", err)
	}
	_ = sc.SetReadDeadline(time.Time{})
	ch = arm()
	sc.Close()
	if err := <-ch; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("armed, then closed: %v", err)
	}
	if err := <-arm(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("armed after the close: %v", err)
	}
}

// splitConn is the client's side for TestListener_Nonblocking: it reads
// from Conn and writes to raw, except that once hold is set its writes go
// to out, for the test to forward.
type splitConn struct {
	net.Conn
	raw  net.Conn
	out  *bytes.Buffer
	hold bool
}

func (c *splitConn) Write(p []byte) (int, error) {
	if !c.hold {
		return c.raw.Write(p)
	}
	return c.out.Write(p)
}

// Connections waiting for their ClientHello, or with it for a slot, hold
// no goroutine of the listener where they can be parked; the handshakes
// holding slots do. Where they cannot, each waits on a goroutine.
func TestListener_WaitsWithoutGoroutines(t *testing.T) {
	const silent, queued = 20, 30
	for _, tt := range []struct {
		name       string
		goroutines bool
		want       int // the listener's goroutines in handshake
	}{
		{"parked", false, 1},
		{"goroutines", true, 1 + silent + queued},
	} {
		t.Run(tt.name, func(t *testing.T) {
			waitOnGoroutines = tt.goroutines
			defer func() { waitOnGoroutines = false }()
			g := newGate()
			e := newEnv(t, &tls.Config{GetConfigForClient: g.hook}, Options{Name: "agent", Workers: 1})
			g.done(t)
			e.dial(t, "held.test", nil)
			poll.Until(t, 10*time.Second, "the first handshake held", func() bool {
				entered, _ := g.state()
				return len(entered) == 1
			})
			for range silent {
				c, err := net.Dial("tcp", e.ln.Addr().String())
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { c.Close() })
			}
			for i := range queued {
				e.dial(t, fmt.Sprintf("c%d.test", i), nil)
			}
			poll.Until(t, 10*time.Second, "the clients queued", func() bool {
				s := e.ln.Stats()
				return s.Queued == queued && s.Pending == 1+silent+queued
			})
			if got := handshakeGoroutines(); got != tt.want {
				t.Errorf("%d goroutines in handshake, want %d", got, tt.want)
			}
		})
	}
}

// handshakeGoroutines counts the goroutines running Listener.handshake.
func handshakeGoroutines() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return bytes.Count(buf[:n], []byte("tlsaccept.(*Listener).handshake("))
		}
		buf = make([]byte, 2*len(buf))
	}
}
