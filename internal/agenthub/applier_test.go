package agenthub_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/agenthub"
	"github.com/berth-dev/berth/internal/agentproto"
	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/poll"
	"github.com/coder/websocket"
)

// gatedService is fakeService whose first AgentSessionChanges waits until
// the test opens the gate, as when the store's writer is busy. It records
// each call's session IDs once the call is done.
type gatedService struct {
	*fakeService
	gate    chan struct{} // closed by the test
	entered chan struct{} // one send per call, when it starts

	mu    sync.Mutex
	calls [][]string
}

func (g *gatedService) AgentSessionChanges(ctx context.Context, serverID string, changes []broker.SessionReport) error {
	select {
	case g.entered <- struct{}{}:
	default:
	}
	select {
	case <-g.gate:
	case <-ctx.Done():
		return ctx.Err()
	}
	var ids []string
	for _, c := range changes {
		ids = append(ids, c.ID)
	}
	g.mu.Lock()
	g.calls = append(g.calls, ids)
	g.mu.Unlock()
	return g.fakeService.AgentSessionChanges(ctx, serverID, changes)
}

// applied returns the session IDs of every finished call, in order.
func (g *gatedService) applied() [][]string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.calls)
}

// mustStartGatedHub is mustStartHub with a gatedService, and one raw
// version 3 link of serverID up.
func mustStartGatedHub(t *testing.T, serverID string) (*env, *gatedService, *websocket.Conn) {
	t.Helper()
	g := &gatedService{fakeService: newFakeService(), gate: make(chan struct{}), entered: make(chan struct{}, 100)}
	t.Cleanup(func() {
		select {
		case <-g.gate:
		default:
			close(g.gate)
		}
	})
	e := &env{svc: g.fakeService, logs: &syncBuffer{}}
	e.hub = agenthub.New(g, nil, agenthub.Options{Logger: slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	mux := http.NewServeMux()
	mux.Handle("/agent/connect", e.hub.Handler())
	e.srv = httptest.NewUnstartedServer(mux)
	e.srv.StartTLS()
	t.Cleanup(e.srv.Close)
	t.Cleanup(func() { e.hub.Close() })
	e.url = "wss://" + e.srv.Listener.Addr().String()
	pool := x509.NewCertPool()
	pool.AddCert(e.srv.Certificate())
	e.tls = &tls.Config{RootCAs: pool}

	c := e.dial(t)
	write(t, c, "", hello(serverID))
	if w := read(t, c).Body.(*agentproto.Welcome); w.ProtocolVersion != agentproto.ProtocolVersion {
		t.Fatalf("welcome version %d, want %d", w.ProtocolVersion, agentproto.ProtocolVersion)
	}
	e.svc.wait(t, "connected", serverID, nil)
	return e, g, c
}

// waitEntered waits until an AgentSessionChanges call has started.
func (g *gatedService) waitEntered(t *testing.T) {
	t.Helper()
	select {
	case <-g.entered:
	case <-time.After(20 * time.Second):
		t.Fatal("AgentSessionChanges not called")
	}
}

// TestHub_ResultWhileUpdateApplies: a command's result is delivered while
// an update of the same link still waits for the store, and the update is
// acked once it is applied.
func TestHub_ResultWhileUpdateApplies(t *testing.T) {
	e, g, c := mustStartGatedHub(t, "srv-slow")
	write(t, c, "u1", &agentproto.Update{Seq: 1, Changes: []agentproto.Session{ready("a")}})
	g.waitEntered(t) // the update waits for the "store"

	done := make(chan error, 1)
	go func() {
		_, err := e.hub.Dispatch(context.Background(), "srv-slow", broker.Command{Kind: broker.CommandDelete, SessionID: "x"})
		done <- err
	}()
	m := read(t, c)
	if m.Type != agentproto.TypeCommand {
		t.Fatalf("got %s while the update waits, want the command", m.Type)
	}
	write(t, c, m.ID, &agentproto.Result{OK: true})
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Dispatch: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the result was not delivered while an update of the link was applied")
	}
	if got := g.applied(); len(got) != 0 {
		t.Fatalf("update applied before the store answered: %v", got)
	}

	close(g.gate)
	m = read(t, c)
	if m.Type != agentproto.TypeAck || m.ID != "u1" {
		t.Fatalf("got %s %q, want the ack of u1", m.Type, m.ID)
	}
	if ack := m.Body.(*agentproto.Ack); ack.Error != "" || ack.Resync {
		t.Fatalf("ack = %+v", ack)
	}
	if got := g.applied(); !slices.EqualFunc(got, [][]string{{"a"}}, slices.Equal[[]string]) {
		t.Fatalf("applied = %v, want [[a]]", got)
	}
}

// TestHub_AcksInOrder: updates that arrive while one waits for the store
// are applied after it, in order, each acked in order once applied; a run
// of consecutive changes goes to the store as one call (the later change
// of a session last), and a gap after it still asks for the full list.
func TestHub_AcksInOrder(t *testing.T) {
	e, g, c := mustStartGatedHub(t, "srv-order")
	write(t, c, "u1", &agentproto.Update{Seq: 1, Changes: []agentproto.Session{ready("a")}})
	g.waitEntered(t)
	write(t, c, "u2", &agentproto.Update{Seq: 2, Changes: []agentproto.Session{ready("b")}})
	write(t, c, "", &agentproto.Update{Seq: 3}) // a heartbeat without ack
	write(t, c, "u4", &agentproto.Update{Seq: 4, Changes: []agentproto.Session{ready("c"), ready("d")}})
	write(t, c, "u5", &agentproto.Update{Seq: 5, Changes: []agentproto.Session{ended("b")}})
	write(t, c, "u7", &agentproto.Update{Seq: 7, Changes: []agentproto.Session{ready("e")}}) // 6 is lost
	poll.Until(t, 20*time.Second, "updates queued", func() bool { return e.hub.QueuedUpdates("srv-order") == 5 })

	close(g.gate)
	want := []struct {
		id      string
		applied int // AgentSessionChanges calls done by the ack
		resync  bool
	}{
		{"u1", 1, false},
		{"u2", 2, false},
		{"u4", 2, false},
		{"u5", 2, false},
		{"u7", 2, true},
	}
	for _, w := range want {
		m := read(t, c)
		if m.Type != agentproto.TypeAck || m.ID != w.id {
			t.Fatalf("got %s %q, want the ack of %s", m.Type, m.ID, w.id)
		}
		if ack := m.Body.(*agentproto.Ack); ack.Error != "" || ack.Resync != w.resync {
			t.Errorf("ack of %s = %+v, want resync %v", w.id, ack, w.resync)
		}
		if n := len(g.applied()); n < w.applied {
			t.Errorf("ack of %s sent after %d calls, want %d (acked before applied)", w.id, n, w.applied)
		}
	}
	wantCalls := [][]string{{"a"}, {"b", "c", "d", "b"}}
	if got := g.applied(); !slices.EqualFunc(got, wantCalls, slices.Equal[[]string]) {
		t.Fatalf("calls = %v, want %v", got, wantCalls)
	}
	ev := e.svc.wait(t, "changes", "srv-order", func(ev event) bool { return len(ev.sessions) == 4 })
	if last := ev.sessions[3]; last.ID != "b" || last.State != broker.StateDeleted {
		t.Errorf("last change = %+v, want b DELETED", last)
	}
}
