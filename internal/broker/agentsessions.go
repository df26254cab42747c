package broker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/berth-dev/berth/internal/logattr"
)

// reasonEnded is the StateReason of a session that its agent reported ended
// without a reason of its own.
const reasonEnded = "the session ended on the server"

// AgentSessionChanges applies an agent's session changes: the sessions that
// are new or changed on the host since its previous report, as they are now,
// and those that ended, in state DELETED (the deltas of agent protocol
// version 3). It reads and writes only the changed sessions, in one store
// transaction, and never the server's other sessions: a change to a session
// the broker deleted or placed elsewhere deletes it on the host, and one the
// broker does not know is adopted. It returns an error only when the store
// failed; the caller then asks the agent for its full list, which
// AgentUpdate reconciles.
func (s *Service) AgentSessionChanges(ctx context.Context, serverID string, changes []SessionReport) error {
	s.servers.seen(serverID, s.Now())
	if len(changes) == 0 {
		return nil
	}
	s.learnGroups(changes)
	writes := make(map[string]*sessionWrite, len(changes))
	ids := make([]string, 0, len(changes))
	for i := range changes {
		r := &changes[i]
		if _, dup := writes[r.ID]; !dup {
			ids = append(ids, r.ID)
		}
		writes[r.ID] = &sessionWrite{report: r} // the last report of a session wins
	}
	res, err := s.writeSessions(ctx, serverID, ids, writes)
	if err != nil {
		return err
	}
	var unknown []*SessionReport
	for i, id := range ids {
		if r := writes[id].report; errors.Is(res[i], ErrNotFound) && r.State != StateDeleted {
			unknown = append(unknown, r)
		}
	}
	if len(unknown) > 0 {
		s.adoptAll(ctx, serverID, unknown, s.Now())
	}
	return nil
}

// sessionWrite is one change that an agent's report makes to a session of
// its server.
type sessionWrite struct {
	// report is the agent's view of the session; nil marks the session
	// DELETED with reason (it is missing from the agent's full list).
	report *SessionReport
	reason string
}

// writeSessions writes the changes of serverID's sessions named by ids in
// a store transaction, shared with the writes of other servers that arrive
// meanwhile (sessionbatch.go), and then does what follows from them: it
// releases the session counts of those that ended, wakes the placement
// queue, and deletes on the host the sessions that the broker deleted or
// placed on another server. The results are the store's, in the order of
// ids.
func (s *Service) writeSessions(ctx context.Context, serverID string, ids []string, writes map[string]*sessionWrite) ([]error, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	c := &batchCall{ctx: ctx, serverID: serverID, ids: ids, writes: writes}
	if err := s.batch.commit(s, c); err != nil {
		return nil, fmt.Errorf("record sessions of server %q: %w", serverID, err)
	}
	released := false
	for i, id := range ids {
		switch {
		case c.res[i] == nil:
			released = released || c.ended[i]
		case errors.Is(c.res[i], errUnchanged) && c.orphans[i]:
			s.log.Info("deleting orphan session on server", logattr.SessionID, id, logattr.ServerID, serverID)
			s.queueDelete(deleteJob{sessionID: id, serverID: serverID, orphan: true})
		}
	}
	if released {
		s.wakeQueue()
	}
	return c.res, nil
}

// adoptAll records sessions that serverID's agent runs and that the store
// does not know, in one transaction; if one of them appeared meanwhile, it
// adopts them one by one.
func (s *Service) adoptAll(ctx context.Context, serverID string, rs []*SessionReport, now time.Time) {
	defer s.servers.tally.begin()()
	ss := make([]*Session, 0, len(rs))
	for _, r := range rs {
		ss = append(ss, adoptedSession(serverID, r, now))
		s.stampDue(ctx, ss[len(ss)-1])
	}
	s.attachNew(ss)
	err := s.store.InsertSessions(ctx, ss)
	s.eventsWritten(ss...)
	switch {
	case errors.Is(err, ErrConflict):
		for _, r := range rs {
			s.adopt(ctx, serverID, r, now)
		}
		return
	case err != nil:
		s.log.Error("adopt sessions", logattr.ServerID, serverID, "sessions", len(ss), "err", err)
		return
	}
	s.sessionsInserted(ss)
	for _, x := range ss {
		s.log.Info("adopted session created on the server", logattr.SessionID, x.ID, logattr.ServerID, serverID)
	}
}

// adoptedSession is the record of a session that an agent runs and the
// broker did not know.
func adoptedSession(serverID string, r *SessionReport, now time.Time) *Session {
	typ := r.Type
	if typ == "" {
		typ = TypeVirtual
	}
	created := r.CreationTime
	if created.IsZero() {
		created = now
	}
	x := &Session{ID: r.ID, Name: r.Name, Owner: r.Owner, Type: typ, ServerID: serverID,
		MaxConcurrentClients: r.MaxConcurrentClients, StorageRoot: r.StorageRoot,
		CreationTime: created, UpdatedAt: now}
	applyReport(x, r, now)
	return x
}
