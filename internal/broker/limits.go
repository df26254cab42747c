package broker

import (
	"context"
	"slices"
	"time"
)

// SessionLimits are the lifetime policies and quotas that the broker's
// properties, a group or a template set. A zero field is unset (the next
// level's value applies); a negative one turns the limit off at its level.
// Times are fractional so that short policies can be tested.
type SessionLimits struct {
	// DisconnectedTimeoutMinutes deletes a session no client has been
	// connected to for this long.
	DisconnectedTimeoutMinutes float64 `json:"disconnected_timeout_minutes,omitempty"`
	// IdleTimeoutMinutes disconnects the clients of a session that had no
	// keyboard or pointer input for this long.
	IdleTimeoutMinutes float64 `json:"idle_timeout_minutes,omitempty"`
	// MaxLifetimeHours deletes a session this long after its creation,
	// plus the extensions it was granted.
	MaxLifetimeHours float64 `json:"max_lifetime_hours,omitempty"`
	// MaxExtensionHours caps the total extension of a session's lifetime.
	MaxExtensionHours float64 `json:"max_extension_hours,omitempty"`
	// MaxSessions caps concurrent sessions: per user, of a group's members
	// together, or of a template.
	MaxSessions int `json:"max_sessions,omitempty"`
	// MaxGPUs caps the GPUs in use, as MaxSessions caps sessions.
	MaxGPUs int `json:"max_gpus,omitempty"`
}

// GroupSource tells the groups of a user: the broker's configured groups
// source (a groups file, the groups agents report). Implementations must
// be safe for concurrent use and fast (placement calls them).
type GroupSource interface {
	Groups(ctx context.Context, user string) []string
}

// ExtendRequest asks for a longer lifetime of a session.
type ExtendRequest struct {
	SessionID string
	// By is the extension asked for; 0 takes the default.
	By time.Duration
	// Actor names who asks (an API client ID, a portal or page user) for
	// logs and the audit trail.
	Actor string
	// Owner, when set, must be the session's owner (a request from the
	// session's web page or the portal on behalf of a user).
	Owner string
}

// ownerGroups returns the groups of sess's owner: those of the groups
// source and those the identity provider gave at launch, without repeats.
func (s *Service) ownerGroups(ctx context.Context, sess *Session) []string {
	var out []string
	if s.cfg.Groups != nil {
		out = append(out, s.cfg.Groups.Groups(ctx, sess.Owner)...)
	}
	for _, g := range sess.Spec.Groups {
		if !slices.Contains(out, g) {
			out = append(out, g)
		}
	}
	return out
}
