package broker_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/postgres"
	"github.com/berth-dev/berth/internal/postgres/pgtest"
	"github.com/berth-dev/berth/internal/sqlite"
)

// openEventsSQLite opens a store on a temp SQLite file.
func openEventsSQLite(t testing.TB) *sqlite.Store {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "b.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// collect reads n events from sub.
func collect(t *testing.T, sub *broker.Subscription, n int) []*broker.Event {
	t.Helper()
	var out []*broker.Event
	for len(out) < n {
		e, ok := <-sub.C
		if !ok {
			t.Fatalf("the subscription ended after %d events of %d: %v", len(out), n, sub.Err())
		}
		out = append(out, e)
	}
	return out
}

func ids(evs []*broker.Event) []int64 {
	out := make([]int64, len(evs))
	for i, e := range evs {
		out[i] = e.ID
	}
	return out
}

// TestEvents_TwoBrokersPostgres: two brokers on one PostgreSQL database
// write events concurrently (sessions created, Emit); one subscriber of
// one broker gets every event of both once, in increasing ID order, the
// same list as the store holds.
func TestEvents_TwoBrokersPostgres(t *testing.T) {
	dsn := pgtest.DSN(t)
	var svcs []*broker.Service
	var first *postgres.Store
	for i := range 2 {
		st, err := postgres.Open(t.Context(), dsn, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		if first == nil {
			first = st
		}
		svcs = append(svcs, startQuotaBroker(t, st, broker.Config{BrokerID: fmt.Sprint("b", i), EventPollInterval: 20 * time.Millisecond}, fmt.Sprint("s", i), 0))
	}
	sub, err := svcs[0].Subscribe(t.Context(), broker.EventFilter{})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	var wg sync.WaitGroup
	for g := range 8 {
		svc := svcs[g%2]
		wg.Go(func() {
			for k := range 5 {
				if _, err := svc.CreateSessions(t.Context(), []broker.CreateRequest{{Name: "d", Owner: fmt.Sprint("u", g), Type: broker.TypeVirtual}}); err != nil {
					t.Error(err)
				}
				svc.Emit(t.Context(), broker.Event{Type: broker.EventServerIdle, ServerID: fmt.Sprint("g", g, "-", k)})
			}
		})
	}
	wg.Wait()
	stored, err := first.ListEvents(t.Context(), broker.EventFilter{Limit: 100000})
	if err != nil {
		t.Fatal(err)
	}
	got := collect(t, sub, len(stored))
	if d := cmp.Diff(ids(stored), ids(got)); d != "" {
		t.Errorf("the stream of broker 0 differs from the store (-store +stream):\n%s", d)
	}
	brokers := map[string]bool{}
	idle := 0
	for i, e := range got {
		if i > 0 && e.ID <= got[i-1].ID {
			t.Fatalf("event %d after %d", e.ID, got[i-1].ID)
		}
		if e.Type == broker.EventAgentLinked {
			brokers[e.Data["broker_id"].(string)] = true
		}
		if e.Type == broker.EventServerIdle {
			idle++
		}
	}
	if idle != 40 || len(brokers) != 2 {
		t.Errorf("%d server.idle events (want 40), agent.linked from brokers %v (want both)", idle, brokers)
	}
	if n := countType(got, broker.EventSessionState); n < 40 {
		t.Errorf("%d session.state events, want at least one per session (40)", n)
	}
}

func countType(evs []*broker.Event, typ string) int {
	n := 0
	for _, e := range evs {
		if e.Type == typ {
			n++
		}
	}
	return n
}

// TestEvents_SlowSubscriberResumes: a subscriber that does not read is
// closed once SubscriberBuffer events have waited for it for
// EventSubscriberGrace, not before, and never holds up the others; resumed
// after the last event it read, it gets the rest exactly.
func TestEvents_SlowSubscriberResumes(t *testing.T) {
	st := openEventsSQLite(t)
	svc := startQuotaBroker(t, st, broker.Config{BrokerID: "b", EventSubscriberGrace: 300 * time.Millisecond}, "s", 0)
	slow, err := svc.Subscribe(t.Context(), broker.EventFilter{Types: []string{broker.EventServerIdle}})
	if err != nil {
		t.Fatal(err)
	}
	fast, err := svc.Subscribe(t.Context(), broker.EventFilter{Types: []string{broker.EventServerIdle}})
	if err != nil {
		t.Fatal(err)
	}
	defer fast.Close()
	for svc.Subscribers() < 2 { // both caught up and joined
		time.Sleep(time.Millisecond)
	}
	const n = broker.SubscriberBuffer + 100
	var evs []broker.Event
	for i := range n {
		evs = append(evs, broker.Event{Type: broker.EventServerIdle, ServerID: fmt.Sprint("x", i)})
	}
	fastGot := make(chan []*broker.Event)
	go func() { // reads as the events come
		var out []*broker.Event
		for e := range fast.C {
			if out = append(out, e); len(out) == n {
				break
			}
		}
		fastGot <- out
	}()
	for i := 0; i < n; i += 50 {
		svc.Emit(t.Context(), evs[i:i+50]...)
	}
	all := <-fastGot
	if len(all) != n {
		t.Fatalf("the reading subscriber got %d events of %d: %v", len(all), n, fast.Err())
	}
	for slow.Err() == nil { // its grace runs out (reading now would be progress)
		time.Sleep(10 * time.Millisecond)
	}
	var read []*broker.Event
	for e := range slow.C {
		read = append(read, e)
	}
	if !errors.Is(slow.Err(), broker.ErrSubscriberSlow) {
		t.Fatalf("the slow subscription ended with %v, want ErrSubscriberSlow", slow.Err())
	}
	if len(read) != broker.SubscriberBuffer {
		t.Errorf("the slow subscriber got %d events before it was closed, want its buffer (%d)", len(read), broker.SubscriberBuffer)
	}
	resumed, err := svc.Subscribe(t.Context(), broker.EventFilter{Types: []string{broker.EventServerIdle}, AfterID: read[len(read)-1].ID})
	if err != nil {
		t.Fatal(err)
	}
	defer resumed.Close()
	rest := collect(t, resumed, n-len(read))
	if d := cmp.Diff(ids(all), append(ids(read), ids(rest)...)); d != "" {
		t.Errorf("read + resumed differ from every event (-want +got):\n%s", d)
	}
}

// TestEvents_BurstLargerThanBuffer: a subscriber that keeps reading, but
// only after a burst of several buffers' worth has been written, gets every
// event in order and is not closed as slow (the hub lets go of it while its
// buffer is full and it catches up at its own pace).
func TestEvents_BurstLargerThanBuffer(t *testing.T) {
	st := openEventsSQLite(t)
	svc := startQuotaBroker(t, st, broker.Config{BrokerID: "b", EventSubscriberGrace: 5 * time.Second}, "s", 0)
	sub, err := svc.Subscribe(t.Context(), broker.EventFilter{Types: []string{broker.EventServerIdle}})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	for svc.Subscribers() < 1 {
		time.Sleep(time.Millisecond)
	}
	const n = 3*broker.SubscriberBuffer + 7
	var evs []broker.Event
	for i := range n {
		evs = append(evs, broker.Event{Type: broker.EventServerIdle, ServerID: fmt.Sprint("x", i)})
	}
	svc.Emit(t.Context(), evs...)
	// Let the hub hand out what fits and find the buffer full.
	for svc.Subscribers() != 0 {
		time.Sleep(time.Millisecond)
	}
	got := collect(t, sub, n)
	for i, e := range got {
		if want := fmt.Sprint("x", i); e.ServerID != want {
			t.Fatalf("event %d is for %q, want %q", i, e.ServerID, want)
		}
	}
	if err := sub.Err(); err != nil {
		t.Fatalf("the subscription ended: %v", err)
	}
	// Caught up, it joins the hub again and gets what comes next.
	for svc.Subscribers() < 1 {
		time.Sleep(time.Millisecond)
	}
	svc.Emit(t.Context(), broker.Event{Type: broker.EventServerIdle, ServerID: "after"})
	if e := collect(t, sub, 1); e[0].ServerID != "after" {
		t.Errorf("after catching up: %q, want after", e[0].ServerID)
	}
}

// TestEvents_Retention: the leader's maintenance purges events older than
// event-retention-hours, on the Service's clock.
func TestEvents_Retention(t *testing.T) {
	st := openEventsSQLite(t)
	svc, err := broker.New(t.Context(), st, acceptAgents{}, nil, broker.Config{BrokerID: "b", EventRetention: 2 * time.Hour}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	svc.Now = func() time.Time { return now }
	svc.Emit(t.Context(), broker.Event{Type: broker.EventServerOpened, ServerID: "old"})
	now = now.Add(90 * time.Minute)
	svc.Emit(t.Context(), broker.Event{Type: broker.EventServerOpened, ServerID: "new"})
	now = now.Add(45 * time.Minute) // "old" is 2h15m old, "new" 45m
	svc.ExpireNow(t.Context())
	got, err := st.ListEvents(t.Context(), broker.EventFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].ServerID != "new" {
		t.Errorf("after the purge: %v, want the event of new only", got)
	}
}

// TestEvents_Off: with DisableEvents nothing is written and Subscribe
// says so.
func TestEvents_Off(t *testing.T) {
	st := openEventsSQLite(t)
	svc := startQuotaBroker(t, st, broker.Config{BrokerID: "b", DisableEvents: true}, "s", 0)
	create(t, svc, broker.CreateRequest{Owner: "alice"})
	svc.Emit(t.Context(), broker.Event{Type: broker.EventServerIdle})
	got, err := st.ListEvents(t.Context(), broker.EventFilter{})
	if err != nil || len(got) != 0 {
		t.Errorf("events written with events off: %v, %v", got, err)
	}
	if _, err := svc.Subscribe(t.Context(), broker.EventFilter{}); !errors.Is(err, broker.ErrEventsOff) {
		t.Errorf("Subscribe with events off: %v, want ErrEventsOff", err)
	}
}

// TestEvents_CreatePath: a create that fits no server produces
// placement.failed; one with EnqueueRequest is queued with
// session.state and placement.queued in its own transaction; a placed one
// its session.state; closing a server server.closed.
func TestEvents_CreatePath(t *testing.T) {
	st := openEventsSQLite(t)
	svc := startQuotaBroker(t, st, broker.Config{BrokerID: "b"}, "s", 1)
	placed := create(t, svc, broker.CreateRequest{Owner: "alice"})
	refused := create(t, svc, broker.CreateRequest{Owner: "bob"})
	queued := create(t, svc, broker.CreateRequest{Owner: "carol", EnqueueRequest: true})
	if placed.Session == nil || refused.FailureReason == "" || queued.Session == nil {
		t.Fatalf("creates: %+v %+v %+v", placed, refused, queued)
	}
	svc.CloseServers(t.Context(), []string{"s"}, []bool{true})
	got, err := st.ListEvents(t.Context(), broker.EventFilter{})
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, e := range got {
		keys = append(keys, e.Type+" "+e.Owner+" "+e.ServerID)
	}
	want := []string{
		"agent.linked  s",
		"session.state alice s",
		"placement.failed bob ",
		"session.state carol ",
		"placement.queued carol ",
		"server.closed  s",
	}
	if d := cmp.Diff(want, keys); d != "" {
		t.Errorf("events (-want +got):\n%s", d)
	}
}
