package agent

import (
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/poll"
)

// regServer is a registration endpoint on loopback that refuses the first
// busy requests with 503 and Retry-After, and tracks its connections.
type regServer struct {
	*httptest.Server
	mu       sync.Mutex
	busy     int
	status   int // when not 0, every request not refused as busy gets it
	requests []map[string]string
	conns    map[net.Conn]http.ConnState
}

func newRegServer(t *testing.T, busy int) *regServer {
	rs := &regServer{busy: busy, conns: map[net.Conn]http.ConnState{}}
	rs.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body map[string]string
		_ = json.NewDecoder(r.Body).Decode(&body)
		rs.mu.Lock()
		rs.requests = append(rs.requests, body)
		refuse := rs.busy > 0
		rs.busy--
		rs.mu.Unlock()
		if refuse {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		if rs.status != 0 {
			w.WriteHeader(rs.status)
			_, _ = w.Write([]byte(`{"error":"invalid_software_statement"}`))
			return
		}
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write([]byte(`{"client_id":"c1","client_secret":"s1"}`))
	}))
	rs.Config.ConnState = func(c net.Conn, st http.ConnState) {
		rs.mu.Lock()
		rs.conns[c] = st
		rs.mu.Unlock()
	}
	rs.Start()
	t.Cleanup(rs.Close)
	return rs
}

// open counts the connections the server has not closed.
func (rs *regServer) open() (open, total int) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	for _, st := range rs.conns {
		if st != http.StateClosed && st != http.StateHijacked {
			open++
		}
	}
	return open, len(rs.conns)
}

// TestRegister_RetryAfterAndClose: a broker that sheds the registration with
// 503 and Retry-After is asked again after that wait, on the same
// connection; the request names the server ID; and the one connection stays
// idle in the client, for the link to reuse.
func TestRegister_RetryAfterAndClose(t *testing.T) {
	rs := newRegServer(t, 1)
	hc := &http.Client{Transport: &http.Transport{}}
	start := time.Now()
	c, err := register(t.Context(), hc, rs.URL+"/agent/register", "stmt", "host", "srv-1")
	if err != nil {
		t.Fatal(err)
	}
	if c.ClientID != "c1" || c.ClientSecret != "s1" {
		t.Fatalf("credentials %+v", c)
	}
	if d := time.Since(start); d < time.Second {
		t.Errorf("retried after %v, before the broker's Retry-After of 1 s", d)
	}
	rs.mu.Lock()
	reqs := rs.requests
	rs.mu.Unlock()
	if len(reqs) != 2 {
		t.Fatalf("%d requests, want 2 (one refused, one retried)", len(reqs))
	}
	if reqs[1]["server_id"] != "srv-1" || reqs[1]["software_statement"] != "stmt" || reqs[1]["client_name"] != "host" {
		t.Errorf("request body %v", reqs[1])
	}
	if open, total := rs.open(); total != 1 || open != 1 {
		t.Errorf("%d connections (%d open) for one registration and its retry, want 1 (idle, for the link)", total, open)
	}
}

// TestRegister_GivesUp: a refusal without Retry-After that is not 503 or 429
// is returned at once, and its connection is closed: no link follows to
// reuse it.
func TestRegister_GivesUp(t *testing.T) {
	rs := newRegServer(t, 0)
	rs.status = http.StatusBadRequest
	hc := &http.Client{Transport: &http.Transport{}}
	_, err := register(t.Context(), hc, rs.URL+"/agent/register", "stmt", "host", "srv-1")
	if err == nil {
		t.Fatal("no error for a refused statement")
	}
	poll.Until(t, 5*time.Second, "the refused registration's connection to close", func() bool {
		open, _ := rs.open()
		return open == 0
	})
}
