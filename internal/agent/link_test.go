package agent_test

import (
	"context"
	"maps"
	"math"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/agent"
	"github.com/berth-dev/berth/internal/agentproto"
	"github.com/berth-dev/berth/internal/driver/sim"
	"github.com/berth-dev/berth/internal/poll"
	"github.com/coder/websocket"
)

// welcomeVersion is a fakeBroker.welcome that speaks version v with a 200 ms
// update interval.
func welcomeVersion(v int) func(*agentproto.Hello) agentproto.Body {
	return func(*agentproto.Hello) agentproto.Body {
		return &agentproto.Welcome{ProtocolVersion: v, UpdateIntervalMS: 200, HeartbeatTimeoutMS: 5000}
	}
}

// nextUpdate reads the next update, acks it if it has an ID (version 3
// agents leave it off heartbeats and figures while the broker spoke lately)
// with a plain ack, and returns it.
func (bc *brokerConn) nextUpdate(t *testing.T) (*agentproto.Message, *agentproto.Update) {
	t.Helper()
	m := bc.read(t, agentproto.TypeUpdate)
	if m.ID != "" {
		bc.send(t, m.ID, &agentproto.Ack{})
	}
	return m, m.Body.(*agentproto.Update)
}

// ackNext reads updates, acking those with an ID plainly, until one has an
// ID, and acks that one with ack. each sees every update read.
func (bc *brokerConn) ackNext(t *testing.T, ack *agentproto.Ack, each func(*agentproto.Message, *agentproto.Update)) {
	t.Helper()
	for {
		m := bc.read(t, agentproto.TypeUpdate)
		u := m.Body.(*agentproto.Update)
		if each != nil {
			each(m, u)
		}
		if m.ID != "" {
			bc.send(t, m.ID, ack)
			return
		}
	}
}

// TestAgent_Deltas: on a version 3 link the agent's updates are numbered by
// Seq and carry only the sessions that changed (ended ones as DELETED); the
// periodic ticks are heartbeats without sessions; the full list comes only
// after an ack that asks for it (resync) or that failed.
func TestAgent_Deltas(t *testing.T) {
	fb := mustStartBroker(t, &fakeBroker{welcome: welcomeVersion(3)})
	d := sim.New()
	for _, id := range []string{"a", "b", "c"} {
		if err := d.Create(context.Background(), agent.CreateRequest{ID: id, Owner: "u"}); err != nil {
			t.Fatal(err)
		}
	}
	mustRunAgent(t, &agent.Agent{BrokerURLs: []string{fb.url}, TLSConfig: fb.tls, Driver: d, UpdateInterval: time.Hour})
	bc := fb.next(t)
	if bc.hello.ProtocolVersion != agentproto.ProtocolVersion || len(bc.hello.Sessions) != 3 {
		t.Fatalf("hello: version %d, %d sessions; want %d, 3", bc.hello.ProtocolVersion, len(bc.hello.Sessions), agentproto.ProtocolVersion)
	}
	var seq uint64
	check := func(m *agentproto.Message, u *agentproto.Update) {
		t.Helper()
		seq++
		if u.Seq != seq {
			t.Errorf("update %s: seq %d, want %d", m.ID, u.Seq, seq)
		}
	}

	// Ticks: heartbeats, neither the list nor changes.
	for range 3 {
		m, u := bc.nextUpdate(t)
		check(m, u)
		if u.Sessions != nil || len(u.Changes) != 0 {
			t.Fatalf("tick %s carries sessions %v, changes %v", m.ID, u.Sessions, u.Changes)
		}
	}

	// A new session and an ended one: exactly those two, the ended one DELETED.
	if err := d.Create(context.Background(), agent.CreateRequest{ID: "d", Owner: "u"}); err != nil {
		t.Fatal(err)
	}
	d.SimulateExit("b")
	got := map[string]string{}
	for len(got) < 2 {
		m, u := bc.nextUpdate(t)
		check(m, u)
		if u.Sessions != nil {
			t.Fatalf("update %s carries the full list", m.ID)
		}
		for _, c := range u.Changes {
			if c.ID != "b" && c.ID != "d" {
				t.Errorf("update %s: unchanged session %s in changes", m.ID, c.ID)
			}
			got[c.ID] = c.State
		}
	}
	if got["b"] != agentproto.StateDeleted || got["d"] != agentproto.StateReady {
		t.Errorf("changes = %v, want b DELETED and d READY", got)
	}

	// A resync ack: the next update carries the full list (a, c, d), and
	// the ones after are deltas again.
	bc.ackNext(t, &agentproto.Ack{Resync: true}, check)
	m, u := bc.nextUpdate(t)
	check(m, u)
	if len(u.Sessions) != 3 || u.Host == nil || len(u.Changes) != 0 {
		t.Fatalf("update after resync: %d sessions, host %v, %d changes; want the full list of 3 and the host", len(u.Sessions), u.Host != nil, len(u.Changes))
	}
	bc.ackNext(t, &agentproto.Ack{Error: "store down"}, func(m *agentproto.Message, u *agentproto.Update) {
		check(m, u)
		if u.Sessions != nil {
			t.Fatalf("tick after a resync carries the full list again")
		}
	})
	m, u = bc.nextUpdate(t)
	check(m, u)
	if len(u.Sessions) != 3 {
		t.Fatalf("update after a failed ack: %d sessions, want the full list of 3", len(u.Sessions))
	}
}

