package sqlite

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/berth-dev/berth/internal/broker"
)

// mirror is a write-through, in-memory copy of the sessions table and of each
// server's tags (which ListSessions filters on). A Store opened with Open
// serves GetSession, ListSessions, CountSessions and CountByState from it; a
// DescribeSessions page then costs a binary search and a copy of its rows
// instead of a walk of SQLite's VM through an index and the table.
//
// It is coherent because, with SQLite, exactly one broker process owns the
// database file and every write of a session or of a server's tags goes
// through that process's Store: Open takes an exclusive lock on <path>.lock,
// and a NoSessionCache store (the admin commands') refuses those writes while
// the lock is held. The database stays the source of truth: writers run their
// checks and reads (UpdateSession's fn, CommitPlacements' capacity checks) in
// the SQL transaction, and apply what they wrote to the mirror after COMMIT,
// while they still hold the writer, so the mirror applies commits in commit
// order. Readers hold mu.RLock and so see the mirror before or after a commit,
// never a state that was not committed. A failed COMMIT reloads the mirror.
//
// Rows are never changed once published, except for their dead flag: a write
// replaces a session's row with a new one. Each index keeps its rows sorted by
// Seq, which only grows, so inserts append; removals leave the dead row in
// place until half an index is dead, and compact it then.
type mirror struct {
	mu    sync.RWMutex
	stale bool // the last reload failed: serve reads from SQL

	byID     map[string]*row
	all      seqList
	byOwner  map[string]*seqList
	byServer map[string]*seqList // "" holds the unplaced sessions: the queue
	states   map[string]int      // sessions per state
	// tags holds the tags of each server that has some.
	tags map[string]map[string]string
}

func newMirror() *mirror {
	return &mirror{
		byID:     make(map[string]*row),
		byOwner:  make(map[string]*seqList),
		byServer: make(map[string]*seqList),
		states:   make(map[string]int),
		tags:     make(map[string]map[string]string),
	}
}

// loadMirror reads the sessions and server tags of the database in tx.
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

	rows, err = tx.QueryContext(ctx, `SELECT `+sessionCols+` FROM sessions ORDER BY seq`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		ss, err := scanSession(rows)
		if err != nil {
			return nil, err
		}
		m.putLocked(scannedRow(ss))
	}
	return m, rows.Err()
}

// row is one session as the database holds it (what scanSession returns), in
// less memory: times are unix milliseconds (0: zero time), an empty Excluded
// is nil and a zero Spec is nil.
type row struct {
	seq int64
	id  string

	name, owner, typ, serverID           string
	state, substate, stateReason         string
	storageRoot                          string
	maxConcurrentClients, numConnections int64
	// Times in unix milliseconds.
	creation, lastDisconnection, updated, enqueuedAt int64
	attempts                                         int
	enqueued                                         bool
	// dead marks a row that is no longer its session's (deleted or replaced);
	// the indexes skip it until they compact. Changed only with mu held.
	dead     bool
	excluded []string
	spec     *broker.SessionSpec
}

// rowFields reads the fields of ss that are columns, not the JSON ones.
func rowFields(seq int64, id string, ss *broker.Session) *row {
	return &row{
		seq: seq, id: id, name: ss.Name, owner: ss.Owner, typ: internConst(ss.Type), serverID: ss.ServerID,
		state: internConst(ss.State), substate: internConst(ss.Substate), stateReason: ss.StateReason,
		storageRoot: ss.StorageRoot, maxConcurrentClients: ss.MaxConcurrentClients,
		numConnections: ss.NumOfConnections, creation: toMillis(ss.CreationTime),
		lastDisconnection: toMillis(ss.LastDisconnectionTime), updated: toMillis(ss.UpdatedAt),
		enqueuedAt: toMillis(ss.EnqueuedAt), attempts: ss.Attempts, enqueued: ss.Enqueued,
	}
}

// scannedRow makes a row of a session scanSession returned; the row takes
// over its slices.
func scannedRow(ss *broker.Session) *row {
	r := rowFields(ss.Seq, ss.ID, ss)
	if len(ss.Excluded) > 0 {
		r.excluded = ss.Excluded
	}
	if !reflect.ValueOf(ss.Spec).IsZero() {
		sp := ss.Spec
		r.spec = &sp
	}
	return r
}

