package broker

import (
	"context"
	"time"
)

// ExtendSession pushes the session's max-lifetime deadline by r.By within
// session-max-extension-hours and returns the new deadline.
// (Placeholder until the lifetime policies land; the helper that
// implements them deletes this file.)
func (s *Service) ExtendSession(ctx context.Context, r ExtendRequest) (time.Time, error) {
	return time.Time{}, Errorf(CodeUnavailable, "session lifetimes are not implemented yet")
}
