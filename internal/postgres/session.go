package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/berth-dev/berth/internal/broker"
)

const (
	// sessionCols are the columns scanSession reads, in order.
	sessionCols = `seq, id, owner, name, type, server_id, state, substate, state_reason,
		max_concurrent_clients, storage_root, creation_time, last_disconnection_time, num_connections,
		updated_at, attempts, excluded, enqueued, enqueued_at, spec, last_input_time, due_at, life`

	// insertSessionsSQL inserts the sessions of its array arguments (those of
	// sessionRows.insertArgs) and returns their IDs and Seqs. The Seqs are
	// taken after sorting, so they increase in argument order.
	insertSessionsSQL = `INSERT INTO sessions (seq, id, owner, name, type, server_id, state, substate,
		state_reason, max_concurrent_clients, storage_root, creation_time, last_disconnection_time,
		num_connections, updated_at, attempts, excluded, enqueued, enqueued_at, spec, last_input_time, due_at, life)
		SELECT nextval('sessions_seq_seq'), u.id, u.owner, u.name, u.type, u.server_id, u.state, u.substate,
		u.state_reason, u.max_concurrent_clients, u.storage_root, u.creation_time, u.last_disconnection_time,
		u.num_connections, u.updated_at, u.attempts, u.excluded, u.enqueued, u.enqueued_at, u.spec,
		u.last_input_time, u.due_at, u.life
		FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
		$8::text[], $9::bigint[], $10::text[], $11::bigint[], $12::bigint[], $13::bigint[], $14::bigint[],
		$15::integer[], $16::text[], $17::boolean[], $18::bigint[], $19::text[], $20::bigint[], $21::bigint[],
		$22::text[]) WITH ORDINALITY
		AS u(id, owner, name, type, server_id, state, substate, state_reason, max_concurrent_clients,
		storage_root, creation_time, last_disconnection_time, num_connections, updated_at, attempts,
		excluded, enqueued, enqueued_at, spec, last_input_time, due_at, life, ord)
		ORDER BY u.ord`

	// updateSessionsSQL rewrites the sessions of its array arguments (those
	// of sessionRows.updateArgs) by Seq: every column but seq and id.
	updateSessionsSQL = `UPDATE sessions AS s SET owner = u.owner, name = u.name, type = u.type,
		server_id = u.server_id, state = u.state, substate = u.substate, state_reason = u.state_reason,
		max_concurrent_clients = u.max_concurrent_clients, storage_root = u.storage_root,
		creation_time = u.creation_time, last_disconnection_time = u.last_disconnection_time,
		num_connections = u.num_connections, updated_at = u.updated_at, attempts = u.attempts,
		excluded = u.excluded, enqueued = u.enqueued, enqueued_at = u.enqueued_at, spec = u.spec,
		last_input_time = u.last_input_time, due_at = u.due_at, life = u.life
		FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
		$8::text[], $9::bigint[], $10::text[], $11::bigint[], $12::bigint[], $13::bigint[], $14::bigint[],
		$15::integer[], $16::text[], $17::boolean[], $18::bigint[], $19::text[], $20::bigint[], $21::bigint[],
		$22::text[])
		AS u(seq, owner, name, type, server_id, state, substate, state_reason, max_concurrent_clients,
		storage_root, creation_time, last_disconnection_time, num_connections, updated_at, attempts,
		excluded, enqueued, enqueued_at, spec, last_input_time, due_at, life)
		WHERE s.seq = u.seq`

	// updateSessionSQL rewrites every column but seq and id of the session
	// with seq $22.
	updateSessionSQL = `UPDATE sessions SET owner = $1, name = $2, type = $3, server_id = $4, state = $5,
		substate = $6, state_reason = $7, max_concurrent_clients = $8, storage_root = $9, creation_time = $10,
		last_disconnection_time = $11, num_connections = $12, updated_at = $13, attempts = $14, excluded = $15,
		enqueued = $16, enqueued_at = $17, spec = $18, last_input_time = $19, due_at = $20, life = $21
		WHERE seq = $22`

	getSessionSQL = `SELECT ` + sessionCols + ` FROM sessions WHERE id = $1`
)

