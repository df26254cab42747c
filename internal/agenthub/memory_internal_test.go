package agenthub

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/poll"
)

// idleService satisfies Service for hubs whose links never reach it.
type idleService struct{ Service }

func TestGCPercent(t *testing.T) {
	const mb = 1 << 20
	tests := []struct {
		headroom int64
		live     uint64
		want     int
	}{
		{0, 500 * mb, 100},        // no policy: Go's default
		{64 * mb, 0, 100},         // nothing measured yet
		{64 * mb, 32 * mb, 100},   // small heap: never above the default
		{64 * mb, 64 * mb, 100},   // headroom equal to the heap
		{64 * mb, 128 * mb, 50},   // half the heap
		{64 * mb, 200 * mb, 32},   // rounded down
		{64 * mb, 256 * mb, 25},   // a quarter of the heap
		{64 * mb, 640 * mb, 10},   // at the floor
		{64 * mb, 4096 * mb, 10},  // never below the floor
		{-1, 256 * mb, 100},       // negative: no policy
		{1 << 40, 4096 * mb, 100}, // huge headroom
	}
	for _, tt := range tests {
		if got := gcPercent(tt.headroom, tt.live); got != tt.want {
			t.Errorf("gcPercent(%d, %d) = %d, want %d", tt.headroom, tt.live, got, tt.want)
		}
	}
}

// gcRecorder stands in for debug.SetGCPercent.
type gcRecorder struct {
	mu    sync.Mutex
	cur   int
	calls []int
	live  uint64
}

func (r *gcRecorder) set(p int) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	prev := r.cur
	r.cur = p
	r.calls = append(r.calls, p)
	return prev
}

func (r *gcRecorder) liveBytes() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.live
}

func (r *gcRecorder) state() (int, []int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cur, append([]int(nil), r.calls...)
}

func newGCHub(t *testing.T, headroom int64, r *gcRecorder) *Hub {
	t.Helper()
	h := New(idleService{}, nil, Options{GCHeadroom: headroom})
	h.gc.setPercent, h.gc.live = r.set, r.liveBytes
	t.Cleanup(func() { _ = h.Close() })
	return h
}

// TestGCPolicy_Applied: with GCHeadroom the hub sets GOGC from the live
// heap (periodically once links exist, and after a storm), only when it
// changes, and restores the original percentage on Close; without it, or
// with GOGC or GOMEMLIMIT in the environment, it never touches the GC.
func TestGCPolicy_Applied(t *testing.T) {
	t.Setenv("GOGC", "")
	t.Setenv("GOMEMLIMIT", "")
	const mb = 1 << 20
	r := &gcRecorder{cur: 100, live: 256 * mb}
	h := newGCHub(t, 64*mb, r)
	h.gc.every = 10 * time.Millisecond
	h.churned() // the first link arms the periodic tuning
	poll.Until(t, 5*time.Second, "GOGC lowered for a 256 MB heap", func() bool { cur, _ := r.state(); return cur == 25 })
	r.mu.Lock()
	r.live = 128 * mb
	r.mu.Unlock()
	poll.Until(t, 5*time.Second, "GOGC raised for a 128 MB heap", func() bool { cur, _ := r.state(); return cur == 50 })
	if _, calls := r.state(); len(calls) != 2 {
		t.Errorf("SetGCPercent calls %v, want [25 50]: one per change", calls)
	}
	// A storm's memory return tunes at once.
	h.SetMemoryReturn(1, time.Millisecond, func() {})
	h.memMu.Lock()
	h.gc.every = time.Hour // only the storm tunes now
	h.gc.timer.Stop()
	h.memMu.Unlock()
	r.mu.Lock()
	r.live = 64 * mb
	r.mu.Unlock()
	h.churned()
	poll.Until(t, 5*time.Second, "GOGC back to 100 after a storm", func() bool { cur, _ := r.state(); return cur == 100 })
	r.mu.Lock()
	r.live = 512 * mb
	r.mu.Unlock()
	h.tuneGC()
	if cur, _ := r.state(); cur != 12 {
		t.Fatalf("GOGC %d, want 12", cur)
	}
	_ = h.Close()
	if cur, _ := r.state(); cur != 100 {
		t.Errorf("GOGC after Close = %d, want the original 100", cur)
	}

	for _, tt := range []struct {
		name, gogc, limit string
		headroom          int64
	}{
		{"no headroom", "", "", 0},
		{"GOGC set", "80", "", 64 * mb},
		{"GOMEMLIMIT set", "", "1GiB", 64 * mb},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("GOGC", tt.gogc)
			t.Setenv("GOMEMLIMIT", tt.limit)
			r := &gcRecorder{cur: 100, live: 512 * mb}
			h := newGCHub(t, tt.headroom, r)
			h.tuneGC()
			_ = h.Close()
			if _, calls := r.state(); len(calls) != 0 {
				t.Errorf("SetGCPercent calls %v, want none", calls)
			}
		})
	}
}

// TestGCPolicy_Burst: commands sent, or links coming and going, in a burst
// lift a tuned GOGC to Go's default and hold off the tuning; once they have
// been quiet, the hub returns free memory and tunes GOGC for the live heap
// again. Events at a slow rate change nothing.
func TestGCPolicy_Burst(t *testing.T) {
	t.Setenv("GOGC", "")
	t.Setenv("GOMEMLIMIT", "")
	const mb = 1 << 20
	for _, tt := range []struct {
		name  string
		event func(h *Hub)
		mark  func(h *Hub) *atomic.Int64
	}{
		{"commands", (*Hub).commandSent, func(h *Hub) *atomic.Int64 { return &h.burstMark }},
		{"link changes", (*Hub).churned, func(h *Hub) *atomic.Int64 { return &h.linkMark }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := &gcRecorder{cur: 100, live: 256 * mb}
			h := newGCHub(t, 64*mb, r)
			var freed atomic.Bool
			h.SetMemoryReturn(1<<30, time.Hour, func() { freed.Store(true) })
			h.memMu.Lock()
			h.burstQuiet = 50 * time.Millisecond
			h.gc.every = time.Hour // the first link arms it: only the test tunes
			h.memMu.Unlock()
			h.tuneGC()
			if cur, _ := r.state(); cur != 25 {
				t.Fatalf("GOGC %d after tuning for 256 MB, want 25", cur)
			}

			// Slow events: a mark older than burstSpan before each batch.
			for range 3 {
				tt.mark(h).Store(time.Now().Add(-2 * burstSpan).UnixNano())
				for range burstEvents {
					tt.event(h)
				}
			}
			if cur, _ := r.state(); cur != 25 {
				t.Fatalf("GOGC %d after events at a slow rate, want 25", cur)
			}

			for range 2 * burstEvents {
				tt.event(h)
			}
			if cur, _ := r.state(); cur != 100 {
				t.Fatalf("GOGC %d in a burst, want 100", cur)
			}
			h.tuneGC() // the periodic tuning waits for the burst's end
			if cur, _ := r.state(); cur != 100 {
				t.Fatalf("GOGC %d after a tuning in the burst, want 100", cur)
			}
			poll.Until(t, 5*time.Second, "free memory returned after the burst", freed.Load)
			poll.Until(t, 5*time.Second, "GOGC tuned again after the burst", func() bool { cur, _ := r.state(); return cur == 25 })
			if _, calls := r.state(); len(calls) != 3 {
				t.Errorf("SetGCPercent calls %v, want [25 100 25]", calls)
			}
		})
	}
}
