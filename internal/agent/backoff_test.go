package agent

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/agentproto"
	"github.com/coder/websocket"
)

func TestReconnectWindow(t *testing.T) {
	tests := []struct {
		fleet int
		want  time.Duration
	}{
		{0, 0},
		{-1, 0},
		{1, 250 * time.Microsecond},
		{1000, 250 * time.Millisecond},
		{5000, 1250 * time.Millisecond},
		{10000, 2500 * time.Millisecond},
		{40000, 10 * time.Second},
		{50000, 10 * time.Second},
		{1000000, 10 * time.Second},
	}
	for _, tt := range tests {
		if got := reconnectWindow(tt.fleet); got != tt.want {
			t.Errorf("reconnectWindow(%d) = %v, want %v", tt.fleet, got, tt.want)
		}
	}
}

// TestBackoff_LinkEnded: after a link ends the first delay spans the
// reconnect window of the fleet (at least backoffMin), then the delays
// double from backoffMin again.
func TestBackoff_LinkEnded(t *testing.T) {
	most := func(d time.Duration) time.Duration { return d - 1 } // the top of [0, d)
	tests := []struct {
		fleet     int
		wantFirst time.Duration
	}{
		{0, backoffMin - 1},
		{100, backoffMin - 1},
		{2000, backoffMin - 1},
		{4000, time.Second - 1},
		{10000, 2500*time.Millisecond - 1},
		{50000, 10*time.Second - 1},
	}
	for _, tt := range tests {
		b := backoff{uniform: most}
		b.next()
		b.next() // a few failures before the link came up
		b.linkEnded(reconnectWindow(tt.fleet))
		if got := b.next(); got != tt.wantFirst {
			t.Errorf("fleet %d: first delay %v, want %v", tt.fleet, got, tt.wantFirst)
		}
		if got := b.next(); got != backoffMin-1 {
			t.Errorf("fleet %d: second delay %v, want %v (backoff from the start)", tt.fleet, got, backoffMin-1)
		}
	}
	// The lowest draw of a spread delay is 0: agents may come back at once.
	b := backoff{uniform: func(time.Duration) time.Duration { return 0 }}
	b.linkEnded(reconnectWindow(10000))
	if got := b.next(); got != 0 {
		t.Errorf("lowest spread delay %v, want 0", got)
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		v    string
		want time.Duration
	}{
		{"", 0},
		{"7", 7 * time.Second},
		{"0", 0},
		{"-3", 0},
		{"soon", 0},
		{"99999999999", maxRetryAfter},
		{now.Add(30 * time.Second).Format(http.TimeFormat), 30 * time.Second},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0},
	}
	for _, tt := range tests {
		h := http.Header{}
		if tt.v != "" {
			h.Set("Retry-After", tt.v)
		}
		if got := retryAfter(h, now); got != tt.want {
			t.Errorf("Retry-After %q: %v, want %v", tt.v, got, tt.want)
		}
	}
}

// stubDriver is a driver with no sessions.
type stubDriver struct{}

func (stubDriver) Name() string                                           { return "stub" }
func (stubDriver) Create(context.Context, CreateRequest) error            { return nil }
func (stubDriver) Delete(context.Context, string) error                   { return nil }
func (stubDriver) Sessions(context.Context) ([]agentproto.Session, error) { return nil, nil }

// loopSleeps runs the connect loop against h and returns the first n
// delays it sleeps (without sleeping them).
func loopSleeps(t *testing.T, h http.Handler, n int) []time.Duration {
	t.Helper()
	srv := httptest.NewServer(h)
	defer srv.Close()
	a := &Agent{BrokerURLs: []string{srv.URL}, ServerID: "srv-1", Driver: stubDriver{}}
	eps, err := a.check()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var mu sync.Mutex
	var sleeps []time.Duration
	r := &runner{
		a: a, log: slog.New(slog.DiscardHandler), hc: srv.Client(), ctx: ctx,
		changed: make(chan struct{}, 1), cmdSem: make(chan struct{}, 1), metrics: a.metrics(),
		uniform: func(d time.Duration) time.Duration { return d - 1 },
		sleepFn: func(ctx context.Context, d time.Duration) bool {
			mu.Lock()
			defer mu.Unlock()
			sleeps = append(sleeps, d)
			if len(sleeps) == n {
				cancel()
				return false
			}
			return true
		},
	}
	r.loop(ctx, eps)
	mu.Lock()
	defer mu.Unlock()
	if len(sleeps) < n {
		t.Fatalf("loop slept %d times, want %d (%v)", len(sleeps), n, sleeps)
	}
	return sleeps
}

// TestLoop_RetryAfter: a broker that sheds the connect with 503 and
// Retry-After holds the agent off that long, past its own backoff.
func TestLoop_RetryAfter(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "7")
		http.Error(w, "broker busy", http.StatusServiceUnavailable)
	})
	sleeps := loopSleeps(t, h, 2)
	for i, d := range sleeps {
		if d != 7*time.Second {
			t.Errorf("sleep %d: %v, want the Retry-After, 7s", i, d)
		}
	}
}

// TestLoop_FleetWindow: after a link ends, the agent delays its reconnect
// over the window of the fleet size its Welcome gave.
func TestLoop_FleetWindow(t *testing.T) {
	for _, tt := range []struct {
		fleet int
		want  time.Duration
	}{
		{10000, 2500*time.Millisecond - 1},
		{0, backoffMin - 1},
	} {
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c, err := websocket.Accept(w, r, nil)
			if err != nil {
				return
			}
			defer c.CloseNow()
			if _, _, err := c.Read(r.Context()); err != nil { // hello
				return
			}
			data, _ := agentproto.Encode("", &agentproto.Welcome{ProtocolVersion: agentproto.ProtocolVersion,
				UpdateIntervalMS: 60000, HeartbeatTimeoutMS: 180000, FleetSize: tt.fleet})
			_ = c.Write(r.Context(), websocket.MessageText, data)
			data, _ = agentproto.Encode("", &agentproto.Error{Code: agentproto.CodeShuttingDown, Message: "bye"})
			_ = c.Write(r.Context(), websocket.MessageText, data)
			c.Close(websocket.StatusGoingAway, "")
		})
		if got := loopSleeps(t, h, 1)[0]; got != tt.want {
			t.Errorf("fleet %d: reconnect delay %v, want %v", tt.fleet, got, tt.want)
		}
	}
}
