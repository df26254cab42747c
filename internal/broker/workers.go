package broker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/berth-dev/berth/internal/logattr"
	"github.com/berth-dev/berth/internal/requirements"
)

func (s *Service) queueCreate(id string) {
	if !s.creates.push(id) {
		// The backlog is full; the session stays CREATING and is re-sent when
		// its agent reconnects or the queue loop finds it.
		s.log.Warn("create backlog full", logattr.SessionID, id)
	}
}

func (s *Service) queueDelete(j deleteJob) {
	if !s.deletes.push(j) {
		s.log.Warn("delete backlog full", logattr.SessionID, j.sessionID)
	}
}

// The create pipeline. Placement commits sessions CREATING/PENDING_PREPARATION
// on their server, and they reach createLoop through s.creates. It takes them
// in batches of up to createBatchMax (whatever has queued up while the
// previous batch was read), checks each batch with one store read that they
// are still CREATING on a server (not deleted or sent back to the queue
// meanwhile), and hands them to senders: per server, up to createsPerServer create
// commands are outstanding at once (agents run at most 64 commands at once
// and answer more with "agent busy"), and across all servers up to
// Config.CreateWorkers. A sender that finishes a command takes the next one
// of its server, so a batch for few servers and one for many both flow.
const (
	createBatchMax   = 1000
	createsPerServer = 32
)

// createQueue holds the sessions of one server waiting for a sender.
type createQueue struct {
	pending []*Session
	senders int
}

// createLoop runs the create pipeline until ctx ends.
func (s *Service) createLoop(ctx context.Context) {
	batch := make([]string, 0, createBatchMax)
	for {
		batch = batch[:0]
		id, ok := s.creates.pop(ctx)
		if !ok {
			return
		}
		batch = append(batch, id)
		for len(batch) < createBatchMax {
			id, ok := s.creates.tryPop()
			if !ok {
				break
			}
			batch = append(batch, id)
		}
		s.startCreates(ctx, batch)
	}
}

// startCreates reads the sessions named by ids, in one store read, and
// hands those still CREATING on a server to the senders. Placement committed
// them CREATING/PENDING_PREPARATION already, so sending costs no write.
// Sessions whose create is outstanding already are skipped.
func (s *Service) startCreates(ctx context.Context, ids []string) {
	todo := ids[:0:0]
	for _, id := range ids {
		if _, busy := s.inflight.LoadOrStore(id, struct{}{}); !busy {
			todo = append(todo, id)
		}
	}
	if len(todo) == 0 {
		return
	}
	ss, err := s.store.ListSessions(ctx, SessionFilter{IDs: todo, States: []string{StateCreating}})
	if err != nil {
		if ctx.Err() == nil {
			s.log.Error("read sessions to create", "sessions", len(todo), "err", err)
		}
		for _, id := range todo {
			s.inflight.Delete(id)
		}
		return
	}
	send := make(map[string]*Session, len(ss))
	for _, x := range ss {
		if x.ServerID != "" {
			send[x.ID] = x
		}
	}
	for _, id := range todo {
		if sess := send[id]; sess != nil {
			s.queueSend(ctx, sess)
		} else {
			s.inflight.Delete(id) // deleted, or back in the queue, meanwhile
		}
	}
}

// queueSend hands a session to its server's senders, starting one if the
// server has fewer than createsPerServer. Starting one waits for a slot of
// Config.CreateWorkers.
func (s *Service) queueSend(ctx context.Context, sess *Session) {
	s.sendMu.Lock()
	q := s.sendQueues[sess.ServerID]
	if q == nil {
		if s.sendQueues == nil {
			s.sendQueues = make(map[string]*createQueue)
		}
		q = &createQueue{}
		s.sendQueues[sess.ServerID] = q
	}
	q.pending = append(q.pending, sess)
	start := q.senders < createsPerServer
	if start {
		q.senders++
	}
	s.sendMu.Unlock()
	if !start {
		return
	}
	select {
	case s.sendSlots <- struct{}{}:
	case <-ctx.Done():
		s.sendMu.Lock()
		q.senders--
		s.sendMu.Unlock()
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer func() { <-s.sendSlots }()
		s.sendCreates(ctx, sess.ServerID, q)
	}()
}

