package agenthub_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/agenthub"
	"github.com/berth-dev/berth/internal/agentproto"
	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/poll"
	"github.com/berth-dev/berth/internal/sqlite"
	"github.com/coder/websocket"
)

// ready returns a READY session of owner u as an agent reports it.
func ready(id string) agentproto.Session {
	return agentproto.Session{ID: id, Owner: "u", Type: "VIRTUAL", State: agentproto.StateReady}
}

// ended returns a session as an agent reports it ended.
func ended(id string) agentproto.Session {
	s := ready(id)
	s.State = agentproto.StateDeleted
	return s
}

// update sends u with ID id and returns the ack.
func update(t testing.TB, c *websocket.Conn, id string, u *agentproto.Update) *agentproto.Ack {
	t.Helper()
	write(t, c, id, u)
	for {
		m := read(t, c)
		if m.Type == agentproto.TypeAck && m.ID == id {
			return m.Body.(*agentproto.Ack)
		}
	}
}

// TestHub_DeltaGap: the hub passes changes whose seq follows the last one to
// AgentSessionChanges; after a gap it applies nothing, asks for the full list
// (ack.resync), ignores changes until the list comes, passes the list to
// AgentUpdate (a full reconcile) and then takes changes again.
func TestHub_DeltaGap(t *testing.T) {
	e := mustStartHub(t, agenthub.Options{}, nil)
	c := e.dial(t)
	h := hello("srv-gap")
	h.Sessions = []agentproto.Session{ready("a"), ready("b")}
	write(t, c, "", h)
	if w := read(t, c).Body.(*agentproto.Welcome); w.ProtocolVersion != agentproto.ProtocolVersion {
		t.Fatalf("welcome version %d, want %d", w.ProtocolVersion, agentproto.ProtocolVersion)
	}
	e.svc.wait(t, "connected", "srv-gap", nil)

	if ack := update(t, c, "u1", &agentproto.Update{Seq: 1, Changes: []agentproto.Session{ended("a")}}); ack.Resync || ack.Error != "" {
		t.Fatalf("ack of an update in sequence = %+v", ack)
	}
	ev := e.svc.wait(t, "changes", "srv-gap", nil)
	if len(ev.sessions) != 1 || ev.sessions[0].ID != "a" || ev.sessions[0].State != broker.StateDeleted {
		t.Fatalf("changes = %+v, want a DELETED", ev.sessions)
	}
	if ack := update(t, c, "u2", &agentproto.Update{Seq: 2}); ack.Resync {
		t.Fatal("a heartbeat in sequence asked for a resync")
	}

	// Update 3 is lost: 4 is a gap.
	if ack := update(t, c, "u4", &agentproto.Update{Seq: 4, Changes: []agentproto.Session{ended("b")}}); !ack.Resync {
		t.Fatalf("ack of an update after a gap = %+v, want resync", ack)
	}
	// Changes that were in flight before the agent saw the resync: ignored,
	// and not asked for again.
	if ack := update(t, c, "u5", &agentproto.Update{Seq: 5, Changes: []agentproto.Session{ready("c")}}); ack.Resync {
		t.Fatalf("ack while waiting for the full list = %+v, want a plain ack", ack)
	}
	// The full list: reconciled as a whole.
	full := []agentproto.Session{ready("c")}
	if ack := update(t, c, "u6", &agentproto.Update{Seq: 6, Sessions: full}); ack.Resync || ack.Error != "" {
		t.Fatalf("ack of the full list = %+v", ack)
	}
	ev = e.svc.wait(t, "update", "srv-gap", func(ev event) bool { return ev.sessions != nil })
	if len(ev.sessions) != 1 || ev.sessions[0].ID != "c" {
		t.Fatalf("full list passed on = %+v, want [c]", ev.sessions)
	}
	// Counting goes on from the full list's seq.
	if ack := update(t, c, "u7", &agentproto.Update{Seq: 7, Changes: []agentproto.Session{ended("c")}}); ack.Resync {
		t.Fatal("the update after the full list asked for a resync")
	}
	ev = e.svc.wait(t, "changes", "srv-gap", nil)
	if len(ev.sessions) != 1 || ev.sessions[0].ID != "c" {
		t.Fatalf("changes after the full list = %+v, want [c]", ev.sessions)
	}
	// Neither b's change (after the gap) nor c's first one (while waiting)
	// reached the broker: the only changes events were a's and c's last.
	e.svc.none(t, "changes", "srv-gap")
}

