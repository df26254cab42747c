package agenthub

import (
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
}

// stopMemory stops a pending memory return (Close).
func (h *Hub) stopMemory() {
	h.memMu.Lock()
	defer h.memMu.Unlock()
	if h.memTimer != nil {
		h.memTimer.Stop()
	}
}
