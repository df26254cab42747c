package agenthub

import (
	"os"
	"runtime/debug"
	"runtime/metrics"
	"sync/atomic"
	"time"
)

// Returned-memory policy. A storm of connects or disconnects (a broker
// restart, a fleet going away) leaves the heap with much free memory that
// the runtime's scavenger hands back to the OS only slowly; once link churn
// has been quiet for stormQuiet after at least stormLinks link changes, the
// hub returns it at once (one forced GC: tens of milliseconds at 10,000
// links). BenchmarkLinkMemory's rss_free_B/link shows the effect.
const (
	stormLinks = 256
	stormQuiet = 10 * time.Second
)

// churned counts one link up or down: it arms the memory return after a
// storm, and lifts GOGC while links change in a burst.
func (h *Hub) churned() {
	h.noteChurn()
	h.countBurst(&h.linkEvents, &h.linkMark)
}

// noteChurn arms the memory return after a storm of link changes.
func (h *Hub) noteChurn() {
	h.memMu.Lock()
	defer h.memMu.Unlock()
	h.churn++
	h.armGCLocked()
	if h.churn < h.storm {
		return
	}
	if h.memTimer == nil {
		h.memTimer = time.AfterFunc(h.quiet, h.returnMemory)
		return
	}
	h.memTimer.Reset(h.quiet)
}

// returnMemory runs once churn has been quiet: it returns free memory to
// the OS.
func (h *Hub) returnMemory() {
	h.memMu.Lock()
	n, free := h.churn, h.freeOSMemory
	h.churn = 0
	h.memMu.Unlock()
	start := time.Now()
	free()
	h.log.Debug("returned free memory to the OS after a link storm", "links_changed", n, "took", time.Since(start))
	h.tuneGC() // the fleet's size moved
}

// stopMemory stops a pending memory return and the GC policy, restoring
// the GC percentage the hub found (Close).
func (h *Hub) stopMemory() {
	h.memMu.Lock()
	defer h.memMu.Unlock()
	if h.memTimer != nil {
		h.memTimer.Stop()
	}
	g := &h.gc
	g.stopped = true
	if g.timer != nil {
		g.timer.Stop()
	}
	if g.burstTimer != nil {
		g.burstTimer.Stop()
	}
	if g.percent != 0 {
		set := g.setPercent
		if set == nil {
			set = debug.SetGCPercent
		}
		set(g.orig)
		g.percent = 0
	}
}

// GC policy. Go's default (GOGC=100) lets the heap grow to twice what is
// live before collecting: at 10,000 links that is 100+ MB of garbage held
// as resident memory between collections. With Options.GCHeadroom set, the
// hub lowers GOGC so that a collection starts after about GCHeadroom bytes
// of new allocation, never collecting more often than at minGCPercent nor
// less often than Go's default. It re-derives the percentage from the live
// heap every gcTuneEvery once a link has come, and after every storm, so a
// small broker keeps the default. A GOGC or GOMEMLIMIT set in the environment wins:
// the hub leaves the GC alone.
//
// An idle fleet allocates little (about 0.5 MB/s at 10,000 agents and 200
// updates a second), so even 16 MiB of headroom means a collection every
// half minute or so: at 10,000 agents the fleet benchmark measured 229–242
// MB idle at 0.9–1.3 % of a core with 16 MiB and a floor of 10 %, against
// 237–253 MB at 0.7–1.1 % with 32 MiB and a floor of 25 % (which had saved
// 15–27 MB against 64 MiB).
const (
	// DefaultGCHeadroom is berth-broker's Options.GCHeadroom.
	DefaultGCHeadroom = 16 << 20
	minGCPercent      = 10
	gcTuneEvery       = time.Minute
)

// Bursts. A create storm sends thousands of commands a second and
// allocates hundreds of megabytes a second; under a GOGC tuned for a large
// idle fleet (25–40 at 10,000 links) the GC then runs several times a second
// over the whole live heap, which cost a 10,000-session storm at 10,000
// agents a quarter of the broker's CPU (fleet benchmark: 204 µs a session
// against 156 µs at GOGC 400). A connect storm into a running broker (a
// fleet relinking after a network outage, or moving from a broker that
// died) is worse: each TLS handshake and hello leaves about 100 KB of
// garbage, and at GOGC 25 connecting 10,000 agents took 109.6 s against
// 16.7 s. While commands, or link changes, come at burstEvents within
// burstSpan or faster, the hub lifts GOGC to Go's default; once both have
// been quiet for burstQuiet it tunes GOGC again and returns the free memory
// to the OS, as after a link storm.
const (
	burstEvents = 256
	burstSpan   = 500 * time.Millisecond
	burstQuiet  = 5 * time.Second
)

// commandSent counts a command sent to an agent and notices a burst.
func (h *Hub) commandSent() { h.countBurst(&h.sent, &h.burstMark) }

