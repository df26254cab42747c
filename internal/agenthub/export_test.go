package agenthub

import "time"

// SetMemoryReturn replaces the hub's storm size, quiet period and
// returned-memory action (memory.go), for tests.
func (h *Hub) SetMemoryReturn(storm int, quiet time.Duration, free func()) {
	h.memMu.Lock()
	defer h.memMu.Unlock()
	h.storm, h.quiet, h.freeOSMemory = storm, quiet, free
}
