package agent

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/berth-dev/berth/internal/poll"
)

// connServer is an HTTPS server on loopback that counts its connections
// and serves /r (a short answer), /close (an answer with Connection: close),
// /big (an answer larger than one read), /hang (never answers), /stall
// (sends part of its body, then nothing) and /ws (a WebSocket echo).
type connServer struct {
	*httptest.Server
	conns atomic.Int32
	mu    sync.Mutex
	live  map[net.Conn]bool
}

func newConnServer(t *testing.T) *connServer {
	cs := &connServer{live: map[net.Conn]bool{}}
	mux := http.NewServeMux()
	mux.HandleFunc("/r", func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") })
	mux.HandleFunc("/close", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		_, _ = io.WriteString(w, "bye")
	})
	mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, strings.Repeat("x", 1<<20))
	})
	mux.HandleFunc("/hang", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body) // then the server notices the client leave
		<-r.Context().Done()
	})
	mux.HandleFunc("/stall", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Length", "100")
		_, _ = io.WriteString(w, "partial")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	})
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		typ, data, err := c.Read(r.Context())
		if err == nil {
			_ = c.Write(r.Context(), typ, data)
		}
		_, _, _ = c.Read(r.Context())
	})
	cs.Server = httptest.NewUnstartedServer(mux)
	cs.Config.ConnState = func(c net.Conn, st http.ConnState) {
		cs.mu.Lock()
		defer cs.mu.Unlock()
		switch st {
		case http.StateNew:
			cs.conns.Add(1)
			cs.live[c] = true
		case http.StateClosed, http.StateHijacked:
			delete(cs.live, c)
		}
	}
	cs.StartTLS()
	t.Cleanup(cs.Close)
	return cs
}

// closeIdle closes the server's connection once it is idle, as a broker's
// idle timeout does, and waits until it is closed.
func (cs *connServer) closeIdle(t *testing.T) {
	t.Helper()
	poll.Until(t, 5*time.Second, "the server to close the idle connection", func() bool {
		cs.Config.SetKeepAlivesEnabled(false) // closes the idle connections
		cs.Config.SetKeepAlivesEnabled(true)
		return cs.open() == 0
	})
}

func (cs *connServer) open() int {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return len(cs.live)
}

func (cs *connServer) transport(t *testing.T) *connTransport {
	u, err := url.Parse(cs.URL)
	if err != nil {
		t.Fatal(err)
	}
	kt := newConnTransport(u, cs.Client().Transport.(*http.Transport).TLSClientConfig)
	t.Cleanup(kt.CloseIdleConnections)
	return kt
}

func get(ctx context.Context, hc *http.Client, u string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, strings.NewReader("body"))
	if err != nil {
		return "", err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// TestConnTransport: requests in a row share one connection; the transport
// opens a new one where the broker closed it or asked to, and where a body
// was left unread; the request's context bounds the answer and its body.
func TestConnTransport(t *testing.T) {
	tests := []struct {
		name  string
		steps func(t *testing.T, cs *connServer, hc *http.Client)
		conns int32
	}{
		{"requests share the connection", func(t *testing.T, cs *connServer, hc *http.Client) {
			for range 3 {
				mustGet(t, hc, cs.URL+"/r", "ok")
			}
		}, 1},
		{"the broker closed the idle connection", func(t *testing.T, cs *connServer, hc *http.Client) {
			mustGet(t, hc, cs.URL+"/r", "ok")
			cs.closeIdle(t)
			mustGet(t, hc, cs.URL+"/r", "ok")
		}, 2},
		{"the broker closed the connection kept for an upgrade", func(t *testing.T, cs *connServer, hc *http.Client) {
			mustGet(t, hc, cs.URL+"/r", "ok")
			cs.closeIdle(t)
			c, _, err := websocket.Dial(t.Context(), strings.Replace(cs.URL, "https", "wss", 1)+"/ws", &websocket.DialOptions{HTTPClient: hc})
			if err != nil {
				t.Fatal(err)
			}
			c.CloseNow()
		}, 2},
		{"the broker asked to close", func(t *testing.T, cs *connServer, hc *http.Client) {
			mustGet(t, hc, cs.URL+"/close", "bye")
			waitOpen(t, cs, 0)
			mustGet(t, hc, cs.URL+"/r", "ok")
		}, 2},
		{"a body left unread", func(t *testing.T, cs *connServer, hc *http.Client) {
			resp, err := hc.Get(cs.URL + "/big")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			mustGet(t, hc, cs.URL+"/r", "ok")
		}, 2},
		{"a body neither read nor closed", func(t *testing.T, cs *connServer, hc *http.Client) {
			resp, err := hc.Get(cs.URL + "/big")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			mustGet(t, hc, cs.URL+"/r", "ok") // not the rest of /big
		}, 2},
		{"a cancelled request", func(t *testing.T, cs *connServer, hc *http.Client) {
			mustTimeOut(t, hc, cs.URL+"/hang")
			waitOpen(t, cs, 0)
			mustGet(t, hc, cs.URL+"/r", "ok")
		}, 2},
		{"a stalled body", func(t *testing.T, cs *connServer, hc *http.Client) {
			mustTimeOut(t, hc, cs.URL+"/stall")
			mustGet(t, hc, cs.URL+"/r", "ok")
		}, 2},
		{"another host", func(t *testing.T, cs *connServer, hc *http.Client) {
			if _, err := get(t.Context(), hc, "https://example.invalid/r"); err == nil {
				t.Error("a request to another host went through")
			}
		}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cs := newConnServer(t)
			hc := &http.Client{Transport: cs.transport(t)}
			tt.steps(t, cs, hc)
			if n := cs.conns.Load(); n != tt.conns {
				t.Errorf("%d connections, want %d", n, tt.conns)
			}
		})
	}
}

// TestConnTransport_Upgrade: a WebSocket dial over the transport upgrades
// the connection a request used before, and the upgraded connection works;
// the transport then refuses requests and closing it leaves the link up.
func TestConnTransport_Upgrade(t *testing.T) {
	cs := newConnServer(t)
	kt := cs.transport(t)
	hc := &http.Client{Transport: kt}
	mustGet(t, hc, cs.URL+"/r", "ok")
	c, _, err := websocket.Dial(t.Context(), strings.Replace(cs.URL, "https", "wss", 1)+"/ws", &websocket.DialOptions{HTTPClient: hc})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	kt.CloseIdleConnections()
	if err := c.Write(t.Context(), websocket.MessageText, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	if _, data, err := c.Read(t.Context()); err != nil || string(data) != "hello" {
		t.Fatalf("echo %q, %v", data, err)
	}
	if n := cs.conns.Load(); n != 1 {
		t.Errorf("%d connections for a request and the upgrade, want 1", n)
	}
	if _, err := get(t.Context(), hc, cs.URL+"/r"); !errors.Is(err, errConnUsed) {
		t.Errorf("request after the upgrade: %v, want errConnUsed", err)
	}
}

func mustGet(t *testing.T, hc *http.Client, u, want string) {
	t.Helper()
	got, err := get(t.Context(), hc, u)
	if err != nil || got != want {
		t.Fatalf("%s: %q, %v; want %q", u, got, err, want)
	}
}

// mustTimeOut requests u with a 200 ms deadline and wants the deadline's
// error.
func mustTimeOut(t *testing.T, hc *http.Client, u string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	if _, err := get(ctx, hc, u); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("%s: %v, want the deadline", u, err)
	}
}

func waitOpen(t *testing.T, cs *connServer, n int) {
	t.Helper()
	poll.Until(t, 5*time.Second, "the server's open connections to settle", func() bool { return cs.open() == n })
}
