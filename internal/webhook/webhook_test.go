package webhook_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/poll"
	"github.com/berth-dev/berth/internal/webhook"
)

// memEvents is an in-memory broker.EventStore.
type memEvents struct {
	mu  sync.Mutex
	evs []*broker.Event
}

func (m *memEvents) AppendEvents(_ context.Context, evs []*broker.Event) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, e := range evs {
		e.ID = int64(len(m.evs) + 1)
		if e.Time.IsZero() {
			e.Time = time.Now()
		}
		c := *e
		m.evs = append(m.evs, &c)
	}
	return nil
}

func (m *memEvents) ListEvents(_ context.Context, f broker.EventFilter) ([]*broker.Event, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []*broker.Event
	for _, e := range m.evs {
		if e.ID <= f.AfterID || !webhook.MatchType(f.Types, e.Type) || (f.Owner != "" && e.Owner != f.Owner) {
			continue
		}
		c := *e
		out = append(out, &c)
		if f.Limit > 0 && len(out) == f.Limit {
			break
		}
	}
	return out, nil
}

func (m *memEvents) PurgeEvents(context.Context, time.Time) (int, error) { return 0, nil }

// Emit makes memEvents the worker's Emitter too.
func (m *memEvents) Emit(ctx context.Context, evs ...broker.Event) {
	ps := make([]*broker.Event, len(evs))
	for i := range evs {
		ps[i] = &evs[i]
	}
	_ = m.AppendEvents(ctx, ps)
}

// memStore is an in-memory webhook.Store.
type memStore struct {
	mu    sync.Mutex
	hooks map[string]*webhook.Webhook
	order []string
	log   map[string][]*webhook.Delivery
}

func newMemStore() *memStore {
	return &memStore{hooks: map[string]*webhook.Webhook{}, log: map[string][]*webhook.Delivery{}}
}

func (m *memStore) InsertWebhook(_ context.Context, w *webhook.Webhook) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.hooks[w.ID] != nil {
		return broker.ErrConflict
	}
	c := *w
	m.hooks[w.ID] = &c
	m.order = append(m.order, w.ID)
	return nil
}

func (m *memStore) ListWebhooks(context.Context) ([]*webhook.Webhook, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []*webhook.Webhook
	for _, id := range m.order {
		if w := m.hooks[id]; w != nil {
			c := *w
			out = append(out, &c)
		}
	}
	return out, nil
}

func (m *memStore) GetWebhook(_ context.Context, id string) (*webhook.Webhook, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	w := m.hooks[id]
	if w == nil {
		return nil, broker.ErrNotFound
	}
	c := *w
	return &c, nil
}

func (m *memStore) DeleteWebhook(_ context.Context, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.hooks[id] == nil {
		return broker.ErrNotFound
	}
	delete(m.hooks, id)
	delete(m.log, id)
	return nil
}

func (m *memStore) SaveDeliveries(_ context.Context, w *webhook.Webhook, ds []*webhook.Delivery, keep int) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	h := m.hooks[w.ID]
	if h == nil {
		return broker.ErrNotFound
	}
	h.State, h.DisabledReason, h.Attempts, h.FailingSince, h.NextAttempt, h.LastError =
		w.State, w.DisabledReason, w.Attempts, w.FailingSince, w.NextAttempt, w.LastError
	h.Cursor = max(h.Cursor, w.Cursor)
	l := append(m.log[w.ID], ds...)
	if len(l) > keep {
		l = l[len(l)-keep:]
	}
	m.log[w.ID] = l
	return nil
}

func (m *memStore) ListDeliveries(_ context.Context, id string, limit int) ([]*webhook.Delivery, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	l := slices.Clone(m.log[id])
	slices.Reverse(l)
	if len(l) > limit {
		l = l[:limit]
	}
	return l, nil
}

// clock is an injected clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// received is what a receiver saw: one entry per request.
type received struct {
	key, typ string
	id       int64
	session  string
	status   int
}

