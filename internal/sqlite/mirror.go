package sqlite

import (
	"cmp"
	"context"
	"database/sql"
	"maps"
	"slices"
	"sync"

	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/placement"
)

// mirror is a write-through, in-memory copy of the sessions table and of each
// server's tags (which ListSessions filters on) and session limits. A Store
// opened with Open serves GetSession, ListSessions, CountSessions and
// CountByState from it; a DescribeSessions page then costs a binary search
// and a copy of its rows instead of a walk of SQLite's VM through an index
// and the table.
//
// It is coherent because, with SQLite, exactly one broker process owns the
// database file and every write of a session or of a server's tags or limits
// goes through that process's Store: Open takes an exclusive lock on
// <path>.lock, and a NoSessionCache store (the admin commands') refuses those
// writes while the lock is held. The database stays the source of truth:
// writers run their checks (UpdateSession's fn, CommitPlacements' capacity
// checks) in the SQL transaction, and apply what they wrote to the mirror
// after COMMIT, while they still hold the writer, so the mirror applies
// commits in commit order. A writer's transaction therefore reads the mirror
// as the database at its start (txSession, mirror.capacity). Readers hold mu.RLock and so see the mirror before or after a commit,
// never a state that was not committed. A failed COMMIT reloads the mirror.
//
// Rows are never changed once published, except for their dead flag: a write
// replaces a session's row with a new one. Each index keeps its rows sorted by
// Seq, which only grows, so inserts append; removals leave the dead row in
// place until half an index is dead, and compact it then.
type mirror struct {
	mu    sync.RWMutex
	stale bool // not loaded yet, or the last reload failed: serve reads from SQL

	byID     map[string]*row
	all      seqList
	byOwner  map[string]*seqList
	byServer map[string]*seqList // "" holds the unplaced sessions: the queue
	states   map[string]int      // sessions per state
	// tags holds the tags of each server that has some.
	tags map[string]map[string]string
	// limits holds every server's session limits, which CommitPlacements
	// checks placements against.
	limits map[string]placement.Limits
}

func newMirror() *mirror {
	return &mirror{
		byID:     make(map[string]*row),
		byOwner:  make(map[string]*seqList),
		byServer: make(map[string]*seqList),
		states:   make(map[string]int),
		tags:     make(map[string]map[string]string),
		limits:   make(map[string]placement.Limits),
	}
}

// loadMirror reads the sessions and the servers' tags and limits of the
// database in tx.
func loadMirror(ctx context.Context, tx *sql.Tx) (*mirror, error) {
	m := newMirror()
	rows, err := tx.QueryContext(ctx, `SELECT server_id, key, value FROM server_tags`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var id, k, v string
		if err := rows.Scan(&id, &k, &v); err != nil {
			return nil, err
		}
		if m.tags[id] == nil {
			m.tags[id] = make(map[string]string)
		}
		m.tags[id][k] = v
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	rows.Close()

	rows, err = tx.QueryContext(ctx, `SELECT id, max_virtual_sessions, max_sessions_per_user FROM servers`)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var id string
		var l placement.Limits
		if err := rows.Scan(&id, &l.MaxVirtual, &l.MaxPerUser); err != nil {
			return nil, err
		}
		m.limits[id] = l
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	rows.Close()

	rows, err = tx.QueryContext(ctx, `SELECT `+sessionCols+` FROM sessions ORDER BY seq`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	strs := make(map[string]string) // for the load only
	for rows.Next() {
		ss, err := scanSession(rows)
		if err != nil {
			return nil, err
		}
		m.putLocked(scannedRow(ss, strs))
	}
	return m, rows.Err()
}

// isStale reports whether reads must bypass the mirror.
func (m *mirror) isStale() bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.stale
}

// reset replaces m's contents with fresh's if ok, and marks m stale if not.
func (m *mirror) reset(fresh *mirror, ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !ok {
		m.stale = true
		return
	}
	m.stale = false
	m.byID, m.all, m.byOwner, m.byServer = fresh.byID, fresh.all, fresh.byOwner, fresh.byServer
	m.states, m.tags, m.limits = fresh.states, fresh.tags, fresh.limits
}

// drop empties m for good (the store is closing): it stays stale.
func (m *mirror) drop() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.stale = true
	m.byID, m.all, m.byOwner, m.byServer, m.states, m.tags, m.limits = nil, seqList{}, nil, nil, nil, nil, nil
}