// sendCreates sends the creates of one server's queue one after the other
// until the queue is empty.
func (s *Service) sendCreates(ctx context.Context, serverID string, q *createQueue) {
	for {
		s.sendMu.Lock()
		if len(q.pending) == 0 || ctx.Err() != nil {
			q.senders--
			if q.senders == 0 && s.sendQueues[serverID] == q {
				delete(s.sendQueues, serverID)
			}
			for _, x := range q.pending {
				s.inflight.Delete(x.ID)
			}
			q.pending = nil
			s.sendMu.Unlock()
			return
		}
		sess := q.pending[0]
		q.pending[0] = nil
		q.pending = q.pending[1:]
		s.sendMu.Unlock()
		s.runCreate(ctx, sess)
		s.inflight.Delete(sess.ID)
	}
}

// runCreate sends one placed session's create command to its agent and records
// the outcome; on failure it retries the session on another server.
func (s *Service) runCreate(ctx context.Context, sess *Session) {
	id := sess.ID
	cctx, cancel := context.WithTimeout(ctx, s.cfg.CreateTimeout)
	_, err := s.disp.Dispatch(cctx, sess.ServerID, Command{Kind: CommandCreate, SessionID: sess.ID, Create: &CreateCommand{
		Name: sess.Name, Owner: sess.Owner, Type: sess.Type, MaxConcurrentClients: sess.MaxConcurrentClients,
		StorageRoot: sess.StorageRoot, Spec: sess.Spec,
	}})
	cancel()
	if ctx.Err() != nil {
		return // shutting down: the agent reconciles on the next start
	}
	if err == nil {
		return // the agent's session report moves it to READY
	}
	reason := s.commandFailure(err)
	s.metrics().CreateFailed(createFailure(err))
	s.log.Warn("session create failed", logattr.SessionID, id, logattr.ServerID, sess.ServerID, "reason", reason)
	s.retryOrFail(ctx, id, sess.ServerID, reason)
}

// retryOrFail sends a failed session back to placement, excluding the server
// that failed, or marks it DELETED when retries are off or used up.
func (s *Service) retryOrFail(ctx context.Context, id, serverID, reason string) {
	now := s.Now()
	retry := false
	err := s.updateSession(ctx, id, func(x *Session) error {
		if x.State != StateCreating || x.ServerID != serverID {
			return errUnchanged
		}
		x.Attempts++
		x.UpdatedAt = now
		msg := fmt.Sprintf("create failed on server %s: %s", serverID, reason)
		if x.Spec.DisableRetryOnFailure || x.Attempts > s.cfg.Retries {
			x.State, x.Substate, x.StateReason = StateDeleted, "", msg
			return nil
		}
		x.Excluded = append(x.Excluded, serverID)
		x.ServerID, x.Substate, x.StateReason = "", SubstatePlacing, msg
		retry = true
		return nil
	})
	if err != nil && !errors.Is(err, errUnchanged) {
		s.log.Error("record failed create", logattr.SessionID, id, "err", err)
		return
	}
	if retry {
		s.wakeQueue()
	} else if err == nil {
		s.metrics().PlacementFailed(FailCreate)
	}
}

func (s *Service) deleteWorker(ctx context.Context) {
	for {
		j, ok := s.deletes.pop(ctx)
		if !ok {
			return
		}
		if _, busy := s.deleting.LoadOrStore(j.sessionID, struct{}{}); busy {
			continue
		}
		s.runDelete(ctx, j)
		s.deleting.Delete(j.sessionID)
	}
}

