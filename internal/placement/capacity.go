package placement

import (
	"fmt"
	"strings"
)

// Limits are the capacity limits of one host; 0 (or less) is unlimited.
type Limits struct {
	// MaxVirtual caps the host's active VIRTUAL sessions
	// (max_virtual_sessions).
	MaxVirtual int
	// MaxPerUser caps the active sessions, of any type, that one owner may
	// have on the host (max_concurrent_sessions_per_user).
	MaxPerUser int
}

// Counts are the active sessions on one host that a new session counts
// against.
type Counts struct {
	Virtual, Console int
	// Owned counts the new session's owner's sessions, of any type. Fits
	// reads it only when Limits.MaxPerUser > 0, so a caller may leave it 0
	// for a host without a per-user limit; 0 also asks whether the host
	// has room for any owner.
	Owned int
}

// Ask is the new session that a host is asked to take.
type Ask struct {
	// Owner is named in the per-user refusal; Counts.Owned counts the
	// owner's sessions.
	Owner string
	// Console is true for a CONSOLE session, false for a VIRTUAL one.
	Console bool
}

// AskOf returns the Ask for a session of owner with type typ: TypeConsole,
// compared case-insensitively, is a console session and any other type a
// virtual one, as for Request.Type.
func AskOf(owner, typ string) Ask {
	return Ask{Owner: owner, Console: strings.EqualFold(typ, TypeConsole)}
}

// Reason names the capacity limit that keeps a host from taking a session.
type Reason uint8

// The reasons of a Refusal, in the order Fits checks them; NoHostError
// counts the hosts refused for each.
const (
	// ReasonFull: a VIRTUAL session on a host that runs MaxVirtual
	// virtual sessions.
	ReasonFull Reason = iota + 1
	// ReasonPerUser: the owner already has MaxPerUser sessions on the host.
	ReasonPerUser
	// ReasonConsole: a CONSOLE session on a host that already runs one (a
	// host has one console).
	ReasonConsole
)

// String returns the limit the reason stands for.
func (r Reason) String() string {
	switch r {
	case ReasonFull:
		return "max_virtual_sessions reached"
	case ReasonPerUser:
		return "max_concurrent_sessions_per_user reached"
	case ReasonConsole:
		return "console session running"
	}
	return fmt.Sprintf("Reason(%d)", uint8(r))
}

// Refusal is the error of Fits: the first limit the host reached and the
// numbers behind it.
type Refusal struct {
	Reason Reason
	Limits Limits
	Counts Counts
	Ask    Ask
}

// Error says what the host has, to follow the host's name: for example
// `has 10 of 10 virtual sessions`, `has 2 of 2 sessions of "bob"` or
// `has a console session`.
func (r *Refusal) Error() string {
	switch r.Reason {
	case ReasonFull:
		return fmt.Sprintf("has %d of %d virtual sessions", r.Counts.Virtual, r.Limits.MaxVirtual)
	case ReasonPerUser:
		return fmt.Sprintf("has %d of %d sessions of %q", r.Counts.Owned, r.Limits.MaxPerUser, r.Ask.Owner)
	case ReasonConsole:
		return "has a console session"
	}
	return r.Reason.String()
}

// Fits is the capacity rule, the one place it is written: it returns nil
// when a host with limits l and active sessions c has room for the session
// a, else a *Refusal naming the first limit reached. The planner decides
// through its body, refuse; the stores call it again in the transaction
// that commits a placement, and the broker for SERVER_FULL.
func Fits(l Limits, c Counts, a Ask) error {
	if r := refuse(l, c, a); r != 0 {
		return &Refusal{Reason: r, Limits: l, Counts: c, Ask: a}
	}
	return nil
}

// refuse is Fits without the error, for the planner's hot path (building
// the *Refusal for each refused host measured about 10% slower there): 0
// when the host has room, else the Reason of the first limit reached,
// checked in the order of the Reason constants.
func refuse(l Limits, c Counts, a Ask) Reason {
	switch {
	case !a.Console && l.MaxVirtual > 0 && c.Virtual >= l.MaxVirtual:
		return ReasonFull
	case l.MaxPerUser > 0 && c.Owned >= l.MaxPerUser:
		return ReasonPerUser
	case a.Console && c.Console > 0:
		return ReasonConsole
	}
	return 0
}