// apply runs fn with m locked for writing, unless m is stale.
func (m *mirror) apply(fn func(m *mirror)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.stale {
		fn(m)
	}
}

// putLocked makes r its session's row, replacing the current one if any (with
// the same Seq). m.mu must be held for writing.
func (m *mirror) putLocked(r *row) {
	ol, sl := listFor(m.byOwner, r.owner.Value()), listFor(m.byServer, r.serverID.Value())
	old := m.byID[r.id]
	m.byID[r.id] = r
	m.states[r.state.Value()]++
	sl.active.count(r, 1)
	if old == nil {
		m.all.add(r)
		ol.add(r)
		sl.add(r)
		return
	}
	old.dead = true
	m.countStateLocked(old.state.Value(), -1)
	m.all.replace(r)
	if old.owner == r.owner {
		ol.replace(r)
	} else {
		dropFrom(m.byOwner, old.owner.Value(), old)
		ol.add(r)
	}
	if old.serverID == r.serverID {
		sl.active.count(old, -1)
		sl.replace(r)
	} else {
		if l := dropFrom(m.byServer, old.serverID.Value(), old); l != nil {
			l.active.count(old, -1)
		}
		sl.add(r)
	}
}

// removeLocked removes the session id, if any. m.mu must be held for writing.
func (m *mirror) removeLocked(id string) {
	old := m.byID[id]
	if old == nil {
		return
	}
	delete(m.byID, id)
	old.dead = true
	m.countStateLocked(old.state.Value(), -1)
	m.all.drop(old)
	dropFrom(m.byOwner, old.owner.Value(), old)
	if l := dropFrom(m.byServer, old.serverID.Value(), old); l != nil {
		l.active.count(old, -1)
	}
}

func (m *mirror) countStateLocked(state string, d int) {
	if n := m.states[state] + d; n > 0 {
		m.states[state] = n
	} else {
		delete(m.states, state)
	}
}

// setTagsLocked records the tags of server id (copying them). m.mu must be
// held for writing.
func (m *mirror) setTagsLocked(id string, tags map[string]string) {
	if len(tags) == 0 {
		delete(m.tags, id)
		return
	}
	m.tags[id] = maps.Clone(tags)
}

// get returns a copy of the session id; ok is false if m is stale.
func (m *mirror) get(id string) (ss *broker.Session, found, ok bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.stale {
		return nil, false, false
	}
	r := m.byID[id]
	if r == nil {
		return nil, false, true
	}
	ss = new(broker.Session)
	r.fill(ss, new([]string))
	return ss, true, true
}

// list returns copies of the sessions f selects, ordered by Seq, as
// listSessionsSQL does; ok is false if m is stale.
func (m *mirror) list(f broker.SessionFilter) (out []*broker.Session, ok bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.stale {
		return nil, false
	}
	var rows []*row
	if len(f.IDs) > 0 {
		for _, id := range f.IDs {
			if r := m.byID[id]; r != nil && r.seq > f.AfterSeq && m.matchLocked(r, &f) {
				rows = append(rows, r)
			}
		}
		slices.SortFunc(rows, func(a, b *row) int { return cmp.Compare(a.seq, b.seq) })
		rows = slices.Compact(rows) // IDs may repeat
		if f.Limit > 0 && len(rows) > f.Limit {
			rows = rows[:f.Limit]
		}
	} else if l := m.indexLocked(&f); l != nil {
		for _, r := range l.rows[l.after(f.AfterSeq):] {
			if r.dead || !m.matchLocked(r, &f) {
				continue
			}
			rows = append(rows, r)
			if len(rows) == f.Limit {
				break
			}
		}
	}
	if len(rows) == 0 {
		return nil, true
	}
	buf := make([]broker.Session, len(rows))
	out = make([]*broker.Session, len(rows))
	n := 0
	for _, r := range rows {
		n += r.strings()
	}
	strs := make([]string, 0, n)
	for i, r := range rows {
		r.fill(&buf[i], &strs)
		out[i] = &buf[i]
	}
	return out, true
}

