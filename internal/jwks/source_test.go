package jwks_test

import (
	"bytes"
	"context"
	"encoding/pem"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/jwks"
)

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// jwksServer is a TLS server whose answer a test sets, counting requests.
type jwksServer struct {
	*httptest.Server
	mu      sync.Mutex
	handler http.HandlerFunc
	hits    atomic.Int32
}

func newJWKSServer(t *testing.T, body []byte) *jwksServer {
	t.Helper()
	s := &jwksServer{}
	s.set(body)
	s.Server = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		s.mu.Lock()
		h := s.handler
		s.mu.Unlock()
		h(w, r)
	}))
	t.Cleanup(s.Close)
	return s
}

// set makes the server answer body.
func (s *jwksServer) set(body []byte) {
	s.setHandler(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	})
}

func (s *jwksServer) setHandler(h http.HandlerFunc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.handler = h
}

// logBuffer is a logger into a buffer safe for concurrent use.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func TestSource_CacheAndRefetch(t *testing.T) {
	rk, ec := testKeys(t)
	srv := newJWKSServer(t, doc(rsaJWK("k1", &rk.PublicKey, nil)))
	clk := newClock()
	var logs logBuffer
	src := jwks.NewSource(srv.URL, jwks.Options{Client: srv.Client(), Now: clk.Now, Logger: logs.logger()})
	ctx := context.Background()

	if st := src.Status(); !st.FetchedAt.IsZero() || st.Keys != 0 {
		t.Errorf("Status before a fetch = %+v", st)
	}
	if k, err := src.Key(ctx, "k1"); err != nil || k.ID != "k1" {
		t.Fatalf("Key(k1) = %v, %v", k, err)
	}
	if _, err := src.Key(ctx, "k1"); err != nil {
		t.Fatal(err)
	}
	if n := srv.hits.Load(); n != 1 {
		t.Fatalf("%d fetches, want 1: the key is cached", n)
	}
	if st := src.Status(); !st.FetchedAt.Equal(clk.Now()) || st.Keys != 1 || st.Err != nil {
		t.Errorf("Status = %+v", st)
	}

	// A token naming an unknown kid refetches the set, at most once per 10 s.
	srv.set(doc(rsaJWK("k1", &rk.PublicKey, nil), ecJWK("k2", &ec["P-256"].PublicKey, nil)))
	clk.Add(10 * time.Second)
	if _, err := src.Key(ctx, "k2"); err != nil {
		t.Fatalf("Key(k2) after a rotation: %v", err)
	}
	for i := range 20 {
		clk.Add(400 * time.Millisecond) // 8 s in all
		if _, err := src.Key(ctx, "nope"); !errors.Is(err, jwks.ErrUnknownKey) {
			t.Fatalf("Key(nope) #%d = %v, want ErrUnknownKey", i, err)
		}
	}
	if n := srv.hits.Load(); n != 2 {
		t.Errorf("%d fetches, want 2: unknown kids refetch at most once per 10 s", n)
	}
	clk.Add(2 * time.Second)
	if _, err := src.Key(ctx, "nope"); !errors.Is(err, jwks.ErrUnknownKey) {
		t.Fatal(err)
	}
	if n := srv.hits.Load(); n != 3 {
		t.Errorf("%d fetches, want 3: 10 s later an unknown kid fetches again", n)
	}
	if !strings.Contains(logs.String(), "auth server key set fetched") {
		t.Errorf("no fetch logged:\n%s", logs.String())
	}
}

func TestSource_Refresh(t *testing.T) {
	rk, ec := testKeys(t)
	srv := newJWKSServer(t, doc(rsaJWK("k1", &rk.PublicKey, nil)))
	clk := newClock()
	src := jwks.NewSource(srv.URL, jwks.Options{Client: srv.Client(), Now: clk.Now, Logger: slog.New(slog.DiscardHandler)})
	if done := src.Refresh(time.Minute, 30*time.Second); done == nil {
		t.Fatal("Refresh of a set never fetched did nothing")
	} else {
		<-done
	}
	if done := src.Refresh(time.Minute, 30*time.Second); done != nil {
		t.Fatal("Refresh of a fresh set fetched")
	}
	srv.set(doc(ecJWK("k2", &ec["P-256"].PublicKey, nil)))
	clk.Add(time.Minute)
	<-src.Refresh(time.Minute, 30*time.Second)
	if src.Cached("k2") == nil || src.Cached("k1") != nil {
		t.Error("Refresh did not replace the set")
	}
}