// TestHub_BareHeartbeatGap: bare heartbeats (no ID, nothing but a Seq),
// which the read loop applies itself when nothing else waits, keep the
// sequence like any update: one after a gap makes the next acked update
// ask for the full list, and its changes are ignored.
func TestHub_BareHeartbeatGap(t *testing.T) {
	e := mustStartHub(t, agenthub.Options{}, nil)
	c := e.dial(t)
	h := hello("srv-hb")
	h.Sessions = []agentproto.Session{ready("a"), ready("b")}
	write(t, c, "", h)
	read(t, c) // welcome
	e.svc.wait(t, "connected", "srv-hb", nil)
	if ack := update(t, c, "u1", &agentproto.Update{Seq: 1, Changes: []agentproto.Session{ended("a")}}); ack.Resync {
		t.Fatalf("ack of an update in sequence = %+v", ack)
	}
	e.svc.wait(t, "changes", "srv-hb", nil)
	write(t, c, "", &agentproto.Update{Seq: 2}) // in sequence
	write(t, c, "", &agentproto.Update{Seq: 4}) // 3 is lost
	if ack := update(t, c, "u5", &agentproto.Update{Seq: 5, Changes: []agentproto.Session{ended("b")}}); !ack.Resync {
		t.Fatalf("ack after a bare heartbeat's gap = %+v, want resync", ack)
	}
	e.svc.none(t, "changes", "srv-hb")
}

// brokerEnv is a real broker (on SQLite) behind a hub on loopback, with the
// logs of both in one buffer.
type brokerEnv struct {
	svc  *broker.Service
	st   *sqlite.Store
	hub  *agenthub.Hub
	url  string
	srv  *httptest.Server
	logs *syncBuffer
}

type hubDispatcher struct{ hub *agenthub.Hub }

func (d *hubDispatcher) Dispatch(ctx context.Context, serverID string, cmd broker.Command) (*broker.Result, error) {
	return d.hub.Dispatch(ctx, serverID, cmd)
}

type noTokens struct{}

func (noTokens) IssueConnectionToken(ctx context.Context, sessionID, owner, user string) (string, error) {
	return "", errors.New("no tokens in this test")
}

func mustStartBrokerHub(t testing.TB) *brokerEnv {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	e := &brokerEnv{logs: &syncBuffer{}}
	log := slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "berth.db"))
	if err != nil {
		t.Fatal(err)
	}
	e.st = st
	disp := &hubDispatcher{}
	svc, err := broker.New(ctx, st, disp, noTokens{}, broker.Config{BrokerID: "b1"}, log)
	if err != nil {
		t.Fatal(err)
	}
	e.svc = svc
	e.hub = agenthub.New(svc, nil, agenthub.Options{Logger: log})
	disp.hub = e.hub
	var wg sync.WaitGroup
	wg.Go(func() { _ = svc.Run(ctx) })
	mux := http.NewServeMux()
	mux.Handle("/agent/connect", e.hub.Handler())
	e.srv = httptest.NewTLSServer(mux)
	e.url = "wss://" + e.srv.Listener.Addr().String()
	t.Cleanup(func() {
		e.srv.Close()
		e.hub.Close()
		cancel()
		wg.Wait()
		st.Close()
	})
	return e
}

func (e *brokerEnv) dial(t testing.TB) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pool := x509.NewCertPool()
	pool.AddCert(e.srv.Certificate())
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	c, _, err := websocket.Dial(ctx, e.url+"/agent/connect", &websocket.DialOptions{HTTPClient: hc})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.CloseNow() })
	return c
}

// states returns the stored state of each of the server's sessions.
func (e *brokerEnv) states(t testing.TB, serverID string) map[string]string {
	t.Helper()
	ss, err := e.st.ListSessions(t.Context(), broker.SessionFilter{ServerID: serverID})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, s := range ss {
		out[s.ID] = s.State
	}
	return out
}

// virtual returns the broker's count of the server's VIRTUAL sessions.
func (e *brokerEnv) virtual(t testing.TB, serverID string) int {
	t.Helper()
	return e.svc.ViewServer(t.Context(), e.svc.ServerByID(serverID)).VirtualSessions
}

func wantStates(t testing.TB, got map[string]string, want map[string]string) {
	t.Helper()
	for id, w := range want {
		if got[id] != w {
			t.Errorf("session %s: state %q, want %q (all: %v)", id, got[id], w, got)
		}
	}
}

// TestHub_DeltasReachTheStore runs version 3 reports through a real broker:
// changes are written; after a gap the broker applies nothing until the
// agent's full list, which it reconciles (ending the session the list lacks,
// whose own change was lost in the gap); the server's session counts follow.
func TestHub_DeltasReachTheStore(t *testing.T) {
	e := mustStartBrokerHub(t)
	c := e.dial(t)
	h := hello("srv-d")
	h.Sessions = []agentproto.Session{ready("a"), ready("b"), ready("c"), ready("d")}
	write(t, c, "", h)
	if m := read(t, c); m.Type != agentproto.TypeWelcome {
		t.Fatalf("got %s, want welcome", m.Type)
	}
	wantStates(t, e.states(t, "srv-d"), map[string]string{"a": "READY", "b": "READY", "c": "READY", "d": "READY"})

	a := ready("a")
	a.NumConnections = 2
	update(t, c, "u1", &agentproto.Update{Seq: 1, Changes: []agentproto.Session{a, ended("c"), ready("new")}})
	wantStates(t, e.states(t, "srv-d"), map[string]string{"a": "READY", "b": "READY", "c": "DELETED", "d": "READY", "new": "READY"})
	if got, err := e.st.GetSession(t.Context(), "a"); err != nil || got.NumOfConnections != 2 {
		t.Errorf("session a after its change: %+v, %v; want 2 connections", got, err)
	}
	if n := e.virtual(t, "srv-d"); n != 4 {
		t.Errorf("virtual sessions after the changes = %d, want 4", n)
	}

	// A gap: b's end is not applied.
	if ack := update(t, c, "u3", &agentproto.Update{Seq: 3, Changes: []agentproto.Session{ended("b")}}); !ack.Resync {
		t.Fatalf("ack after a gap = %+v, want resync", ack)
	}
	wantStates(t, e.states(t, "srv-d"), map[string]string{"b": "READY"})
	// The full list, which lacks b and d: the full reconcile ends them.
	update(t, c, "u4", &agentproto.Update{Seq: 4, Sessions: []agentproto.Session{a, ready("new")}})
	wantStates(t, e.states(t, "srv-d"), map[string]string{"a": "READY", "b": "DELETED", "c": "DELETED", "d": "DELETED", "new": "READY"})
	if n := e.virtual(t, "srv-d"); n != 2 {
		t.Errorf("virtual sessions after the full list = %d, want 2", n)
	}
}

