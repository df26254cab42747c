package broker_test

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/sqlite"
)

// eventLog records the events emitted to it.
type eventLog struct {
	mu  sync.Mutex
	evs []broker.Event
}

func (l *eventLog) Emit(_ context.Context, evs ...broker.Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.evs = append(l.evs, evs...)
}

// take returns the events emitted since the last take.
func (l *eventLog) take() []broker.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.evs
	l.evs = nil
	return out
}

// fixedLeader is a Leaser with a fixed answer.
type fixedLeader bool

func (f fixedLeader) IsLeader(context.Context) bool { return bool(f) }

// scalingBroker is a broker on a real SQLite store whose background work
// does not run (each test drives the checks) and whose clock the test sets.
type scalingBroker struct {
	svc *broker.Service
	st  broker.Store
	log *eventLog
	mu  sync.Mutex
	now time.Time
}

func (b *scalingBroker) clock() time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.now
}

// advance moves the clock on by d.
func (b *scalingBroker) advance(d time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.now = b.now.Add(d)
}

var scalingT0 = time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)

func newScalingBroker(t *testing.T, opts ...func(*broker.Config)) *scalingBroker {
	t.Helper()
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "berth.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	cfg := broker.Config{HeartbeatTimeout: 24 * time.Hour, QueueMaxTime: 24 * time.Hour,
		Scaling: broker.ScalingConfig{IdleAfter: 30 * time.Minute, RefusedWindow: 5 * time.Minute}}
	for _, o := range opts {
		o(&cfg)
	}
	svc, err := broker.New(t.Context(), st, acceptAgents{}, nil, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	b := &scalingBroker{svc: svc, st: st, log: &eventLog{}, now: scalingT0}
	svc.Now = b.clock
	svc.SetScalingEmitter(b.log)
	return b
}

// connect links a server with room for maxVirtual sessions.
func (b *scalingBroker) connect(t *testing.T, id string, maxVirtual int) {
	t.Helper()
	if err := b.svc.AgentConnected(t.Context(), "", id, serverInfo(id, maxVirtual), nil); err != nil {
		t.Fatal(err)
	}
}

