package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/berth-dev/berth/internal/broker"
)

// Events (docs/events.md).
//
// IDs come from a sequence, which hands them out in the order the inserts
// run, not the order their transactions commit: a reader could see ID 8
// committed before ID 7 and, resuming after 8, miss 7. So every insert of
// events first takes a transaction-scoped advisory lock (one per schema) and
// holds it to the commit: the IDs of one transaction are all below those of
// any transaction that inserts after it commits, and ID order is commit
// order across every broker. The cost: transactions that write events
// serialize from their events insert to their commit (one statement and
// the commit; the session rows' locks are taken before and are not
// affected), and the insert comes last in each transaction to keep that
// short.

// insertEventsSQL takes the events lock and inserts the events, whose
// columns come as arrays, in array order; it returns the IDs.
const insertEventsSQL = `WITH events_lock AS (SELECT pg_advisory_xact_lock(hashtext('berth-events:' || current_schema())))
INSERT INTO events (time, type, session_id, server_id, owner, data)
SELECT u.time, u.type, u.session_id, u.server_id, u.owner, u.data
FROM events_lock, unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[])
	WITH ORDINALITY AS u(time, type, session_id, server_id, owner, data, ord)
ORDER BY u.ord
RETURNING id`

// defaultEventLimit caps ListEvents without a Limit.
const defaultEventLimit = 1000

// AppendEvents stores events in one transaction and sets their ID and, if
// zero, Time.
func (s *Store) AppendEvents(ctx context.Context, evs []*broker.Event) (err error) {
	defer unavailable(&err)
	if len(evs) == 0 {
		return nil
	}
	if err := s.inTx(ctx, func(tx pgx.Tx) error { return s.appendEventsTx(ctx, tx, evs) }); err != nil {
		return fmt.Errorf("append events: %w", err)
	}
	return nil
}

// appendEventsTx inserts evs in tx with one statement, under the events
// lock; it must be the last statement of tx that takes time.
func (s *Store) appendEventsTx(ctx context.Context, tx pgx.Tx, evs []*broker.Event) error {
	if len(evs) == 0 {
		return nil
	}
	var (
		times                         = make([]int64, len(evs))
		types, sids, srvs, owners, ds = make([]string, len(evs)), make([]string, len(evs)), make([]string, len(evs)), make([]string, len(evs)), make([]string, len(evs))
		now                           time.Time
	)
	for i, e := range evs {
		if e.Time.IsZero() {
			if now.IsZero() {
				now = s.now()
			}
			e.Time = now
		}
		d, err := encodeEventData(e.Data)
		if err != nil {
			return fmt.Errorf("event %s: %w", e.Type, err)
		}
		times[i], types[i], sids[i], srvs[i], owners[i], ds[i] = toMillis(e.Time), e.Type, pgText(e.SessionID), pgText(e.ServerID), pgText(e.Owner), pgText(d)
	}
	rows, _ := tx.Query(ctx, insertEventsSQL, times, types, sids, srvs, owners, ds)
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return fmt.Errorf("insert events: %w", err)
	}
	if len(ids) != len(evs) {
		return fmt.Errorf("insert events: %d IDs for %d events", len(ids), len(evs))
	}
	// The IDs were drawn in array order; RETURNING need not keep it.
	slices.Sort(ids)
	for i, e := range evs {
		e.ID = ids[i]
	}
	return nil
}

// sessionEvents returns the events attached to the sessions written.
func sessionEvents(ss ...*broker.Session) []*broker.Event {
	var evs []*broker.Event
	for _, x := range ss {
		if x != nil {
			evs = append(evs, x.Events...)
		}
	}
	return evs
}

// encodeEventData is the JSON text of an event's Data ("{}" for none).
func encodeEventData(d map[string]any) (string, error) {
	if len(d) == 0 {
		return "{}", nil
	}
	b, err := json.Marshal(d)
	return string(b), err
}

// ListEvents returns the events f selects, ordered by ID (at most f.Limit,
// default 1000).
func (s *Store) ListEvents(ctx context.Context, f broker.EventFilter) (_ []*broker.Event, err error) {
	defer unavailable(&err)
	args := []any{f.AfterID}
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	where := []string{"id > $1"}
	if len(f.Types) > 0 {
		var or []string
		for _, t := range f.Types {
			if p, ok := strings.CutSuffix(t, ".*"); ok {
				p += "."
				or = append(or, "left(type, "+arg(len(p))+") = "+arg(p))
			} else {
				or = append(or, "type = "+arg(t))
			}
		}
		where = append(where, "("+strings.Join(or, " OR ")+")")
	}
	if f.Owner != "" {
		where = append(where, "owner = "+arg(f.Owner))
	}
	limit := f.Limit
	if limit <= 0 {
		limit = defaultEventLimit
	}
	q := `SELECT id, time, type, session_id, server_id, owner, data FROM events WHERE ` +
		strings.Join(where, " AND ") + ` ORDER BY id LIMIT ` + arg(limit)
	rows, _ := s.pool.Query(ctx, q, args...)
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (*broker.Event, error) {
		var (
			e    broker.Event
			ms   int64
			data string
		)
		if err := r.Scan(&e.ID, &ms, &e.Type, &e.SessionID, &e.ServerID, &e.Owner, &data); err != nil {
			return nil, err
		}
		e.Time = fromMillis(ms)
		if data != "" && data != "{}" {
			if err := json.Unmarshal([]byte(data), &e.Data); err != nil {
				return nil, fmt.Errorf("event %d data: %w", e.ID, err)
			}
		}
		return &e, nil
	})
	if err != nil {
		return nil, fmt.Errorf("list events: %w", err)
	}
	return out, nil
}

// PurgeEvents removes events older than before.
func (s *Store) PurgeEvents(ctx context.Context, before time.Time) (_ int, err error) {
	defer unavailable(&err)
	tag, err := s.pool.Exec(ctx, `DELETE FROM events WHERE time < $1`, toMillis(before))
	if err != nil {
		return 0, fmt.Errorf("purge events: %w", err)
	}
	return int(tag.RowsAffected()), nil
}
