package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/placement"
)

const (
	// sessionCols are the columns scanSession reads, in order.
	sessionCols = `seq, id, owner, name, type, server_id, state, substate, state_reason,
		max_concurrent_clients, storage_root, creation_time, last_disconnection_time, num_connections,
		updated_at, attempts, excluded, enqueued, enqueued_at, spec, last_input_time, due_at, life`

	// sessionSet assigns every column but seq and id, with the arguments of
	// encodeSession(ss)[1:].
	sessionSet = `owner = ?, name = ?, type = ?, server_id = ?, state = ?, substate = ?, state_reason = ?,
		max_concurrent_clients = ?, storage_root = ?, creation_time = ?, last_disconnection_time = ?,
		num_connections = ?, updated_at = ?, attempts = ?, excluded = ?, enqueued = ?, enqueued_at = ?, spec = ?,
		last_input_time = ?, due_at = ?, life = ?`

	insertSessionSQL = `INSERT INTO sessions (id, owner, name, type, server_id, state, substate, state_reason,
		max_concurrent_clients, storage_root, creation_time, last_disconnection_time, num_connections,
		updated_at, attempts, excluded, enqueued, enqueued_at, spec, last_input_time, due_at, life)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`

	updateSessionSQL = `UPDATE sessions SET ` + sessionSet + ` WHERE seq = ?`
	// updateLiveSQL sets the columns that change over a session's life
	// (txRewrite): not owner, server_id, spec or the others that the
	// indexes sessions_owner_seq, sessions_queue, sessions_template and
	// sessions_launch_groups are built on.
	updateLiveSQL = `UPDATE sessions SET state = ?, substate = ?, state_reason = ?, last_disconnection_time = ?,
		num_connections = ?, updated_at = ?, last_input_time = ?, due_at = ?, life = ? WHERE seq = ?`
	getSessionSQL    = `SELECT ` + sessionCols + ` FROM sessions WHERE id = ?`
	findSessionSQL   = `SELECT seq, state, server_id FROM sessions WHERE id = ?`
	deleteSessionSQL = `DELETE FROM sessions WHERE id = ?`

	// capacitySQL returns the server's limits and its active sessions that count
	// against a placement of owner ?1, leaving out the session with seq ?2 (the
	// session being moved; 0 for a new one), for placement.Fits: the limits
	// MaxVirtual and MaxPerUser, then the counts Virtual, Owned and Console.
	// No row: unknown server.
	capacitySQL = `SELECT v.max_virtual_sessions, v.max_sessions_per_user,
		coalesce(sum(s.type = 'VIRTUAL'), 0), coalesce(sum(s.owner = ?), 0), coalesce(sum(s.type = 'CONSOLE'), 0)
		FROM servers v LEFT JOIN sessions s ON s.server_id = v.id AND s.state != 'DELETED' AND s.seq != ?
		WHERE v.id = ? GROUP BY v.seq`
)

// encodeSession returns the values of every column but seq, in
// insertSessionSQL order (id first), and the JSON stored for Excluded and Spec.
func encodeSession(ss *broker.Session) (args []any, excluded, spec string, err error) {
	sp, err := json.Marshal(ss.Spec)
	if err != nil {
		return nil, "", "", fmt.Errorf("encode spec: %w", err)
	}
	ex := []byte("[]")
	if len(ss.Excluded) > 0 {
		if ex, err = json.Marshal(ss.Excluded); err != nil {
			return nil, "", "", fmt.Errorf("encode excluded: %w", err)
		}
	}
	life, err := encodeLife(&ss.Life)
	if err != nil {
		return nil, "", "", err
	}
	excluded, spec = string(ex), string(sp)
	return []any{
		ss.ID, ss.Owner, ss.Name, ss.Type, ss.ServerID, ss.State, ss.Substate, ss.StateReason,
		ss.MaxConcurrentClients, ss.StorageRoot, toMillis(ss.CreationTime), toMillis(ss.LastDisconnectionTime),
		ss.NumOfConnections, toMillis(ss.UpdatedAt), ss.Attempts, excluded, boolInt(ss.Enqueued),
		toMillis(ss.EnqueuedAt), spec, toMillis(ss.LastInputTime), toMillis(ss.DueAt), life,
	}, excluded, spec, nil
}

