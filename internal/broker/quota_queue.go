package broker

import (
	"context"
	"time"
)

// QueueEntry is one session waiting in the create queue.
type QueueEntry struct {
	// Position is the session's place in the queue's fair order (1: placed
	// next when it fits).
	Position   int
	SessionID  string
	Owner      string
	EnqueuedAt time.Time
	// Reason is why it waits: a quota that it would exceed now (the
	// quota's failure reason), or that no server has room for it.
	Reason string
}

// ReasonNoCapacity is the QueueEntry.Reason of a session that no quota
// holds back: it waits for a server with room.
const ReasonNoCapacity = "waiting for a server with room"

// Queue lists the sessions waiting in the create queue in the order the
// queue serves them (round-robin across owners), at most the queueBatch
// the queue reads at a time, each with why it waits. Reading the quotas'
// use costs one store read when quotas apply.
func (s *Service) Queue(ctx context.Context) ([]QueueEntry, error) {
	waiting, err := s.store.ListSessions(ctx, queueFilter())
	if err != nil {
		return nil, err
	}
	waiting = s.queueOrder(ctx, waiting)
	qp := s.quotasFor(ctx, waiting)
	if qp != nil {
		if err := qp.load(ctx, s.store); err != nil {
			return nil, err
		}
	}
	out := make([]QueueEntry, len(waiting))
	for i, w := range waiting {
		e := QueueEntry{Position: i + 1, SessionID: w.ID, Owner: w.Owner, EnqueuedAt: w.EnqueuedAt, Reason: ReasonNoCapacity}
		if w.EnqueuedAt.IsZero() {
			e.EnqueuedAt = w.CreationTime
		}
		if qp != nil {
			if err := qp.check(i, w); err != nil {
				e.Reason = quotaReason(err)
			}
		}
		out[i] = e
	}
	return out, nil
}

// quotaWait returns the reason of a quota that sess is over now, "" when
// none is (or it cannot be told): why a queued session waited.
func (s *Service) quotaWait(ctx context.Context, sess *Session) string {
	qp := s.quotasFor(ctx, []*Session{sess})
	if qp == nil || qp.load(ctx, s.store) != nil {
		return ""
	}
	if err := qp.check(0, sess); err != nil {
		return quotaReason(err)
	}
	return ""
}
