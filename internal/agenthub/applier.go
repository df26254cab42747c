package agenthub

import (
	"sync"

	"github.com/berth-dev/berth/internal/agentproto"
)

// maxQueuedUpdates bounds the updates of one link waiting to be applied:
// past it the read loop waits (the agent's writes back up), so that a store
// slower than an agent cannot make the broker hold its updates without end.
const maxQueuedUpdates = 64

// applier applies a link's updates in the order they arrived, off the read
// loop, so that command results are delivered while an update waits for
// the store (a create's result no longer queues behind the write of the
// previous update). Each update is acked once applied, in order (update
// sends the ack).
//
// It keeps no goroutine while idle: one is started when an update arrives
// and none runs, and it ends when the queue is empty. The link's update
// stream state (version, lastSeq, resync) is owned by whichever applier
// goroutine runs; the mutex orders one after the other.
type applier struct {
	mu      sync.Mutex
	queue   []queuedUpdate
	running bool
	space   chan struct{} // closed when the queue is taken; nil: nobody waits
	wg      sync.WaitGroup

	// before holds the IDs of the updates merged into the one being
	// applied, acked ahead of it (owned by the applier goroutine).
	before []string
}

// queuedUpdate is an update waiting to be applied, with its message ID.
type queuedUpdate struct {
	id string
	u  *agentproto.Update
}

// enqueue hands an update to the link's applier, starting its goroutine if
// none runs. It waits while maxQueuedUpdates wait already, and reports
// false if the link closed meanwhile. Only the read loop calls it.
//
// A bare heartbeat (no report, figures or sessions) that finds the applier
// idle is applied here, on the read loop: it only marks the server seen in
// memory (and, if the agent asked, writes a small ack), and starting a
// goroutine for it (and waking a thread to run it) cost more than the
// heartbeat itself, at 1,000 a second from 10,000 idle agents.
func (l *link) enqueue(id string, u *agentproto.Update) bool {
	a := &l.apply
	a.mu.Lock()
	if !a.running && len(a.queue) == 0 && bareHeartbeat(u) {
		a.running = true // orders it with the next update, as a goroutine would
		a.mu.Unlock()
		ok := l.update(id, u)
		a.mu.Lock()
		a.running = false
		a.mu.Unlock()
		return ok
	}
	for len(a.queue) >= maxQueuedUpdates {
		if a.space == nil {
			a.space = make(chan struct{})
		}
		space := a.space
		a.mu.Unlock()
		select {
		case <-space:
		case <-l.ctx.Done():
			return false
		}
		a.mu.Lock()
	}
	a.queue = append(a.queue, queuedUpdate{id, u})
	start := !a.running
	a.running = true
	if start {
		a.wg.Add(1)
	}
	a.mu.Unlock()
	if start {
		go l.applyQueued()
	}
	return true
}

// applyQueued applies queued updates until none is left. Once the link is
// closing, the rest are dropped: the agent sends its full list on its next
// link.
func (l *link) applyQueued() {
	a := &l.apply
	defer a.wg.Done()
	var batch []queuedUpdate
	for {
		a.mu.Lock()
		if len(a.queue) == 0 || l.ctx.Err() != nil {
			a.queue = nil
			a.running = false
			if a.space != nil {
				close(a.space)
				a.space = nil
			}
			a.mu.Unlock()
			return
		}
		// Swap the queue out, so that the read loop appends to a fresh one
		// while these are applied.
		batch, a.queue = a.queue, batch[:0]
		if a.space != nil {
			close(a.space)
			a.space = nil
		}
		a.mu.Unlock()
		for i := 0; i < len(batch); {
			n := l.mergeable(batch[i:])
			if l.ctx.Err() == nil {
				// update closes the link when it reports false: the next
				// round sees l.ctx done and drops the rest.
				l.applyMerged(batch[i : i+n])
			}
			i += n
		}
		clear(batch)
	}
}

// mergeable returns how many updates at the head of q can be applied as
// one (at least 1): on a version 3 link, a run of updates with consecutive
// Seq that carry changes at most (no host report, figures or full list).
// Their changes go to the store together, the later change of a session
// winning, as AgentSessionChanges takes them.
func (l *link) mergeable(q []queuedUpdate) int {
	if l.version < 3 || !changesOnly(q[0].u) {
		return 1
	}
	n := 1
	for n < len(q) && changesOnly(q[n].u) && q[n].u.Seq == q[n-1].u.Seq+1 {
		n++
	}
	return n
}

// bareHeartbeat reports whether u carries nothing but its Seq.
func bareHeartbeat(u *agentproto.Update) bool {
	return changesOnly(u) && len(u.Changes) == 0
}

// changesOnly reports whether u carries session changes at most.
func changesOnly(u *agentproto.Update) bool {
	return u.Host == nil && u.Figures == nil && u.Sessions == nil
}

// applyMerged applies run, updates that mergeable joined, as one: an
// update with the first Seq and every change, acked under the last ID;
// sendAck acks the run's other IDs first, in order, with the same ack.
// The stream then counts on from the run's last Seq, as if each had come
// alone (consecutive, they pass or fail the Seq check together).
func (l *link) applyMerged(run []queuedUpdate) {
	if len(run) == 1 {
		l.update(run[0].id, run[0].u)
		return
	}
	merged := &agentproto.Update{Seq: run[0].u.Seq}
	var ids []string
	for _, q := range run {
		merged.Changes = append(merged.Changes, q.u.Changes...)
		if q.id != "" {
			ids = append(ids, q.id)
		}
	}
	id := ""
	if len(ids) > 0 {
		id, ids = ids[len(ids)-1], ids[:len(ids)-1]
	}
	l.apply.before = ids
	l.update(id, merged)
	l.apply.before = nil
	l.lastSeq = run[len(run)-1].u.Seq
}

// sendAck sends the ack of update id, after the same ack for the IDs of the
// updates merged into it (applyMerged).
func (l *link) sendAck(id string, ack *agentproto.Ack) error {
	for _, b := range l.apply.before {
		if err := l.send(b, ack); err != nil {
			return err
		}
	}
	return l.send(id, ack)
}

// waitApplied waits until no applier goroutine runs. Call it after the read
// loop ended (nothing is enqueued any more).
func (l *link) waitApplied() { l.apply.wg.Wait() }