// sessionRows holds sessions column by column: the array arguments of
// insertSessionsSQL and moveSessionsSQL.
type sessionRows struct {
	seq                                                           []int64 // moves only
	id, owner, name, typ, serverID, state, substate, reason, root []string
	maxClients, creation, lastDisc, numConn, updated, enqueuedAt  []int64
	attempts                                                      []int32
	excluded, spec, life                                          []string
	enqueued                                                      []bool
	lastInput, due                                                []int64
}

// add appends ss with seq (ignored by insertArgs).
func (r *sessionRows) add(seq int64, ss *broker.Session) error {
	excluded, spec, err := encodeJSON(ss)
	if err != nil {
		return fmt.Errorf("session %q: %w", ss.ID, err)
	}
	life, err := encodeLife(&ss.Life)
	if err != nil {
		return fmt.Errorf("session %q: %w", ss.ID, err)
	}
	r.seq = append(r.seq, seq)
	r.id = append(r.id, ss.ID)
	r.owner = append(r.owner, ss.Owner)
	r.name = append(r.name, pgText(ss.Name))
	r.typ = append(r.typ, ss.Type)
	r.serverID = append(r.serverID, ss.ServerID)
	r.state = append(r.state, ss.State)
	r.substate = append(r.substate, pgText(ss.Substate))
	r.reason = append(r.reason, pgText(ss.StateReason))
	r.maxClients = append(r.maxClients, ss.MaxConcurrentClients)
	r.root = append(r.root, pgText(ss.StorageRoot))
	r.creation = append(r.creation, toMillis(ss.CreationTime))
	r.lastDisc = append(r.lastDisc, toMillis(ss.LastDisconnectionTime))
	r.numConn = append(r.numConn, ss.NumOfConnections)
	r.updated = append(r.updated, toMillis(ss.UpdatedAt))
	r.attempts = append(r.attempts, int32(ss.Attempts))
	r.excluded = append(r.excluded, excluded)
	r.enqueued = append(r.enqueued, ss.Enqueued)
	r.enqueuedAt = append(r.enqueuedAt, toMillis(ss.EnqueuedAt))
	r.spec = append(r.spec, spec)
	r.lastInput = append(r.lastInput, toMillis(ss.LastInputTime))
	r.due = append(r.due, toMillis(ss.DueAt))
	r.life = append(r.life, life)
	return nil
}

func (r *sessionRows) len() int { return len(r.id) }

// insertArgs returns the arguments of insertSessionsSQL.
func (r *sessionRows) insertArgs() []any {
	return []any{r.id, r.owner, r.name, r.typ, r.serverID, r.state, r.substate, r.reason, r.maxClients,
		r.root, r.creation, r.lastDisc, r.numConn, r.updated, r.attempts, r.excluded, r.enqueued,
		r.enqueuedAt, r.spec, r.lastInput, r.due, r.life}
}

// moveArgs returns the arguments of moveSessionsSQL (placements, which
// leave the lifetime columns alone): insertArgs with the Seqs in place of
// the IDs, without the lifetime columns.
func (r *sessionRows) moveArgs() []any {
	args := r.insertArgs()[:19]
	args[0] = r.seq
	return args
}

// updateArgs returns the arguments of updateSessionsSQL: insertArgs with
// the Seqs in place of the IDs.
func (r *sessionRows) updateArgs() []any {
	args := r.insertArgs()
	args[0] = r.seq
	return args
}

// sessionArgs returns the arguments of updateSessionSQL for ss, whose row has
// Seq seq.
func sessionArgs(seq int64, ss *broker.Session) ([]any, error) {
	excluded, spec, err := encodeJSON(ss)
	if err != nil {
		return nil, err
	}
	life, err := encodeLife(&ss.Life)
	if err != nil {
		return nil, err
	}
	return []any{ss.Owner, pgText(ss.Name), ss.Type, ss.ServerID, ss.State, pgText(ss.Substate), pgText(ss.StateReason),
		ss.MaxConcurrentClients, pgText(ss.StorageRoot), toMillis(ss.CreationTime), toMillis(ss.LastDisconnectionTime),
		ss.NumOfConnections, toMillis(ss.UpdatedAt), ss.Attempts, excluded, ss.Enqueued,
		toMillis(ss.EnqueuedAt), spec, toMillis(ss.LastInputTime), toMillis(ss.DueAt), life, seq}, nil
}

