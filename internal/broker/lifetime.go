package broker

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Lifetime policy names: the broker properties that set them, as warnings,
// metrics and StateReasons name them.
const (
	PolicyDisconnected = "session-disconnected-timeout-minutes"
	PolicyIdle         = "session-idle-timeout-minutes"
	PolicyLifetime     = "session-max-lifetime-hours"
	PolicyExtension    = "session-max-extension-hours"
)

// Policy action names, as the metrics label them.
const (
	ActionDisconnect = "disconnect"
	ActionDelete     = "delete"
)

// SessionLife is a session's lifetime bookkeeping, kept with the session in
// the store: the extension granted, and which warnings were sent for which
// deadline (a warning list counts only while its deadline is the current
// one, so that an extension, or input that moves the idle deadline, starts
// the warnings afresh).
type SessionLife struct {
	// Extension is the total extension of the lifetime granted so far.
	Extension time.Duration `json:"ext,omitempty"`
	// LifetimeWarnedFor is the lifetime deadline that LifetimeWarned are for.
	LifetimeWarnedFor time.Time `json:"life_for,omitzero"`
	// LifetimeWarned are the warning points (time before the deadline)
	// already sent for it.
	LifetimeWarned []time.Duration `json:"life_warned,omitempty"`
	// IdleWarnedFor and IdleWarned are the same for the idle deadline.
	IdleWarnedFor time.Time       `json:"idle_for,omitzero"`
	IdleWarned    []time.Duration `json:"idle_warned,omitempty"`
	// IdleActedFor is the idle deadline whose clients were disconnected.
	IdleActedFor time.Time `json:"idle_acted,omitzero"`
	// RetryAt defers the policies after an action that failed (an agent
	// that did not answer).
	RetryAt time.Time `json:"retry,omitzero"`
}

// IsZero reports whether l holds nothing.
func (l *SessionLife) IsZero() bool {
	return l.Extension == 0 && l.LifetimeWarnedFor.IsZero() && len(l.LifetimeWarned) == 0 &&
		l.IdleWarnedFor.IsZero() && len(l.IdleWarned) == 0 && l.IdleActedFor.IsZero() && l.RetryAt.IsZero()
}

// Equal reports whether l and o hold the same.
func (l *SessionLife) Equal(o *SessionLife) bool {
	return l.Extension == o.Extension && l.LifetimeWarnedFor.Equal(o.LifetimeWarnedFor) &&
		slices.Equal(l.LifetimeWarned, o.LifetimeWarned) && l.IdleWarnedFor.Equal(o.IdleWarnedFor) &&
		slices.Equal(l.IdleWarned, o.IdleWarned) && l.IdleActedFor.Equal(o.IdleActedFor) && l.RetryAt.Equal(o.RetryAt)
}

// ResolveLimits returns the lifetime limits that apply to a session, field by
// field: the template's (tpl, nil when none) if it sets the field; else the
// most generous of the owner's groups that set it (off, a negative value,
// beats any value; a larger value beats a smaller); else base, the broker
// properties'. A result of zero or less is off. Only the lifetime fields are
// resolved (quotas add up differently); the others are left zero.
func ResolveLimits(tpl *SessionLimits, groups []SessionLimits, base SessionLimits) SessionLimits {
	field := func(get func(*SessionLimits) float64) float64 {
		if tpl != nil {
			if v := get(tpl); v != 0 {
				return v
			}
		}
		best, set := 0.0, false
		for i := range groups {
			v := get(&groups[i])
			switch {
			case v == 0:
			case v < 0:
				return -1
			case !set || v > best:
				best, set = v, true
			}
		}
		if set {
			return best
		}
		return get(&base)
	}
	return SessionLimits{
		DisconnectedTimeoutMinutes: field(func(l *SessionLimits) float64 { return l.DisconnectedTimeoutMinutes }),
		IdleTimeoutMinutes:         field(func(l *SessionLimits) float64 { return l.IdleTimeoutMinutes }),
		MaxLifetimeHours:           field(func(l *SessionLimits) float64 { return l.MaxLifetimeHours }),
		MaxExtensionHours:          field(func(l *SessionLimits) float64 { return l.MaxExtensionHours }),
	}
}