// TestAgent_FullListsToVersion2Broker: a broker that welcomes the agent with
// version 2 gets what version 2 agents send: no seq, no changes, the full
// list whenever it changed.
func TestAgent_FullListsToVersion2Broker(t *testing.T) {
	fb := mustStartBroker(t, &fakeBroker{welcome: welcomeVersion(2)})
	d := sim.New()
	mustRunAgent(t, &agent.Agent{BrokerURLs: []string{fb.url}, TLSConfig: fb.tls, Driver: d, UpdateInterval: time.Hour})
	bc := fb.next(t)
	_, u := bc.nextUpdate(t)
	if u.Seq != 0 || u.Sessions != nil || u.Changes != nil {
		t.Fatalf("heartbeat to a version 2 broker = %+v", u)
	}
	d.Create(context.Background(), agent.CreateRequest{ID: "one", Owner: "u"})
	for {
		_, u = bc.nextUpdate(t)
		if u.Seq != 0 || u.Changes != nil {
			t.Fatalf("update to a version 2 broker has seq %d, changes %v", u.Seq, u.Changes)
		}
		if len(u.Sessions) == 1 {
			break
		}
	}
	d.Create(context.Background(), agent.CreateRequest{ID: "two", Owner: "u"})
	for {
		_, u = bc.nextUpdate(t)
		if len(u.Sessions) == 2 {
			break // the full list, not the one new session
		}
		if len(u.Sessions) != 0 {
			t.Fatalf("update to a version 2 broker has %d sessions, want the full list", len(u.Sessions))
		}
	}
}

// TestAgent_LinkClosedByBrokerIsNotSilence: when the broker closes the link,
// the agent says so, not that the broker fell silent (it did, until the fix,
// for every link loss).
func TestAgent_LinkClosedByBrokerIsNotSilence(t *testing.T) {
	fb := mustStartBroker(t, &fakeBroker{})
	_, logs := mustRunAgent(t, &agent.Agent{BrokerURLs: []string{fb.url}, TLSConfig: fb.tls})
	bc := fb.next(t)
	bc.c.Close(websocket.StatusGoingAway, "broker restarting")
	fb.next(t)
	var line string
	poll.Until(t, 10*time.Second, "the link loss logged", func() bool {
		for l := range strings.Lines(logs.String()) {
			if strings.Contains(l, "broker link closed") {
				line = l
				return true
			}
		}
		return false
	})
	if strings.Contains(line, "silent") || !strings.Contains(line, "broker restarting") {
		t.Errorf("link closed by the broker logged as:\n%s", line)
	}
}

// changingHost is an agent's Report whose figures and tags a test moves.
type changingHost struct {
	mu sync.Mutex
	h  agentproto.HostReport
}

func (c *changingHost) report(context.Context) (agentproto.HostReport, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	h := c.h
	h.Tags = maps.Clone(c.h.Tags)
	return h, nil
}

func (c *changingHost) set(f func(*agentproto.HostReport)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	f(&c.h)
}

// nextNonHeartbeat acks updates until one carries a host report or figures,
// and returns it.
func (bc *brokerConn) nextNonHeartbeat(t *testing.T) *agentproto.Update {
	t.Helper()
	for {
		_, u := bc.nextUpdate(t)
		if u.Host != nil || u.Figures != nil {
			return u
		}
	}
}