// encodeLife returns the JSON stored for a session's Life ("{}" when zero).
func encodeLife(l *broker.SessionLife) (string, error) {
	if l.IsZero() {
		return "{}", nil
	}
	b, err := json.Marshal(l)
	if err != nil {
		return "", fmt.Errorf("encode life: %w", err)
	}
	return string(b), nil
}

// insertedRow inserts ss with the prepared insertSessionSQL and returns its Seq
// and, if mirrored, its row for the mirror. A duplicate ID gives
// broker.ErrConflict.
func insertedRow(ctx context.Context, ins *sql.Stmt, ss *broker.Session, mirrored bool) (int64, *row, error) {
	args, excluded, spec, err := encodeSession(ss)
	if err != nil {
		return 0, nil, err
	}
	res, err := ins.ExecContext(ctx, args...)
	if isUnique(err) {
		return 0, nil, fmt.Errorf("session ID exists: %w", broker.ErrConflict)
	}
	if err != nil {
		return 0, nil, err
	}
	seq, err := res.LastInsertId()
	if err != nil || !mirrored {
		return seq, nil, err
	}
	r, err := writtenRow(seq, ss.ID, ss, excluded, spec)
	return seq, r, err
}

func scanSession(r rowScanner) (*broker.Session, error) {
	var (
		ss                                                      broker.Session
		creation, lastDisc, updated, enqueuedAt, lastInput, due int64
		excluded, spec, life                                    []byte
	)
	if err := r.Scan(&ss.Seq, &ss.ID, &ss.Owner, &ss.Name, &ss.Type, &ss.ServerID, &ss.State, &ss.Substate,
		&ss.StateReason, &ss.MaxConcurrentClients, &ss.StorageRoot, &creation, &lastDisc, &ss.NumOfConnections,
		&updated, &ss.Attempts, &excluded, &ss.Enqueued, &enqueuedAt, &spec, &lastInput, &due, &life); err != nil {
		return nil, err
	}
	if len(life) > 2 { // not "{}"
		if err := json.Unmarshal(life, &ss.Life); err != nil {
			return nil, fmt.Errorf("decode session %q life: %w", ss.ID, err)
		}
	}
	ss.LastInputTime, ss.DueAt = fromMillis(lastInput), fromMillis(due)
	if len(excluded) > 2 { // not "[]"
		if err := json.Unmarshal(excluded, &ss.Excluded); err != nil {
			return nil, fmt.Errorf("decode session %q excluded: %w", ss.ID, err)
		}
	}
	if len(spec) > 2 { // not "{}"
		if err := json.Unmarshal(spec, &ss.Spec); err != nil {
			return nil, fmt.Errorf("decode session %q spec: %w", ss.ID, err)
		}
	}
	ss.CreationTime, ss.LastDisconnectionTime = fromMillis(creation), fromMillis(lastDisc)
	ss.UpdatedAt, ss.EnqueuedAt = fromMillis(updated), fromMillis(enqueuedAt)
	return &ss, nil
}

