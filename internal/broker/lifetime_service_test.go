package broker_test

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/poll"
	"github.com/berth-dev/berth/internal/sqlite"
)

// fakeClock is an injected Service.Now.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) set(t time.Time) {
	c.mu.Lock()
	c.now = t
	c.mu.Unlock()
}

// policyAgents records the commands the policies send.
type policyAgents struct {
	mu   sync.Mutex
	cmds []broker.Command
	// fail, when set, is the error of notify and disconnect commands.
	fail error
}

func (a *policyAgents) Dispatch(_ context.Context, _ string, cmd broker.Command) (*broker.Result, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.cmds = append(a.cmds, cmd)
	if a.fail != nil && (cmd.Kind == broker.CommandNotify || cmd.Kind == broker.CommandDisconnect) {
		return nil, a.fail
	}
	return &broker.Result{}, nil
}

func (a *policyAgents) failWith(err error) {
	a.mu.Lock()
	a.fail = err
	a.mu.Unlock()
}

// take returns the commands sent since the last call.
func (a *policyAgents) take() []broker.Command {
	a.mu.Lock()
	defer a.mu.Unlock()
	c := a.cmds
	a.cmds = nil
	return c
}

// policyCounts is a Metrics that counts the policies' warnings and actions.
type policyCounts struct {
	mu      sync.Mutex
	warned  map[string]int
	actions map[string]int
}

func (*policyCounts) Placed(int)              {}
func (*policyCounts) PlacementFailed(string)  {}
func (*policyCounts) CreateFailed(string)     {}
func (*policyCounts) QueueWait(time.Duration) {}
func (m *policyCounts) PolicyWarned(policy string) {
	m.mu.Lock()
	m.warned[policy]++
	m.mu.Unlock()
}
func (m *policyCounts) PolicyActed(policy, action string) {
	m.mu.Lock()
	m.actions[policy+" "+action]++
	m.mu.Unlock()
}

