package broker

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/berth-dev/berth/internal/logattr"
)

// PolicyMetrics is told of the lifetime policies' warnings and actions. A
// Metrics given to SetMetrics that also implements it gets them.
type PolicyMetrics interface {
	// PolicyWarned counts one warning sent to a session's clients; policy
	// is one of PolicyIdle, PolicyLifetime.
	PolicyWarned(policy string)
	// PolicyActed counts one action of a policy: ActionDisconnect or
	// ActionDelete.
	PolicyActed(policy, action string)
}

// policyMetrics returns the Service's PolicyMetrics, nil when it has none.
func (s *Service) policyMetrics() PolicyMetrics {
	pm, _ := s.metrics().(PolicyMetrics)
	return pm
}

const (
	// policyBatch bounds the due sessions one tick reads.
	policyBatch = 5000
	// policyWorkers bounds the commands one tick sends at once.
	policyWorkers = 32
	// policyRetry is how long the policies of a session wait after an
	// action that could not be done (its agent unreachable or silent).
	policyRetry = time.Minute
)

// policiesConfigured reports whether the broker properties or a group turn
// on a lifetime policy (templates' limits travel with their sessions).
func (s *Service) policiesConfigured() bool {
	if hasLifetimePolicy(&s.cfg.Limits) {
		return true
	}
	for _, l := range s.cfg.GroupLimits {
		if hasLifetimePolicy(&l) {
			return true
		}
	}
	return false
}

// groupLifetimes reports whether a group sets a lifetime field.
func (s *Service) groupLifetimes() bool {
	for _, l := range s.cfg.GroupLimits {
		if l.DisconnectedTimeoutMinutes != 0 || l.IdleTimeoutMinutes != 0 || l.MaxLifetimeHours != 0 || l.MaxExtensionHours != 0 {
			return true
		}
	}
	return false
}

// limitsFor resolves the lifetime limits of sess (ResolveLimits): its
// template's snapshot, its owner's groups, the broker properties.
func (s *Service) limitsFor(ctx context.Context, sess *Session) SessionLimits {
	var groups []SessionLimits
	if s.groupLifetimes() {
		for _, g := range s.ownerGroups(ctx, sess) {
			if l, ok := s.cfg.GroupLimits[g]; ok {
				groups = append(groups, l)
			}
		}
	}
	return ResolveLimits(sess.Spec.TemplateLimits, groups, s.cfg.Limits)
}

// stampDue sets x.DueAt as x's policies have it: the core calls it whenever
// it writes a session, so that its timers follow its activity.
func (s *Service) stampDue(ctx context.Context, x *Session) {
	if x.State != StateReady || (x.Spec.TemplateLimits == nil && !s.policiesConfigured()) {
		x.DueAt = time.Time{}
		return
	}
	x.DueAt = nextDue(x, s.limitsFor(ctx, x), s.cfg.WarningPoints)
}

// policyLoop runs the lifetime policies on the leader broker: every
// PolicyInterval it acts on the sessions due. A broker that becomes the
// leader first recomputes every READY session's DueAt when a policy is
// configured (the policies may have changed while no broker ran).
func (s *Service) policyLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.PolicyInterval)
	defer t.Stop()
	swept := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !s.leader(ctx) {
			swept = false
			continue
		}
		if !swept {
			if err := s.sweepPolicies(ctx); err != nil {
				if ctx.Err() == nil {
					s.log.Error("compute the sessions' policy deadlines", "err", err)
				}
				continue
			}
			swept = true
		}
		if _, err := s.policyTick(ctx); err != nil && ctx.Err() == nil {
			s.log.Error("run the session lifetime policies", "err", err)
		}
	}
}

