package broker

import (
	"context"
	"time"
)

// The events core (docs/events.md).
//
// A change of a session (its state, its permissions) is an event written in
// the same store transaction as the session: the core attaches it to the
// session it writes (Session.Events, attachEvents) and the store inserts it
// with the row. So an event is kept exactly when its change is, and a
// session's events are in the order of its commits. Every other change
// (servers, agents, placement, quotas, lifetimes, scaling, webhooks) is
// written on its own by Emit.
//
// The stores assign event IDs in commit order across every broker sharing
// them (SQLite: its single writer; PostgreSQL: a transaction-scoped
// advisory lock taken just before the insert), so that a reader that has
// read every event up to an ID never sees a smaller one later: resuming
// after an ID misses none and repeats none.

// eventStore returns the store's EventStore, nil when the events are off or
// the store keeps none.
func (s *Service) eventStore() EventStore {
	if s.cfg.DisableEvents {
		return nil
	}
	es, _ := s.store.(EventStore)
	return es
}

// eventsOn reports whether events are written.
func (s *Service) eventsOn() bool { return s.eventStore() != nil }

// Emit records events that no session write carries (servers, placement,
// quotas, lifetimes, scaling, webhooks), in one transaction of their own,
// and wakes the stream. A zero Time is set to s.Now(). A failure is
// logged, never returned: an event lost must not fail the change it
// describes.
func (s *Service) Emit(ctx context.Context, evs ...Event) {
	es := s.eventStore()
	if es == nil || len(evs) == 0 {
		return
	}
	now := s.Now().UTC()
	ps := make([]*Event, len(evs))
	for i := range evs {
		e := evs[i]
		if e.Time.IsZero() {
			e.Time = now
		}
		ps[i] = &e
	}
	if err := es.AppendEvents(context.WithoutCancel(ctx), ps); err != nil {
		s.log.Error("write events", "type", evs[0].Type, "count", len(evs), "err", err)
		return
	}
	s.hub.notify()
}

// sessionEvents returns the events of a session's change from old (nil:
// new session) to x: session.state when its state, substate or reason
// changed, session.permissions when its permissions file changed.
func (s *Service) sessionEvents(old, x *Session, now time.Time) []*Event {
	var evs []*Event
	if old == nil || old.State != x.State || old.Substate != x.Substate || old.StateReason != x.StateReason {
		d := map[string]any{"state": x.State}
		if x.Substate != "" {
			d["substate"] = x.Substate
		}
		if x.StateReason != "" {
			d["reason"] = x.StateReason
		}
		if old != nil {
			d["previous_state"] = old.State
		}
		evs = append(evs, &Event{Time: now, Type: EventSessionState, SessionID: x.ID, ServerID: x.ServerID, Owner: x.Owner, Data: d})
	}
	if old != nil && old.Spec.PermissionsFile != x.Spec.PermissionsFile {
		evs = append(evs, &Event{Time: now, Type: EventSessionPermissions, SessionID: x.ID, ServerID: x.ServerID, Owner: x.Owner,
			Data: map[string]any{"permissions_bytes": len(x.Spec.PermissionsFile)}})
	}
	return evs
}

// attachEvents adds to x.Events the events of its change from old (nil: a
// new session), for the store to write with it; nothing when events are off.
func (s *Service) attachEvents(old, x *Session) {
	if !s.eventsOn() {
		x.Events = nil
		return
	}
	x.Events = append(x.Events, s.sessionEvents(old, x, s.Now().UTC())...)
}

// attachNew attaches the events of new sessions about to be inserted.
func (s *Service) attachNew(ss []*Session) {
	for _, x := range ss {
		s.attachEvents(nil, x)
	}
}

// eventsWritten is called after a store write that may have carried events:
// it clears them from the sessions and wakes the stream.
func (s *Service) eventsWritten(ss ...*Session) {
	any := false
	for _, x := range ss {
		if x != nil && len(x.Events) > 0 {
			x.Events = nil
			any = true
		}
	}
	if any {
		s.hub.notify()
	}
}

// purgeEvents removes events older than the retention (the leader's
// maintenance).
func (s *Service) purgeEvents(ctx context.Context, now time.Time) {
	es := s.eventStore()
	if es == nil {
		return
	}
	n, err := es.PurgeEvents(ctx, now.Add(-s.cfg.EventRetention))
	if err != nil {
		s.log.Error("purge events", "err", err)
	} else if n > 0 {
		s.log.Info("purged events", "count", n)
	}
}