// TestHub_Version2AgentWithBroker: an agent of protocol version 2 (full
// lists, no seq) is welcomed with version 2 and its lists are reconciled; it
// is never asked for a resync.
func TestHub_Version2AgentWithBroker(t *testing.T) {
	e := mustStartBrokerHub(t)
	c := e.dial(t)
	h := hello("srv-v2")
	h.ProtocolVersion = 2
	h.Sessions = []agentproto.Session{ready("a"), ready("b")}
	write(t, c, "", h)
	if w := read(t, c).Body.(*agentproto.Welcome); w.ProtocolVersion != 2 {
		t.Fatalf("welcome version %d, want 2", w.ProtocolVersion)
	}
	a := ready("a")
	a.NumConnections = 1
	for i, list := range [][]agentproto.Session{{a, ready("b")}, {a}} {
		if ack := update(t, c, "u"+strconv.Itoa(i+1), &agentproto.Update{Sessions: list}); ack.Resync || ack.Error != "" {
			t.Fatalf("ack of a version 2 update = %+v", ack)
		}
	}
	wantStates(t, e.states(t, "srv-v2"), map[string]string{"a": "READY", "b": "DELETED"})
	if got, err := e.st.GetSession(t.Context(), "a"); err != nil || got.NumOfConnections != 1 {
		t.Errorf("session a: %+v, %v; want 1 connection", got, err)
	}
}

// TestHub_ConnectLoggedOnce: a connect and a disconnect are one INFO line
// each in the broker's log (the hub's, with the agent's attributes), not
// one from the hub and one from the broker core.
func TestHub_ConnectLoggedOnce(t *testing.T) {
	e := mustStartBrokerHub(t)
	c := e.dial(t)
	write(t, c, "", hello("srv-log"))
	read(t, c)
	c.Close(websocket.StatusNormalClosure, "")
	poll.Until(t, 10*time.Second, "the disconnect", func() bool {
		return strings.Contains(e.logs.String(), "agent disconnected")
	})
	logs := e.logs.String()
	for _, msg := range []string{`msg="agent connected"`, `msg="agent disconnected"`} {
		if n := strings.Count(logs, msg); n != 1 {
			t.Errorf("%s logged %d times:\n%s", msg, n, logs)
		}
	}
	for _, attr := range []string{"server_id=srv-log", "protocol_version=" + strconv.Itoa(agentproto.ProtocolVersion), "sessions=0"} {
		if !strings.Contains(logs, attr) {
			t.Errorf("the connect line lacks %s:\n%s", attr, logs)
		}
	}
}

// TestHub_DeltaOfSessionElsewhere: a change to a session that the broker
// placed on another server is not written; the broker deletes the session on
// the host that reported it.
func TestHub_DeltaOfSessionElsewhere(t *testing.T) {
	e := mustStartBrokerHub(t)
	now := time.Now()
	if err := e.st.UpsertServer(t.Context(), &broker.Server{ID: "srv-other", Open: true, LastSeen: now, CreatedAt: now}); err != nil {
		t.Fatal(err)
	}
	x := &broker.Session{ID: "x", Owner: "u", Type: broker.TypeVirtual, ServerID: "srv-other", State: broker.StateReady, CreationTime: now, UpdatedAt: now}
	if err := e.st.InsertSessions(t.Context(), []*broker.Session{x}); err != nil {
		t.Fatal(err)
	}
	c := e.dial(t)
	write(t, c, "", hello("srv-here"))
	read(t, c)
	write(t, c, "u1", &agentproto.Update{Seq: 1, Changes: []agentproto.Session{ready("x")}})
	for {
		m := read(t, c)
		if cmd, ok := m.Body.(*agentproto.Command); ok {
			if cmd.Kind != agentproto.KindDelete || cmd.SessionID != "x" {
				t.Fatalf("command %+v, want delete of x", cmd)
			}
			break
		}
	}
	got, err := e.st.GetSession(t.Context(), "x")
	if err != nil || got.ServerID != "srv-other" || got.State != broker.StateReady {
		t.Errorf("session x after another server's change: %+v, %v; want it untouched", got, err)
	}
}