// pgText returns s as a PostgreSQL text value can hold it: invalid UTF-8 and
// NUL bytes become U+FFFD. It is for free text that comes from agents or
// drivers (a state reason may quote a program's output); IDs and owners are
// validated before they reach the store, and the insert fails if they hold
// such bytes.
func pgText(s string) string {
	if utf8.ValidString(s) && !strings.Contains(s, "\x00") {
		return s
	}
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
}

// scanSession reads the sessionCols of a row.
func scanSession(r pgx.CollectableRow) (*broker.Session, error) {
	var ss broker.Session
	if err := scanSessionInto(r, &ss); err != nil {
		return nil, err
	}
	return &ss, nil
}

// scanSessionInto reads the sessionCols of a row into ss, which must be zero.
func scanSessionInto(r pgx.CollectableRow, ss *broker.Session) error {
	var (
		creation, lastDisc, updated, enqueuedAt, lastInput, due int64
		excluded, spec, life                                    []byte
	)
	if err := r.Scan(&ss.Seq, &ss.ID, &ss.Owner, &ss.Name, &ss.Type, &ss.ServerID, &ss.State, &ss.Substate,
		&ss.StateReason, &ss.MaxConcurrentClients, &ss.StorageRoot, &creation, &lastDisc, &ss.NumOfConnections,
		&updated, &ss.Attempts, &excluded, &ss.Enqueued, &enqueuedAt, &spec, &lastInput, &due, &life); err != nil {
		return err
	}
	if err := decodeLife(life, &ss.Life); err != nil {
		return fmt.Errorf("decode session %q life: %w", ss.ID, err)
	}
	ss.LastInputTime, ss.DueAt = fromMillis(lastInput), fromMillis(due)
	if len(excluded) > 2 { // not "[]"
		var err error
		if ss.Excluded, err = decodeStrings(excluded); err != nil {
			return fmt.Errorf("decode session %q excluded: %w", ss.ID, err)
		}
	}
	if len(spec) > 2 { // not "{}"
		if err := decodeSpec(spec, &ss.Spec); err != nil {
			return fmt.Errorf("decode session %q spec: %w", ss.ID, err)
		}
	}
	ss.CreationTime, ss.LastDisconnectionTime = fromMillis(creation), fromMillis(lastDisc)
	ss.UpdatedAt, ss.EnqueuedAt = fromMillis(updated), fromMillis(enqueuedAt)
	return nil
}

// collectSeqs reads the (id, seq) rows that insertSessionsSQL returns.
func collectSeqs(rows pgx.Rows) (map[string]int64, error) {
	seqs := make(map[string]int64)
	var (
		id  string
		seq int64
	)
	_, err := pgx.ForEachRow(rows, []any{&id, &seq}, func() error {
		seqs[id] = seq
		return nil
	})
	return seqs, err
}

// InsertSessions inserts new sessions with one statement and assigns their
// Seqs, increasing in slice order. It returns broker.ErrConflict (and inserts
// none) if an ID exists or repeats.
func (s *Store) InsertSessions(ctx context.Context, ss []*broker.Session) (err error) {
	defer unavailable(&err)
	if len(ss) == 0 {
		return nil
	}
	var r sessionRows
	for _, sess := range ss {
		if err := r.add(0, sess); err != nil {
			return fmt.Errorf("insert sessions: %w", err)
		}
	}
	var seqs map[string]int64
	if evs := sessionEvents(ss...); len(evs) > 0 {
		// The sessions and their events, in one transaction.
		err = s.inTx(ctx, func(tx pgx.Tx) error {
			rows, _ := tx.Query(ctx, insertSessionsSQL+` RETURNING id, seq`, r.insertArgs()...)
			if seqs, err = collectSeqs(rows); err != nil {
				return err
			}
			return s.appendEventsTx(ctx, tx, evs)
		})
	} else {
		rows, _ := s.pool.Query(ctx, insertSessionsSQL+` RETURNING id, seq`, r.insertArgs()...)
		seqs, err = collectSeqs(rows)
	}
	if isUnique(err) {
		err = fmt.Errorf("session ID exists: %w", broker.ErrConflict)
	}
	if err != nil {
		return fmt.Errorf("insert sessions: %w", err)
	}
	for _, sess := range ss {
		sess.Seq = seqs[sess.ID]
	}
	return nil
}

