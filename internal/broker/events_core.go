package broker

import (
	"context"
	"sync"
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
// quotas, lifetimes, scaling, webhooks) and wakes the stream; it returns
// once they are stored. A zero Time is set to s.Now(). A failure is
// logged, never returned: an event lost must not fail the change it
// describes.
//
// Concurrent calls share transactions (group commit, emitBatches): while
// one batch is written, the calls that arrive join the next, which is
// written in one transaction once the first is done. So a storm of agent
// links costs the store a few writes, not one per link, and event IDs keep
// the order of the calls.
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
	s.emits.emit(ps, func(evs []*Event) {
		if err := es.AppendEvents(context.WithoutCancel(ctx), evs); err != nil {
			s.log.Error("write events", "type", evs[0].Type, "count", len(evs), "err", err)
			return
		}
		s.hub.notify()
	})
}

// emitBatches groups the events of concurrent Emit calls into batches
// written one after the other, each in one transaction.
type emitBatches struct {
	mu sync.Mutex
	// open is the batch that new events join; nil when none is open.
	open *emitBatch
	// last is done when the newest batch is written.
	last chan struct{}
}

type emitBatch struct {
	evs  []*Event
	prev chan struct{} // done when the batch before this one is written
	done chan struct{}
}

// emit adds evs to the open batch, or opens one, and returns once the batch
// is written. The call that opened a batch writes it (with write) as soon
// as the batch before it is written; until then it takes every event that
// arrives.
func (b *emitBatches) emit(evs []*Event, write func([]*Event)) {
	b.mu.Lock()
	cur := b.open
	if cur != nil {
		cur.evs = append(cur.evs, evs...)
		b.mu.Unlock()
		<-cur.done
		return
	}
	cur = &emitBatch{evs: evs, prev: b.last, done: make(chan struct{})}
	b.open, b.last = cur, cur.done
	b.mu.Unlock()
	if cur.prev != nil {
		<-cur.prev
	}
	b.mu.Lock()
	if b.open == cur {
		b.open = nil // later events open the next batch
	}
	evs = cur.evs
	b.mu.Unlock()
	write(evs)
	close(cur.done)
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
