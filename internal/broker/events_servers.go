package broker

import (
	"context"
	"sync"
	"time"
)

// availabilityWatch remembers each server's availability as the leader's
// maintenance last saw it, to emit server.availability when it changes.
type availabilityWatch struct {
	mu    sync.Mutex
	known map[string][2]string // server ID → availability, reason
}

// emitServerOpen emits server.opened or server.closed.
func (s *Service) emitServerOpen(ctx context.Context, id string, open, force bool) {
	e := Event{Type: EventServerClosed, ServerID: id}
	if open {
		e.Type = EventServerOpened
	} else if force {
		e.Data = map[string]any{"force": true}
	}
	s.Emit(ctx, e)
}

// noteAvailability emits server.availability for every server whose
// availability or unavailability reason changed since the last call (the
// leader's maintenance; the first call only learns them).
func (s *Service) noteAvailability(ctx context.Context, now time.Time) {
	if !s.eventsOn() {
		return
	}
	counts, err := s.servers.sessionCounts(ctx, s.store, countsMaxAge, now)
	if err != nil {
		return
	}
	w := &s.avail
	w.mu.Lock()
	first := w.known == nil
	seen := make(map[string][2]string, len(w.known))
	var evs []Event
	for _, srv := range s.servers.all() {
		v := s.view(srv, counts, now)
		key := [2]string{v.Availability, v.UnavailabilityReason}
		seen[srv.ID] = key
		if prev, ok := w.known[srv.ID]; !first && prev != key {
			d := map[string]any{"availability": v.Availability}
			if v.UnavailabilityReason != "" {
				d["reason"] = v.UnavailabilityReason
			}
			if ok {
				d["previous"] = prev[0]
			}
			evs = append(evs, Event{Type: EventServerAvailability, ServerID: srv.ID, Data: d})
		}
	}
	w.known = seen
	w.mu.Unlock()
	s.Emit(ctx, evs...)
}
