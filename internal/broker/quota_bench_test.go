package broker_test

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/groups"
	"github.com/berth-dev/berth/internal/postgres"
	"github.com/berth-dev/berth/internal/postgres/pgtest"
	"github.com/berth-dev/berth/internal/sqlite"
)

// BenchmarkPlacementQuotas measures CreateSessions' placement throughput
// (batches of 100 sessions of 1000 owners, on 10 servers) with no quota
// (off), with a per-user sessions and GPUs quota and a sessions quota on
// each of 10 groups that hold every owner between them (on: every placement
// counts all sessions of its owner's group), and with the per-user quotas
// only (on_user); caps are high enough to refuse nothing. Real stores;
// compare the sessions/s of the modes, run in one invocation. PostgreSQL
// runs when BERTH_TEST_PG_DSN is set.
func BenchmarkPlacementQuotas(b *testing.B) {
	stores := []struct {
		name string
		open func(b *testing.B) broker.Store
	}{
		{"sqlite", func(b *testing.B) broker.Store {
			st, err := sqlite.Open(b.Context(), filepath.Join(b.TempDir(), "berth.db"))
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { st.Close() })
			return st
		}},
		{"postgres", func(b *testing.B) broker.Store {
			st, err := postgres.Open(b.Context(), pgtest.DSN(b), nil)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { st.Close() })
			return st
		}},
	}
	const owners, batch = 1000, 100
	src := groups.NewLearned()
	for u := range owners {
		src.Learn(fmt.Sprint("user", u), []string{fmt.Sprint("group", u%10)})
	}
	on := broker.Config{Limits: broker.SessionLimits{MaxSessions: 1_000_000, MaxGPUs: 1_000_000}, Groups: src,
		GroupLimits: map[string]broker.SessionLimits{}}
	for g := range 10 {
		on.GroupLimits[fmt.Sprint("group", g)] = broker.SessionLimits{MaxSessions: 1_000_000}
	}
	for _, sc := range stores {
		b.Run(sc.name, func(b *testing.B) {
			for _, mode := range []struct {
				name string
				cfg  broker.Config
			}{{"off", broker.Config{}}, {"on", on}, {"on_user", broker.Config{Limits: on.Limits}}} {
				b.Run(mode.name, func(b *testing.B) {
					st := sc.open(b)
					cfg := mode.cfg
					cfg.BrokerID = "bench"
					svc := startQuotaBroker(b, st, cfg, "s0", 0)
					for i := 1; i < 10; i++ {
						if err := svc.AgentConnected(b.Context(), "", fmt.Sprint("s", i), serverInfo(fmt.Sprint("s", i), 0), nil); err != nil {
							b.Fatal(err)
						}
					}
					reqs := make([]broker.CreateRequest, batch)
					n := 0
					b.ResetTimer()
					for b.Loop() {
						for k := range reqs {
							reqs[k] = broker.CreateRequest{Name: "d", Owner: fmt.Sprint("user", n%owners), Type: broker.TypeVirtual, DcvGlEnabled: n%4 == 0}
							n++
						}
						res, err := svc.CreateSessions(b.Context(), reqs)
						if err != nil {
							b.Fatal(err)
						}
						for _, r := range res {
							if r.FailureReason != "" {
								b.Fatal(r.FailureReason)
							}
						}
					}
					b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "sessions/s")
				})
			}
		})
	}
}
