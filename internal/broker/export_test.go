package broker

import "context"

// KeptCounts returns the session counts the Service keeps (counts.go): by
// server, by state and the number queued, and whether they were read from
// the store yet.
func (s *Service) KeptCounts() (servers map[string]Counts, byState map[string]int, queued int, loaded bool) {
	c := &s.servers.tally
	c.mu.Lock()
	loaded = c.loaded
	c.mu.Unlock()
	byState, queued = c.states()
	return c.snapshot(), byState, queued, loaded
}

// ExpireNow runs the periodic cleanup once (purging DELETED sessions).
func (s *Service) ExpireNow(ctx context.Context) { s.expire(ctx) }

// FlushSeen writes the pending contact times now (the maintenance loop does
// every MaintenanceInterval).
func (s *Service) FlushSeen(ctx context.Context) {
	s.servers.flushSeen(ctx, s.store, s.cfg.BrokerID, s.log)
}
