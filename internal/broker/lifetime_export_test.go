package broker

import "context"

// PolicyTick runs one tick of the lifetime policies' loop and returns how
// many due sessions it read.
func (s *Service) PolicyTick(ctx context.Context) (int, error) { return s.policyTick(ctx) }

// PolicySweep recomputes every READY session's DueAt, as a broker that
// becomes the leader does.
func (s *Service) PolicySweep(ctx context.Context) error { return s.sweepPolicies(ctx) }