// hasLifetimePolicy reports whether l turns on any lifetime policy.
func hasLifetimePolicy(l *SessionLimits) bool {
	return l.DisconnectedTimeoutMinutes > 0 || l.IdleTimeoutMinutes > 0 || l.MaxLifetimeHours > 0
}

// minutes and hours convert a limit to a duration (zero when off).
func minutes(v float64) time.Duration { return span(v, float64(time.Minute)) }
func hours(v float64) time.Duration   { return span(v, float64(time.Hour)) }

func span(v, unit float64) time.Duration {
	if v <= 0 {
		return 0
	}
	return time.Duration(v * unit)
}

// Deadlines are when the lifetime policies act on a session, as things
// stand; zero where a policy is off or does not apply now.
type Deadlines struct {
	// Expires is when the session is deleted for its maximum lifetime.
	Expires time.Time
	// ExtensionLeft is how much more the lifetime may be extended.
	ExtensionLeft time.Duration
	// IdleDisconnect is when the clients are disconnected for no input
	// (only while clients are connected).
	IdleDisconnect time.Time
	// DisconnectedDelete is when the session is deleted for having had no
	// client (only while none is connected).
	DisconnectedDelete time.Time
}

// SessionDeadlines returns sess's deadlines under the limits lim (see
// ResolveLimits).
func SessionDeadlines(sess *Session, lim SessionLimits) Deadlines {
	var d Deadlines
	if life := hours(lim.MaxLifetimeHours); life > 0 {
		d.Expires = sess.CreationTime.Add(life + sess.Life.Extension)
		d.ExtensionLeft = max(hours(lim.MaxExtensionHours)-sess.Life.Extension, 0)
	}
	start := laterOf(sess.CreationTime, sess.UpdatedAt) // READY since
	// The idle policy needs input reports: an agent that cannot see input
	// (the dcv driver) never reports any, and its sessions are left to
	// the desktop service's own idle setting (docs/lifetimes.md). A vnc
	// session reports its first connection as input.
	if idle := minutes(lim.IdleTimeoutMinutes); idle > 0 && sess.NumOfConnections > 0 && !sess.LastInputTime.IsZero() {
		d.IdleDisconnect = laterOf(start, sess.LastInputTime).Add(idle)
	}
	if gone := minutes(lim.DisconnectedTimeoutMinutes); gone > 0 && sess.NumOfConnections == 0 {
		d.DisconnectedDelete = laterOf(start, sess.LastDisconnectionTime).Add(gone)
	}
	// Deadlines are kept to the stores' precision, so that a deadline
	// computed from a session in memory equals the one computed once it
	// was stored (warnings are recorded by deadline).
	d.Expires = d.Expires.Truncate(time.Millisecond)
	d.IdleDisconnect = d.IdleDisconnect.Truncate(time.Millisecond)
	d.DisconnectedDelete = d.DisconnectedDelete.Truncate(time.Millisecond)
	return d
}