// GetSession returns broker.ErrNotFound for an unknown ID.
func (s *Store) GetSession(ctx context.Context, id string) (_ *broker.Session, err error) {
	defer unavailable(&err)
	rows, _ := s.pool.Query(ctx, getSessionSQL, id)
	ss, err := pgx.CollectExactlyOneRow(rows, scanSession)
	if errors.Is(err, pgx.ErrNoRows) {
		err = broker.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("get session %q: %w", id, err)
	}
	return ss, nil
}

// ListSessions returns the sessions f selects, ordered by Seq. A page of one
// owner (Owner, AfterSeq, Limit) is a range scan of the (owner, seq) index;
// the placement queue (Unplaced) one of the partial index of unplaced
// sessions.
func (s *Store) ListSessions(ctx context.Context, f broker.SessionFilter) (_ []*broker.Session, err error) {
	defer unavailable(&err)
	query, args := listSessionsQuery(&f)
	rows, _ := s.pool.Query(ctx, query, args...)
	out, err := pgx.CollectRows(rows, scanSession)
	if err != nil {
		return nil, fmt.Errorf("list sessions: %w", err)
	}
	return out, nil
}

// listSessionsQuery is the query of ListSessions and its arguments.
func listSessionsQuery(f *broker.SessionFilter) (string, []any) {
	var b strings.Builder
	args := []any{f.AfterSeq}
	arg := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	b.WriteString(`SELECT ` + sessionCols + ` FROM sessions WHERE seq > $1`)
	if len(f.IDs) > 0 {
		b.WriteString(` AND id = ANY(` + arg(f.IDs) + `)`)
	}
	if f.Owner != "" {
		b.WriteString(` AND owner = ` + arg(f.Owner))
	}
	if f.ServerID != "" {
		b.WriteString(` AND server_id = ` + arg(f.ServerID))
	}
	if f.Unplaced {
		b.WriteString(` AND server_id = ''`)
	}
	if !f.DueBefore.IsZero() {
		// The policies' due sessions: a range of the partial index of due_at.
		b.WriteString(` AND due_at > 0 AND due_at <= ` + arg(toMillis(f.DueBefore)))
	}
	if len(f.States) > 0 {
		b.WriteString(` AND state = ANY(` + arg(f.States) + `)`)
	}
	if len(f.Tags) > 0 {
		keys := make([]string, 0, len(f.Tags))
		for k := range f.Tags {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			b.WriteString(` AND EXISTS (SELECT 1 FROM server_tags t WHERE t.server_id = sessions.server_id AND t.key = ` +
				arg(pgText(k)) + ` AND t.value = ` + arg(pgText(f.Tags[k])) + `)`)
		}
	}
	b.WriteString(` ORDER BY seq`)
	if f.Limit > 0 {
		b.WriteString(` LIMIT ` + arg(f.Limit))
	}
	return b.String(), args
}

// UpdateSession reads and locks the session row (SELECT ... FOR UPDATE),
// calls fn and writes the result back, in one transaction. fn may return an
// error to abort; UpdateSession then returns that error unchanged and writes
// nothing. fn cannot change the session's ID or Seq. fn may be called again,
// with a fresh copy, if the transaction has to be retried. It returns
// broker.ErrNotFound for an unknown ID.
func (s *Store) UpdateSession(ctx context.Context, id string, fn func(*broker.Session) error) (err error) {
	defer unavailable(&err)
	var fnErr error
	err = s.inTx(ctx, func(tx pgx.Tx) error {
		rows, _ := tx.Query(ctx, getSessionSQL+` FOR UPDATE`, id)
		ss, err := pgx.CollectExactlyOneRow(rows, scanSession)
		if errors.Is(err, pgx.ErrNoRows) {
			return broker.ErrNotFound
		}
		if err != nil {
			return err
		}
		seq := ss.Seq
		if fnErr = fn(ss); fnErr != nil {
			return fnErr
		}
		args, err := sessionArgs(seq, ss)
		if err != nil {
			return err
		}
		if _, err = tx.Exec(ctx, updateSessionSQL, args...); err != nil {
			return err
		}
		return s.appendEventsTx(ctx, tx, ss.Events)
	})
	if fnErr != nil {
		return fnErr
	}
	if err != nil {
		return fmt.Errorf("update session %q: %w", id, err)
	}
	return nil
}