func (b *scalingBroker) check(t *testing.T) broker.Capacity {
	t.Helper()
	c, err := b.svc.CheckScaling(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// eventsOf returns the events of type typ among evs.
func eventsOf(evs []broker.Event, typ string) []broker.Event {
	var out []broker.Event
	for _, e := range evs {
		if e.Type == typ {
			out = append(out, e)
		}
	}
	return out
}

func TestScaling_QueuedShortfall(t *testing.T) {
	b := newScalingBroker(t)
	b.connect(t, "s1", 1)
	mustCreate(t, b.svc, 1, broker.CreateRequest{Owner: "alice"}) // fills s1
	req := "server:Host.Os.Family   =  'linux'"
	for range 2 {
		if r := create(t, b.svc, broker.CreateRequest{Owner: "bob", Requirements: req, EnqueueRequest: true}); r.FailureReason != "" {
			t.Fatalf("queued create: %s", r.FailureReason)
		}
		b.advance(time.Minute)
	}
	// A class of its own: GL.
	if r := create(t, b.svc, broker.CreateRequest{Owner: "carol", DcvGlEnabled: true, EnqueueRequest: true}); r.FailureReason != "" {
		t.Fatalf("queued create: %s", r.FailureReason)
	}
	b.advance(3 * time.Minute)

	c := b.check(t)
	if len(c.Shortfall) != 2 {
		t.Fatalf("shortfall = %+v, want 2 classes", c.Shortfall)
	}
	got := c.Shortfall[0] // the most requests first
	want := broker.Shortfall{Class: broker.RequirementClass{Type: broker.TypeVirtual, Requirements: "server:Host.Os.Family = 'linux'"},
		Count: 2, Queued: 2, OldestSince: scalingT0}
	if got != want {
		t.Errorf("shortfall[0] = %+v, want %+v", got, want)
	}
	if gl := c.Shortfall[1]; !gl.Class.DcvGlEnabled || gl.Count != 1 || gl.Class.Requirements != "" {
		t.Errorf("shortfall[1] = %+v, want the GL class with 1", gl)
	}
	evs := eventsOf(b.log.take(), broker.EventScalingShortfall)
	if len(evs) != 2 {
		t.Fatalf("events = %+v, want 2 scaling.shortfall", evs)
	}
	var ev broker.Event
	for _, e := range evs {
		if e.Data["class"] == want.Class.ID() {
			ev = e
		}
	}
	if ev.Data["count"] != 2 || ev.Data["queued"] != 2 || ev.Data["oldest_wait_seconds"] != int64(300) ||
		ev.Data["requirements"] != want.Class.Requirements || ev.Data["type"] != broker.TypeVirtual || !ev.Time.Equal(b.clock()) {
		t.Errorf("event = %+v", ev)
	}

	// No change, no event.
	b.advance(time.Minute)
	b.check(t)
	if evs := b.log.take(); len(evs) != 0 {
		t.Errorf("unchanged shortfall emitted %+v", evs)
	}

	// A server with room for all: the shortfall clears once, with count 0,
	// before and after the queue places them.
	b.connect(t, "s2", 0)
	if err := b.svc.ProcessQueueNow(t.Context()); err != nil {
		t.Fatal(err)
	}
	if q := queueReasons(t, b.svc); len(q) != 0 {
		t.Fatalf("queue = %v, want it placed", q)
	}
	if c := b.check(t); len(c.Shortfall) != 0 {
		t.Errorf("shortfall after placement = %+v", c.Shortfall)
	}
	evs = b.log.take()
	if len(evs) != 2 || evs[0].Data["count"] != 0 || evs[1].Data["count"] != 0 {
		t.Errorf("events after placement = %+v, want 2 with count 0", evs)
	}
}

func TestScaling_QueuedThatFitsIsNoShortfall(t *testing.T) {
	b := newScalingBroker(t)
	b.connect(t, "s1", 1)
	if r := create(t, b.svc, broker.CreateRequest{Owner: "bob", EnqueueRequest: true}); r.FailureReason != "" {
		t.Fatal(r.FailureReason)
	}
	// Placed at once: nothing waits.
	if c := b.check(t); len(c.Shortfall) != 0 {
		t.Errorf("shortfall = %+v, want none", c.Shortfall)
	}
}

func TestScaling_RefusedWithinWindow(t *testing.T) {
	b := newScalingBroker(t)
	b.connect(t, "s1", 0)
	for _, r := range []broker.CreateRequest{
		{Owner: "bob", Requirements: "server:Hostname = 'nowhere'"},
		{Owner: "bob", Requirements: "server:Hostname='nowhere'"}, // the same class
		{Owner: "bob", Type: broker.TypeConsole, Requirements: "server:Hostname = 'nowhere'"},
		{Owner: "bob", Requirements: "server:Hostname = ("}, // invalid input: no shortfall
	} {
		if res := create(t, b.svc, r); res.FailureReason == "" {
			t.Fatalf("create %+v was placed", r)
		}
		b.advance(time.Minute)
	}
	c := b.check(t)
	if len(c.Shortfall) != 2 {
		t.Fatalf("shortfall = %+v, want 2 classes", c.Shortfall)
	}
	want := broker.Shortfall{Class: broker.RequirementClass{Type: broker.TypeVirtual, Requirements: "server:Hostname = 'nowhere'"},
		Count: 2, Refused: 2, OldestSince: scalingT0}
	if c.Shortfall[0] != want {
		t.Errorf("shortfall[0] = %+v, want %+v", c.Shortfall[0], want)
	}
	if got := eventsOf(b.log.take(), broker.EventScalingShortfall); len(got) != 2 {
		t.Errorf("events = %+v, want 2", got)
	}
	// The first refusal leaves the window (5m after it), then the others.
	b.advance(time.Minute) // T0+5m
	b.check(t)
	b.advance(time.Second)
	c = b.check(t)
	if len(c.Shortfall) != 2 || c.Shortfall[0].Count != 1 || !c.Shortfall[0].OldestSince.Equal(scalingT0.Add(time.Minute)) {
		t.Errorf("shortfall after 5m = %+v, want the first refusal out", c.Shortfall)
	}
	evs := b.log.take()
	if len(evs) != 1 || evs[0].Data["count"] != 1 || evs[0].Data["class"] != want.Class.ID() {
		t.Errorf("events = %+v, want one with count 1", evs)
	}
	b.advance(10 * time.Minute)
	if c := b.check(t); len(c.Shortfall) != 0 {
		t.Errorf("shortfall after the window = %+v", c.Shortfall)
	}
	if evs := b.log.take(); len(evs) != 2 {
		t.Errorf("events after the window = %+v, want 2 cleared", evs)
	}
}

func TestScaling_IdleServers(t *testing.T) {
	b := newScalingBroker(t)
	b.connect(t, "s1", 0)
	b.connect(t, "s2", 0)
	mustCreate(t, b.svc, 1, broker.CreateRequest{Owner: "alice", Requirements: "server:Hostname = 's2'"})
	if c := b.check(t); len(c.Idle) != 0 {
		t.Fatalf("idle at once = %+v", c.Idle)
	}
	b.advance(29 * time.Minute)
	if c := b.check(t); len(c.Idle) != 0 {
		t.Fatalf("idle after 29m = %+v", c.Idle)
	}
	b.advance(time.Minute)
	c := b.check(t)
	if len(c.Idle) != 1 || c.Idle[0].ServerID != "s1" || c.Idle[0].Hostname != "s1" || !c.Idle[0].IdleSince.Equal(scalingT0) {
		t.Fatalf("idle after 30m = %+v, want s1 since T0", c.Idle)
	}
	evs := b.log.take()
	if len(evs) != 1 || evs[0].Type != broker.EventServerIdle || evs[0].ServerID != "s1" || evs[0].Data["idle_seconds"] != int64(1800) {
		t.Fatalf("events = %+v, want one server.idle of s1", evs)
	}
	// Reported once per idle period.
	b.advance(10 * time.Minute)
	if c := b.check(t); len(c.Idle) != 1 {
		t.Errorf("idle = %+v, want s1 still", c.Idle)
	}
	if evs := b.log.take(); len(evs) != 0 {
		t.Errorf("idle reported again: %+v", evs)
	}
	// A session lands: cleared.
	mustCreate(t, b.svc, 1, broker.CreateRequest{Owner: "alice", Requirements: "server:Hostname = 's1'"})
	if c := b.check(t); len(c.Idle) != 0 {
		t.Errorf("idle after a session landed = %+v", c.Idle)
	}
	// A closed server is not idle: an autoscaler closed it already.
	if res := b.svc.CloseServers(t.Context(), []string{"s1", "s2"}, []bool{true, true}); res[0].FailureCode != "" {
		t.Fatalf("close: %+v", res)
	}
	b.advance(time.Hour)
	if c := b.check(t); len(c.Idle) != 0 {
		t.Errorf("idle closed servers = %+v", c.Idle)
	}
	if evs := b.log.take(); len(evs) != 0 {
		t.Errorf("events = %+v, want none", evs)
	}
}

func TestScaling_OnlyTheLeaderEmits(t *testing.T) {
	b := newScalingBroker(t)
	b.svc.Leaser = fixedLeader(false)
	b.connect(t, "s1", 0)
	if res := create(t, b.svc, broker.CreateRequest{Owner: "bob", Requirements: "server:Hostname = 'nowhere'"}); res.FailureReason == "" {
		t.Fatal("placed")
	}
	b.check(t) // s1 seen without sessions
	b.advance(time.Hour)
	c := b.check(t)
	if len(c.Shortfall) != 0 || len(c.Idle) != 1 {
		t.Fatalf("capacity = %+v, want s1 idle and the refusal out of its window", c)
	}
	if res := create(t, b.svc, broker.CreateRequest{Owner: "bob", Requirements: "server:Hostname = 'nowhere'"}); res.FailureReason == "" {
		t.Fatal("placed")
	}
	if c := b.check(t); len(c.Shortfall) != 1 {
		t.Fatalf("shortfall = %+v, want 1", c.Shortfall)
	}
	if evs := b.log.take(); len(evs) != 0 {
		t.Fatalf("a follower emitted %+v", evs)
	}
	// Leader now: it states what it sees.
	b.svc.Leaser = fixedLeader(true)
	b.check(t)
	evs := b.log.take()
	if len(eventsOf(evs, broker.EventScalingShortfall)) != 1 || len(eventsOf(evs, broker.EventServerIdle)) != 1 {
		t.Errorf("new leader's events = %+v, want one of each", evs)
	}
}

func TestScaling_CapacityReusesARecentCheck(t *testing.T) {
	b := newScalingBroker(t)
	b.connect(t, "s1", 0)
	first, err := b.svc.Capacity(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	b.advance(10 * time.Second)
	if c, _ := b.svc.Capacity(t.Context()); !c.At.Equal(first.At) {
		t.Errorf("a check 10s old was not reused: %v, %v", c.At, first.At)
	}
	b.advance(30 * time.Second)
	if c, _ := b.svc.Capacity(t.Context()); !c.At.Equal(b.clock()) {
		t.Errorf("a check 40s old was reused")
	}
	if !b.svc.LastCapacity().At.Equal(b.clock()) {
		t.Errorf("LastCapacity is not the last check")
	}
}

// TestScaling_EventsInTheStore checks that the scaling signals' events reach
// the broker's event store through Service.Emit, as the stream and the
// webhooks read them.
func TestScaling_EventsInTheStore(t *testing.T) {
	b := newScalingBroker(t)
	b.svc.SetScalingEmitter(nil) // Service.Emit
	es, ok := b.st.(broker.EventStore)
	if !ok {
		t.Fatal("the SQLite store keeps no events")
	}
	b.connect(t, "s1", 0)
	if res := create(t, b.svc, broker.CreateRequest{Owner: "bob", Requirements: "server:Hostname = 'nowhere'"}); res.FailureReason == "" {
		t.Fatal("placed")
	}
	b.check(t)
	b.advance(31 * time.Minute)
	b.check(t)
	evs, err := es.ListEvents(t.Context(), broker.EventFilter{Types: []string{broker.EventScalingShortfall, broker.EventServerIdle}})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range evs {
		got = append(got, fmt.Sprintf("%s %s %v", e.Type, e.ServerID, e.Data["count"]))
	}
	// The refusal counted, then left its window as s1 became idle.
	want := []string{"scaling.shortfall  1", "scaling.shortfall  0", "server.idle s1 <nil>"}
	if !slices.Equal(got, want) {
		t.Errorf("stored events = %q, want %q", got, want)
	}
}

// TestScaling_WhichRefusalsCount: creates refused for want of a server
// count (no server matched, the servers were full, the queue was full);
// those a quota refused, or invalid input, do not: servers would not help.
func TestScaling_WhichRefusalsCount(t *testing.T) {
	tests := []struct {
		name       string
		maxVirtual int
		reqs       []broker.CreateRequest
		want       int
	}{
		{"no match", 0, []broker.CreateRequest{{Owner: "bob", Requirements: "server:Hostname = 'nowhere'"}}, 1},
		{"full", 1, []broker.CreateRequest{{Owner: "alice"}, {Owner: "bob"}}, 1},
		{"queue full", 1, []broker.CreateRequest{{Owner: "alice"}, {Owner: "bob", EnqueueRequest: true}, {Owner: "carol", EnqueueRequest: true}}, 2},
		{"quota", 0, []broker.CreateRequest{{Owner: "alice"}, {Owner: "alice"}}, 0},
		{"invalid", 0, []broker.CreateRequest{{Owner: "bob", Requirements: "server:Hostname ="}}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newScalingBroker(t, func(c *broker.Config) {
				c.QueueMaxSize = 1
				c.Limits.MaxSessions = 1
			})
			b.connect(t, "s1", tt.maxVirtual)
			for _, r := range tt.reqs {
				create(t, b.svc, r)
			}
			n := 0
			for _, x := range b.check(t).Shortfall {
				n += x.Count
			}
			if n != tt.want {
				t.Errorf("shortfall of %d, want %d", n, tt.want)
			}
		})
	}
}
