package agenthub

import (
	"os"
	"runtime/debug"
	"runtime/metrics"
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

// churned counts one link up or down and arms the memory return after a
// storm.
func (h *Hub) churned() {
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
// updates a second), so even 32 MiB of headroom means a collection every
// minute or so: at 10,000 agents the fleet benchmark measured 302–313 MB
// idle at 1.4–2.3 % of a core with 32 MiB, against 317–339 MB at
// 1.1–1.8 % with 64 MiB.
const (
	// DefaultGCHeadroom is berth-broker's Options.GCHeadroom.
	DefaultGCHeadroom = 32 << 20
	minGCPercent      = 25
	gcTuneEvery       = time.Minute
)

// Command bursts. A create storm sends thousands of commands a second and
// allocates hundreds of megabytes a second; under a GOGC tuned for a large
// idle fleet (25–40 at 10,000 links) the GC then runs several times a second
// over the whole live heap, which cost a 10,000-session storm at 10,000
// agents a quarter of the broker's CPU (fleet benchmark: 204 µs a session
// against 156 µs at GOGC 400). While commands come at burstCommands within
// burstSpan or faster, the hub lifts GOGC to Go's default; once they have
// been quiet for burstQuiet it tunes GOGC again and returns the free memory
// to the OS, as after a link storm.
const (
	burstCommands = 256
	burstSpan     = 500 * time.Millisecond
	burstQuiet    = 5 * time.Second
)

// commandSent counts a command sent to an agent and notices a burst.
func (h *Hub) commandSent() {
	if h.opts.GCHeadroom <= 0 {
		return
	}
	if h.sent.Add(1)%burstCommands != 0 {
		return
	}
	now := time.Now().UnixNano()
	if prev := h.burstMark.Swap(now); now-prev <= int64(burstSpan) {
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
		h.log.Debug("GC percentage lifted for a burst of commands", "gogc", 100)
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