// receiver is a loopback endpoint that checks every signature; fail
// decides the status of each request (by its number, from 0).
type receiver struct {
	t      *testing.T
	secret string
	fail   func(n int) int
	mu     sync.Mutex
	got    []received
	srv    *httptest.Server
}

func newReceiver(t *testing.T, secret string, fail func(n int) int) *receiver {
	r := &receiver{t: t, secret: secret, fail: fail}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(req.Body)
	if err != nil {
		r.t.Errorf("read body: %v", err)
		return
	}
	if err := webhook.Verify(r.secret, req.Header.Get(webhook.HeaderSignature), body, time.Now(), 5*time.Minute); err != nil {
		r.t.Errorf("delivery %s: %v", req.Header.Get(webhook.HeaderIdempotency), err)
	}
	var ev webhook.EventJSON
	if err := json.Unmarshal(body, &ev); err != nil {
		r.t.Errorf("body: %v", err)
	}
	if h := req.Header.Get(webhook.HeaderEventID); h != strconv.FormatInt(ev.ID, 10) {
		r.t.Errorf("%s = %q, body's id %d", webhook.HeaderEventID, h, ev.ID)
	}
	if h := req.Header.Get(webhook.HeaderEventType); h != ev.Type {
		r.t.Errorf("%s = %q, body's type %q", webhook.HeaderEventType, h, ev.Type)
	}
	r.mu.Lock()
	status := http.StatusNoContent
	if r.fail != nil {
		if s := r.fail(len(r.got)); s != 0 {
			status = s
		}
	}
	r.got = append(r.got, received{key: req.Header.Get(webhook.HeaderIdempotency), typ: ev.Type, id: ev.ID,
		session: ev.SessionID, status: status})
	r.mu.Unlock()
	w.WriteHeader(status)
}

// delivered returns the events the receiver acknowledged, in arrival order.
func (r *receiver) delivered() []received {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []received
	for _, g := range r.got {
		if g.status < 300 {
			out = append(out, g)
		}
	}
	return out
}

type fixture struct {
	events *memEvents
	store  *memStore
	clock  *clock
	reg    *webhook.Registry
	worker *webhook.Worker
}

func newFixture(t *testing.T) *fixture {
	f := &fixture{events: &memEvents{}, store: newMemStore(), clock: &clock{t: time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)}}
	f.reg = &webhook.Registry{Store: f.store, Events: f.events, Now: f.clock.Now}
	f.worker = &webhook.Worker{Store: f.store, Events: f.events, Emitter: f.events, Now: f.clock.Now,
		Timeout: 2 * time.Second, BackoffMin: 5 * time.Second, BackoffMax: time.Hour, RetryFor: 24 * time.Hour}
	return f
}

// sessionLife appends the events of n sessions' lives, interleaved.
func (f *fixture) sessionLife(t *testing.T, n int) {
	states := []string{"CREATING", "READY", "DELETING", "DELETED"}
	for _, st := range states {
		for i := range n {
			err := f.events.AppendEvents(t.Context(), []*broker.Event{{Type: broker.EventSessionState,
				SessionID: fmt.Sprintf("s%d", i), Owner: "alice", Data: map[string]any{"state": st}}})
			if err != nil {
				t.Fatal(err)
			}
		}
		if err := f.events.AppendEvents(t.Context(), []*broker.Event{{Type: broker.EventServerAvailability, ServerID: "srv1"}}); err != nil {
			t.Fatal(err)
		}
	}
}

// drain runs worker turns, moving the clock past each backoff, until
// nothing is due; it fails after many turns.
func (f *fixture) drain(t *testing.T) {
	t.Helper()
	for range 200 {
		f.worker.Tick(t.Context())
		hooks, _ := f.store.ListWebhooks(t.Context())
		pending := false
		for _, h := range hooks {
			evs, _ := f.events.ListEvents(t.Context(), broker.EventFilter{AfterID: h.Cursor, Types: h.Types, Limit: 1})
			if h.State == webhook.StateEnabled && len(evs) > 0 {
				pending = true
				if h.NextAttempt.After(f.clock.Now()) {
					f.clock.Add(h.NextAttempt.Sub(f.clock.Now()))
				}
			}
		}
		if !pending {
			return
		}
	}
	t.Fatal("deliveries still pending after 200 turns")
}

