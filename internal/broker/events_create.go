package broker

import "time"

// refusedEvents appends to evs the events of a create that found no server:
// placement.failed, and quota.refused when a quota refused it. Nothing when
// events are off.
func (s *Service) refusedEvents(evs []Event, sess *Session, f placeFailure) []Event {
	if !s.eventsOn() {
		return evs
	}
	d := map[string]any{"reason": f.msg, "code": f.reason}
	if f.reason == FailQuota {
		evs = append(evs, Event{Type: EventQuotaRefused, SessionID: sess.ID, Owner: sess.Owner, Data: d})
	}
	return append(evs, Event{Type: EventPlacementFailed, SessionID: sess.ID, Owner: sess.Owner, Data: d})
}

// attachQueued adds a placement.queued event to each queued session, after
// its session.state event, to be written with it: why it waits (failed holds
// the failures by index in pending).
func (s *Service) attachQueued(queued []*Session, failed map[int]placeFailure, pending []*Session) {
	if !s.eventsOn() {
		return
	}
	now := s.Now().UTC()
	for _, sess := range queued {
		f := failed[indexOf(pending, sess)]
		d := map[string]any{"reason": f.msg, "code": f.reason}
		sess.Events = append(sess.Events, &Event{Time: now, Type: EventPlacementQueued, SessionID: sess.ID, Owner: sess.Owner, Data: d})
		if f.reason == FailQuota {
			sess.Events = append(sess.Events, &Event{Time: now, Type: EventQuotaRefused, SessionID: sess.ID, Owner: sess.Owner, Data: d})
		}
	}
}

// policyEvent is the event of what a lifetime policy did to sess:
// lifetime.warning for a warning, lifetime.action for an idle
// disconnection or a deletion. The policies' loop emits a tick's events
// together (one store write for the tick, not one per session).
func policyEvent(sess *Session, dec PolicyDecision) Event {
	e := Event{Type: EventLifetimeWarning, SessionID: sess.ID, ServerID: sess.ServerID, Owner: sess.Owner,
		Data: map[string]any{"policy": dec.Policy, "reason": dec.Reason}}
	switch dec.Action {
	case PolicyWarn:
		if !dec.Deadline.IsZero() {
			e.Data["deadline"] = dec.Deadline.UTC().Format(time.RFC3339)
		}
	case PolicyDisconnectIdle:
		e.Type, e.Data["action"] = EventLifetimeAction, ActionDisconnect
	case PolicyDelete:
		e.Type, e.Data["action"] = EventLifetimeAction, ActionDelete
	}
	return e
}