func (s *Service) runDelete(ctx context.Context, j deleteJob) {
	cctx, cancel := context.WithTimeout(ctx, s.cfg.CommandTimeout)
	_, err := s.disp.Dispatch(cctx, j.serverID, Command{Kind: CommandDelete, SessionID: j.sessionID})
	cancel()
	if j.orphan {
		if err != nil && !errors.Is(err, ErrAgentUnreachable) {
			s.log.Warn("delete session on server", logattr.SessionID, j.sessionID, logattr.ServerID, j.serverID, "reason", s.commandFailure(err))
		}
		return
	}
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		reason := s.commandFailure(err)
		s.log.Warn("session delete failed", logattr.SessionID, j.sessionID, logattr.ServerID, j.serverID, "reason", reason)
		// Back to READY with the reason; the client may retry (or Force).
		_ = s.updateSession(ctx, j.sessionID, func(x *Session) error {
			if x.State != StateDeleting {
				return errUnchanged
			}
			x.State, x.StateReason = StateReady, "delete failed: "+reason
			return nil
		})
		return
	}
	s.setDeleted(ctx, j.sessionID, "deleted by request")
}

// queueLoop places sessions waiting for a server (EnqueueRequest, or a retry
// after a failed create) whenever capacity may have changed, and expires those
// that waited too long.
func (s *Service) queueLoop(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.wakeQ:
		}
		if !s.leader(ctx) {
			continue
		}
		if err := s.processQueue(ctx); err != nil && ctx.Err() == nil {
			s.log.Error("process create queue", "err", err)
		}
	}
}

// queueBatch bounds the waiting sessions one pass of the queue reads.
const queueBatch = 5000

// queueFilter reads the create queue: the sessions waiting for a server, in
// the store's insertion order (Seq); fairOrder gives the order the queue
// places them in.
func queueFilter() SessionFilter {
	return SessionFilter{Unplaced: true, States: []string{StateCreating}, Limit: queueBatch}
}

// fairOrder orders the waiting sessions (in Seq order) round-robin across
// owners, counting what each owner already runs: the k-th waiting session
// of an owner with r active placed sessions goes in round r+k, and a round
// is in Seq order. One owner's batch of 500 then waits behind one session
// of each other owner, not the other way round, also when room comes one
// session at a time (the owner whose session was just placed has one more
// running). It reorders waiting in place and returns it.
func fairOrder(waiting []*Session, running map[string]int) []*Session {
	if len(waiting) < 2 {
		return waiting
	}
	round := make(map[*Session]int, len(waiting))
	nth := make(map[string]int)
	for _, w := range waiting {
		round[w] = running[w.Owner] + nth[w.Owner]
		nth[w.Owner]++
	}
	if len(nth) < 2 {
		return waiting // one owner: Seq order already
	}
	slices.SortStableFunc(waiting, func(a, b *Session) int {
		if c := cmp.Compare(round[a], round[b]); c != 0 {
			return c
		}
		return cmp.Compare(a.Seq, b.Seq)
	})
	return waiting
}

// queueOrder puts waiting in the queue's fair order (fairOrder), with the
// owners' active placed sessions from the kept counts (none counted when
// they cannot be read).
func (s *Service) queueOrder(ctx context.Context, waiting []*Session) []*Session {
	if len(waiting) < 2 {
		return waiting
	}
	var running map[string]int
	if counts, err := s.servers.sessionCounts(ctx, s.store, countsMaxAge, s.Now()); err == nil {
		running = make(map[string]int)
		for _, c := range counts {
			for o, n := range c.ByOwner {
				running[o] += n
			}
		}
	}
	return fairOrder(waiting, running)
}

// QueuePositions returns the place of each session waiting in the create
// queue (1: placed next, in the queue's fair order) and how many wait (at
// most the queueBatch the queue reads at a time).
func (s *Service) QueuePositions(ctx context.Context) (map[string]int, int, error) {
	waiting, err := s.store.ListSessions(ctx, queueFilter())
	if err != nil {
		return nil, 0, err
	}
	waiting = s.queueOrder(ctx, waiting)
	pos := make(map[string]int, len(waiting))
	for i, w := range waiting {
		pos[w.ID] = i + 1
	}
	return pos, len(waiting), nil
}