// checkInOrder checks that every event of types went exactly once per
// idempotency key, in ID order.
func checkInOrder(t *testing.T, f *fixture, hookID string, got []received, types []string) {
	t.Helper()
	want, _ := f.events.ListEvents(t.Context(), broker.EventFilter{Types: types})
	if len(got) != len(want) {
		t.Fatalf("receiver acknowledged %d deliveries, want %d", len(got), len(want))
	}
	for i, g := range got {
		if g.id != want[i].ID || g.typ != want[i].Type || g.session != want[i].SessionID {
			t.Errorf("delivery %d: event %d %s %s, want %d %s %s", i, g.id, g.typ, g.session, want[i].ID, want[i].Type, want[i].SessionID)
		}
		if g.key != webhook.IdempotencyKey(hookID, g.id) {
			t.Errorf("delivery %d: Idempotency-Key %q, want %q", i, g.key, webhook.IdempotencyKey(hookID, g.id))
		}
	}
}

func TestDeliver_SignedInOrder(t *testing.T) {
	f := newFixture(t)
	// An event before registration is not delivered: a webhook starts at the tail.
	if err := f.events.AppendEvents(t.Context(), []*broker.Event{{Type: broker.EventServerOpened, ServerID: "old"}}); err != nil {
		t.Fatal(err)
	}
	r := newReceiver(t, "a-secret-of-enough-bytes", nil)
	h, err := f.reg.Create(t.Context(), webhook.Spec{URL: r.srv.URL + "/hook", Types: []string{"session.*"}, Secret: "a-secret-of-enough-bytes"})
	if err != nil {
		t.Fatal(err)
	}
	if h.Cursor != 1 {
		t.Errorf("new webhook's cursor = %d, want 1 (the newest event)", h.Cursor)
	}
	f.sessionLife(t, 3)
	f.drain(t)
	got := r.delivered()
	checkInOrder(t, f, h.ID, got, []string{"session.*"})
	log, err := f.reg.Deliveries(t.Context(), h.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(log) != len(got) || !log[0].OK() || log[0].EventID != got[len(got)-1].id {
		t.Errorf("delivery log: %d entries, newest %+v; want %d, newest event %d", len(log), log[0], len(got), got[len(got)-1].id)
	}
}

func TestDeliver_FailsFiveTimesThenRecovers(t *testing.T) {
	f := newFixture(t)
	r := newReceiver(t, "another-secret-1234", func(n int) int {
		if n < 5 {
			return http.StatusServiceUnavailable
		}
		return 0
	})
	h, err := f.reg.Create(t.Context(), webhook.Spec{URL: r.srv.URL, Secret: "another-secret-1234"})
	if err != nil {
		t.Fatal(err)
	}
	f.sessionLife(t, 4)
	start := f.clock.Now()
	f.drain(t)
	checkInOrder(t, f, h.ID, r.delivered(), nil)
	// The first event was tried 6 times, 5 s then doubling between tries.
	if waited := f.clock.Now().Sub(start); waited != (5+10+20+40+80)*time.Second {
		t.Errorf("the retries took %s on the clock, want 155s (5 s doubling)", waited)
	}
	r.mu.Lock()
	for i := range 6 {
		if r.got[i].id != r.got[0].id {
			t.Errorf("attempt %d was event %d, want the first event %d again", i, r.got[i].id, r.got[0].id)
		}
	}
	r.mu.Unlock()
	got, _ := f.store.GetWebhook(t.Context(), h.ID)
	if got.Attempts != 0 || !got.FailingSince.IsZero() || got.State != webhook.StateEnabled {
		t.Errorf("after recovery: %+v", got)
	}
	log, _ := f.reg.Deliveries(t.Context(), h.ID, 1000)
	failed := 0
	for _, d := range log {
		if !d.OK() {
			failed++
			if d.Status != http.StatusServiceUnavailable || d.Attempt < 1 || d.Attempt > 5 {
				t.Errorf("failed delivery logged as %+v", d)
			}
		}
	}
	if failed != 5 {
		t.Errorf("delivery log has %d failures, want 5", failed)
	}
}

func TestDeliver_DisabledAfterRetryPeriod(t *testing.T) {
	f := newFixture(t)
	r := newReceiver(t, "never-ok-secret-123", func(int) int { return http.StatusInternalServerError })
	h, err := f.reg.Create(t.Context(), webhook.Spec{URL: r.srv.URL, Types: []string{broker.EventSessionState}, Secret: "never-ok-secret-123"})
	if err != nil {
		t.Fatal(err)
	}
	f.sessionLife(t, 1)
	for range 100 {
		f.worker.Tick(t.Context())
		got, _ := f.store.GetWebhook(t.Context(), h.ID)
		if got.State == webhook.StateDisabled {
			break
		}
		f.clock.Add(got.NextAttempt.Sub(f.clock.Now()))
	}
	got, _ := f.store.GetWebhook(t.Context(), h.ID)
	if got.State != webhook.StateDisabled || !strings.Contains(got.DisabledReason, "HTTP status 500") {
		t.Fatalf("webhook after 24 h of failures: state %s, reason %q", got.State, got.DisabledReason)
	}
	if d := got.NextAttempt.Sub(got.FailingSince); d < 24*time.Hour {
		t.Errorf("disabled after %s of failures, want 24h", d)
	}
	dis, _ := f.events.ListEvents(t.Context(), broker.EventFilter{Types: []string{broker.EventWebhookDisabled}})
	if len(dis) != 1 || dis[0].Data["webhook_id"] != h.ID {
		t.Fatalf("webhook.disabled events: %+v", dis)
	}
	// A disabled webhook gets nothing more.
	r.mu.Lock()
	n := len(r.got)
	r.mu.Unlock()
	f.clock.Add(48 * time.Hour)
	f.worker.Tick(t.Context())
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.got) != n {
		t.Errorf("a disabled webhook got %d more requests", len(r.got)-n)
	}
}