// InsertSessions inserts new sessions in one transaction and assigns their Seq.
// It returns broker.ErrConflict (and inserts none) if an ID exists.
func (s *Store) InsertSessions(ctx context.Context, ss []*broker.Session) error {
	if len(ss) == 0 {
		return nil
	}
	seqs := make([]int64, len(ss))
	var rows []*row
	err := s.writeMirrored(ctx, func(tx *sql.Tx) error {
		ins, err := s.txStmt(ctx, tx, insertSessionSQL)
		if err != nil {
			return err
		}
		if s.m != nil {
			rows = make([]*row, len(ss))
		}
		for i, sess := range ss {
			var r *row
			if seqs[i], r, err = insertedRow(ctx, ins, sess, s.m != nil); err != nil {
				return fmt.Errorf("session %q: %w", sess.ID, err)
			}
			if rows != nil {
				rows[i] = r
			}
		}
		return s.appendEventsTx(ctx, tx, sessionEvents(ss...))
	}, func(m *mirror) {
		for _, r := range rows {
			m.putLocked(r)
		}
	})
	if err != nil {
		return fmt.Errorf("insert sessions: %w", err)
	}
	for i, sess := range ss {
		sess.Seq = seqs[i]
	}
	return nil
}

// placementTx holds the statements of a CommitPlacements transaction.
type placementTx struct {
	capacity, find, insert, update *sql.Stmt
	// m, when not nil, gives the servers' limits and counts instead of
	// capacitySQL: the transaction holds the writer, so the mirror is the
	// database as of the transaction's start.
	m *mirror
	// rows collects the rows written, for the mirror; nil without one.
	rows []*row
	// caps holds each server's limits and counts as this transaction
	// sees them: the first placement on a server reads them (capacitySQL),
	// later ones add what the transaction placed. A batch of placements
	// then scans a server's sessions once, not once per placement.
	caps map[string]*serverCapacity
	// quota checks the placements' quotas (quota.go).
	quota quotaTx
}

// serverCapacity is one server's limits and active sessions within a
// placement transaction.
type serverCapacity struct {
	limits           placement.Limits
	virtual, console int
	// owned counts sessions by owner; an owner not in it is read when
	// the server has a per-user limit.
	owned map[string]int
}

// capacityOf returns the limits and counts that a placement of owner on
// server is checked against; id and seq are the session being moved (seq 0
// for a new one), left out of the counts.
func (p *placementTx) capacityOf(ctx context.Context, server, owner, id string, seq int64) (*serverCapacity, error) {
	sc := p.caps[server]
	if sc != nil {
		if _, ok := sc.owned[owner]; ok || sc.limits.MaxPerUser <= 0 {
			return sc, nil
		}
	}
	var (
		l placement.Limits
		c placement.Counts
	)
	counted := false
	if p.m != nil {
		// The limits and counts the mirror keeps: the counts were a scan
		// of the server's sessions per placement.
		var found bool
		if l, c, found, counted = p.m.capacity(server, owner, id); counted && !found {
			return nil, itemError{fmt.Errorf("server %q: %w", server, broker.ErrNotFound)}
		}
	}
	if !counted {
		err := p.capacity.QueryRowContext(ctx, owner, seq, server).Scan(&l.MaxVirtual, &l.MaxPerUser, &c.Virtual, &c.Owned, &c.Console)
		if errors.Is(err, sql.ErrNoRows) {
			return nil, itemError{fmt.Errorf("server %q: %w", server, broker.ErrNotFound)}
		}
		if err != nil {
			return nil, err
		}
	}
	if sc == nil {
		if p.caps == nil {
			p.caps = make(map[string]*serverCapacity)
		}
		sc = &serverCapacity{limits: l, virtual: c.Virtual, console: c.Console, owned: make(map[string]int)}
		p.caps[server] = sc
	}
	sc.owned[owner] = c.Owned
	return sc, nil
}

// placed counts a session the transaction placed on the server.
func (sc *serverCapacity) placed(owner, typ string) {
	switch typ {
	case broker.TypeConsole:
		sc.console++
	default:
		sc.virtual++
	}
	if n, ok := sc.owned[owner]; ok {
		sc.owned[owner] = n + 1
	}
}

// itemError is a per-placement failure: the item is not written, the
// transaction goes on.
type itemError struct{ err error }

func (e itemError) Error() string { return e.err.Error() }
func (e itemError) Unwrap() error { return e.err }

