package agenthub

// QueuedUpdates returns how many updates of serverID's link wait to be
// applied (applier.go), for tests.
func (h *Hub) QueuedUpdates(serverID string) int {
	h.mu.Lock()
	l := h.links[serverID]
	h.mu.Unlock()
	if l == nil {
		return 0
	}
	l.apply.mu.Lock()
	defer l.apply.mu.Unlock()
	return len(l.apply.queue)
}
