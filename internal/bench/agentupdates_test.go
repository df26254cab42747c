package bench

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/agenthub"
	"github.com/berth-dev/berth/internal/agentproto"
	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/postgres"
	"github.com/berth-dev/berth/internal/postgres/pgtest"
	"github.com/berth-dev/berth/internal/sqlite"
	"github.com/coder/websocket"
)

// The agent update benchmark: sessions reported READY by their agents.
const (
	updAgents   = 10
	updSessions = 1000 // per agent
	updBatch    = 10   // sessions that turn READY between two updates
)

// BenchmarkAgentUpdates measures how fast a broker records sessions turning
// READY, the end of the create pipeline. 10 agents speak the real protocol
// over TLS WebSockets on loopback to an agent hub in front of a real broker
// (on SQLite, and on PostgreSQL); each has 1,000 CREATING sessions, which turn READY 10 at a time,
// one update (and its ack) per step, the 10 agents at once. Two modes, in one
// run:
//
//   - mode=full: protocol version 2 agents, whose every update carries the
//     full list of 1,000 sessions, which the broker reconciles (reads the
//     server's sessions and compares);
//   - mode=deltas: protocol version 3 agents, whose updates carry the 10
//     sessions that changed, which the broker writes without reading the
//     others.
//
// It reports ready/s (10,000 sessions over the wall time of the updates) and
// the time per update, medians over the iterations; each iteration starts a
// fresh store and broker (not timed). Run with -benchtime=3x or more.
//
// store=postgres runs the same on PostgreSQL (BERTH_TEST_PG_DSN; skipped
// without it).
func BenchmarkAgentUpdates(b *testing.B) {
	stores := []struct {
		name string
		open func(testing.TB) broker.Store
	}{
		{"sqlite", func(tb testing.TB) broker.Store {
			st, err := sqlite.Open(context.Background(), filepath.Join(tb.TempDir(), "updates.db"))
			if err != nil {
				tb.Fatal(err)
			}
			return st
		}},
		{"postgres", func(tb testing.TB) broker.Store {
			st, err := postgres.Open(context.Background(), pgtest.DSN(tb), nil)
			if err != nil {
				tb.Fatal(err)
			}
			return st
		}},
	}
	for _, store := range stores {
		for _, mode := range []struct {
			name    string
			version int
		}{{"full", 2}, {"deltas", 3}} {
			b.Run("store="+store.name+"/mode="+mode.name, func(b *testing.B) {
				var rates, perUpdate []float64
				for range b.N {
					b.StopTimer()
					d := agentUpdatesRun(b, store.open, mode.version)
					b.StartTimer()
					rates = append(rates, float64(updAgents*updSessions)/d.Seconds())
					perUpdate = append(perUpdate, float64(d.Microseconds())/float64(updSessions/updBatch))
				}
				b.ReportMetric(median(rates), "ready/s")
				b.ReportMetric(median(perUpdate), "µs/update")
			})
		}
	}
}

type updatesDisp struct{ hub *agenthub.Hub }

func (d *updatesDisp) Dispatch(ctx context.Context, serverID string, cmd broker.Command) (*broker.Result, error) {
	return d.hub.Dispatch(ctx, serverID, cmd)
}