// sweepPolicies recomputes the DueAt of every READY session, when a policy
// is configured, and writes those that changed.
func (s *Service) sweepPolicies(ctx context.Context) error {
	if !s.policiesConfigured() {
		return nil
	}
	after := int64(0)
	for {
		page, err := s.store.ListSessions(ctx, SessionFilter{States: []string{StateReady}, AfterSeq: after, Limit: policyBatch})
		if err != nil {
			return err
		}
		var ids []string
		for _, x := range page {
			if due := nextDue(x, s.limitsFor(ctx, x), s.cfg.WarningPoints); !due.Equal(x.DueAt) {
				ids = append(ids, x.ID)
			}
		}
		if len(ids) > 0 {
			_, err := s.store.UpdateSessions(ctx, ids, func(x *Session) error {
				old := x.DueAt
				s.stampDue(ctx, x)
				if old.Equal(x.DueAt) {
					return errUnchanged
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
		if len(page) < policyBatch {
			return nil
		}
		after = page[len(page)-1].Seq
	}
}

// policyWrite is what a tick writes back to a session it acted on.
type policyWrite struct {
	read *Session // the session as the tick read it
	lim  SessionLimits
	life SessionLife
}

// policyTick acts on the READY sessions due now (read through the store's
// index of DueAt), and writes their next DueAt. It returns how many it read.
func (s *Service) policyTick(ctx context.Context) (int, error) {
	now := s.Now()
	due, err := s.store.ListSessions(ctx, SessionFilter{States: []string{StateReady}, DueBefore: now, Limit: policyBatch})
	if err != nil || len(due) == 0 {
		return 0, err
	}
	writes := make(map[string]*policyWrite, len(due))
	var mu sync.Mutex
	var evs []Event // the tick's events, written together once it is done
	emit := func(e Event) {
		if s.eventsOn() {
			mu.Lock()
			evs = append(evs, e)
			mu.Unlock()
		}
	}
	work := make(chan *Session)
	var wg sync.WaitGroup
	for range min(policyWorkers, len(due)) {
		wg.Go(func() {
			for sess := range work {
				if w := s.actOn(ctx, sess, now, emit); w != nil {
					mu.Lock()
					writes[sess.ID] = w
					mu.Unlock()
				}
			}
		})
	}
	for _, sess := range due {
		work <- sess
	}
	close(work)
	wg.Wait()
	s.Emit(ctx, evs...)
	if len(writes) == 0 {
		return len(due), nil
	}
	ids := make([]string, 0, len(writes))
	for _, sess := range due {
		if writes[sess.ID] != nil {
			ids = append(ids, sess.ID)
		}
	}
	if dw, ok := s.store.(DueWriter); ok {
		// The cheap write of the two columns, for the sessions that did
		// not change meanwhile; the others go through UpdateSessions.
		ws := make([]DueWrite, 0, len(ids))
		for _, id := range ids {
			w := writes[id]
			x := *w.read
			x.Life = w.life
			next := nextDue(&x, w.lim, s.cfg.WarningPoints)
			if next.Equal(w.read.DueAt) && w.life.Equal(&w.read.Life) {
				continue // nothing to write
			}
			ws = append(ws, DueWrite{Read: w.read, Life: w.life, DueAt: next})
		}
		done, err := dw.UpdateSessionsDue(ctx, ws)
		if err != nil {
			return len(due), err
		}
		ids = ids[:0]
		for i, ok := range done {
			if !ok {
				ids = append(ids, ws[i].Read.ID)
			}
		}
		if len(ids) == 0 {
			return len(due), nil
		}
	}
	_, err = s.store.UpdateSessions(ctx, ids, func(x *Session) error {
		if x.State != StateReady {
			return errUnchanged
		}
		w := writes[x.ID]
		oldDue, oldLife := x.DueAt, x.Life
		if x.Life.Equal(&w.read.Life) {
			// Otherwise the session was extended meanwhile: keep that, and
			// send what this tick sent again if it is still due.
			x.Life = w.life
		}
		s.stampDue(ctx, x)
		if oldDue.Equal(x.DueAt) && oldLife.Equal(&x.Life) {
			return errUnchanged
		}
		return nil
	})
	return len(due), err
}

// actOn does what the policies ask of sess at now: warnings, an idle
// disconnection, or a deletion (through the delete path, which writes the
// session). It returns the Life to write back, nil for none, and hands the
// events of what it did to emit.
func (s *Service) actOn(ctx context.Context, sess *Session, now time.Time, emit func(Event)) *policyWrite {
	lim := s.limitsFor(ctx, sess)
	w := &policyWrite{read: sess, lim: lim}
	x := *sess
	x.Life = cloneLife(&sess.Life)
	if !s.ServerReachable(x.ServerID) {
		// Its reports are stale and no command would reach it: the
		// sessions of an unreachable server wait (and end with
		// unreachable-sessions-ttl-seconds if it does not come back).
		x.Life.RetryAt = now.Add(policyRetry)
		w.life = x.Life
		return w
	}
	for range 4 { // several warnings may be due at once
		dec := EvaluatePolicies(&x, lim, s.cfg.WarningPoints, now)
		switch dec.Action {
		case PolicyNone:
			w.life = x.Life
			return w
		case PolicyDelete:
			s.policyDelete(ctx, &x, dec, emit)
			return nil
		}
		cmd := Command{Kind: CommandNotify, SessionID: x.ID, Notify: &NotifyCommand{
			Message: dec.Reason, Policy: dec.Policy, Deadline: dec.Deadline, Extendable: dec.Extendable}}
		if dec.Action == PolicyDisconnectIdle {
			cmd.Kind = CommandDisconnect
		}
		cctx, cancel := context.WithTimeout(ctx, s.cfg.CommandTimeout)
		_, err := s.disp.Dispatch(cctx, x.ServerID, cmd)
		cancel()
		var refused *CommandError
		switch {
		case errors.As(err, &refused):
			// The agent cannot do it (an older agent, a driver without
			// notifications): retrying would not help.
			s.log.Warn("session policy command refused", logattr.SessionID, x.ID, logattr.ServerID, x.ServerID,
				"policy", dec.Policy, "command", cmd.Kind, "reason", refused.Reason)
			if pm := s.policyMetrics(); pm != nil && dec.Action == PolicyWarn {
				pm.PolicyWarned(dec.Policy) // issued, though the driver cannot show it (dcv)
			}
		case err != nil:
			if ctx.Err() != nil {
				return nil
			}
			s.log.Warn("session policy command failed", logattr.SessionID, x.ID, logattr.ServerID, x.ServerID,
				"policy", dec.Policy, "command", cmd.Kind, "err", err)
			x.Life.RetryAt = now.Add(policyRetry)
			w.life = x.Life
			return w
		default:
			if pm := s.policyMetrics(); pm != nil {
				if dec.Action == PolicyWarn {
					pm.PolicyWarned(dec.Policy)
				} else {
					pm.PolicyActed(dec.Policy, ActionDisconnect)
				}
			}
		}
		emit(policyEvent(&x, dec))
		if dec.Action == PolicyDisconnectIdle {
			s.log.Info("disconnected idle session's clients", logattr.SessionID, x.ID, logattr.ServerID, x.ServerID,
				logattr.Owner, x.Owner, "policy", dec.Policy, "reason", dec.Reason)
		} else {
			s.log.Debug("warned session's clients", logattr.SessionID, x.ID, "policy", dec.Policy, "deadline", dec.Deadline)
		}
		x.Life = dec.Life
	}
	w.life = x.Life
	return w
}

// policyDelete deletes sess for a policy, through the delete path: the
// session is DELETING with dec.Reason until its agent confirms, and then
// DELETED with that reason.
func (s *Service) policyDelete(ctx context.Context, sess *Session, dec PolicyDecision, emit func(Event)) {
	now := s.Now()
	var job *deleteJob
	err := s.updateSession(ctx, sess.ID, func(x *Session) error {
		if x.State != StateReady || x.ServerID != sess.ServerID {
			return errUnchanged
		}
		// Decided on what the tick read: a report or an extension since
		// may have moved the deadline.
		lim := s.limitsFor(ctx, x)
		if d := EvaluatePolicies(x, lim, s.cfg.WarningPoints, now); d.Action != PolicyDelete {
			return errUnchanged
		}
		x.State, x.Substate, x.StateReason = StateDeleting, "", dec.Reason
		x.UpdatedAt = now
		// Should the delete fail (the session goes back to READY), the
		// policies try again later rather than at every tick.
		x.Life.RetryAt = now.Add(policyRetry)
		job = &deleteJob{sessionID: x.ID, serverID: x.ServerID}
		return nil
	})
	switch {
	case errors.Is(err, errUnchanged), errors.Is(err, ErrNotFound):
		return
	case err != nil:
		s.log.Error("delete session by policy", logattr.SessionID, sess.ID, "policy", dec.Policy, "err", err)
		return
	}
	if pm := s.policyMetrics(); pm != nil {
		pm.PolicyActed(dec.Policy, ActionDelete)
	}
	emit(policyEvent(sess, dec))
	s.log.Info("deleting session by policy", logattr.SessionID, sess.ID, logattr.ServerID, sess.ServerID,
		logattr.Owner, sess.Owner, "policy", dec.Policy, "reason", dec.Reason)
	s.queueDelete(*job)
}

// DueWrite is one write of the lifetime policies' loop: a session's new
// Life and DueAt.
type DueWrite struct {
	// Read is the session as the loop read it: the write is done only
	// while the session is still READY with the same DueAt, Life,
	// NumOfConnections, LastInputTime, LastDisconnectionTime and UpdatedAt
	// (what the policies decided on).
	Read  *Session
	Life  SessionLife
	DueAt time.Time
}

// DueWriter is implemented by stores that write the policies' bookkeeping
// of many sessions cheaply (internal/sqlite, internal/postgres): only the
// two columns, not the whole row with every index. The policy loop uses it
// when the store has it, and UpdateSessions for the sessions it did not
// write.
type DueWriter interface {
	// UpdateSessionsDue writes each session's Life and DueAt in one
	// transaction, when the session is as its Read says, and returns, in
	// order, which were written.
	UpdateSessionsDue(ctx context.Context, ws []DueWrite) ([]bool, error)
}