// UpdateSessions is UpdateSession for many sessions in one transaction: it
// locks the sessions of ids (SELECT ... FOR UPDATE, in ID order, so that
// concurrent batches do not deadlock), calls fn on each and writes back those
// fn accepted with one statement. The slice holds, in the order of ids, nil
// (written), fn's error (not written) or broker.ErrNotFound (fn not called);
// the error is a failure of the whole transaction, after which nothing was
// written. fn may be called again, with fresh copies, if the transaction has
// to be retried.
func (s *Store) UpdateSessions(ctx context.Context, ids []string, fn func(*broker.Session) error) (_ []error, err error) {
	defer unavailable(&err)
	seen := make(map[string]struct{}, len(ids))
	for _, id := range ids {
		if _, dup := seen[id]; dup {
			return nil, fmt.Errorf("update sessions: session %q given twice", id)
		}
		seen[id] = struct{}{}
	}
	out := make([]error, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	err = s.inTx(ctx, func(tx pgx.Tx) error {
		rows, _ := tx.Query(ctx, `SELECT `+sessionCols+` FROM sessions WHERE id = ANY($1) ORDER BY id FOR UPDATE`, ids)
		locked, err := pgx.CollectRows(rows, scanSession)
		if err != nil {
			return err
		}
		byID := make(map[string]*broker.Session, len(locked))
		for _, ss := range locked {
			byID[ss.ID] = ss
		}
		var w sessionRows
		var evs []*broker.Event
		for i, id := range ids {
			ss := byID[id]
			if ss == nil {
				out[i] = broker.ErrNotFound
				continue
			}
			seq := ss.Seq
			if out[i] = fn(ss); out[i] != nil {
				continue
			}
			ss.ID = id
			if err := w.add(seq, ss); err != nil {
				return err
			}
			evs = append(evs, ss.Events...)
		}
		if len(w.seq) == 0 {
			return nil
		}
		if _, err = tx.Exec(ctx, updateSessionsSQL, w.updateArgs()...); err != nil {
			return err
		}
		return s.appendEventsTx(ctx, tx, evs)
	})
	if err != nil {
		return nil, fmt.Errorf("update sessions: %w", err)
	}
	return out, nil
}

// DeleteSession removes the session row. It returns broker.ErrNotFound for an
// unknown ID.
func (s *Store) DeleteSession(ctx context.Context, id string) (err error) {
	defer unavailable(&err)
	tag, err := s.pool.Exec(ctx, `DELETE FROM sessions WHERE id = $1`, id)
	if err == nil && tag.RowsAffected() == 0 {
		err = broker.ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("delete session %q: %w", id, err)
	}
	return nil
}

// PurgeDeleted removes DELETED sessions whose UpdatedAt is before before and
// returns how many it removed.
func (s *Store) PurgeDeleted(ctx context.Context, before time.Time) (_ int, err error) {
	defer unavailable(&err)
	tag, err := s.pool.Exec(ctx, `DELETE FROM sessions WHERE state = $1 AND updated_at < $2`,
		broker.StateDeleted, toMillis(before))
	if err != nil {
		return 0, fmt.Errorf("purge deleted sessions: %w", err)
	}
	return int(tag.RowsAffected()), nil
}

// CountSessions returns the active (not DELETED) placed sessions per server.
// Servers without active sessions are absent.
func (s *Store) CountSessions(ctx context.Context) (_ map[string]broker.Counts, err error) {
	defer unavailable(&err)
	rows, _ := s.pool.Query(ctx, `SELECT server_id, type, owner, count(*) FROM sessions
		WHERE state <> 'DELETED' AND server_id <> '' GROUP BY server_id, type, owner`)
	out := make(map[string]broker.Counts)
	var (
		server, typ, owner string
		n                  int
	)
	_, err = pgx.ForEachRow(rows, []any{&server, &typ, &owner, &n}, func() error {
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
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("count sessions: %w", err)
	}
	return out, nil
}

// CountByState returns the number of sessions per state.
func (s *Store) CountByState(ctx context.Context) (_ map[string]int, err error) {
	defer unavailable(&err)
	rows, _ := s.pool.Query(ctx, `SELECT state, count(*) FROM sessions GROUP BY state`)
	out := make(map[string]int)
	var (
		state string
		n     int
	)
	_, err = pgx.ForEachRow(rows, []any{&state, &n}, func() error {
		out[state] = n
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("count sessions by state: %w", err)
	}
	return out, nil
}