// agentUpdatesRun sets up a broker whose servers have their CREATING
// sessions, links the agents, and returns the wall time of their updates.
func agentUpdatesRun(b *testing.B, open func(testing.TB) broker.Store, version int) time.Duration {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st := open(b)
	defer st.Close()
	now := time.Now()
	lists := make([][]agentproto.Session, updAgents)
	for a := range updAgents {
		id := fmt.Sprintf("srv-%02d", a)
		if err := st.UpsertServer(ctx, &broker.Server{ID: id, Open: true, LastSeen: now, CreatedAt: now,
			Info: broker.ServerInfo{Hostname: id, Healthy: true, Driver: "sim"}}); err != nil {
			b.Fatal(err)
		}
		ss := make([]*broker.Session, updSessions)
		lists[a] = make([]agentproto.Session, updSessions)
		for i := range ss {
			sid := fmt.Sprintf("%s-%04d", id, i)
			ss[i] = &broker.Session{ID: sid, Owner: "u" + strconv.Itoa(i%50), Type: broker.TypeVirtual, ServerID: id,
				State: broker.StateCreating, Substate: broker.SubstatePendingPreparation, CreationTime: now, UpdatedAt: now}
			lists[a][i] = agentproto.Session{ID: sid, Owner: ss[i].Owner, Type: broker.TypeVirtual,
				State: agentproto.StateCreating, CreationTime: now}
		}
		if err := st.InsertSessions(ctx, ss); err != nil {
			b.Fatal(err)
		}
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	disp := &updatesDisp{}
	svc, err := broker.New(ctx, st, disp, noTokens{}, broker.Config{BrokerID: "bench", HeartbeatTimeout: time.Hour}, log)
	if err != nil {
		b.Fatal(err)
	}
	hub := agenthub.New(svc, nil, agenthub.Options{Logger: log, UpdateInterval: time.Hour})
	disp.hub = hub
	var runWG sync.WaitGroup
	runWG.Go(func() { _ = svc.Run(ctx) })
	defer runWG.Wait()
	defer cancel()
	mux := http.NewServeMux()
	mux.Handle("/agent/connect", hub.Handler())
	srv := httptest.NewTLSServer(mux)
	defer srv.Close()
	defer hub.Close()
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}

	conns := make([]*websocket.Conn, updAgents)
	for a := range updAgents {
		c, _, err := websocket.Dial(ctx, "wss://"+srv.Listener.Addr().String()+"/agent/connect", &websocket.DialOptions{HTTPClient: hc})
		if err != nil {
			b.Fatal(err)
		}
		c.SetReadLimit(agentproto.MaxMessageSize)
		defer c.CloseNow()
		conns[a] = c
		hello := &agentproto.Hello{ProtocolVersion: version, ServerID: fmt.Sprintf("srv-%02d", a), AgentVersion: "bench",
			Host: agentproto.HostReport{Hostname: "bench", Healthy: true}, Sessions: lists[a]}
		if m := exchange(b, c, "", hello); m.Type != agentproto.TypeWelcome {
			b.Fatalf("got %s, want welcome", m.Type)
		}
	}

	start := time.Now()
	var wg sync.WaitGroup
	for a := range updAgents {
		wg.Go(func() {
			list := lists[a]
			for step := range updSessions / updBatch {
				u := &agentproto.Update{}
				for i := step * updBatch; i < (step+1)*updBatch; i++ {
					list[i].State = agentproto.StateReady
				}
				if version >= 3 {
					u.Seq = uint64(step + 1)
					u.Changes = list[step*updBatch : (step+1)*updBatch]
				} else {
					u.Sessions = list
				}
				id := "u" + strconv.Itoa(step+1)
				m := exchange(b, conns[a], id, u)
				if ack, ok := m.Body.(*agentproto.Ack); !ok || m.ID != id || ack.Error != "" || ack.Resync {
					b.Errorf("agent %d: answer to %s: %s %+v", a, id, m.Type, m.Body)
					return
				}
			}
		})
	}
	wg.Wait()
	d := time.Since(start)
	n, err := st.ListSessions(ctx, broker.SessionFilter{States: []string{broker.StateReady}})
	if err != nil {
		b.Fatal(err)
	}
	if len(n) != updAgents*updSessions {
		b.Fatalf("%d sessions READY, want %d", len(n), updAgents*updSessions)
	}
	return d
}

// exchange sends one message and returns the next one the broker sends.
func exchange(tb testing.TB, c *websocket.Conn, id string, body agentproto.Body) *agentproto.Message {
	data, err := agentproto.Encode(id, body)
	if err != nil {
		tb.Error(err)
		return &agentproto.Message{}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.Write(ctx, websocket.MessageText, data); err != nil {
		tb.Error(err)
		return &agentproto.Message{}
	}
	_, data, err = c.Read(ctx)
	if err != nil {
		tb.Error(err)
		return &agentproto.Message{}
	}
	m, err := agentproto.Decode(data)
	if err != nil {
		tb.Error(err)
		return &agentproto.Message{}
	}
	return m
}