// indexLocked returns the smallest index that holds every session f selects,
// or nil if f selects none.
func (m *mirror) indexLocked(f *broker.SessionFilter) *seqList {
	best := &m.all
	for _, c := range []struct {
		use bool
		idx map[string]*seqList
		key string
	}{
		{f.Owner != "", m.byOwner, f.Owner},
		{f.ServerID != "", m.byServer, f.ServerID},
		{f.Unplaced, m.byServer, ""},
	} {
		if !c.use {
			continue
		}
		l := c.idx[c.key]
		if l == nil {
			return nil
		}
		if len(l.rows) < len(best.rows) {
			best = l
		}
	}
	return best
}

// matchLocked reports whether f selects r, but for AfterSeq and Limit.
func (m *mirror) matchLocked(r *row, f *broker.SessionFilter) bool {
	switch {
	case f.Owner != "" && r.owner.Value() != f.Owner,
		f.ServerID != "" && r.serverID.Value() != f.ServerID,
		f.Unplaced && r.serverID.Value() != "",
		len(f.States) > 0 && !slices.Contains(f.States, r.state.Value()),
		!f.DueBefore.IsZero() && (r.more == nil || r.more.dueAt == 0 || r.more.dueAt > f.DueBefore.UnixMilli()):
		return false
	}
	if len(f.Tags) > 0 {
		tags := m.tags[r.serverID.Value()]
		for k, v := range f.Tags {
			if tv, ok := tags[k]; !ok || tv != v {
				return false
			}
		}
	}
	return true
}

// countSessions returns what CountSessions returns; ok is false if m is
// stale.
func (m *mirror) countSessions() (out map[string]broker.Counts, ok bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.stale {
		return nil, false
	}
	out = make(map[string]broker.Counts, len(m.byServer))
	for id, l := range m.byServer {
		if id != "" && len(l.active.byOwner) > 0 {
			out[id] = l.active.counts()
		}
	}
	return out, true
}

// capacity returns server's limits and its active sessions as capacitySQL
// counts them for a placement of owner: VIRTUAL, CONSOLE and owner's of any
// type, leaving out session skip (the one being placed). found is false for
// an unknown server, ok false if m is stale.
func (m *mirror) capacity(server, owner, skip string) (l placement.Limits, c placement.Counts, found, ok bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.stale {
		return l, c, false, false
	}
	if l, found = m.limits[server]; !found {
		return l, c, false, true
	}
	sl := m.byServer[server]
	if sl == nil {
		return l, c, true, true
	}
	c.Virtual, c.Console = sl.active.virtual, sl.active.console
	for _, oc := range sl.active.byOwner {
		if oc.owner.Value() == owner {
			c.Owned = oc.n
			break
		}
	}
	if r := m.byID[skip]; r != nil && r.serverID.Value() == server && r.state != stateDeleted {
		// Counted above, as capacitySQL's seq != ? leaves it out.
		switch r.typ {
		case typeVirtual:
			c.Virtual--
		case typeConsole:
			c.Console--
		}
		if r.owner.Value() == owner {
			c.Owned--
		}
	}
	return l, c, true, true
}

// setLimitsLocked records server id's limits; m.mu must be held for
// writing.
func (m *mirror) setLimitsLocked(id string, info *broker.ServerInfo) {
	m.limits[id] = placement.Limits{MaxVirtual: info.MaxVirtualSessions, MaxPerUser: info.MaxConcurrentSessionsPerUser}
}

// countByState returns what CountByState returns; ok is false if m is stale.
func (m *mirror) countByState() (map[string]int, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.stale {
		return nil, false
	}
	return maps.Clone(m.states), true
}