// TestSource_Unreachable: once the server fails, the cached keys keep
// verifying, and an unknown kid is an error saying why, never a hang.
func TestSource_Unreachable(t *testing.T) {
	rk, _ := testKeys(t)
	srv := newJWKSServer(t, doc(rsaJWK("k1", &rk.PublicKey, nil)))
	clk := newClock()
	src := jwks.NewSource(srv.URL, jwks.Options{Client: srv.Client(), Now: clk.Now, Logger: slog.New(slog.DiscardHandler)})
	ctx := context.Background()
	if _, err := src.Key(ctx, "k1"); err != nil {
		t.Fatal(err)
	}
	srv.setHandler(func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "down", http.StatusServiceUnavailable) })
	clk.Add(time.Hour)
	<-src.Refresh(time.Minute, time.Second)
	if _, err := src.Key(ctx, "k1"); err != nil {
		t.Errorf("cached key after a failed fetch: %v", err)
	}
	clk.Add(11 * time.Second)
	_, err := src.Key(ctx, "k9")
	if !errors.Is(err, jwks.ErrUnknownKey) || !strings.Contains(err.Error(), "503") {
		t.Errorf("Key(k9) = %v, want ErrUnknownKey saying the fetch answered 503", err)
	}
	if st := src.Status(); st.Keys != 1 || st.Err == nil {
		t.Errorf("Status = %+v, want 1 key and the error", st)
	}
	srv.Close()
	clk.Add(11 * time.Second)
	if _, err := src.Key(ctx, "k1"); err != nil {
		t.Errorf("cached key with the server gone: %v", err)
	}
	if _, err := src.Key(ctx, "k9"); !errors.Is(err, jwks.ErrUnknownKey) {
		t.Errorf("Key(k9) with the server gone = %v", err)
	}
}

// TestSource_Hostile: each hostile answer leaves the source without keys,
// with an error that says why; nothing panics or hangs.
func TestSource_Hostile(t *testing.T) {
	rk, _ := testKeys(t)
	good := doc(rsaJWK("k1", &rk.PublicKey, nil))
	huge := append([]byte(`{"keys":[],"pad":"`), bytes.Repeat([]byte("x"), jwks.MaxDocumentBytes)...)
	huge = append(huge, `"}`...)
	tests := []struct {
		name    string
		handler http.HandlerFunc
		err     string
	}{
		{"over 1 MiB with its length", func(w http.ResponseWriter, _ *http.Request) { w.Write(huge) }, "over the limit"},
		{"over 1 MiB chunked", func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusOK)
			for range 20 {
				w.Write(huge[:len(huge)/16])
				w.(http.Flusher).Flush()
			}
		}, "over the limit"},
		{"malformed JSON", func(w http.ResponseWriter, _ *http.Request) { w.Write(good[:len(good)/2]) }, "not a JSON object"},
		{"HTML", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("<html>login</html>")) }, "not a JSON object"},
		{"RSA 1024 only", func(w http.ResponseWriter, _ *http.Request) { w.Write(doc(rsaJWK("k1", smallRSA(1024), nil))) }, "RSA key of 1024 bits"},
		{"404", func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) }, "404"},
		{"redirect", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "http://evil.test/jwks.json", http.StatusFound)
		}, "redirects are not followed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newJWKSServer(t, nil)
			srv.setHandler(tt.handler)
			src := jwks.NewSource(srv.URL, jwks.Options{Client: srv.Client(), Logger: slog.New(slog.DiscardHandler)})
			_, err := src.Key(context.Background(), "k1")
			if !errors.Is(err, jwks.ErrUnavailable) || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("Key = %v, want ErrUnavailable with %q", err, tt.err)
			}
			if n := srv.hits.Load(); n != 1 {
				t.Errorf("%d requests, want 1", n)
			}
		})
	}
}

