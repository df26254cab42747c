package postgres_test

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/broker/storetest"
	"github.com/berth-dev/berth/internal/postgres"
	"github.com/berth-dev/berth/internal/postgres/pgtest"
)

// benchServers stores n servers s-00000... with the given limits, upserting
// them from a few goroutines.
func benchServers(b *testing.B, s *postgres.Store, n, maxVirtual, maxPerUser int) {
	b.Helper()
	const workers = 8
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				srv := storetest.NewServer(fmt.Sprintf("s-%05d", i), maxVirtual, maxPerUser,
					map[string]string{"zone": fmt.Sprint(i % 10), "pool": "default"})
				if err := s.UpsertServer(b.Context(), srv); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
}

// BenchmarkCommitPlacements commits batches of 1,000 new sessions spread over
// 10,000 servers, as the broker's placement loop does. It reports placements/s.
func BenchmarkCommitPlacements(b *testing.B) {
	const servers, batch = 10_000, 1_000
	s := MustOpenFresh(b)
	benchServers(b, s, servers, 100, 20)
	var n, full int
	for b.Loop() {
		ps := make([]broker.Placement, batch)
		for i := range ps {
			id := fmt.Sprintf("sess-%08d", n)
			srv := fmt.Sprintf("s-%05d", (n*7919)%servers)
			ps[i] = broker.Placement{
				Session: storetest.NewSession(id, fmt.Sprintf("user-%04d", n%5000), broker.TypeVirtual, srv, broker.StateCreating),
				Insert:  true,
			}
			n++
		}
		errs, err := s.CommitPlacements(b.Context(), ps)
		if err != nil {
			b.Fatal(err)
		}
		for _, err := range errs {
			if err != nil {
				full++
			}
		}
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "placements/s")
	if full > 0 {
		b.Logf("%d of %d placements rejected", full, n)
	}
}

// BenchmarkCommitPlacements_TwoBrokers commits batches of 1,000 through two
// stores (two brokers) at once, on the same 10,000 servers.
func BenchmarkCommitPlacements_TwoBrokers(b *testing.B) {
	const servers, batch = 10_000, 1_000
	dsn := pgtest.DSN(b)
	stores := []*postgres.Store{MustOpen(b, dsn), MustOpen(b, dsn)}
	benchServers(b, stores[0], servers, 100, 20)
	var n int
	for b.Loop() {
		var wg sync.WaitGroup
		for k, s := range stores {
			base := n + k*batch
			wg.Go(func() {
				ps := make([]broker.Placement, batch)
				for i := range ps {
					m := base + i
					ps[i] = broker.Placement{
						Session: storetest.NewSession(fmt.Sprintf("sess-%08d", m), fmt.Sprintf("user-%04d", m%5000),
							broker.TypeVirtual, fmt.Sprintf("s-%05d", (m*7919)%servers), broker.StateCreating),
						Insert: true,
					}
				}
				if _, err := s.CommitPlacements(b.Context(), ps); err != nil {
					b.Error(err)
				}
			})
		}
		wg.Wait()
		n += len(stores) * batch
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "placements/s")
}

// benchSessions stores total sessions of owners owners, spread over servers
// servers.
func benchSessions(b *testing.B, s *postgres.Store, total, owners, servers int) {
	b.Helper()
	for start := 0; start < total; start += 1000 {
		ss := make([]*broker.Session, 1000)
		for i := range ss {
			n := start + i
			ss[i] = storetest.NewSession(fmt.Sprintf("sess-%08d", n), fmt.Sprintf("user-%03d", n%owners),
				broker.TypeVirtual, fmt.Sprintf("s-%05d", n%servers), broker.StateReady)
		}
		storetest.MustInsertSessions(b, s, ss...)
	}
	if _, err := s.Pool().Exec(b.Context(), `ANALYZE`); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkListSessionsOwnerPage reads one DescribeSessions page (Owner,
// AfterSeq, Limit 101) out of 100,000 sessions of 100 owners, and reports the
// 99th percentile of the page latency.
func BenchmarkListSessionsOwnerPage(b *testing.B) {
	const total, owners, servers = 100_000, 100, 1_000
	s := MustOpenFresh(b)
	benchServers(b, s, servers, 0, 0)
	benchSessions(b, s, total, owners, servers)
	all := storetest.MustListSessions(b, s, broker.SessionFilter{Limit: 1})
	first := all[0].Seq
	var lat []time.Duration
	i := 0
	for b.Loop() {
		f := broker.SessionFilter{
			Owner:    fmt.Sprintf("user-%03d", i%owners),
			AfterSeq: first + int64((i*7919)%(total/2)),
			Limit:    101,
		}
		t0 := time.Now()
		ss, err := s.ListSessions(b.Context(), f)
		lat = append(lat, time.Since(t0))
		if err != nil {
			b.Fatal(err)
		}
		if len(ss) != 101 {
			b.Fatalf("page of %d sessions, want 101", len(ss))
		}
		i++
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
}

// BenchmarkCountSessions counts 100,000 sessions on 10,000 servers, as the
// broker's server cache does.
func BenchmarkCountSessions(b *testing.B) {
	const total, owners, servers = 100_000, 5_000, 10_000
	s := MustOpenFresh(b)
	benchSessions(b, s, total, owners, servers)
	for b.Loop() {
		m, err := s.CountSessions(b.Context())
		if err != nil {
			b.Fatal(err)
		}
		if len(m) != servers {
			b.Fatalf("counts of %d servers, want %d", len(m), servers)
		}
	}
}

// BenchmarkUpdateSession changes one session's state, as agent reports do.
func BenchmarkUpdateSession(b *testing.B) {
	const total, owners, servers = 10_000, 100, 1_000
	s := MustOpenFresh(b)
	benchSessions(b, s, total, owners, servers)
	i := 0
	for b.Loop() {
		err := s.UpdateSession(b.Context(), fmt.Sprintf("sess-%08d", (i*7919)%total), func(ss *broker.Session) error {
			ss.NumOfConnections++
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkUpsertServer is an agent report that changes load but not tags.
func BenchmarkUpsertServer(b *testing.B) {
	s := MustOpenFresh(b)
	benchServers(b, s, 1000, 0, 0)
	i := 0
	for b.Loop() {
		srv := storetest.NewServer(fmt.Sprintf("s-%05d", i%1000), 0, 0,
			map[string]string{"zone": fmt.Sprint(i % 1000 % 10), "pool": "default"})
		srv.Info.Host.Load1 = float64(i)
		storetest.MustUpsertServers(b, s, srv)
		i++
	}
}

// BenchmarkServerStamps reads the stamps of 10,000 servers, as every broker
// of a cluster does each sync interval.
func BenchmarkServerStamps(b *testing.B) {
	s := MustOpenFresh(b)
	benchServers(b, s, 10_000, 0, 0)
	for b.Loop() {
		st, err := s.ServerStamps(b.Context())
		if err != nil {
			b.Fatal(err)
		}
		if len(st) != 10_000 {
			b.Fatalf("%d stamps", len(st))
		}
	}
}