// leaser answers IsLeader from a flag; after, when set, is called on
// each question.
type leaser struct {
	mu     sync.Mutex
	leader bool
	after  func(l *leaser)
}

func (l *leaser) IsLeader(context.Context) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	v := l.leader
	if l.after != nil {
		l.after(l)
	}
	return v
}

func TestDeliver_LeaderOnly(t *testing.T) {
	f := newFixture(t)
	r := newReceiver(t, "leader-secret-12345", nil)
	h, err := f.reg.Create(t.Context(), webhook.Spec{URL: r.srv.URL, Secret: "leader-secret-12345"})
	if err != nil {
		t.Fatal(err)
	}
	f.sessionLife(t, 1)
	l := &leaser{}
	f.worker.Leaser = l
	f.worker.Tick(t.Context())
	if n := len(r.delivered()); n != 0 {
		t.Fatalf("a follower delivered %d events", n)
	}
	l.leader = true
	f.drain(t)
	checkInOrder(t, f, h.ID, r.delivered(), nil)
}

// TestDeliver_StopsWhenLeadershipLost: a turn stops sending once this
// broker no longer leads, and saves what was acknowledged.
func TestDeliver_StopsWhenLeadershipLost(t *testing.T) {
	f := newFixture(t)
	r := newReceiver(t, "leader-secret-12345", nil)
	h, err := f.reg.Create(t.Context(), webhook.Spec{URL: r.srv.URL, Secret: "leader-secret-12345"})
	if err != nil {
		t.Fatal(err)
	}
	f.sessionLife(t, 2)
	asked := 0
	// Leads for the dispatch and the first 3 events, then not.
	f.worker.Leaser = &leaser{leader: true, after: func(l *leaser) {
		if asked++; asked == 4 {
			l.leader = false
		}
	}}
	f.worker.Tick(t.Context())
	if n := len(r.delivered()); n != 3 {
		t.Fatalf("delivered %d events, want 3 before leadership was lost", n)
	}
	got, _ := f.store.GetWebhook(t.Context(), h.ID)
	if got.Cursor != r.delivered()[2].id {
		t.Errorf("cursor %d, want the third event %d", got.Cursor, r.delivered()[2].id)
	}
}

