package sqlite_test

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/broker/storetest"
	"github.com/berth-dev/berth/internal/sqlite"
)

// benchServers stores n servers s-00000... with the given limits.
func benchServers(b *testing.B, s *sqlite.Store, n, maxVirtual, maxPerUser int) {
	b.Helper()
	for i := range n {
		srv := storetest.NewServer(fmt.Sprintf("s-%05d", i), maxVirtual, maxPerUser,
			map[string]string{"zone": fmt.Sprint(i % 10), "pool": "default"})
		storetest.MustUpsertServers(b, s, srv)
	}
}

// BenchmarkCommitPlacements commits batches of 1,000 new sessions spread over
// 10,000 servers, as the broker's placement loop does. It reports placements/s.
func BenchmarkCommitPlacements(b *testing.B) {
	for _, mode := range benchModes {
		b.Run(mode.name, func(b *testing.B) { benchCommitPlacements(b, mode.opts) })
	}
}

// BenchmarkCommitPlacements_Dense commits batches of 1,000 new sessions onto
// 10 servers without limits, as a create storm on a few large hosts does:
// each batch places 100 sessions on each server.
func BenchmarkCommitPlacements_Dense(b *testing.B) {
	b.Run("mirror", func(b *testing.B) { benchCommitPlacementsOn(b, sqlite.Options{}, 10, 0, 0) })
}

func benchCommitPlacements(b *testing.B, opts sqlite.Options) {
	benchCommitPlacementsOn(b, opts, 10_000, 100, 20)
}

func benchCommitPlacementsOn(b *testing.B, opts sqlite.Options, servers, maxVirtual, maxPerUser int) {
	const batch = 1_000
	s := MustOpenWith(b, tempPath(b), opts)
	benchServers(b, s, servers, maxVirtual, maxPerUser)
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

// benchModes are the two ways to open a store: with the session mirror
// (Open) and without (SQL reads).
var benchModes = []struct {
	name string
	opts sqlite.Options
}{
	{"mirror", sqlite.Options{}},
	{"sql", sqlite.Options{NoSessionCache: true}},
}

// benchSessions stores total sessions of owners owners, spread over servers
// servers.
func benchSessions(b *testing.B, s *sqlite.Store, total, owners, servers int) {
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
}

// BenchmarkListSessionsOwnerPage reads one DescribeSessions page (Owner, AfterSeq,
// Limit 101) out of 100,000 sessions of 100 owners.
func BenchmarkListSessionsOwnerPage(b *testing.B) {
	const total, owners, servers = 100_000, 100, 1_000
	for _, mode := range benchModes {
		b.Run(mode.name, func(b *testing.B) {
			s := MustOpenWith(b, tempPath(b), mode.opts)
			benchServers(b, s, servers, 0, 0)
			benchSessions(b, s, total, owners, servers)
			i := 0
			for b.Loop() {
				f := broker.SessionFilter{
					Owner:    fmt.Sprintf("user-%03d", i%owners),
					AfterSeq: int64((i * 7919) % (total / 2)),
					Limit:    101,
				}
				ss, err := s.ListSessions(b.Context(), f)
				if err != nil {
					b.Fatal(err)
				}
				if len(ss) != 101 {
					b.Fatalf("page of %d sessions, want 101", len(ss))
				}
				i++
			}
		})
	}
}

// BenchmarkCountSessions counts 100,000 sessions on 10,000 servers, as the
// broker's server cache does.
func BenchmarkCountSessions(b *testing.B) {
	const total, owners, servers = 100_000, 5_000, 10_000
	for _, mode := range benchModes {
		b.Run(mode.name, func(b *testing.B) {
			s := MustOpenWith(b, tempPath(b), mode.opts)
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
		})
	}
}

// BenchmarkUpdateSession changes one session's state, as agent reports do.
func BenchmarkUpdateSession(b *testing.B) {
	const total, owners, servers = 10_000, 100, 1_000
	for _, mode := range benchModes {
		b.Run(mode.name, func(b *testing.B) {
			s := MustOpenWith(b, tempPath(b), mode.opts)
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
		})
	}
}

// BenchmarkUpdateSessions writes batches of 1,000 sessions READY in one
// transaction each, as the broker's session batcher does when agents report
// a create storm's sessions: per session, a read, fn and a write. It
// reports sessions/s.
func BenchmarkUpdateSessions(b *testing.B) {
	const total, owners, servers, batch = 100_000, 1_000, 10_000, 1_000
	for _, mode := range benchModes {
		b.Run(mode.name, func(b *testing.B) {
			s := MustOpenWith(b, tempPath(b), mode.opts)
			benchSessions(b, s, total, owners, servers)
			ids := make([]string, batch)
			n := 0
			for b.Loop() {
				for i := range ids {
					ids[i] = fmt.Sprintf("sess-%08d", (n*7919)%total)
					n++
				}
				errs, err := s.UpdateSessions(b.Context(), ids, func(ss *broker.Session) error {
					ss.State, ss.Substate = broker.StateReady, ""
					ss.NumOfConnections++
					return nil
				})
				if err != nil {
					b.Fatal(err)
				}
				for _, err := range errs {
					if err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "sessions/s")
		})
	}
}

// BenchmarkOpen opens a file of 100,000 sessions: the mirror loads them.
func BenchmarkOpen(b *testing.B) {
	path := tempPath(b)
	s := MustOpen(b, path)
	benchSessions(b, s, 100_000, 100, 1_000)
	s.Close()
	for _, mode := range benchModes {
		b.Run(mode.name, func(b *testing.B) {
			for b.Loop() {
				s, err := sqlite.OpenWith(b.Context(), path, mode.opts)
				if err != nil {
					b.Fatal(err)
				}
				s.Close()
			}
		})
	}
}

// BenchmarkUpsertServer is an agent report that changes load but not tags.
func BenchmarkUpsertServer(b *testing.B) {
	s := MustOpen(b, tempPath(b))
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

// BenchmarkMirrorMemory reports the Go heap that the mirror of 100,000
// sessions (those of the broker benchmarks in internal/bench) takes, built by
// inserts and loaded at Open.
func BenchmarkMirrorMemory(b *testing.B) {
	const total = 100_000
	heap := func() int64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return int64(ms.HeapAlloc)
	}
	var inserted, loaded int64
	for b.Loop() {
		path := tempPath(b)
		before := heap()
		s := MustOpen(b, path)
		now := time.Now().UTC().Truncate(time.Millisecond)
		for start := 0; start < total; start += 1000 {
			var ss []*broker.Session
			for i := start; i < start+1000; i++ {
				ss = append(ss, &broker.Session{ID: fmt.Sprintf("sess-%07d", i), Name: "desktop",
					Owner: fmt.Sprintf("owner%03d", i%100), Type: "VIRTUAL", ServerID: fmt.Sprintf("srv-%05d", i%10000),
					State: broker.StateReady, CreationTime: now, UpdatedAt: now, MaxConcurrentClients: 2,
					NumOfConnections: int64(i % 3), StorageRoot: "/home/x"})
			}
			storetest.MustInsertSessions(b, s, ss...)
		}
		inserted = heap() - before
		s.Close()
		before = heap()
		s = MustOpen(b, path)
		loaded = heap() - before
		s.Close()
	}
	b.ReportMetric(float64(inserted)/total, "inserted-B/session")
	b.ReportMetric(float64(loaded)/total, "loaded-B/session")
}
