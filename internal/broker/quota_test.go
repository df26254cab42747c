package broker_test

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/groups"
	"github.com/berth-dev/berth/internal/poll"
	"github.com/berth-dev/berth/internal/sqlite"
)

// acceptAgents accepts every command; created sessions stay CREATING on
// their server, which is placed and counts against quotas.
type acceptAgents struct{}

func (acceptAgents) Dispatch(context.Context, string, broker.Command) (*broker.Result, error) {
	return &broker.Result{}, nil
}

// newQuotaBroker returns a running broker with cfg on a real SQLite store
// and one linked linux server "s1" with room for maxVirtual sessions (0:
// unlimited), DCV GL capable.
func newQuotaBroker(t *testing.T, cfg broker.Config, maxVirtual int) (*broker.Service, broker.Store) {
	t.Helper()
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "berth.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return startQuotaBroker(t, st, cfg, "s1", maxVirtual), st
}

// startQuotaBroker runs a broker on st with one linked server.
func startQuotaBroker(t testing.TB, st broker.Store, cfg broker.Config, server string, maxVirtual int) *broker.Service {
	t.Helper()
	ctx := t.Context()
	svc, err := broker.New(ctx, st, acceptAgents{}, nil, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.AgentConnected(ctx, "", server, serverInfo(server, maxVirtual), nil); err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { _ = svc.Run(rctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	return svc
}

func serverInfo(host string, maxVirtual int) broker.ServerInfo {
	return broker.ServerInfo{Hostname: host, Healthy: true, GLCapable: true, MaxVirtualSessions: maxVirtual, Host: broker.Host{OSFamily: "linux"}}
}

// create creates one session and returns its result.
func create(t *testing.T, svc *broker.Service, r broker.CreateRequest) broker.CreateResult {
	t.Helper()
	if r.Name == "" {
		r.Name = "s"
	}
	if r.Type == "" {
		r.Type = broker.TypeVirtual
	}
	res, err := svc.CreateSessions(t.Context(), []broker.CreateRequest{r})
	if err != nil {
		t.Fatal(err)
	}
	return res[0]
}

// mustCreate creates sessions that must succeed and returns their IDs.
func mustCreate(t *testing.T, svc *broker.Service, n int, r broker.CreateRequest) []string {
	t.Helper()
	var out []string
	for range n {
		res := create(t, svc, r)
		if res.FailureReason != "" {
			t.Fatalf("create for %s: %s", r.Owner, res.FailureReason)
		}
		out = append(out, res.Session.ID)
	}
	return out
}

// queueReasons returns the queue's sessions and why each waits.
func queueReasons(t *testing.T, svc *broker.Service) map[string]string {
	t.Helper()
	q, err := svc.Queue(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]string, len(q))
	for _, e := range q {
		out[e.SessionID] = e.Reason
	}
	return out
}

// placedOf returns how many sessions of owner are placed on a server.
func placedOf(t *testing.T, st broker.Store, owner string) int {
	t.Helper()
	ss, err := st.ListSessions(t.Context(), broker.SessionFilter{Owner: owner})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, s := range ss {
		if s.ServerID != "" && s.State != broker.StateDeleted {
			n++
		}
	}
	return n
}

func forceDelete(t *testing.T, svc *broker.Service, id, owner string) {
	t.Helper()
	res := svc.DeleteSessions(t.Context(), []broker.DeleteRequest{{SessionID: id, Owner: owner, Force: true}})
	if res[0].FailureReason != "" {
		t.Fatalf("delete %s: %s", id, res[0].FailureReason)
	}
}

// checkRefusedThenQueued checks that r is refused with reason and, with
// EnqueueRequest, queued with that reason; it returns the queued ID.
func checkRefusedThenQueued(t *testing.T, svc *broker.Service, r broker.CreateRequest, reason string) string {
	t.Helper()
	if got := create(t, svc, r).FailureReason; got != reason {
		t.Fatalf("FailureReason %q, want %q", got, reason)
	}
	r.EnqueueRequest = true
	res := create(t, svc, r)
	if res.FailureReason != "" || res.Session == nil {
		t.Fatalf("with EnqueueRequest: %q", res.FailureReason)
	}
	if got := queueReasons(t, svc)[res.Session.ID]; got != reason {
		t.Fatalf("queued session waits for %q, want %q", got, reason)
	}
	return res.Session.ID
}

func TestQuota_PerUser(t *testing.T) {
	svc, st := newQuotaBroker(t, broker.Config{BrokerID: "b1", Limits: broker.SessionLimits{MaxSessions: 2}}, 0)
	ids := mustCreate(t, svc, 2, broker.CreateRequest{Owner: "alice"})
	queued := checkRefusedThenQueued(t, svc, broker.CreateRequest{Owner: "alice"},
		"quota: user alice has 2 of 2 sessions (session-max-sessions-per-user)")
	mustCreate(t, svc, 2, broker.CreateRequest{Owner: "bob"}) // another user's quota
	// A session that ends frees a place: the queued one takes it.
	forceDelete(t, svc, ids[0], "alice")
	poll.Until(t, 10*time.Second, "the queued session placed", func() bool {
		s, err := st.GetSession(t.Context(), queued)
		return err == nil && s.ServerID != ""
	})
	if n := placedOf(t, st, "alice"); n != 2 {
		t.Errorf("alice has %d placed sessions, want 2", n)
	}
}

func TestQuota_PerGroup(t *testing.T) {
	path := filepath.Join(t.TempDir(), "group")
	if err := os.WriteFile(path, []byte("students:x:100:alice,bob\nstaff:x:101:carol\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	src, err := groups.NewFileSource(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := broker.Config{BrokerID: "b1", Groups: src, GroupLimits: map[string]broker.SessionLimits{
		"students": {MaxSessions: 3}, "staff": {IdleTimeoutMinutes: 5},
	}}
	svc, st := newQuotaBroker(t, cfg, 0)
	mustCreate(t, svc, 2, broker.CreateRequest{Owner: "alice"})
	mustCreate(t, svc, 1, broker.CreateRequest{Owner: "bob"})
	checkRefusedThenQueued(t, svc, broker.CreateRequest{Owner: "bob"},
		"quota: group students has 3 of 3 sessions (session-group-limits-file)")
	mustCreate(t, svc, 4, broker.CreateRequest{Owner: "carol"}) // staff: no quota
	if n := placedOf(t, st, "alice") + placedOf(t, st, "bob"); n != 3 {
		t.Errorf("students have %d placed sessions, want 3", n)
	}
}

func TestQuota_PerGPU(t *testing.T) {
	cfg := broker.Config{BrokerID: "b1", Limits: broker.SessionLimits{MaxGPUs: 2}, GroupLimits: map[string]broker.SessionLimits{"gpu": {MaxGPUs: 3}}}
	l := groups.NewLearned()
	l.Learn("alice", []string{"gpu"})
	l.Learn("bob", []string{"gpu"})
	cfg.Groups = l
	svc, _ := newQuotaBroker(t, cfg, 0)
	gl := broker.CreateRequest{Owner: "alice", DcvGlEnabled: true}
	mustCreate(t, svc, 2, gl)
	checkRefusedThenQueued(t, svc, gl, "quota: user alice uses 2 of 2 GPUs (session-max-gpus-per-user)")
	mustCreate(t, svc, 3, broker.CreateRequest{Owner: "alice"}) // no GPU
	mustCreate(t, svc, 1, broker.CreateRequest{Owner: "bob", DcvGlEnabled: true})
	checkRefusedThenQueued(t, svc, broker.CreateRequest{Owner: "bob", DcvGlEnabled: true},
		"quota: group gpu uses 3 of 3 GPUs (session-group-limits-file)")
}

func TestQuota_Template(t *testing.T) {
	svc, _ := newQuotaBroker(t, broker.Config{BrokerID: "b1"}, 0)
	tpl, err := svc.CreateTemplate(t.Context(), broker.Template{
		Name: "gpu-desktop", Type: "VIRTUAL", GPUs: 2, Users: []string{"alice", "bob"},
		Limits: broker.SessionLimits{MaxSessions: 2, MaxGPUs: 10},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"alice", "bob"} {
		res, err := svc.LaunchTemplate(t.Context(), tpl.ID, u, []string{"idp-group"})
		if err != nil || res.FailureReason != "" {
			t.Fatalf("launch for %s: %v %s", u, err, res.FailureReason)
		}
		if sp := res.Session.Spec; sp.Template != tpl.ID || sp.GPUs != 2 || sp.TemplateLimits == nil || sp.TemplateLimits.MaxSessions != 2 || !slices.Equal(sp.Groups, []string{"idp-group"}) {
			t.Fatalf("launched spec %+v", sp)
		}
	}
	// Launches queue: the third waits for the template's quota.
	res, err := svc.LaunchTemplate(t.Context(), tpl.ID, "alice", nil)
	if err != nil || res.Session == nil {
		t.Fatalf("third launch: %v %+v", err, res)
	}
	want := fmt.Sprintf("quota: template %s has 2 of 2 sessions", tpl.ID)
	if got := queueReasons(t, svc)[res.Session.ID]; got != want {
		t.Fatalf("third launch waits for %q, want %q", got, want)
	}
}

// TestQueue_RoundRobin: user A enqueues 50, user B then 1; when capacity
// frees, B's session is among the first placed.
func TestQueue_RoundRobin(t *testing.T) {
	svc, st := newQuotaBroker(t, broker.Config{BrokerID: "b1"}, 1)
	blocker := mustCreate(t, svc, 1, broker.CreateRequest{Owner: "carol"})[0]
	a := mustCreate(t, svc, 50, broker.CreateRequest{Owner: "alice", EnqueueRequest: true})
	b := mustCreate(t, svc, 1, broker.CreateRequest{Owner: "bob", EnqueueRequest: true})[0]
	q, err := svc.Queue(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(q) != 51 || q[0].SessionID != a[0] || q[1].SessionID != b || q[1].Position != 2 || q[2].SessionID != a[1] {
		t.Fatalf("queue order: %d entries, first %+v, %+v", len(q), q[0], q[1])
	}
	pos, n, err := svc.QueuePositions(t.Context())
	if err != nil || n != 51 || pos[b] != 2 || pos[a[49]] != 51 {
		t.Fatalf("QueuePositions: %v, %d waiting, bob at %d, alice's last at %d", err, n, pos[b], pos[a[49]])
	}
	// Room for two: A's first and B's.
	if err := svc.AgentConnected(t.Context(), "", "s1", serverInfo("s1", 3), nil); err != nil {
		t.Fatal(err)
	}
	forceDelete(t, svc, blocker, "carol")
	poll.Until(t, 10*time.Second, "bob placed", func() bool { return placedOf(t, st, "bob") == 1 })
	if n := placedOf(t, st, "alice"); n > 2 {
		t.Errorf("alice got %d placements before bob's first", n)
	}
}

// TestQueue_RoundRobinAsRoomFrees: when room comes one session at a time,
// the queue still alternates owners: the owner whose session was just placed
// runs one more, so another owner's waiting session goes first next time
// (without counting what owners run, alice's next would be first in every
// pass and bob would wait for all of hers).
func TestQueue_RoundRobinAsRoomFrees(t *testing.T) {
	svc, st := newQuotaBroker(t, broker.Config{BrokerID: "b1"}, 3)
	carol := mustCreate(t, svc, 3, broker.CreateRequest{Owner: "carol"})
	mustCreate(t, svc, 5, broker.CreateRequest{Owner: "alice", EnqueueRequest: true})
	mustCreate(t, svc, 1, broker.CreateRequest{Owner: "bob", EnqueueRequest: true})
	forceDelete(t, svc, carol[0], "carol")
	poll.Until(t, 10*time.Second, "alice's first placed", func() bool { return placedOf(t, st, "alice") == 1 })
	forceDelete(t, svc, carol[1], "carol")
	poll.Until(t, 10*time.Second, "a second placement", func() bool { return placedOf(t, st, "alice")+placedOf(t, st, "bob") == 2 })
	if a, b := placedOf(t, st, "alice"), placedOf(t, st, "bob"); a != 1 || b != 1 {
		t.Errorf("after two rooms freed one at a time: alice %d placed, bob %d; want 1 each", a, b)
	}
	q, err := svc.Queue(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(q) != 4 || q[0].Owner != "alice" {
		t.Errorf("the queue after: %+v, want alice's 4 left", q)
	}
}

// TestQuota_ReasonNamesUse checks the reasons' wording for each kind.
func TestQuota_ReasonNamesUse(t *testing.T) {
	tests := []struct {
		q    broker.Quota
		use  broker.QuotaUse
		gpus int
		want string
	}{
		{broker.Quota{Kind: broker.QuotaUser, Name: "alice", MaxSessions: 4}, broker.QuotaUse{Sessions: 4}, 0,
			"quota: user alice has 4 of 4 sessions (session-max-sessions-per-user)"},
		{broker.Quota{Kind: broker.QuotaGroup, Name: "students", MaxGPUs: 4}, broker.QuotaUse{Sessions: 2, GPUs: 4}, 1,
			"quota: group students uses 4 of 4 GPUs (session-group-limits-file)"},
		{broker.Quota{Kind: broker.QuotaUser, Name: "alice", MaxGPUs: 4}, broker.QuotaUse{GPUs: 3}, 2,
			"quota: user alice uses 3 of 4 GPUs, the session needs 2 (session-max-gpus-per-user)"},
		{broker.Quota{Kind: broker.QuotaTemplate, Name: "gpu-desktop", MaxSessions: 10}, broker.QuotaUse{Sessions: 10}, 0,
			"quota: template gpu-desktop has 10 of 10 sessions"},
	}
	for _, tt := range tests {
		err := tt.q.Check(tt.use, tt.gpus)
		if err == nil || err.Error() != tt.want {
			t.Errorf("%+v: got %v, want %q", tt.q, err, tt.want)
		}
	}
	q := broker.Quota{Kind: broker.QuotaUser, Name: "a", MaxSessions: 2, MaxGPUs: 1}
	if err := q.Check(broker.QuotaUse{Sessions: 1, GPUs: 5}, 0); err != nil {
		t.Errorf("a session without GPUs refused by the GPU cap: %v", err)
	}
	if err := (&broker.Quota{Kind: broker.QuotaUser, Name: "a", MaxSessions: -1}).Check(broker.QuotaUse{Sessions: 100}, 0); err != nil {
		t.Errorf("a negative cap is off: %v", err)
	}
}

func TestTemplate_LimitsValidation(t *testing.T) {
	svc, _ := newQuotaBroker(t, broker.Config{BrokerID: "b1"}, 0)
	tests := []struct {
		name   string
		change func(*broker.Template)
		want   string
	}{
		{"negative other than -1", func(x *broker.Template) { x.Limits.MaxSessions = -2 }, "Limits.MaxSessions: must be 0 (unset), positive, or -1 (off)"},
		{"not finite", func(x *broker.Template) { x.Limits.IdleTimeoutMinutes = math.Inf(1) }, "Limits.IdleTimeoutMinutes: must be a finite number"},
		{"too large", func(x *broker.Template) { x.Limits.MaxLifetimeHours = 2e6 }, "Limits.MaxLifetimeHours: 2e+06 exceeds the maximum"},
		{"gpus negative", func(x *broker.Template) { x.GPUs = -1 }, "GPUs: must be between 0 and 64, got -1"},
		{"gpus too many", func(x *broker.Template) { x.GPUs = 65 }, "GPUs: must be between 0 and 64, got 65"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tpl := broker.Template{Name: "t", Type: "VIRTUAL"}
			tc.change(&tpl)
			_, err := svc.CreateTemplate(t.Context(), tpl)
			if err == nil || !strings.Contains(err.Error(), tc.want) || broker.ErrorCode(err) != broker.CodeInvalidInput {
				t.Fatalf("CreateTemplate = %v, want an invalid input error with %q", err, tc.want)
			}
		})
	}
	ok := broker.Template{Name: "ok", Type: "VIRTUAL", GPUs: 64, Limits: broker.SessionLimits{MaxSessions: -1, IdleTimeoutMinutes: 0.5, MaxGPUs: 8}}
	got, err := svc.CreateTemplate(t.Context(), ok)
	if err != nil {
		t.Fatal(err)
	}
	if got.Limits != ok.Limits || got.GPUs != 64 {
		t.Errorf("stored limits %+v GPUs %d", got.Limits, got.GPUs)
	}
}

// TestQuota_LearnedGroups: the groups an agent reports for a session's owner
// (full lists and changes) teach the groups source, and the group's quota
// counts the reported sessions.
func TestQuota_LearnedGroups(t *testing.T) {
	src := groups.NewLearned()
	cfg := broker.Config{BrokerID: "b1", Groups: src, GroupLimits: map[string]broker.SessionLimits{"lab": {MaxSessions: 2}}}
	svc, _ := newQuotaBroker(t, cfg, 0)
	ctx := t.Context()
	now := svc.Now()
	report := func(id, owner string) broker.SessionReport {
		return broker.SessionReport{ID: id, Name: "d", Owner: owner, Type: broker.TypeVirtual, State: broker.StateReady,
			CreationTime: now, OwnerGroups: []string{"lab", "users"}}
	}
	// A full list (the agent's hello) and a change each adopt a session.
	if err := svc.AgentConnected(ctx, "", "s1", serverInfo("s1", 0), []broker.SessionReport{report("a-1", "alice")}); err != nil {
		t.Fatal(err)
	}
	if err := svc.AgentSessionChanges(ctx, "s1", []broker.SessionReport{report("b-1", "bob")}); err != nil {
		t.Fatal(err)
	}
	if got := src.Members(ctx, "lab"); !slices.Equal(got, []string{"alice", "bob"}) {
		t.Fatalf("learned members of lab: %v", got)
	}
	if got := create(t, svc, broker.CreateRequest{Owner: "alice"}).FailureReason; got != "quota: group lab has 2 of 2 sessions (session-group-limits-file)" {
		t.Errorf("FailureReason %q", got)
	}
}

// TestQueue_SkipsOverQuota: a queued session over its quota does not hold
// back the sessions behind it when room frees.
func TestQueue_SkipsOverQuota(t *testing.T) {
	svc, st := newQuotaBroker(t, broker.Config{BrokerID: "b1"}, 2)
	tpl, err := svc.CreateTemplate(t.Context(), broker.Template{
		Name: "one-at-a-time", Type: "VIRTUAL", Users: []string{"alice", "carol"},
		Limits: broker.SessionLimits{MaxSessions: 1},
	})
	if err != nil {
		t.Fatal(err)
	}
	if res, err := svc.LaunchTemplate(t.Context(), tpl.ID, "carol", nil); err != nil || res.FailureReason != "" {
		t.Fatalf("carol's launch: %v %+v", err, res)
	}
	blocker := mustCreate(t, svc, 1, broker.CreateRequest{Owner: "dave"})[0] // the server is full
	res, err := svc.LaunchTemplate(t.Context(), tpl.ID, "alice", nil)
	if err != nil || res.Session == nil {
		t.Fatalf("alice's launch: %v %+v", err, res)
	}
	over := res.Session.ID
	bob := mustCreate(t, svc, 1, broker.CreateRequest{Owner: "bob", EnqueueRequest: true})[0]
	if pos, _, err := svc.QueuePositions(t.Context()); err != nil || pos[over] != 1 || pos[bob] != 2 {
		t.Fatalf("positions %v, %v", pos, err)
	}
	forceDelete(t, svc, blocker, "dave")
	poll.Until(t, 10*time.Second, "bob placed", func() bool { return placedOf(t, st, "bob") == 1 })
	if want, reason := fmt.Sprintf("quota: template %s has 1 of 1 sessions", tpl.ID), queueReasons(t, svc)[over]; reason != want {
		t.Errorf("alice's queued session waits for %q, want %q", reason, want)
	}
}

// TestQueue_ExpiryNamesQuota: a queued session that waited out
// create-sessions-queue-max-time-seconds over a quota is deleted with a
// reason naming the quota.
func TestQueue_ExpiryNamesQuota(t *testing.T) {
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "berth.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	svc, err := broker.New(t.Context(), st, acceptAgents{}, nil, broker.Config{BrokerID: "b1", QueueMaxTime: time.Minute,
		Limits: broker.SessionLimits{MaxSessions: 1}}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	svc.Now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	if err := svc.AgentConnected(t.Context(), "", "s1", serverInfo("s1", 0), nil); err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Go(func() { _ = svc.Run(rctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	mustCreate(t, svc, 1, broker.CreateRequest{Owner: "alice"})
	queued := mustCreate(t, svc, 1, broker.CreateRequest{Owner: "alice", EnqueueRequest: true})[0]
	mu.Lock()
	now = now.Add(2 * time.Minute)
	mu.Unlock()
	var got *broker.Session
	poll.Until(t, 10*time.Second, "the queued session expired", func() bool {
		got, err = st.GetSession(t.Context(), queued)
		return err == nil && got.State == broker.StateDeleted
	})
	want := "waited 1m0s in the queue (create-sessions-queue-max-time-seconds), still over quota: user alice has 1 of 1 sessions (session-max-sessions-per-user)"
	if got.StateReason != want {
		t.Errorf("StateReason %q, want %q", got.StateReason, want)
	}
}

// noQuotaReads fails the test when the broker reads quota use.
type noQuotaReads struct {
	broker.Store
	broker.TemplateStore
	t *testing.T
}

func (s noQuotaReads) QuotaUse(ctx context.Context, qs []broker.Quota) ([]broker.QuotaUse, error) {
	s.t.Errorf("QuotaUse(%v) called with no quota configured", qs)
	return s.Store.QuotaUse(ctx, qs)
}

func (s noQuotaReads) CommitPlacements(ctx context.Context, ps []broker.Placement) ([]error, error) {
	for _, p := range ps {
		if len(p.Quotas) > 0 {
			s.t.Errorf("placement of %s carries quotas %v with no quota configured", p.Session.ID, p.Quotas)
		}
	}
	return s.Store.CommitPlacements(ctx, ps)
}

// TestQuota_NoneNoReads: with no quota configured (groups with lifetime
// limits only, a template without quotas), placement reads no quota use and
// commits no quota check.
func TestQuota_NoneNoReads(t *testing.T) {
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "berth.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	cfg := broker.Config{BrokerID: "b1", Limits: broker.SessionLimits{IdleTimeoutMinutes: 5},
		GroupLimits: map[string]broker.SessionLimits{"lab": {MaxLifetimeHours: 1}}, Groups: groups.NewLearned()}
	svc := startQuotaBroker(t, noQuotaReads{Store: st, TemplateStore: st, t: t}, cfg, "s1", 0)
	mustCreate(t, svc, 3, broker.CreateRequest{Owner: "alice", DcvGlEnabled: true})
	tpl, err := svc.CreateTemplate(t.Context(), broker.Template{Name: "t", Type: "VIRTUAL", GPUs: 1, Users: []string{"bob"},
		Limits: broker.SessionLimits{MaxLifetimeHours: 2}})
	if err != nil {
		t.Fatal(err)
	}
	if res, err := svc.LaunchTemplate(t.Context(), tpl.ID, "bob", []string{"lab"}); err != nil || res.FailureReason != "" {
		t.Fatalf("launch: %v %+v", err, res)
	}
}

// TestQuota_WithinOneBatch: the items of one CreateSessions call count
// against the quota in order.
func TestQuota_WithinOneBatch(t *testing.T) {
	svc, st := newQuotaBroker(t, broker.Config{BrokerID: "b1", Limits: broker.SessionLimits{MaxSessions: 2}}, 0)
	r := broker.CreateRequest{Name: "d", Owner: "alice", Type: broker.TypeVirtual}
	res, err := svc.CreateSessions(t.Context(), []broker.CreateRequest{r, r, r})
	if err != nil {
		t.Fatal(err)
	}
	var reasons []string
	for _, x := range res {
		reasons = append(reasons, x.FailureReason)
	}
	want := []string{"", "", "quota: user alice has 2 of 2 sessions (session-max-sessions-per-user)"}
	if !slices.Equal(reasons, want) {
		t.Errorf("reasons %q, want %q", reasons, want)
	}
	if n := placedOf(t, st, "alice"); n != 2 {
		t.Errorf("alice has %d placed sessions, want 2", n)
	}
}