// TestSource_NeverAnswers: a key set server that accepts the connection and
// never answers costs a token at most the fetch timeout or MaxWait, and
// waiters give up when their context ends.
func TestSource_NeverAnswers(t *testing.T) {
	release := make(chan struct{})
	srv := newJWKSServer(t, nil)
	srv.setHandler(func(http.ResponseWriter, *http.Request) { <-release })
	t.Cleanup(func() { close(release) }) // before srv.Close, which waits for handlers

	client := srv.Client()
	client.Timeout = 300 * time.Millisecond
	src := jwks.NewSource(srv.URL, jwks.Options{Client: client, Logger: slog.New(slog.DiscardHandler)})
	start := time.Now()
	_, err := src.Key(context.Background(), "k1")
	took := time.Since(start)
	if !errors.Is(err, jwks.ErrUnavailable) || !strings.Contains(err.Error(), "no answer within 300ms") {
		t.Errorf("Key = %v, want ErrUnavailable saying no answer came", err)
	}
	t.Logf("gave up after %s (fetch timeout 300ms)", took.Round(time.Millisecond))

	// A caller whose context ends first stops waiting, and the fetch goes
	// on for the others.
	client2 := srv.Client()
	client2.Timeout = time.Minute
	src2 := jwks.NewSource(srv.URL, jwks.Options{Client: client2, Logger: slog.New(slog.DiscardHandler)})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := src2.Key(ctx, "k1"); !errors.Is(err, jwks.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Key with a short context = %v", err)
	}
	if src2.Fetch() == nil {
		t.Error("the fetch was not still running for other callers")
	}

	// A server that is frozen rather than stopped: a token waits MaxWait
	// for the fetch its unknown key started, not the minute of the fetch
	// timeout, and the fetch goes on.
	src3 := jwks.NewSource(srv.URL, jwks.Options{Client: client2, MaxWait: 200 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	if _, err := src3.Key(context.Background(), "k1"); !errors.Is(err, jwks.ErrUnavailable) || !strings.Contains(err.Error(), "did not arrive within 200ms (still fetching)") {
		t.Errorf("Key of a frozen server = %v, want ErrUnavailable after MaxWait", err)
	}
	if src3.Fetch() == nil {
		t.Error("the fetch was not still running after MaxWait")
	}
}

func TestCheckURL(t *testing.T) {
	tests := []struct {
		url string
		err string // "" when accepted
	}{
		{"https://idp.example.com/.well-known/jwks.json", ""},
		{"https://cognito-idp.us-east-1.amazonaws.com/us-east-1_Abc/.well-known/jwks.json", ""},
		{"https://10.0.0.1:8443/keys?x=1", ""},
		{"http://127.0.0.1:4444/.well-known/jwks.json", ""},
		{"http://localhost/jwks", ""},
		{"http://[::1]:80/jwks", ""},
		{"http://idp.example.com/jwks", "plain http"},
		{"http://10.0.0.1/jwks", "plain http"},
		{"http://127.0.0.1.evil.test/jwks", "plain http"},
		{"ftp://idp.example.com/jwks", "not an absolute https URL"},
		{"idp.example.com/jwks", "not an absolute https URL"},
		{"/jwks", "not an absolute https URL"},
		{"https:///jwks", "not an absolute https URL"},
		{"https://user:pw@idp.example.com/jwks", "user name or password"},
		{"https://idp.example.com/jwks#x", "fragment"},
		{"", "empty"},
		{"https://idp.example.com/" + strings.Repeat("a", 2048), "longer than"},
		{"https://idp.example.com/\x7f", "not a URL"},
	}
	for _, tt := range tests {
		err := jwks.CheckURL(tt.url)
		if tt.err == "" && err != nil || tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("CheckURL(%q) = %v, want %q", tt.url, err, tt.err)
		}
	}
}

// TestNewClient_CABundle: a key set server whose CA is not among the system
// roots is trusted through the CA bundle only.
func TestNewClient_CABundle(t *testing.T) {
	rk, _ := testKeys(t)
	srv := newJWKSServer(t, doc(rsaJWK("k1", &rk.PublicKey, nil)))
	bundle := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})

	plain, err := jwks.NewClient(nil, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	src := jwks.NewSource(srv.URL, jwks.Options{Client: plain, Logger: slog.New(slog.DiscardHandler)})
	if _, err := src.Key(context.Background(), "k1"); !errors.Is(err, jwks.ErrUnavailable) || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("Key without the CA = %v, want a certificate error", err)
	}

	withCA, err := jwks.NewClient(bundle, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	src = jwks.NewSource(srv.URL, jwks.Options{Client: withCA, Logger: slog.New(slog.DiscardHandler)})
	if _, err := src.Key(context.Background(), "k1"); err != nil {
		t.Errorf("Key with the CA bundle: %v", err)
	}
	if _, err := jwks.NewClient([]byte("not pem"), 0); err == nil {
		t.Error("NewClient took a bundle without a certificate")
	}
}

// TestSource_ConcurrentMisses: many tokens naming unknown kids at once cause
// one fetch, and every caller gets an answer.
func TestSource_ConcurrentMisses(t *testing.T) {
	rk, _ := testKeys(t)
	srv := newJWKSServer(t, doc(rsaJWK("k1", &rk.PublicKey, nil)))
	src := jwks.NewSource(srv.URL, jwks.Options{Client: srv.Client(), Logger: slog.New(slog.DiscardHandler)})
	var wg sync.WaitGroup
	var answered atomic.Int32
	for i := range 50 {
		wg.Go(func() {
			kid := "k1"
			if i%2 == 1 {
				kid = "missing"
			}
			if _, err := src.Key(context.Background(), kid); err == nil || errors.Is(err, jwks.ErrUnknownKey) {
				answered.Add(1)
			}
		})
	}
	wg.Wait()
	if n := answered.Load(); n != 50 {
		t.Errorf("%d of 50 callers got the key or ErrUnknownKey", n)
	}
	if n := srv.hits.Load(); n != 1 {
		t.Errorf("%d fetches for 50 concurrent callers, want 1", n)
	}
}