func (s *Service) processQueue(ctx context.Context) error {
	waiting, err := s.store.ListSessions(ctx, queueFilter())
	if err != nil || len(waiting) == 0 {
		return err
	}
	// The servers' room is read before the waiting sessions it goes to,
	// so that a pass whose first read of the queue is slow never gives room
	// that came after a session arrived to the sessions behind it (every
	// change of room wakes the queue for another pass). Reading the queue
	// twice costs only while sessions wait.
	hosts, err := s.snapshot(ctx, false)
	if err != nil {
		return err
	}
	if waiting, err = s.store.ListSessions(ctx, queueFilter()); err != nil || len(waiting) == 0 {
		return err
	}
	waiting = s.queueOrder(ctx, waiting)
	now := s.Now()
	var todo []*Session
	var exprs []*requirements.Expr
	for _, sess := range waiting {
		if sess.Enqueued && now.Sub(sess.EnqueuedAt) > s.cfg.QueueMaxTime {
			msg := fmt.Sprintf("no DCV server became available within %s (create-sessions-queue-max-time-seconds)", s.cfg.QueueMaxTime)
			if q := s.quotaWait(ctx, sess); q != "" {
				msg = fmt.Sprintf("waited %s in the queue (create-sessions-queue-max-time-seconds), still over %s", s.cfg.QueueMaxTime, q)
			}
			s.setDeleted(ctx, sess.ID, msg)
			s.metrics().PlacementFailed(FailQueueTimeout)
			s.Emit(ctx, s.refusedEvents(nil, sess, placeFailure{msg, FailQueueTimeout})...)
			continue
		}
		var expr *requirements.Expr
		if sess.Spec.Requirements != "" {
			if expr, err = s.compile(sess.Spec.Requirements); err != nil {
				s.setDeleted(ctx, sess.ID, "Requirements: "+err.Error())
				continue
			}
		}
		todo = append(todo, sess)
		exprs = append(exprs, expr)
	}
	if len(todo) == 0 {
		return nil
	}
	since := queuedSince(todo)
	placed, failed, err := s.place(ctx, todo, exprs, false, hosts)
	if err != nil {
		return err
	}
	s.observeQueueWaits(placed, since, s.Now())
	for i, sess := range todo {
		f, bad := failed[i]
		if !bad || sess.Enqueued {
			continue
		}
		if sess.Spec.EnqueueRequest {
			// A retried session that asked to queue waits like a new one.
			_ = s.updateSession(ctx, sess.ID, func(x *Session) error {
				if x.ServerID != "" || x.State != StateCreating {
					return errUnchanged
				}
				x.Enqueued, x.EnqueuedAt = true, now
				return nil
			})
			continue
		}
		msg := f.msg
		if sess.StateReason != "" {
			msg = sess.StateReason + "; no other server to retry on: " + f.msg
		}
		s.setDeleted(ctx, sess.ID, msg)
		s.metrics().PlacementFailed(FailCreate)
	}
	for _, sess := range placed {
		s.queueCreate(sess.ID)
	}
	return nil
}

// Redrive sends again the creates and deletes that no worker of this broker
// is running: those of sessions CREATING on a server or DELETING. A broker
// of a cluster calls it when another broker died, whose in-memory work would
// otherwise be lost; agents treat a repeated create or delete of the same
// session as one. olderThan skips sessions updated more recently (zero: all).
func (s *Service) Redrive(ctx context.Context, olderThan time.Duration) {
	ss, err := s.store.ListSessions(ctx, SessionFilter{States: []string{StateCreating, StateDeleting}})
	if err != nil {
		s.log.Error("list sessions to send again", "err", err)
		return
	}
	cutoff := s.Now().Add(-olderThan)
	n := 0
	for _, x := range ss {
		if x.ServerID == "" || (olderThan > 0 && x.UpdatedAt.After(cutoff)) {
			continue
		}
		switch x.State {
		case StateCreating:
			if _, busy := s.inflight.Load(x.ID); !busy {
				s.queueCreate(x.ID)
				n++
			}
		case StateDeleting:
			if _, busy := s.deleting.Load(x.ID); !busy {
				s.queueDelete(deleteJob{sessionID: x.ID, serverID: x.ServerID})
				n++
			}
		}
	}
	if n > 0 {
		s.log.Info("sent creates and deletes again", "sessions", n)
	}
}