// CommitPlacements commits placements in one transaction. For each it re-checks
// the capacity rule, placement.Fits, against the server's current active (not
// DELETED) sessions: VIRTUAL sessions below max virtual sessions, the owner's
// sessions below max sessions per user (0: unlimited) and, for a CONSOLE
// session, no other active CONSOLE session. A placement that does not fit gets
// broker.ErrServerFull, wrapping the *placement.Refusal, in the returned slice
// (same order) and is not written; one that its Quotas refuse gets a
// *broker.QuotaError (broker.ErrOverQuota), counted in this write
// transaction, which is the only one (quota.go); an unknown server, or an
// unknown session for Insert=false, gives broker.ErrNotFound and an existing
// ID for Insert=true gives broker.ErrConflict. Others are inserted (their Seq assigned) or have their row
// rewritten. The second result is a failure of the whole transaction, in which
// case nothing is written.
func (s *Store) CommitPlacements(ctx context.Context, ps []broker.Placement) ([]error, error) {
	errs := make([]error, len(ps))
	if len(ps) == 0 {
		return errs, nil
	}
	seqs := make([]int64, len(ps))
	var p placementTx
	err := s.writeMirrored(ctx, func(tx *sql.Tx) error {
		var err error
		p.quota = quotaTx{s: s, tx: tx, ps: ps}
		if s.m != nil {
			p.rows = make([]*row, 0, len(ps))
		}
		if p.capacity, err = s.txStmt(ctx, tx, capacitySQL); err != nil {
			return err
		}
		p.m = s.m
		if p.find, err = s.txStmt(ctx, tx, findSessionSQL); err != nil {
			return err
		}
		if p.insert, err = s.txStmt(ctx, tx, insertSessionSQL); err != nil {
			return err
		}
		if p.update, err = s.txStmt(ctx, tx, updateSessionSQL); err != nil {
			return err
		}
		var evs []*broker.Event
		for i, pl := range ps {
			seqs[i], err = p.commit(ctx, pl)
			var ie itemError
			if errors.As(err, &ie) {
				errs[i] = ie.err
				continue
			}
			if err != nil {
				return fmt.Errorf("placement %d: %w", i, err)
			}
			evs = append(evs, pl.Session.Events...)
		}
		return s.appendEventsTx(ctx, tx, evs)
	}, func(m *mirror) {
		for _, r := range p.rows {
			m.putLocked(r)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("commit placements: %w", err)
	}
	for i, pl := range ps {
		if errs[i] == nil && pl.Insert {
			pl.Session.Seq = seqs[i]
		}
	}
	return errs, nil
}

// commit checks and writes one placement and returns the session's Seq. A
// failure of this item alone is an itemError.
func (p *placementTx) commit(ctx context.Context, pl broker.Placement) (int64, error) {
	ss := pl.Session
	if ss == nil {
		return 0, itemError{errors.New("placement without a session")}
	}
	var seq int64
	if !pl.Insert {
		var state, server string
		err := p.find.QueryRowContext(ctx, ss.ID).Scan(&seq, &state, &server)
		if errors.Is(err, sql.ErrNoRows) {
			return 0, itemError{fmt.Errorf("session %q: %w", ss.ID, broker.ErrNotFound)}
		}
		if err != nil {
			return 0, err
		}
		if state != broker.StateCreating || server != "" {
			// Deleted or placed since the caller read it: never overwrite.
			return 0, itemError{fmt.Errorf("session %q is %s on %q, no longer waiting for placement: %w", ss.ID, state, server, broker.ErrConflict)}
		}
	}
	sc, err := p.capacityOf(ctx, ss.ServerID, ss.Owner, ss.ID, seq)
	if err != nil {
		return 0, err
	}
	c := placement.Counts{Virtual: sc.virtual, Console: sc.console, Owned: sc.owned[ss.Owner]}
	if err := placement.Fits(sc.limits, c, placement.AskOf(ss.Owner, ss.Type)); err != nil {
		return 0, itemError{fmt.Errorf("server %q %w: %w", ss.ServerID, err, broker.ErrServerFull)}
	}
	if len(pl.Quotas) > 0 {
		if err := p.quota.check(ctx, pl); err != nil {
			return 0, err
		}
	}
	mirrored := p.rows != nil
	if pl.Insert {
		seq, r, err := insertedRow(ctx, p.insert, ss, mirrored)
		if errors.Is(err, broker.ErrConflict) {
			err = itemError{fmt.Errorf("session %q: %w", ss.ID, err)}
		}
		if err == nil {
			sc.placed(ss.Owner, ss.Type)
			p.quota.take(pl)
			if mirrored {
				p.rows = append(p.rows, r)
			}
		}
		return seq, err
	}
	args, excluded, spec, err := encodeSession(ss)
	if err != nil {
		return 0, itemError{fmt.Errorf("session %q: %w", ss.ID, err)}
	}
	if _, err = p.update.ExecContext(ctx, append(args[1:], seq)...); err != nil {
		return seq, err
	}
	sc.placed(ss.Owner, ss.Type)
	p.quota.take(pl)
	if !mirrored {
		return seq, nil
	}
	r, err := writtenRow(seq, ss.ID, ss, excluded, spec)
	if err != nil {
		return 0, err
	}
	p.rows = append(p.rows, r)
	return seq, nil
}

// GetSession returns broker.ErrNotFound for an unknown ID.
func (s *Store) GetSession(ctx context.Context, id string) (*broker.Session, error) {
	if s.m != nil {
		if ss, found, ok := s.m.get(id); ok {
			if !found {
				return nil, fmt.Errorf("get session %q: %w", id, broker.ErrNotFound)
			}
			return ss, nil
		}
	}
	ss, err := scanSession(s.queryRow(ctx, getSessionSQL, id))
	if errors.Is(err, sql.ErrNoRows) {
		err = broker.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("get session %q: %w", id, err)
	}
	return ss, nil
}

// ListSessions returns the sessions f selects, ordered by Seq.
func (s *Store) ListSessions(ctx context.Context, f broker.SessionFilter) ([]*broker.Session, error) {
	if s.m != nil {
		if out, ok := s.m.list(f); ok {
			return out, nil
		}
	}
	return s.listSessionsSQL(ctx, f)
}

// listSessionsSQL is ListSessions without the mirror.
func (s *Store) listSessionsSQL(ctx context.Context, f broker.SessionFilter) ([]*broker.Session, error) {
	var b strings.Builder
	b.WriteString(`SELECT ` + sessionCols + ` FROM sessions`)
	if f.Unplaced && f.Owner == "" && len(f.IDs) == 0 {
		// The queue: walk the partial index in Seq order rather than sort
		// every unplaced session, whatever the planner's statistics say.
		b.WriteString(` INDEXED BY sessions_queue`)
	} else if !f.DueBefore.IsZero() && len(f.IDs) == 0 {
		// The policies' due sessions: a range of the partial index of due_at,
		// not a walk of every session in Seq order.
		b.WriteString(` INDEXED BY sessions_due`)
	}
	b.WriteString(` WHERE seq > ?`)
	args := []any{f.AfterSeq}
	if len(f.IDs) > 0 {
		ids, _ := json.Marshal(f.IDs)
		b.WriteString(` AND id IN (SELECT value FROM json_each(?))`)
		args = append(args, string(ids))
	}
	if f.Owner != "" {
		b.WriteString(` AND owner = ?`)
		args = append(args, f.Owner)
	}
	if f.ServerID != "" {
		b.WriteString(` AND server_id = ?`)
		args = append(args, f.ServerID)
	}
	if f.Unplaced {
		b.WriteString(` AND server_id = ''`)
	}
	if !f.DueBefore.IsZero() {
		b.WriteString(` AND due_at > 0 AND due_at <= ?`)
		args = append(args, toMillis(f.DueBefore))
	}
	if len(f.States) > 0 {
		b.WriteString(` AND state IN (` + placeholders(len(f.States)) + `)`)
		for _, st := range f.States {
			args = append(args, st)
		}
	}
	if len(f.Tags) > 0 {
		keys := make([]string, 0, len(f.Tags))
		for k := range f.Tags {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			b.WriteString(` AND EXISTS (SELECT 1 FROM server_tags t
				WHERE t.server_id = sessions.server_id AND t.key = ? AND t.value = ?)`)
			args = append(args, k, f.Tags[k])
		}
	}
	b.WriteString(` ORDER BY seq`)
	if f.Limit > 0 {
		b.WriteString(` LIMIT ?`)
		args = append(args, f.Limit)
	}
	rows, err := s.query(ctx, b.String(), args...)
	if err != nil {
		return nil, fmt.Errorf("list sessions: %w", err)
	}
	defer rows.Close()
	var out []*broker.Session
	for rows.Next() {
		ss, err := scanSession(rows)
		if err != nil {
			return nil, fmt.Errorf("list sessions: %w", err)
		}
		out = append(out, ss)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list sessions: %w", err)
	}
	return out, nil
}

// txSession reads session id in tx, the writer's: from the mirror when the
// store has one (the writer is held, so it is the database as of the
// transaction's start), else from SQL. An unknown ID is sql.ErrNoRows.
func (s *Store) txSession(ctx context.Context, tx *sql.Tx, id string) (*broker.Session, error) {
	if s.m != nil {
		if ss, found, ok := s.m.get(id); ok {
			if !found {
				return nil, sql.ErrNoRows
			}
			return ss, nil
		}
	}
	return scanSession(s.txQueryRow(ctx, tx, getSessionSQL, id))
}

// txRewrite reads session id in tx, calls fn on it and writes it back
// unless fn fails (fnErr). It returns the session as written and, with a
// mirror, its row to put there. An unknown ID is sql.ErrNoRows. A write
// that changes only the columns a session's life changes (state, counts,
// times, lifetime) sets those alone: updateSessionSQL sets every column and
// so rewrites every index of the table: about a sixth of a READY write's
// cost (BenchmarkUpdateSessions).
func (s *Store) txRewrite(ctx context.Context, tx *sql.Tx, id string, fn func(*broker.Session) error) (ss *broker.Session, r *row, fnErr, err error) {
	if ss, err = s.txSession(ctx, tx, id); err != nil {
		return nil, nil, nil, err
	}
	seq := ss.Seq
	before, err := fixedColsOf(ss, "", "")
	if err != nil {
		return nil, nil, nil, fmt.Errorf("session %q: %w", id, err)
	}
	if fnErr = fn(ss); fnErr != nil {
		return nil, nil, fnErr, nil
	}
	args, excluded, spec, err := encodeSession(ss)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("session %q: %w", id, err)
	}
	after, _ := fixedColsOf(ss, excluded, spec)
	if after == before {
		// args: id 0, state 5, substate 6, state_reason 7,
		// last_disconnection_time 11, num_connections 12, updated_at 13,
		// last_input_time 19, due_at 20, life 21.
		_, err = s.txExec(ctx, tx, updateLiveSQL, args[5], args[6], args[7], args[11], args[12], args[13],
			args[19], args[20], args[21], seq)
	} else {
		_, err = s.txExec(ctx, tx, updateSessionSQL, append(args[1:], seq)...)
	}
	if err != nil || s.m == nil {
		return ss, nil, nil, err
	}
	r, err = writtenRow(seq, id, ss, excluded, spec)
	return ss, r, nil, err
}

// fixedCols are the columns of a session that updateLiveSQL leaves as they
// are.
type fixedCols struct {
	owner, name, typ, serverID, storageRoot string
	maxClients, creation, enqueuedAt        int64
	attempts                                int
	enqueued                                bool
	excluded, spec                          string
}

// fixedColsOf returns ss's fixed columns, with excluded and spec as stored
// (encoded here when empty).
func fixedColsOf(ss *broker.Session, excluded, spec string) (fixedCols, error) {
	if spec == "" {
		ex := []byte("[]")
		if len(ss.Excluded) > 0 {
			var err error
			if ex, err = json.Marshal(ss.Excluded); err != nil {
				return fixedCols{}, fmt.Errorf("encode excluded: %w", err)
			}
		}
		sp, err := json.Marshal(ss.Spec)
		if err != nil {
			return fixedCols{}, fmt.Errorf("encode spec: %w", err)
		}
		excluded, spec = string(ex), string(sp)
	}
	return fixedCols{
		owner: ss.Owner, name: ss.Name, typ: ss.Type, serverID: ss.ServerID, storageRoot: ss.StorageRoot,
		maxClients: ss.MaxConcurrentClients, creation: toMillis(ss.CreationTime), enqueuedAt: toMillis(ss.EnqueuedAt),
		attempts: ss.Attempts, enqueued: ss.Enqueued, excluded: excluded, spec: spec,
	}, nil
}

// UpdateSession reads the session, calls fn and writes the result back in one
// write transaction. fn may return an error to abort; UpdateSession then returns
// that error unchanged and writes nothing. fn cannot change the session's ID or
// Seq, and it must not call the store (the writer is held while fn runs). It
// returns broker.ErrNotFound for an unknown ID.
func (s *Store) UpdateSession(ctx context.Context, id string, fn func(*broker.Session) error) error {
	var (
		fnErr error
		r     *row
	)
	err := s.writeMirrored(ctx, func(tx *sql.Tx) error {
		var ss *broker.Session
		var err error
		ss, r, fnErr, err = s.txRewrite(ctx, tx, id, fn)
		if errors.Is(err, sql.ErrNoRows) {
			return broker.ErrNotFound
		}
		if fnErr != nil {
			return fnErr
		}
		if err != nil {
			return err
		}
		return s.appendEventsTx(ctx, tx, ss.Events)
	}, func(m *mirror) { m.putLocked(r) })
	if fnErr != nil {
		return fnErr
	}
	if err != nil {
		return fmt.Errorf("update session %q: %w", id, err)
	}
	return nil
}

// UpdateSessions is UpdateSession for many sessions in one write
// transaction: for each ID it reads the session, calls fn and writes the
// result back unless fn returns an error. The slice holds, in the order of
// ids, nil (written), fn's error (not written) or broker.ErrNotFound (fn not
// called); the error is a failure of the whole transaction, after which
// nothing was written. fn must not call the store (the writer is held while
// it runs).
func (s *Store) UpdateSessions(ctx context.Context, ids []string, fn func(*broker.Session) error) ([]error, error) {
	if err := distinct(ids); err != nil {
		return nil, fmt.Errorf("update sessions: %w", err)
	}
	out := make([]error, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	var rows []*row
	err := s.writeMirrored(ctx, func(tx *sql.Tx) error {
		rows = rows[:0]
		var evs []*broker.Event
		for i, id := range ids {
			ss, r, fnErr, err := s.txRewrite(ctx, tx, id, fn)
			if errors.Is(err, sql.ErrNoRows) {
				out[i] = broker.ErrNotFound
				continue
			}
			if out[i] = fnErr; fnErr != nil {
				continue
			}
			if err != nil {
				return err
			}
			evs = append(evs, ss.Events...)
			if r != nil {
				rows = append(rows, r)
			}
		}
		return s.appendEventsTx(ctx, tx, evs)
	}, func(m *mirror) {
		for _, r := range rows {
			m.putLocked(r)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("update sessions: %w", err)
	}
	return out, nil
}

// distinct returns an error if ids holds an ID twice.
func distinct(ids []string) error {
	seen := make(map[string]struct{}, len(ids))
	for _, id := range ids {
		if _, dup := seen[id]; dup {
			return fmt.Errorf("session %q given twice", id)
		}
		seen[id] = struct{}{}
	}
	return nil
}

// DeleteSession removes the session row. It returns broker.ErrNotFound for an
// unknown ID.
func (s *Store) DeleteSession(ctx context.Context, id string) error {
	err := s.writeMirrored(ctx, func(tx *sql.Tx) error {
		res, err := s.txExec(ctx, tx, deleteSessionSQL, id)
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err == nil && n == 0 {
			err = broker.ErrNotFound
		}
		return err
	}, func(m *mirror) { m.removeLocked(id) })
	if err != nil {
		return fmt.Errorf("delete session %q: %w", id, err)
	}
	return nil
}

// PurgeDeleted removes DELETED sessions whose UpdatedAt is before before and
// returns how many it removed.
func (s *Store) PurgeDeleted(ctx context.Context, before time.Time) (int, error) {
	var ids []string
	err := s.writeMirrored(ctx, func(tx *sql.Tx) (err error) {
		ids, err = deleteReturningIDs(ctx, tx, `DELETE FROM sessions WHERE state = ? AND updated_at < ? RETURNING id`,
			broker.StateDeleted, toMillis(before))
		return err
	}, func(m *mirror) {
		for _, id := range ids {
			m.removeLocked(id)
		}
	})
	if err != nil {
		return 0, fmt.Errorf("purge deleted sessions: %w", err)
	}
	return len(ids), nil
}

// deleteReturningIDs runs q, a DELETE ... RETURNING id, in tx and returns the
// IDs.
func deleteReturningIDs(ctx context.Context, tx *sql.Tx, q string, args ...any) ([]string, error) {
	rows, err := tx.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}

// CountSessions returns the active (not DELETED) placed sessions per server.
// Servers without active sessions are absent.
func (s *Store) CountSessions(ctx context.Context) (map[string]broker.Counts, error) {
	if s.m != nil {
		if out, ok := s.m.countSessions(); ok {
			return out, nil
		}
	}
	rows, err := s.query(ctx, `SELECT server_id, type, owner, count(*) FROM sessions
		WHERE state != 'DELETED' AND server_id != '' GROUP BY server_id, type, owner`)
	if err != nil {
		return nil, fmt.Errorf("count sessions: %w", err)
	}
	defer rows.Close()
	out := make(map[string]broker.Counts)
	for rows.Next() {
		var (
			server, typ, owner string
			n                  int
		)
		if err := rows.Scan(&server, &typ, &owner, &n); err != nil {
			return nil, fmt.Errorf("count sessions: %w", err)
		}
		c := out[server]
		if c.ByOwner == nil {
			c.ByOwner = make(map[string]int)
		}
		switch typ {
		case broker.TypeVirtual:
			c.Virtual += n
		case broker.TypeConsole:
			c.Console += n
		}
		c.ByOwner[owner] += n
		out[server] = c
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("count sessions: %w", err)
	}
	return out, nil
}

// CountByState returns the number of sessions per state.
func (s *Store) CountByState(ctx context.Context) (map[string]int, error) {
	if s.m != nil {
		if out, ok := s.m.countByState(); ok {
			return out, nil
		}
	}
	rows, err := s.query(ctx, `SELECT state, count(*) FROM sessions GROUP BY state`)
	if err != nil {
		return nil, fmt.Errorf("count sessions by state: %w", err)
	}
	defer rows.Close()
	out := make(map[string]int)
	for rows.Next() {
		var (
			state string
			n     int
		)
		if err := rows.Scan(&state, &n); err != nil {
			return nil, fmt.Errorf("count sessions by state: %w", err)
		}
		out[state] = n
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("count sessions by state: %w", err)
	}
	return out, nil
}