// writtenRow makes the row that scanSession would return once ss has been
// written with Seq seq and ID id, its Excluded and Spec stored as the JSON
// excluded and spec (see sessionArgs). It copies what it keeps of ss's slices.
func writtenRow(seq int64, id string, ss *broker.Session, excluded, spec string) (*row, error) {
	r := rowFields(seq, id, ss)
	// json.Marshal writes invalid UTF-8 as \ufffd, which does not decode back
	// to the original; without one the JSON decodes to an equal value.
	switch {
	case len(excluded) <= 2: // "[]"
	case strings.Contains(excluded, `\ufffd`):
		if err := json.Unmarshal([]byte(excluded), &r.excluded); err != nil {
			return nil, fmt.Errorf("decode excluded: %w", err)
		}
	default:
		r.excluded = slices.Clone(ss.Excluded)
	}
	switch {
	case len(spec) <= 2: // "{}"
	case strings.Contains(spec, `\ufffd`):
		r.spec = new(broker.SessionSpec)
		if err := json.Unmarshal([]byte(spec), r.spec); err != nil {
			return nil, fmt.Errorf("decode spec: %w", err)
		}
	default:
		sp := ss.Spec
		sp.AutorunFileArguments = nil
		if len(ss.Spec.AutorunFileArguments) > 0 {
			sp.AutorunFileArguments = slices.Clone(ss.Spec.AutorunFileArguments)
		}
		r.spec = &sp
	}
	return r, nil
}

// internConst returns the package constant equal to v, if any, so that rows
// share one copy of the common states and types.
func internConst(v string) string {
	switch v {
	case broker.StateCreating:
		return broker.StateCreating
	case broker.StateReady:
		return broker.StateReady
	case broker.StateDeleting:
		return broker.StateDeleting
	case broker.StateDeleted:
		return broker.StateDeleted
	case broker.StateUnknown:
		return broker.StateUnknown
	case broker.SubstatePlacing:
		return broker.SubstatePlacing
	case broker.SubstatePendingPreparation:
		return broker.SubstatePendingPreparation
	case broker.TypeVirtual:
		return broker.TypeVirtual
	case broker.TypeConsole:
		return broker.TypeConsole
	}
	return v
}

// fill sets ss to the session r holds, with its own copies of the slices.
func (r *row) fill(ss *broker.Session) {
	*ss = broker.Session{
		Seq: r.seq, ID: r.id, Name: r.name, Owner: r.owner, Type: r.typ, ServerID: r.serverID,
		State: r.state, Substate: r.substate, StateReason: r.stateReason,
		MaxConcurrentClients: r.maxConcurrentClients, StorageRoot: r.storageRoot,
		CreationTime: fromMillis(r.creation), LastDisconnectionTime: fromMillis(r.lastDisconnection),
		NumOfConnections: r.numConnections, UpdatedAt: fromMillis(r.updated), Attempts: r.attempts,
		Enqueued: r.enqueued, EnqueuedAt: fromMillis(r.enqueuedAt),
	}
	if len(r.excluded) > 0 {
		ss.Excluded = slices.Clone(r.excluded)
	}
	if r.spec != nil {
		ss.Spec = *r.spec
		if len(r.spec.AutorunFileArguments) > 0 {
			ss.Spec.AutorunFileArguments = slices.Clone(r.spec.AutorunFileArguments)
		}
	}
}

// seqList is an index: rows sorted by Seq, dead ones among them.
type seqList struct {
	key  string // the owner or server ID its rows share
	rows []*row
	dead int
}

func (l *seqList) live() int { return len(l.rows) - l.dead }

// search returns the index of the row with Seq seq, or where it would go.
func (l *seqList) search(seq int64) (int, bool) {
	return slices.BinarySearchFunc(l.rows, seq, func(r *row, seq int64) int { return cmp.Compare(r.seq, seq) })
}

