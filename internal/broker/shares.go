package broker

import "context"

// ShareLevel is what a share gives another user.
type ShareLevel string

// Share levels.
const (
	// ShareNone removes the user's share.
	ShareNone ShareLevel = "none"
	// ShareView gives display only (view-only).
	ShareView ShareLevel = "view"
	// ShareFull gives display, keyboard, mouse and clipboard (DCV builtin less file transfer).
	ShareFull ShareLevel = "full"
)

// Share is one user's access to a session of another owner.
type Share struct {
	SessionID string
	User      string
	Level     ShareLevel
}

// ShareSession gives user level on owner's session, writing the session's DCV
// permissions through the same core as UpdateSessionPermissions (the same
// validation and agent command), and records the share. Only the owner can
// share: owner must match the session's owner.
func (s *Service) ShareSession(ctx context.Context, sessionID, owner, user string, level ShareLevel) error {
	return errNotYet
}

// SharesOf lists a session's shares, ordered by user.
func (s *Service) SharesOf(ctx context.Context, sessionID string) ([]Share, error) {
	return nil, errNotYet
}

// SharedWith lists the sessions shared with user (not owned by them).
func (s *Service) SharedWith(ctx context.Context, user string) ([]*Session, error) {
	return nil, errNotYet
}