func laterOf(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// PolicyAction is what a lifetime policy does to a session now.
type PolicyAction int

// The actions of EvaluatePolicies.
const (
	// PolicyNone: nothing is due.
	PolicyNone PolicyAction = iota
	// PolicyWarn: warn the clients (CommandNotify) that Policy acts at Deadline.
	PolicyWarn
	// PolicyDisconnectIdle: disconnect the clients (CommandDisconnect).
	PolicyDisconnectIdle
	// PolicyDelete: delete the session, with Reason as its StateReason.
	PolicyDelete
)

// String names the action.
func (a PolicyAction) String() string {
	switch a {
	case PolicyWarn:
		return "warn"
	case PolicyDisconnectIdle:
		return ActionDisconnect
	case PolicyDelete:
		return ActionDelete
	}
	return "none"
}

// PolicyDecision is the outcome of EvaluatePolicies.
type PolicyDecision struct {
	Action PolicyAction
	// Policy names the policy that acts or warns.
	Policy string
	// Deadline is when the policy acts (for a warning: the deadline it
	// announces).
	Deadline time.Time
	// Extendable is set on a lifetime warning while extension remains.
	Extendable bool
	// Reason is the StateReason of a deletion, or the message of a
	// disconnection or warning.
	Reason string
	// Life is the session's bookkeeping once the action is done.
	Life SessionLife
	// DueAt is the session's next DueAt once the action is done (zero: none).
	DueAt time.Time
}

// event is one thing a policy does at a time.
type event struct {
	at     time.Time
	action PolicyAction
	policy string
	point  time.Duration // a warning's time before the deadline
	dl     time.Time     // the deadline
}

// events appends to out what the policies still have to do to sess, in no
// order: the warnings not yet sent for the current deadlines and the
// actions. (The callers pass a buffer on their stack: the leader's sweep
// evaluates every session.)
func events(out []event, sess *Session, lim SessionLimits, points []time.Duration) []event {
	d := SessionDeadlines(sess, lim)
	warn := func(policy string, dl, since time.Time, warnedFor time.Time, warned []time.Duration) {
		for _, p := range points {
			at := dl.Add(-p)
			if p <= 0 || !at.After(since) || (warnedFor.Equal(dl) && slices.Contains(warned, p)) {
				continue
			}
			out = append(out, event{at: at, action: PolicyWarn, policy: policy, point: p, dl: dl})
		}
	}
	if !d.Expires.IsZero() {
		warn(PolicyLifetime, d.Expires, sess.CreationTime, sess.Life.LifetimeWarnedFor, sess.Life.LifetimeWarned)
		out = append(out, event{at: d.Expires, action: PolicyDelete, policy: PolicyLifetime, dl: d.Expires})
	}
	if !d.IdleDisconnect.IsZero() && !sess.Life.IdleActedFor.Equal(d.IdleDisconnect) {
		since := laterOf(laterOf(sess.CreationTime, sess.UpdatedAt), sess.LastInputTime)
		warn(PolicyIdle, d.IdleDisconnect, since, sess.Life.IdleWarnedFor, sess.Life.IdleWarned)
		out = append(out, event{at: d.IdleDisconnect, action: PolicyDisconnectIdle, policy: PolicyIdle, dl: d.IdleDisconnect})
	}
	if !d.DisconnectedDelete.IsZero() {
		out = append(out, event{at: d.DisconnectedDelete, action: PolicyDelete, policy: PolicyDisconnected, dl: d.DisconnectedDelete})
	}
	return out
}

// nextDue is the DueAt of sess: its earliest pending event, no earlier than
// its Life.RetryAt; zero when no policy applies or sess is not READY.
func nextDue(sess *Session, lim SessionLimits, points []time.Duration) time.Time {
	if sess.State != StateReady {
		return time.Time{}
	}
	var due time.Time
	var buf [8]event
	for _, e := range events(buf[:0], sess, lim, points) {
		if due.IsZero() || e.at.Before(due) {
			due = e.at
		}
	}
	if !due.IsZero() && sess.Life.RetryAt.After(due) {
		due = sess.Life.RetryAt
	}
	return due
}

// rank orders the events due at once: deletions first (the lifetime's
// before the disconnected timeout's), then the idle disconnection, then
// warnings (lifetime first).
func rank(e *event) int {
	switch {
	case e.action == PolicyDelete && e.policy == PolicyLifetime:
		return 0
	case e.action == PolicyDelete:
		return 1
	case e.action == PolicyDisconnectIdle:
		return 2
	case e.policy == PolicyLifetime:
		return 3
	}
	return 4
}

// EvaluatePolicies decides what the lifetime policies do to sess at now,
// under the limits lim (see ResolveLimits) and the warning points (the times
// before an action at which clients are warned). It is pure: the caller
// does the action and, once it succeeded, writes the decision's Life and
// DueAt. One call makes one action; when several are due the caller calls
// again with the new Life. Warning points that passed together (a broker
// that was down) give one warning.
func EvaluatePolicies(sess *Session, lim SessionLimits, points []time.Duration, now time.Time) PolicyDecision {
	dec := PolicyDecision{Life: cloneLife(&sess.Life)}
	if sess.State != StateReady || now.Before(sess.Life.RetryAt) {
		dec.DueAt = nextDue(sess, lim, points)
		return dec
	}
	var buf, dueBuf [8]event
	evs := events(buf[:0], sess, lim, points)
	due := dueBuf[:0]
	for _, e := range evs {
		if !e.at.After(now) {
			due = append(due, e)
		}
	}
	if len(due) == 0 {
		dec.DueAt = nextDue(sess, lim, points)
		return dec
	}
	slices.SortFunc(due, func(a, b event) int { return cmp.Or(cmp.Compare(rank(&a), rank(&b)), cmp.Compare(b.point, a.point)) })
	e := due[0]
	dec.Action, dec.Policy, dec.Deadline = e.action, e.policy, e.dl
	dec.Life.RetryAt = time.Time{}
	switch e.action {
	case PolicyDelete:
		if e.policy == PolicyLifetime {
			dec.Reason = fmt.Sprintf("deleted by %s: the session reached its maximum lifetime of %s", PolicyLifetime,
				fmtSpan(hours(lim.MaxLifetimeHours)+sess.Life.Extension))
		} else {
			dec.Reason = fmt.Sprintf("deleted by %s: no client connected for %s", PolicyDisconnected,
				fmtSpan(minutes(lim.DisconnectedTimeoutMinutes)))
		}
		return dec // the deletion ends the policies: DueAt stays zero
	case PolicyDisconnectIdle:
		dec.Reason = fmt.Sprintf("Disconnected: no keyboard or mouse input for %s (%s). The session is still running.", fmtSpan(minutes(lim.IdleTimeoutMinutes)), PolicyIdle)
		dec.Life.IdleActedFor = e.dl
		dec.Life.IdleWarnedFor, dec.Life.IdleWarned = time.Time{}, nil
	case PolicyWarn:
		// Every point of this deadline that has passed is warned once.
		var warned *[]time.Duration
		if e.policy == PolicyLifetime {
			if !dec.Life.LifetimeWarnedFor.Equal(e.dl) {
				dec.Life.LifetimeWarnedFor, dec.Life.LifetimeWarned = e.dl, nil
			}
			warned = &dec.Life.LifetimeWarned
			dec.Extendable = hours(lim.MaxExtensionHours) > sess.Life.Extension
		} else {
			if !dec.Life.IdleWarnedFor.Equal(e.dl) {
				dec.Life.IdleWarnedFor, dec.Life.IdleWarned = e.dl, nil
			}
			warned = &dec.Life.IdleWarned
		}
		for _, d := range due {
			if d.action == PolicyWarn && d.policy == e.policy && d.dl.Equal(e.dl) {
				*warned = append(*warned, d.point)
			}
		}
		slices.Sort(*warned)
		left := fmtSpan(e.dl.Sub(now))
		if e.policy == PolicyLifetime {
			dec.Reason = fmt.Sprintf("This session will be deleted in %s (%s).", left, PolicyLifetime)
		} else {
			dec.Reason = fmt.Sprintf("Without input, this session's clients will be disconnected in %s (%s).", left, PolicyIdle)
		}
	}
	after := *sess
	after.Life = dec.Life
	dec.DueAt = nextDue(&after, lim, points)
	return dec
}

func cloneLife(l *SessionLife) SessionLife {
	c := *l
	c.LifetimeWarned = slices.Clone(l.LifetimeWarned)
	c.IdleWarned = slices.Clone(l.IdleWarned)
	return c
}

// fmtSpan writes d for people: whole minutes (or seconds when shorter than
// a minute), as "30m", "2h", "1h30m", "45s".
func fmtSpan(d time.Duration) string {
	if d < time.Minute {
		return max(d, 0).Round(time.Second).String()
	}
	s := strings.TrimSuffix(d.Round(time.Minute).String(), "0s")
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