// newPolicyBroker returns a running broker on store (a real SQLite file
// when nil) with one linked server "s1", its clock at lt0, and a policy
// loop that ticks only when the test calls PolicyTick.
func newPolicyBroker(t *testing.T, store broker.Store, cfg broker.Config) (*broker.Service, *fakeClock, *policyAgents, *policyCounts) {
	t.Helper()
	ctx := t.Context()
	if store == nil {
		st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "berth.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		store = st
	}
	agents := &policyAgents{}
	cfg.PolicyInterval = time.Hour
	svc, err := broker.New(ctx, store, agents, nil, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	clk := &fakeClock{now: lt0}
	svc.Now = clk.Now
	m := &policyCounts{warned: map[string]int{}, actions: map[string]int{}}
	svc.SetMetrics(m)
	info := broker.ServerInfo{Hostname: "s1", Healthy: true, Host: broker.Host{OSFamily: "linux"}}
	if err := svc.AgentConnected(ctx, "", "s1", info, nil); err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { _ = svc.Run(rctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	return svc, clk, agents, m
}

// report tells svc, as s1's agent, that session "p1" is READY with conns
// clients, its last input and last disconnection.
func report(t *testing.T, svc *broker.Service, conns int64, input, lastDisc time.Time) {
	t.Helper()
	r := []broker.SessionReport{{ID: "p1", Name: "p", Owner: "alice", Type: broker.TypeVirtual, State: broker.StateReady,
		CreationTime: lt0, NumOfConnections: conns, LastInputTime: input, LastDisconnectionTime: lastDisc}}
	if err := svc.AgentUpdate(t.Context(), "s1", nil, r); err != nil {
		t.Fatal(err)
	}
}

func getP1(t *testing.T, svc *broker.Service) broker.SessionView {
	t.Helper()
	views, _, err := svc.DescribeSessions(t.Context(), broker.DescribeQuery{SessionIDs: []string{"p1"}})
	if err != nil || len(views) != 1 {
		t.Fatalf("DescribeSessions(p1) = %v, %v", views, err)
	}
	return views[0]
}

// tick sets the clock to now, runs one policy tick and returns the
// commands it sent.
func tick(t *testing.T, svc *broker.Service, clk *fakeClock, agents *policyAgents, now time.Time) []broker.Command {
	t.Helper()
	clk.set(now)
	if _, err := svc.PolicyTick(t.Context()); err != nil {
		t.Fatalf("PolicyTick at %v: %v", now, err)
	}
	return agents.take()
}

// tickDeleted ticks at now and checks that the policies deleted p1:
// DELETING at once, and DELETED once its delete command went out.
func tickDeleted(t *testing.T, svc *broker.Service, clk *fakeClock, agents *policyAgents, now time.Time) {
	t.Helper()
	var cmds []broker.Command
	cmds = append(cmds, tick(t, svc, clk, agents, now)...)
	if st := getP1(t, svc).State; st != broker.StateDeleting && st != broker.StateDeleted {
		t.Fatalf("state after the tick at %v = %s, want DELETING", now.Sub(lt0), st)
	}
	poll.Until(t, 10*time.Second, "session DELETED", func() bool { return getP1(t, svc).State == broker.StateDeleted })
	cmds = append(cmds, agents.take()...)
	checkCmds(t, "deletion at "+now.Sub(lt0).String(), cmds, "delete")
}

func checkCmds(t *testing.T, step string, got []broker.Command, want ...string) {
	t.Helper()
	var kinds []string
	for _, c := range got {
		k := c.Kind
		if c.Notify != nil {
			k += " " + c.Notify.Policy + " " + c.Notify.Deadline.Sub(lt0).String()
			if c.Notify.Extendable {
				k += " extendable"
			}
		}
		kinds = append(kinds, k)
	}
	if strings.Join(kinds, "; ") != strings.Join(want, "; ") {
		t.Errorf("%s: commands %q, want %q", step, kinds, want)
	}
}

// TestPolicies_IdleThenDisconnected follows a session through the idle
// warnings, input that moves the deadline, the idle disconnection and the
// deletion by the disconnected timeout, on the injected clock.
func TestPolicies_IdleThenDisconnected(t *testing.T) {
	svc, clk, agents, m := newPolicyBroker(t, nil, broker.Config{
		Limits: broker.SessionLimits{IdleTimeoutMinutes: 30, DisconnectedTimeoutMinutes: 20}})
	report(t, svc, 1, lt0, time.Time{})
	if got := getP1(t, svc).DueAt; !got.Equal(lat(15 * time.Minute)) {
		t.Fatalf("DueAt after the first report = %v, want the first idle warning at +15m", got)
	}
	checkCmds(t, "+10m", tick(t, svc, clk, agents, lat(10*time.Minute)))
	checkCmds(t, "+15m", tick(t, svc, clk, agents, lat(15*time.Minute)), "notify session-idle-timeout-minutes 30m0s")
	checkCmds(t, "+16m again", tick(t, svc, clk, agents, lat(16*time.Minute)))

	clk.set(lat(20 * time.Minute))
	report(t, svc, 1, lat(20*time.Minute), time.Time{}) // input: the deadline moves to +50m
	lt, err := svc.SessionLifetime(t.Context(), "p1", "")
	if err != nil || !lt.IdleDisconnect.Equal(lat(50*time.Minute)) || !lt.LastInputTime.Equal(lat(20*time.Minute)) {
		t.Fatalf("SessionLifetime after input = %+v, %v; want idle disconnection at +50m", lt, err)
	}
	checkCmds(t, "+34m", tick(t, svc, clk, agents, lat(34*time.Minute)))
	checkCmds(t, "+49m, both points passed", tick(t, svc, clk, agents, lat(49*time.Minute)),
		"notify session-idle-timeout-minutes 50m0s")
	got := tick(t, svc, clk, agents, lat(50*time.Minute))
	checkCmds(t, "+50m", got, "disconnect session-idle-timeout-minutes 50m0s")
	if len(got) == 1 && !strings.Contains(got[0].Notify.Message, "no keyboard or mouse input for 30m (session-idle-timeout-minutes)") {
		t.Errorf("disconnect message %q does not say why", got[0].Notify.Message)
	}
	checkCmds(t, "+51m, disconnected once", tick(t, svc, clk, agents, lat(51*time.Minute)))

	report(t, svc, 0, lat(20*time.Minute), lat(50*time.Minute+time.Second))
	checkCmds(t, "+70m", tick(t, svc, clk, agents, lat(70*time.Minute)))
	tickDeleted(t, svc, clk, agents, lat(71*time.Minute))
	want := "deleted by session-disconnected-timeout-minutes: no client connected for 20m"
	if got := getP1(t, svc).StateReason; got != want {
		t.Errorf("StateReason = %q, want %q", got, want)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.warned[broker.PolicyIdle] != 2 || m.actions[broker.PolicyIdle+" disconnect"] != 1 ||
		m.actions[broker.PolicyDisconnected+" delete"] != 1 {
		t.Errorf("metrics: warned %v, actions %v", m.warned, m.actions)
	}
}

// TestPolicies_LifetimeAndExtend checks the lifetime warning, ExtendSession
// (default, cap, refusals) and the deletion at the extended deadline.
func TestPolicies_LifetimeAndExtend(t *testing.T) {
	svc, clk, agents, _ := newPolicyBroker(t, nil, broker.Config{
		Limits: broker.SessionLimits{MaxLifetimeHours: 1, MaxExtensionHours: 1.5}})
	ctx := t.Context()
	report(t, svc, 1, lt0, time.Time{})
	checkCmds(t, "+45m", tick(t, svc, clk, agents, lat(45*time.Minute)),
		"notify session-max-lifetime-hours 1h0m0s extendable")

	dl, err := svc.ExtendSession(ctx, broker.ExtendRequest{SessionID: "p1", Actor: "test"})
	if err != nil || !dl.Equal(lat(2*time.Hour)) {
		t.Fatalf("ExtendSession(default) = %v, %v; want +2h", dl, err)
	}
	if got := getP1(t, svc).DueAt; !got.Equal(lat(105 * time.Minute)) {
		t.Errorf("DueAt after the extension = %v, want the first warning of the new deadline, +1h45m", got)
	}
	refusals := []struct {
		r    broker.ExtendRequest
		code string
		msg  string
	}{
		{broker.ExtendRequest{SessionID: "p1", By: 2 * time.Hour}, broker.CodeInvalidInput, "By: at most 1h30m"},
		{broker.ExtendRequest{SessionID: "p1", By: -time.Hour}, broker.CodeInvalidInput, "By: must be positive"},
		{broker.ExtendRequest{SessionID: "p1", Owner: "bob"}, broker.CodeForbidden, "owner"},
		{broker.ExtendRequest{SessionID: "nope"}, broker.CodeNotFound, "does not exist"},
	}
	for _, c := range refusals {
		_, err := svc.ExtendSession(ctx, c.r)
		if broker.ErrorCode(err) != c.code || err == nil || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("ExtendSession(%+v) = %v (%s), want %s naming %q", c.r, err, broker.ErrorCode(err), c.code, c.msg)
		}
	}
	dl, err = svc.ExtendSession(ctx, broker.ExtendRequest{SessionID: "p1", By: time.Hour, Owner: "alice"})
	if err != nil || !dl.Equal(lat(150*time.Minute)) {
		t.Fatalf("ExtendSession(1h) with 30m left = %v, %v; want capped at +2h30m", dl, err)
	}
	_, err = svc.ExtendSession(ctx, broker.ExtendRequest{SessionID: "p1"})
	if broker.ErrorCode(err) != broker.CodeInvalidInput || !strings.Contains(err.Error(), broker.PolicyExtension) {
		t.Errorf("ExtendSession past the cap = %v, want a refusal naming %s", err, broker.PolicyExtension)
	}
	lt, err := svc.SessionLifetime(ctx, "p1", "alice")
	if err != nil || !lt.Expires.Equal(lat(150*time.Minute)) || lt.ExtensionLeft != 0 {
		t.Errorf("SessionLifetime = %+v, %v", lt, err)
	}
	checkCmds(t, "+2h29m", tick(t, svc, clk, agents, lat(149*time.Minute)), "notify session-max-lifetime-hours 2h30m0s")
	tickDeleted(t, svc, clk, agents, lat(150*time.Minute))
	if got := getP1(t, svc).StateReason; !strings.HasPrefix(got, "deleted by session-max-lifetime-hours") {
		t.Errorf("StateReason = %q, want it to name session-max-lifetime-hours", got)
	}
}

// TestPolicies_NoLifetime refuses an extension when the session has no
// lifetime limit, and sets no DueAt when no policy is configured.
func TestPolicies_NoLifetime(t *testing.T) {
	svc, clk, agents, _ := newPolicyBroker(t, nil, broker.Config{})
	report(t, svc, 1, lt0, time.Time{})
	if got := getP1(t, svc).DueAt; !got.IsZero() {
		t.Errorf("DueAt without policies = %v, want zero", got)
	}
	_, err := svc.ExtendSession(t.Context(), broker.ExtendRequest{SessionID: "p1"})
	if broker.ErrorCode(err) != broker.CodeInvalidInput || !strings.Contains(err.Error(), broker.PolicyLifetime) {
		t.Errorf("ExtendSession without a lifetime = %v", err)
	}
	checkCmds(t, "+10h", tick(t, svc, clk, agents, lat(10*time.Hour)))
}

// TestPolicies_SweepAtStart: policies configured after sessions started
// (a restart with new properties) take effect through the leader's sweep.
func TestPolicies_SweepAtStart(t *testing.T) {
	ctx := t.Context()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "berth.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	svc, _, _, _ := newPolicyBroker(t, st, broker.Config{})
	report(t, svc, 0, time.Time{}, time.Time{})
	if got := getP1(t, svc).DueAt; !got.IsZero() {
		t.Fatalf("DueAt without policies = %v", got)
	}
	// The next broker on the same store, with a policy.
	svc2, err := broker.New(ctx, st, &policyAgents{}, nil,
		broker.Config{Limits: broker.SessionLimits{DisconnectedTimeoutMinutes: 10}}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := svc2.PolicySweep(ctx); err != nil {
		t.Fatal(err)
	}
	if got := getP1(t, svc2).DueAt; !got.Equal(lat(10 * time.Minute)) {
		t.Errorf("DueAt after the sweep = %v, want +10m", got)
	}
}

// TestPolicies_CommandFailures: a warning the agent refuses (a driver that
// cannot show one, as dcv) counts as sent and is not sent again; one that
// does not reach the agent is retried a minute later, not at every tick.
func TestPolicies_CommandFailures(t *testing.T) {
	svc, clk, agents, m := newPolicyBroker(t, nil, broker.Config{
		Limits: broker.SessionLimits{MaxLifetimeHours: 1}, WarningPoints: []time.Duration{15 * time.Minute}})
	report(t, svc, 1, lt0, time.Time{})

	agents.failWith(broker.ErrAgentUnreachable)
	checkCmds(t, "+45m, unreachable", tick(t, svc, clk, agents, lat(45*time.Minute)), "notify session-max-lifetime-hours 1h0m0s")
	checkCmds(t, "+45m30s, waits", tick(t, svc, clk, agents, lat(45*time.Minute+30*time.Second)))
	agents.failWith(&broker.CommandError{Reason: "driver dcv cannot notify users"})
	checkCmds(t, "+46m, retried and refused", tick(t, svc, clk, agents, lat(46*time.Minute)), "notify session-max-lifetime-hours 1h0m0s")
	checkCmds(t, "+50m, not again", tick(t, svc, clk, agents, lat(50*time.Minute)))
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.warned[broker.PolicyLifetime] != 1 {
		t.Errorf("lifetime warnings counted %d, want 1 (the refused one)", m.warned[broker.PolicyLifetime])
	}
}