// TestDeliver_CursorSurvivesRestart: a second worker on the same store
// (the next leader) goes on after the cursor, redelivering nothing that was
// acknowledged.
func TestDeliver_CursorSurvivesRestart(t *testing.T) {
	f := newFixture(t)
	r := newReceiver(t, "restart-secret-1234", nil)
	h, err := f.reg.Create(t.Context(), webhook.Spec{URL: r.srv.URL, Secret: "restart-secret-1234"})
	if err != nil {
		t.Fatal(err)
	}
	f.sessionLife(t, 2)
	f.worker.Batch = 3
	f.worker.Tick(t.Context())
	if n := len(r.delivered()); n != 3 {
		t.Fatalf("first turn delivered %d, want the batch of 3", n)
	}
	next := &webhook.Worker{Store: f.store, Events: f.events, Now: f.clock.Now}
	next.Tick(t.Context())
	checkInOrder(t, f, h.ID, r.delivered(), nil)
}

// TestDeliver_Hostile: receivers that never answer, stream forever,
// redirect elsewhere or redirect to http all fail within the time limit,
// and no redirect is followed.
func TestDeliver_Hostile(t *testing.T) {
	var elsewhere sync.Mutex
	elsewhereHits := 0
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		elsewhere.Lock()
		elsewhereHits++
		elsewhere.Unlock()
	}))
	t.Cleanup(other.Close)
	handlers := map[string]func(release chan struct{}) http.HandlerFunc{
		"never answers": func(release chan struct{}) http.HandlerFunc {
			return func(w http.ResponseWriter, r *http.Request) {
				select {
				case <-release:
				case <-r.Context().Done():
				}
			}
		},
		"streams forever": func(release chan struct{}) http.HandlerFunc {
			return func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(http.StatusInternalServerError)
				chunk := make([]byte, 4096)
				for {
					if _, err := w.Write(chunk); err != nil {
						return
					}
					select {
					case <-release:
						return
					default:
					}
				}
			}
		},
		"redirects elsewhere": func(chan struct{}) http.HandlerFunc {
			return func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, other.URL, http.StatusTemporaryRedirect)
			}
		},
		"3xx to http": func(chan struct{}) http.HandlerFunc {
			return func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, "http://example.invalid/hook", http.StatusMovedPermanently)
			}
		},
	}
	for name, h := range handlers {
		t.Run(name, func(t *testing.T) {
			release := make(chan struct{})
			srv := httptest.NewServer(h(release))
			t.Cleanup(srv.Close)
			t.Cleanup(func() { close(release) })
			f := newFixture(t)
			f.worker.Timeout = 300 * time.Millisecond
			hook, err := f.reg.Create(t.Context(), webhook.Spec{URL: srv.URL})
			if err != nil {
				t.Fatal(err)
			}
			f.sessionLife(t, 1)
			f.worker.Tick(t.Context())
			got, _ := f.store.GetWebhook(t.Context(), hook.ID)
			if strings.Contains(got.LastError, srv.URL) {
				t.Errorf("last error %q holds the URL", got.LastError)
			}
			if got.Attempts != 1 || got.Cursor != 0 || got.LastError == "" {
				t.Errorf("after one turn: attempts %d, cursor %d, last error %q; want a failed first attempt", got.Attempts, got.Cursor, got.LastError)
			}
		})
	}
	elsewhere.Lock()
	defer elsewhere.Unlock()
	if elsewhereHits != 0 {
		t.Errorf("a redirect was followed %d times", elsewhereHits)
	}
}

