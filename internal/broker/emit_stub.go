package broker

import "context"

// Emit records events that no session write carries (servers, placement,
// quotas, lifetimes, scaling, webhooks). (Placeholder until the events
// land; the helper that implements them deletes this file.)
func (s *Service) Emit(ctx context.Context, evs ...Event) {}