// after returns the index of the first row with Seq > seq.
func (l *seqList) after(seq int64) int {
	return sort.Search(len(l.rows), func(i int) bool { return l.rows[i].seq > seq })
}

// add inserts r, which is not in l; it takes the place of a dead row with its
// Seq (the session left l and comes back).
func (l *seqList) add(r *row) {
	if n := len(l.rows); n == 0 || l.rows[n-1].seq < r.seq {
		l.rows = append(l.rows, r)
		return
	}
	i, found := l.search(r.seq)
	if found {
		if l.rows[i].dead {
			l.dead--
		}
		l.rows[i] = r
		return
	}
	l.rows = slices.Insert(l.rows, i, r)
}

// replace puts r in the place of the live row with its Seq.
func (l *seqList) replace(r *row) {
	if i, found := l.search(r.seq); found {
		l.rows[i] = r
		return
	}
	l.add(r) // not reached while the indexes agree
}

// drop counts old, which is marked dead, as dead in l and compacts l when
// half its rows are dead.
func (l *seqList) drop(old *row) {
	if i, found := l.search(old.seq); !found || l.rows[i] != old {
		return // not reached while the indexes agree
	}
	l.dead++
	if l.dead >= 32 && 2*l.dead >= len(l.rows) {
		l.compact()
	}
}

func (l *seqList) compact() {
	n := 0
	for _, r := range l.rows {
		if !r.dead {
			l.rows[n] = r
			n++
		}
	}
	clear(l.rows[n:])
	l.rows, l.dead = l.rows[:n], 0
	if cap(l.rows) > 4*n+64 {
		l.rows = slices.Clip(slices.Clone(l.rows))
	}
}

// listFor returns the index of key in idx, creating it.
func listFor(idx map[string]*seqList, key string) *seqList {
	l := idx[key]
	if l == nil {
		l = &seqList{key: key}
		idx[key] = l
	}
	return l
}

// dropFrom drops old from the index of key in idx, deleting an index left
// without live rows.
func dropFrom(idx map[string]*seqList, key string, old *row) {
	l := idx[key]
	if l == nil {
		return
	}
	l.drop(old)
	if l.live() == 0 {
		delete(idx, key)
	}
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
	m.states, m.tags = fresh.states, fresh.tags
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
	ol, sl := listFor(m.byOwner, r.owner), listFor(m.byServer, r.serverID)
	r.owner, r.serverID = ol.key, sl.key // share one copy of each
	old := m.byID[r.id]
	m.byID[r.id] = r
	m.states[r.state]++
	if old == nil {
		m.all.add(r)
		ol.add(r)
		sl.add(r)
		return
	}
	old.dead = true
	m.countStateLocked(old.state, -1)
	m.all.replace(r)
	if old.owner == r.owner {
		ol.replace(r)
	} else {
		dropFrom(m.byOwner, old.owner, old)
		ol.add(r)
	}
	if old.serverID == r.serverID {
		sl.replace(r)
	} else {
		dropFrom(m.byServer, old.serverID, old)
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
	m.countStateLocked(old.state, -1)
	m.all.drop(old)
	dropFrom(m.byOwner, old.owner, old)
	dropFrom(m.byServer, old.serverID, old)
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
	r.fill(ss)
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
	for i, r := range rows {
		r.fill(&buf[i])
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
	case f.Owner != "" && r.owner != f.Owner,
		f.ServerID != "" && r.serverID != f.ServerID,
		f.Unplaced && r.serverID != "",
		len(f.States) > 0 && !slices.Contains(f.States, r.state):
		return false
	}
	if len(f.Tags) > 0 {
		tags := m.tags[r.serverID]
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
		if id == "" {
			continue
		}
		var c broker.Counts
		for _, r := range l.rows {
			if r.dead || r.state == broker.StateDeleted {
				continue
			}
			if c.ByOwner == nil {
				c.ByOwner = make(map[string]int)
			}
			switch r.typ {
			case broker.TypeVirtual:
				c.Virtual++
			case broker.TypeConsole:
				c.Console++
			}
			c.ByOwner[r.owner]++
		}
		if c.ByOwner != nil {
			out[id] = c
		}
	}
	return out, true
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