// TestDeliver_BoundedPool: no more deliveries run at once than Workers,
// and a turn with the pool full leaves the rest for later.
func TestDeliver_BoundedPool(t *testing.T) {
	release := make(chan struct{})
	var mu sync.Mutex
	inFlight, most := 0, 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		inFlight++
		most = max(most, inFlight)
		mu.Unlock()
		<-release
		mu.Lock()
		inFlight--
		mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	f := newFixture(t)
	f.worker.Workers = 3
	for range 10 {
		if _, err := f.reg.Create(t.Context(), webhook.Spec{URL: srv.URL}); err != nil {
			t.Fatal(err)
		}
	}
	f.sessionLife(t, 1)
	done := make(chan struct{})
	go func() { f.worker.Tick(context.Background()); close(done) }()
	// The turn started 3; a second turn while they hang starts none.
	poll.Until(t, time.Minute, "3 deliveries in flight", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return inFlight == 3
	})
	f.worker.Tick(t.Context())
	close(release)
	<-done
	if most != 3 {
		t.Errorf("%d deliveries at once, want the pool's 3", most)
	}
}

// TestDeliver_FailingLeaveRoom: webhooks that are failing and hang until
// the time limit take at most half the pool, so a healthy webhook is
// delivered to while they hang.
func TestDeliver_FailingLeaveRoom(t *testing.T) {
	release := make(chan struct{})
	var hanging atomic.Int64
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hanging.Add(1)
		defer hanging.Add(-1)
		select {
		case <-release:
		case <-r.Context().Done():
		}
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	t.Cleanup(hang.Close)
	stop := sync.OnceFunc(func() { close(release) })
	t.Cleanup(stop) // before hang.Close, which waits for the handlers
	var healthy atomic.Int64
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { healthy.Add(1) }))
	t.Cleanup(ok.Close)
	f := newFixture(t)
	f.worker.Workers = 4
	f.worker.Timeout = time.Minute
	// Six webhooks that failed once and are due again.
	for range 6 {
		h, err := f.reg.Create(t.Context(), webhook.Spec{URL: hang.URL})
		if err != nil {
			t.Fatal(err)
		}
		h.Attempts, h.FailingSince, h.LastError = 1, f.clock.Now().Add(-time.Minute), "HTTP status 503"
		if err := f.store.SaveDeliveries(t.Context(), h, nil, 10); err != nil {
			t.Fatal(err)
		}
	}
	f.sessionLife(t, 1)
	done := make(chan struct{})
	go func() { f.worker.Tick(context.Background()); close(done) }()
	poll.Until(t, time.Minute, "failing deliveries in flight", func() bool { return hanging.Load() == 2 })
	if _, err := f.reg.Create(t.Context(), webhook.Spec{URL: ok.URL}); err != nil {
		t.Fatal(err)
	}
	f.sessionLife(t, 1)
	f.worker.Tick(t.Context()) // returns once the healthy webhook's turn is done
	if n := hanging.Load(); n != 2 {
		t.Errorf("%d failing webhooks in flight, want half of the pool's 4", n)
	}
	if healthy.Load() == 0 {
		t.Error("the healthy webhook got nothing while the failing ones hung")
	}
	stop()
	<-done
}

