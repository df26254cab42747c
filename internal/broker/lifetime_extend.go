package broker

import (
	"context"
	"errors"
	"time"

	"github.com/berth-dev/berth/internal/logattr"
)

// ExtendSession pushes the session's max-lifetime deadline by r.By (0: the
// default, session-extension-default-hours) within
// session-max-extension-hours, and returns the new deadline. An extension
// larger than what remains is cut to it; one when nothing remains, or for a
// session without a lifetime limit, is refused (CodeInvalidInput naming
// the reason). r.Owner, when set, must be the session's owner. The lifetime
// warnings start afresh for the new deadline.
func (s *Service) ExtendSession(ctx context.Context, r ExtendRequest) (time.Time, error) {
	if r.SessionID == "" {
		return time.Time{}, Errorf(CodeInvalidInput, "SessionId: is required")
	}
	if r.By < 0 {
		return time.Time{}, Errorf(CodeInvalidInput, "By: must be positive, got %s", r.By)
	}
	by := r.By
	if by == 0 {
		by = s.cfg.ExtensionDefault
	}
	var (
		deadline time.Time
		granted  time.Duration
	)
	err := s.updateSession(ctx, r.SessionID, func(x *Session) error {
		switch {
		case r.Owner != "" && x.Owner != r.Owner:
			return Errorf(CodeForbidden, "%s", reasonOwnerMismatch)
		case x.State == StateDeleted || x.State == StateDeleting:
			return Errorf(CodeNotFound, "%s", reasonSessionNotExist)
		}
		lim := s.limitsFor(ctx, x)
		if hours(lim.MaxLifetimeHours) <= 0 {
			return Errorf(CodeInvalidInput, "the session has no lifetime limit (%s is off): there is nothing to extend", PolicyLifetime)
		}
		capacity := hours(lim.MaxExtensionHours)
		left := capacity - x.Life.Extension
		switch {
		case capacity <= 0:
			return Errorf(CodeInvalidInput, "%s is off: the session's lifetime cannot be extended", PolicyExtension)
		case left <= 0:
			return Errorf(CodeInvalidInput, "%s: no extension left (the session was extended by %s, the cap)",
				PolicyExtension, fmtSpan(x.Life.Extension))
		case by > capacity:
			return Errorf(CodeInvalidInput, "By: at most %s (%s), got %s", fmtSpan(capacity), PolicyExtension, fmtSpan(by))
		}
		granted = min(by, left)
		x.Life.Extension += granted
		x.Life.LifetimeWarnedFor, x.Life.LifetimeWarned = time.Time{}, nil
		x.Life.RetryAt = time.Time{}
		deadline = SessionDeadlines(x, lim).Expires
		if s.eventsOn() {
			x.Events = append(x.Events, &Event{Time: s.Now().UTC(), Type: EventSessionExtended, SessionID: x.ID, ServerID: x.ServerID, Owner: x.Owner,
				Data: map[string]any{"expires_at": deadline.UTC().Format(time.RFC3339), "by": granted.String(), "actor": r.Actor}})
		}
		return nil
	})
	if errors.Is(err, ErrNotFound) {
		return time.Time{}, Errorf(CodeNotFound, "%s", reasonSessionNotExist)
	}
	if err != nil {
		return time.Time{}, err
	}
	s.log.Info("extended session lifetime", logattr.SessionID, r.SessionID, "actor", r.Actor,
		"by", granted.String(), "expires", deadline.UTC().Format(time.RFC3339))
	return deadline, nil
}

// SessionLifetime is a session's lifetime as berth's API shows it.
type SessionLifetime struct {
	SessionID string
	Deadlines
	// Extension is the extension granted so far.
	Extension time.Duration
	// LastInputTime is the last client input the agent reported.
	LastInputTime time.Time
	// NumOfConnections is the number of connected clients.
	NumOfConnections int64
	// Limits are the lifetime limits that apply to the session.
	Limits SessionLimits
}

// SessionLifetime returns the deadlines of a session. owner, when set,
// must be the session's owner.
func (s *Service) SessionLifetime(ctx context.Context, id, owner string) (*SessionLifetime, error) {
	x, err := s.store.GetSession(ctx, id)
	if errors.Is(err, ErrNotFound) || (err == nil && x.State == StateDeleted) {
		return nil, Errorf(CodeNotFound, "%s", reasonSessionNotExist)
	}
	if err != nil {
		return nil, err
	}
	if owner != "" && x.Owner != owner {
		return nil, Errorf(CodeForbidden, "%s", reasonOwnerMismatch)
	}
	lim := s.limitsFor(ctx, x)
	return &SessionLifetime{SessionID: x.ID, Deadlines: SessionDeadlines(x, lim), Extension: x.Life.Extension,
		LastInputTime: x.LastInputTime, NumOfConnections: x.NumOfConnections, Limits: lim}, nil
}
