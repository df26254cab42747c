package broker_test

import (
	"fmt"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/postgres"
	"github.com/berth-dev/berth/internal/postgres/pgtest"
	"github.com/berth-dev/berth/internal/sqlite"
)

// benchStores are the real stores of the events benchmarks; PostgreSQL
// runs when BERTH_TEST_PG_DSN is set.
var benchStores = []struct {
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

// BenchmarkEventOverhead measures what the events cost placement: two
// brokers, one with events off (Config.DisableEvents) and one with them on,
// each on its own store with 10 servers, place batches of 100 sessions in
// turn, in one run; ratio is the sessions/s with events on over those with
// events off (1: free; the target is at least 0.9), from the median time of
// a batch on each side, so that a checkpoint or a vacuum landing on one
// side's batch does not decide it; ratio_mean is the same from the totals. With events on every
// placed session carries its session.state event, inserted in the
// placement's transaction, and the background creates write theirs.
func BenchmarkEventOverhead(b *testing.B) {
	const batch, owners = 100, 1000
	for _, sc := range benchStores {
		b.Run(sc.name, func(b *testing.B) {
			var svcs [2]*broker.Service // off, on
			for i, off := range []bool{true, false} {
				svcs[i] = startQuotaBroker(b, sc.open(b), broker.Config{BrokerID: "bench", DisableEvents: off}, "s0", 0)
				for k := 1; k < 10; k++ {
					if err := svcs[i].AgentConnected(b.Context(), "", fmt.Sprint("s", k), serverInfo(fmt.Sprint("s", k), 0), nil); err != nil {
						b.Fatal(err)
					}
				}
			}
			reqs := make([]broker.CreateRequest, batch)
			var spent [2]time.Duration
			var batches [2][]time.Duration
			var placed [2]int
			n := 0
			place := func(i int) {
				for k := range reqs {
					reqs[k] = broker.CreateRequest{Name: "d", Owner: fmt.Sprint("user", n%owners), Type: broker.TypeVirtual}
					n++
				}
				start := time.Now()
				res, err := svcs[i].CreateSessions(b.Context(), reqs)
				d := time.Since(start)
				spent[i] += d
				batches[i] = append(batches[i], d)
				if err != nil {
					b.Fatal(err)
				}
				for _, r := range res {
					if r.FailureReason != "" {
						b.Fatal(r.FailureReason)
					}
				}
				placed[i] += len(res)
			}
			turn := 0
			for b.Loop() {
				// Alternate which goes first, so that neither always
				// runs right after the other's background work.
				place(turn % 2)
				place(1 - turn%2)
				turn++
			}
			off := float64(placed[0]) / spent[0].Seconds()
			on := float64(placed[1]) / spent[1].Seconds()
			b.ReportMetric(off, "off_sessions/s")
			b.ReportMetric(on, "on_sessions/s")
			b.ReportMetric(on/off, "ratio_mean")
			median := func(ds []time.Duration) float64 {
				ds = slices.Clone(ds)
				slices.Sort(ds)
				return float64(ds[len(ds)/2])
			}
			b.ReportMetric(median(batches[0])/median(batches[1]), "ratio")
		})
	}
}

// BenchmarkEventFanOut measures the stream's fan-out: 100 subscribers of
// one broker (the SSE handler's broker.Subscription each) receive every
// event; each iteration emits a batch of 10 events and waits until every
// subscriber has the batch. Reported: events delivered per second (all
// subscribers together) and the latency from Emit to the last event of the
// batch reaching a subscriber, p50 and p99.
func BenchmarkEventFanOut(b *testing.B) {
	const subs, batch = 100, 10
	for _, sc := range benchStores {
		b.Run(sc.name, func(b *testing.B) {
			svc := startQuotaBroker(b, sc.open(b), broker.Config{BrokerID: "bench"}, "s0", 0)
			var start atomic.Int64
			done := make(chan time.Duration, subs)
			for range subs {
				sub, err := svc.Subscribe(b.Context(), broker.EventFilter{Types: []string{broker.EventServerIdle}})
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(sub.Close)
				go func() {
					n := 0
					for range sub.C {
						if n++; n%batch == 0 {
							done <- time.Duration(time.Now().UnixNano() - start.Load())
						}
					}
				}()
			}
			for svc.Subscribers() < subs {
				time.Sleep(time.Millisecond)
			}
			evs := make([]broker.Event, batch)
			var lat []time.Duration
			i := 0
			for b.Loop() {
				for k := range evs {
					evs[k] = broker.Event{Type: broker.EventServerIdle, ServerID: fmt.Sprint("x", i, "-", k)}
				}
				i++
				start.Store(time.Now().UnixNano())
				svc.Emit(b.Context(), evs...)
				for range subs {
					lat = append(lat, <-done)
				}
			}
			slices.Sort(lat)
			b.ReportMetric(float64(i*batch*subs)/b.Elapsed().Seconds(), "events/s")
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50_µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99_µs")
		})
	}
}