func TestCheckURL(t *testing.T) {
	tests := []struct {
		url   string
		field string // "" for accepted
	}{
		{"https://hooks.example.com/berth", ""},
		{"https://10.0.0.1:8443/x?y=1", ""},
		{"http://127.0.0.1:9000/hook", ""},
		{"http://[::1]:9000/hook", ""},
		{"http://localhost/hook", ""},
		{"http://hooks.example.com/berth", "must be https"},
		{"http://10.0.0.1/hook", "must be https"},
		{"ftp://example.com/", "scheme"},
		{"", "required"},
		{"/relative", "absolute"},
		{"https://user:pw@example.com/", "user name"},
		{"https://example.com/#frag", "fragment"},
		{"https://example.com/" + strings.Repeat("a", 3000), "longer"},
	}
	for _, tt := range tests {
		err := webhook.CheckURL(tt.url)
		if tt.field == "" {
			if err != nil {
				t.Errorf("CheckURL(%q) = %v, want accepted", tt.url, err)
			}
			continue
		}
		if err == nil || broker.ErrorCode(err) != broker.CodeInvalidInput || !strings.Contains(err.Error(), tt.field) ||
			!strings.HasPrefix(err.Error(), "Url: ") {
			t.Errorf("CheckURL(%q) = %v, want INVALID_INPUT naming Url and %q", tt.url, err, tt.field)
		}
	}
}

func TestCreate_Checks(t *testing.T) {
	tests := []struct {
		name string
		spec webhook.Spec
		want string
	}{
		{"bad type", webhook.Spec{URL: "https://a.example/", Types: []string{"Session State"}}, "EventTypes[0]"},
		{"empty prefix", webhook.Spec{URL: "https://a.example/", Types: []string{".*"}}, "EventTypes[0]"},
		{"short secret", webhook.Spec{URL: "https://a.example/", Secret: "short"}, "Secret"},
		{"http elsewhere", webhook.Spec{URL: "http://a.example/"}, "Url"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			_, err := f.reg.Create(t.Context(), tt.spec)
			if err == nil || broker.ErrorCode(err) != broker.CodeInvalidInput || !strings.HasPrefix(err.Error(), tt.want) {
				t.Errorf("Create = %v, want INVALID_INPUT naming %s", err, tt.want)
			}
		})
	}
	f := newFixture(t)
	h, err := f.reg.Create(t.Context(), webhook.Spec{URL: "https://a.example/", Types: []string{"*"}})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h.Secret, "whsec_") || len(h.Secret) < 40 || h.Types != nil {
		t.Errorf("generated secret %q, types %v", h.Secret, h.Types)
	}
	listed, _ := f.reg.List(t.Context())
	got, _ := f.reg.Get(t.Context(), h.ID)
	if len(listed) != 1 || listed[0].Secret != "" || got.Secret != "" {
		t.Error("List or Get shows the secret")
	}
	if err := f.reg.Delete(t.Context(), h.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := f.reg.Get(t.Context(), h.ID); !errors.Is(err, broker.ErrNotFound) {
		t.Errorf("Get after Delete = %v, want ErrNotFound", err)
	}
}

func TestVerify(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	body := []byte(`{"id":1}`)
	good := webhook.Sign("s3cret", now, body)
	tests := []struct {
		name   string
		secret string
		header string
		body   []byte
		want   error
	}{
		{"good", "s3cret", good, body, nil},
		{"rotated: second v1 matches", "s3cret", good[:strings.Index(good, ",")] + ",v1=00," + good[strings.Index(good, ",")+1:], body, nil},
		{"wrong secret", "other", good, body, webhook.ErrBadSignature},
		{"body changed", "s3cret", good, []byte(`{"id":2}`), webhook.ErrBadSignature},
		{"stale", "s3cret", webhook.Sign("s3cret", now.Add(-10*time.Minute), body), body, webhook.ErrStale},
		{"no timestamp", "s3cret", "v1=abc", body, webhook.ErrMalformed},
		{"garbage", "s3cret", "nonsense", body, webhook.ErrMalformed},
	}
	for _, tt := range tests {
		if err := webhook.Verify(tt.secret, tt.header, tt.body, now, 5*time.Minute); !errors.Is(err, tt.want) {
			t.Errorf("%s: Verify = %v, want %v", tt.name, err, tt.want)
		}
	}
	// The documented construction, spelled out.
	if !strings.HasPrefix(good, "t=1800000000,v1=") || len(good) != len("t=1800000000,v1=")+64 {
		t.Errorf("Sign = %q", good)
	}
}
