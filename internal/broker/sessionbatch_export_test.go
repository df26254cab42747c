package broker

// PendingSessionWrites returns how many agents' session writes wait for
// the next group commit (sessionbatch.go), for tests.
func (s *Service) PendingSessionWrites() int {
	s.batch.mu.Lock()
	defer s.batch.mu.Unlock()
	return len(s.batch.pending)
}
