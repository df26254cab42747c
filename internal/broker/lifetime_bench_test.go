package broker_test

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/postgres"
	"github.com/berth-dev/berth/internal/postgres/pgtest"
	"github.com/berth-dev/berth/internal/sqlite"
)

const (
	benchSessions = 100_000
	benchDue      = benchSessions / 100 // 1% due at each tick
)

// benchLimits are the policies of the benchmarks: a lifetime of 10h with
// warnings 15m and 2m before it.
var (
	benchLimits = broker.SessionLimits{MaxLifetimeHours: 10, MaxExtensionHours: 2}
	benchPoints = []time.Duration{15 * time.Minute, 2 * time.Minute}
	// benchNow is when the sessions created at lt0 reach their first
	// warning; the others were created 2h later.
	benchNow = lat(9*time.Hour + 46*time.Minute)
)

// benchSession is the i-th session of the benchmarks: READY on s1, due
// (its first lifetime warning passed at benchNow) when i is a multiple of
// 100.
func benchSession(i int) *broker.Session {
	created := lat(2 * time.Hour)
	if i%100 == 0 {
		created = lt0
	}
	x := &broker.Session{ID: fmt.Sprintf("b-%06d", i), Name: "bench", Owner: fmt.Sprintf("user%d", i%500),
		Type: broker.TypeVirtual, ServerID: "s1", State: broker.StateReady, CreationTime: created, UpdatedAt: created,
		NumOfConnections: 1, LastInputTime: created}
	x.DueAt = broker.EvaluatePolicies(x, benchLimits, benchPoints, lt0).DueAt
	return x
}

// BenchmarkPolicyTick is the cost of one tick of the lifetime policies on
// the leader broker with 100,000 READY sessions in a real store, 1% of
// them due: read the due sessions through the store's index of DueAt,
// evaluate them, send each its warning (to an agent that answers at once)
// and write their next DueAt. Between ticks (not timed) the due sessions
// are made due again. PostgreSQL runs when BERTH_TEST_PG_DSN is set.
func BenchmarkPolicyTick(b *testing.B) {
	type store struct {
		name string
		// open returns the store and what to do between ticks (not timed).
		open func(b *testing.B) (broker.Store, func())
	}
	stores := []store{
		{"sqlite", func(b *testing.B) (broker.Store, func()) {
			st, err := sqlite.Open(b.Context(), filepath.Join(b.TempDir(), "berth.db"))
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { st.Close() })
			return st, func() {}
		}},
	}
	if os.Getenv("BERTH_TEST_PG_DSN") != "" {
		stores = append(stores, store{"postgres", func(b *testing.B) (broker.Store, func()) {
			dsn := pgtest.DSN(b)
			st, err := postgres.Open(b.Context(), dsn, nil)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { st.Close() })
			// Every tick rewrites 1% of the rows (the index of due_at
			// rules out HOT updates): VACUUM between ticks, as autovacuum
			// does on a server that has it on (the tests' server may not).
			admin := pgtest.Admin(b, dsn)
			return st, func() {
				if _, err := admin.Exec(b.Context(), `VACUUM sessions`); err != nil {
					b.Fatal(err)
				}
			}
		}})
	}
	for _, sc := range stores {
		b.Run(sc.name, func(b *testing.B) {
			st, between := sc.open(b)
			benchPolicyTick(b, st, between)
		})
	}
}

func benchPolicyTick(b *testing.B, st broker.Store, between func()) {
	ctx := b.Context()
	agents := &policyAgents{}
	svc, err := broker.New(ctx, st, agents, nil, broker.Config{BrokerID: "b1", Limits: benchLimits, WarningPoints: benchPoints,
		HeartbeatTimeout: 24 * time.Hour}, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	svc.Now = func() time.Time { return benchNow }
	info := broker.ServerInfo{Hostname: "s1", Healthy: true, Host: broker.Host{OSFamily: "linux"}}
	if err := svc.AgentConnected(ctx, "", "s1", info, nil); err != nil {
		b.Fatal(err)
	}
	var due []string
	batch := make([]*broker.Session, 0, 5000)
	for i := range benchSessions {
		x := benchSession(i)
		if i%100 == 0 {
			due = append(due, x.ID)
		}
		batch = append(batch, x)
		if len(batch) == cap(batch) || i == benchSessions-1 {
			if err := st.InsertSessions(ctx, batch); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	first := benchSession(0).DueAt
	reset := func() {
		// As cheaply as the tick writes (the stores' DueWriter), so that
		// the reset's writes weigh little on the next tick's.
		read, err := st.ListSessions(ctx, broker.SessionFilter{IDs: due})
		if err != nil {
			b.Fatal(err)
		}
		ws := make([]broker.DueWrite, len(read))
		for i, x := range read {
			ws[i] = broker.DueWrite{Read: x, DueAt: first}
		}
		done, err := st.(broker.DueWriter).UpdateSessionsDue(ctx, ws)
		if err != nil || !slices.Equal(done, slices.Repeat([]bool{true}, len(ws))) {
			b.Fatalf("reset: %v", err)
		}
		agents.take()
	}
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		reset()
		between()
		b.StartTimer()
		n, err := svc.PolicyTick(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if n != benchDue {
			b.Fatalf("tick read %d due sessions, want %d", n, benchDue)
		}
	}
	b.StopTimer()
	if sent := len(agents.take()); sent != benchDue {
		b.Fatalf("the last tick sent %d warnings, want %d", sent, benchDue)
	}
	b.ReportMetric(float64(benchDue), "due/tick")
}

// BenchmarkPolicyEvaluate is the CPU of the leader-start sweep: resolving
// the limits and evaluating the policies of 100,000 sessions (one op is
// all of them).
func BenchmarkPolicyEvaluate(b *testing.B) {
	sessions := make([]*broker.Session, benchSessions)
	for i := range sessions {
		sessions[i] = benchSession(i)
	}
	groups := []broker.SessionLimits{{MaxExtensionHours: 4}}
	b.ResetTimer()
	for range b.N {
		due := 0
		for _, x := range sessions {
			lim := broker.ResolveLimits(x.Spec.TemplateLimits, groups, benchLimits)
			if d := broker.EvaluatePolicies(x, lim, benchPoints, benchNow); d.Action != broker.PolicyNone {
				due++
			}
		}
		if due != benchDue {
			b.Fatalf("%d sessions due, want %d", due, benchDue)
		}
	}
}