// TestAgent_FiguresAlone: on a version 3 link, a host report whose load,
// memory in use or swap in use moved, and nothing else, travels as figures
// only; any other change, and the update after a resync, sends the whole
// report; figures that JSON cannot carry are not sent and the link stays up.
func TestAgent_FiguresAlone(t *testing.T) {
	fb := mustStartBroker(t, &fakeBroker{welcome: welcomeVersion(3)})
	ch := &changingHost{h: agentproto.HostReport{Hostname: "h", Memory: agentproto.Memory{TotalBytes: 8 << 30, UsedBytes: 1 << 30},
		Load: agentproto.Load{One: 0.5}, Tags: map[string]string{"pool": "a"}}}
	mustRunAgent(t, &agent.Agent{BrokerURLs: []string{fb.url}, TLSConfig: fb.tls, UpdateInterval: time.Hour, Report: ch.report})
	bc := fb.next(t)
	if bc.hello.Host.Load.One != 0.5 {
		t.Fatalf("hello's host = %+v", bc.hello.Host)
	}
	if _, u := bc.nextUpdate(t); u.Host != nil || u.Figures != nil {
		t.Fatalf("first tick with nothing changed = %+v, want a heartbeat", u)
	}

	want := agentproto.HostFigures{Load: agentproto.Load{One: 2, Five: 1, Fifteen: 0.5}, MemoryUsedBytes: 3 << 30, SwapUsedBytes: 1 << 20}
	ch.set(func(h *agentproto.HostReport) { h.SetFigures(want) })
	u := bc.nextNonHeartbeat(t)
	if u.Host != nil || u.Figures == nil || *u.Figures != want {
		t.Fatalf("update after the figures moved: host %v, figures %+v; want figures %+v alone", u.Host != nil, u.Figures, want)
	}

	// Figures and a tag: the whole report, with the new figures.
	want.Load.One, want.SwapUsedBytes = 3, 0
	ch.set(func(h *agentproto.HostReport) { h.SetFigures(want); h.Tags["pool"] = "b" })
	u = bc.nextNonHeartbeat(t)
	if u.Host == nil || u.Figures != nil || u.Host.Tags["pool"] != "b" || u.Host.Figures() != want {
		t.Fatalf("update after a tag and the figures moved: host %+v, figures %+v; want the whole report", u.Host, u.Figures)
	}

	// Figures JSON cannot carry: nothing sent for them, heartbeats go on.
	ch.set(func(h *agentproto.HostReport) { h.Load.One = math.NaN() })
	for range 3 {
		if _, u := bc.nextUpdate(t); u.Host != nil || u.Figures != nil {
			t.Fatalf("update with a NaN load = %+v, want a heartbeat", u)
		}
	}
	ch.set(func(h *agentproto.HostReport) { h.Load.One = 4 })
	if u := bc.nextNonHeartbeat(t); u.Figures == nil || u.Figures.Load.One != 4 {
		t.Fatalf("update after the load became a number again: %+v", u)
	}

	// After a resync ack the next update brings the whole report, even
	// though only figures moved.
	bc.ackNext(t, &agentproto.Ack{Resync: true}, nil)
	ch.set(func(h *agentproto.HostReport) { h.Memory.UsedBytes = 5 << 30 })
	if u := bc.nextNonHeartbeat(t); u.Host == nil || u.Figures != nil || u.Host.Memory.UsedBytes != 5<<30 {
		t.Fatalf("update after a resync: host %+v, figures %+v; want the whole report", u.Host, u.Figures)
	}
}

// TestAgent_WholeHostToVersion2Broker: a version 2 broker never gets
// figures: when they move, the agent sends the whole report.
func TestAgent_WholeHostToVersion2Broker(t *testing.T) {
	fb := mustStartBroker(t, &fakeBroker{welcome: welcomeVersion(2)})
	ch := &changingHost{h: agentproto.HostReport{Hostname: "h", Load: agentproto.Load{One: 0.5}}}
	mustRunAgent(t, &agent.Agent{BrokerURLs: []string{fb.url}, TLSConfig: fb.tls, UpdateInterval: time.Hour, Report: ch.report})
	bc := fb.next(t)
	ch.set(func(h *agentproto.HostReport) { h.Load.One = 7 })
	u := bc.nextNonHeartbeat(t)
	if u.Figures != nil || u.Host == nil || u.Host.Load.One != 7 || u.Host.Hostname != "h" {
		t.Fatalf("update to a version 2 broker: host %+v, figures %+v; want the whole report", u.Host, u.Figures)
	}
}

// TestAgent_AcksAskedSparingly: on a version 3 link the agent leaves the ID
// (and so the ack) off heartbeats while the broker spoke within half its
// read timeout, and asks for one at least that often; to a version 2 broker
// every update has an ID.
func TestAgent_AcksAskedSparingly(t *testing.T) {
	for _, v := range []int{3, 2} {
		t.Run("version="+strconv.Itoa(v), func(t *testing.T) {
			// Interval 100 ms, heartbeat timeout 1 s: the agent's read
			// timeout is 1.1 s, so it asks for an ack at least every 550 ms.
			fb := mustStartBroker(t, &fakeBroker{welcome: func(*agentproto.Hello) agentproto.Body {
				return &agentproto.Welcome{ProtocolVersion: v, UpdateIntervalMS: 100, HeartbeatTimeoutMS: 1000}
			}})
			mustRunAgent(t, &agent.Agent{BrokerURLs: []string{fb.url}, TLSConfig: fb.tls, UpdateInterval: time.Hour})
			bc := fb.next(t)
			withID, without, run := 0, 0, 0
			for range 25 {
				m, _ := bc.nextUpdate(t)
				if m.ID != "" {
					withID, run = withID+1, 0
					continue
				}
				without, run = without+1, run+1
				if run > 7 {
					t.Fatalf("%d heartbeats in a row without an ID", run)
				}
			}
			switch {
			case v == 2 && without != 0:
				t.Errorf("%d updates to a version 2 broker without an ID", without)
			case v == 3 && (without < 10 || withID < 2):
				t.Errorf("version 3: %d heartbeats without an ID, %d with; want most without, and some with", without, withID)
			}
		})
	}
}