// countBurst counts one event in n and starts (or extends) a burst when
// the last burstEvents of them came within burstSpan; mark holds when the
// previous burstEvents began.
func (h *Hub) countBurst(n, mark *atomic.Int64) {
	if h.opts.GCHeadroom <= 0 {
		return
	}
	if n.Add(1)%burstEvents != 0 {
		return
	}
	now := time.Now().UnixNano()
	if prev := mark.Swap(now); now-prev <= int64(burstSpan) {
		h.burst()
	}
}

// burst lifts GOGC to Go's default while commands come fast, and arms the
// tuning and memory return for when they stop.
func (h *Hub) burst() {
	h.memMu.Lock()
	defer h.memMu.Unlock()
	g := &h.gc
	if g.stopped || gcFromEnv() {
		return
	}
	if g.burstTimer == nil {
		g.burstTimer = time.AfterFunc(h.burstQuiet, h.burstEnded)
	} else {
		g.burstTimer.Reset(h.burstQuiet)
	}
	if g.burst {
		return
	}
	g.burst = true
	if g.percent != 0 && g.percent < 100 {
		set := g.setPercent
		if set == nil {
			set = debug.SetGCPercent
		}
		set(100)
		g.percent = 100
		h.log.Debug("GC percentage lifted for a burst of commands or link changes", "gogc", 100)
	}
}

// burstEnded runs once commands have been quiet for burstQuiet: it tunes
// GOGC for the live heap again and returns free memory to the OS.
func (h *Hub) burstEnded() {
	h.memMu.Lock()
	h.gc.burst = false
	free, stopped := h.freeOSMemory, h.gc.stopped
	h.memMu.Unlock()
	if stopped {
		return
	}
	free()
	h.tuneGC()
}

// gcPolicy is the hub's state of the GC policy.
type gcPolicy struct {
	timer   *time.Timer // next tuning; nil until the first link
	percent int         // last percentage set; 0 before
	orig    int         // the percentage before the first set
	stopped bool
	every   time.Duration // gcTuneEvery; tests shorten it
	// setPercent and live are debug.SetGCPercent and gcLive; tests replace them.
	setPercent func(int) int
	live       func() uint64
	// burst is set while commands come in a burst (tuning waits);
	// burstTimer ends it.
	burst      bool
	burstTimer *time.Timer
}

// gcPercent returns the GOGC for a headroom of headroom bytes over live
// bytes (heap, stacks and globals the GC scans), within minGCPercent..100.
func gcPercent(headroom int64, live uint64) int {
	if headroom <= 0 || live == 0 {
		return 100
	}
	p := uint64(headroom) * 100 / live
	return int(max(minGCPercent, min(100, p)))
}

// gcLive returns what the last GC found live: heap objects, plus the stacks
// and globals that GOGC's goal counts too.
func gcLive() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}, {Name: "/gc/scan/stack:bytes"}, {Name: "/gc/scan/globals:bytes"}}
	metrics.Read(s)
	var n uint64
	for _, v := range s {
		if v.Value.Kind() == metrics.KindUint64 {
			n += v.Value.Uint64()
		}
	}
	return n
}

// gcFromEnv reports whether the operator tuned the GC in the environment.
func gcFromEnv() bool {
	return os.Getenv("GOGC") != "" || os.Getenv("GOMEMLIMIT") != ""
}

// armGCLocked starts the periodic tuning with the first link (memMu held).
func (h *Hub) armGCLocked() {
	g := &h.gc
	if h.opts.GCHeadroom <= 0 || g.timer != nil || g.stopped {
		return
	}
	if g.every == 0 {
		g.every = gcTuneEvery
	}
	g.timer = time.AfterFunc(g.every, h.tickGC)
}

func (h *Hub) tickGC() {
	h.tuneGC()
	h.memMu.Lock()
	defer h.memMu.Unlock()
	if !h.gc.stopped {
		h.gc.timer.Reset(h.gc.every)
	}
}

// tuneGC sets GOGC from the live heap (a no-op without GCHeadroom, or with
// the GC tuned in the environment).
func (h *Hub) tuneGC() {
	if h.opts.GCHeadroom <= 0 || gcFromEnv() {
		return
	}
	h.memMu.Lock()
	g := &h.gc
	set, live := g.setPercent, g.live
	h.memMu.Unlock()
	if set == nil {
		set, live = debug.SetGCPercent, gcLive
	}
	p := gcPercent(h.opts.GCHeadroom, live())
	h.memMu.Lock()
	defer h.memMu.Unlock()
	if p == g.percent || g.stopped || g.burst {
		return
	}
	prev := set(p)
	if g.percent == 0 {
		g.orig = prev // restored by Close
	}
	g.percent = p
	h.log.Debug("GC percentage set for the live heap", "gogc", p)
}
