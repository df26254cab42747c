package broker

import (
	"context"
	"errors"
)

// SessionForConnection returns session id as clients see it (a READY session
// whose server is unreachable shows as UNKNOWN), with its server when placed.
// It is the read the DCV token verifier and the Connection Gateway resolver
// make. An unknown or DELETED session gives an *Error with CodeNotFound; other
// errors are store failures.
func (s *Service) SessionForConnection(ctx context.Context, id string) (*SessionView, error) {
	if id == "" || len(id) > 256 {
		return nil, Errorf(CodeInvalidInput, "sessionId: must be 1 to 256 characters")
	}
	sess, err := s.store.GetSession(ctx, id)
	if errors.Is(err, ErrNotFound) || (err == nil && sess.State == StateDeleted) {
		return nil, Errorf(CodeNotFound, "session %q does not exist", id)
	}
	if err != nil {
		return nil, err
	}
	v := s.sessionView(sess, s.Now())
	return &v, nil
}
