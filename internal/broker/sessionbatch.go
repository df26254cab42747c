package broker

import (
	"context"
	"slices"
	"sync"
	"time"
)

// maxBatchSessions bounds the sessions of one group commit; a single call
// with more is committed alone.
const maxBatchSessions = 4096

// sessionBatcher group-commits the agents' session writes: the writes of
// every server that arrive while a transaction runs go to the store
// together, as ONE Store.UpdateSessions transaction, instead of one
// transaction each (SQLite has a single writer; PostgreSQL waits for its
// WAL at every commit). Each caller still gets the results of its own
// sessions, and returns only once they are committed.
//
// A goroutine runs only while writes wait: the first write starts it, and it
// ends once none is left. The zero value is ready.
type sessionBatcher struct {
	mu      sync.Mutex
	pending []*batchCall
	running bool
}

// batchCall is one writeSessions call waiting for, or in, a group commit.
type batchCall struct {
	ctx      context.Context
	serverID string
	ids      []string
	writes   map[string]*sessionWrite

	// Set by the commit, readable once done is closed: the store's results
	// in the order of ids, a failure of the whole transaction, and by index
	// of ids the sessions that ended and those the
	// broker deleted or placed elsewhere while the agent still runs them.
	res     []error
	err     error
	ended   []bool
	orphans []bool
	done    chan struct{}
}

// commit writes c's sessions in the next group commit and waits for it. If
// ctx ends before the commit took c, c is left out and ctx's error
// returned; once taken, commit waits for the transaction (which a cancelled
// context of every caller in it ends).
func (b *sessionBatcher) commit(s *Service, c *batchCall) error {
	c.done = make(chan struct{})
	b.mu.Lock()
	b.pending = append(b.pending, c)
	start := !b.running
	b.running = true
	b.mu.Unlock()
	if start {
		go b.run(s)
	}
	select {
	case <-c.done:
		return c.err
	case <-c.ctx.Done():
	}
	b.mu.Lock()
	if i := slices.Index(b.pending, c); i >= 0 {
		b.pending = slices.Delete(b.pending, i, i+1)
		b.mu.Unlock()
		return c.ctx.Err()
	}
	b.mu.Unlock()
	<-c.done
	return c.err
}

// run commits the waiting calls, as many at a time as fit one batch, until
// none is left.
func (b *sessionBatcher) run(s *Service) {
	for {
		b.mu.Lock()
		if len(b.pending) == 0 {
			b.running = false
			b.mu.Unlock()
			return
		}
		calls := b.take()
		b.mu.Unlock()
		s.commitBatch(calls)
	}
}

// take removes from b.pending the calls of the next batch: in order, those
// that name no session another call in the batch names (UpdateSessions
// takes an ID once; a session two agents report waits for the next batch)
// and fit maxBatchSessions (the first call always goes). b.mu is held.
func (b *sessionBatcher) take() []*batchCall {
	var calls []*batchCall
	rest := b.pending[:0]
	seen := make(map[string]struct{})
	n := 0
	for _, c := range b.pending {
		take := len(calls) == 0 || n+len(c.ids) <= maxBatchSessions
		for _, id := range c.ids {
			if !take {
				break
			}
			_, dup := seen[id]
			take = !dup
		}
		if !take {
			rest = append(rest, c)
			continue
		}
		for _, id := range c.ids {
			seen[id] = struct{}{}
		}
		n += len(c.ids)
		calls = append(calls, c)
	}
	clear(b.pending[len(rest):])
	b.pending = rest
	return calls
}

// commitBatch writes the sessions of calls in one UpdateSessions
// transaction (counted by updateSessions) and hands each call its results.
// The transaction's context ends once every caller's has.
func (s *Service) commitBatch(calls []*batchCall) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(calls[0].ctx))
	defer cancel()
	var mu sync.Mutex
	left := len(calls)
	for _, c := range calls {
		stop := context.AfterFunc(c.ctx, func() {
			mu.Lock()
			left--
			if left == 0 {
				cancel()
			}
			mu.Unlock()
		})
		defer stop()
	}

	type owner struct {
		c *batchCall
		i int
	}
	n := 0
	for _, c := range calls {
		n += len(c.ids)
	}
	ids := make([]string, 0, n)
	owners := make(map[string]owner, n)
	for _, c := range calls {
		c.ended = make([]bool, len(c.ids))
		c.orphans = make([]bool, len(c.ids))
		for i, id := range c.ids {
			ids = append(ids, id)
			owners[id] = owner{c, i}
		}
	}
	now := s.Now()
	res, err := s.updateSessions(ctx, ids, func(x *Session) error { // counts the changes
		o := owners[x.ID]
		return s.applyWrite(o.c, o.i, x, now)
	})
	off := 0
	for _, c := range calls {
		if err != nil {
			c.err = err
		} else {
			c.res = res[off : off+len(c.ids) : off+len(c.ids)]
		}
		off += len(c.ids)
		close(c.done)
	}
}

// applyWrite changes x, the stored session c.ids[i], as c's write of it
// says, and notes in c whether it ended or is an orphan. It may run again
// for the same session (a retried transaction) and then overwrites what it
// noted.
func (s *Service) applyWrite(c *batchCall, i int, x *Session, now time.Time) error {
	w := c.writes[x.ID]
	r := w.report
	c.ended[i] = false
	c.orphans[i] = false
	if x.ServerID != c.serverID || x.State == StateDeleted {
		// Deleted by the broker (possibly with Force while the server was
		// away), or placed elsewhere after a timed-out create.
		c.orphans[i] = r != nil && r.State != StateDeleted
		return errUnchanged
	}
	if r == nil || r.State == StateDeleted {
		reason := w.reason
		switch {
		case r != nil && x.State == StateDeleting:
			reason = "deleted by request" // as the delete's own outcome says
		case r != nil && r.StateReason != "":
			reason = r.StateReason
		case r != nil:
			reason = reasonEnded
		}
		if x.State == StateDeleting && x.StateReason != "" {
			reason = x.StateReason // a policy's deletion keeps its reason
		}
		c.ended[i] = true
		x.State, x.Substate, x.StateReason = StateDeleted, "", reason
		x.Enqueued = false
		x.UpdatedAt = now
		return nil
	}
	if x.State == StateDeleting || !sessionDiffers(x, r) {
		return errUnchanged
	}
	applyReport(x, r, now)
	return nil
}
