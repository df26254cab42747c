package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/broker"
)

// Events (docs/events.md). The single writer assigns event IDs (AUTOINCREMENT:
// never reused) in commit order.

const insertEventSQL = `INSERT INTO events (time, type, session_id, server_id, owner, data) VALUES (?, ?, ?, ?, ?, ?)`

// eventChunk is the number of events of insertEventsSQL, one statement
// that the writer prepares at Open: a placement's batch of sessions inserts
// its events in a few statements, not one each.
const eventChunk = 32

// insertEventsSQL inserts eventChunk events. Their IDs are consecutive
// (AUTOINCREMENT, one writer), the last being last_insert_rowid().
var insertEventsSQL = insertEventSQL + strings.Repeat(", (?, ?, ?, ?, ?, ?)", eventChunk-1)

// defaultEventLimit caps ListEvents without a Limit.
const defaultEventLimit = 1000

// AppendEvents stores events in one write transaction and sets their ID
// and, if zero, Time.
func (s *Store) AppendEvents(ctx context.Context, evs []*broker.Event) error {
	if len(evs) == 0 {
		return nil
	}
	err := s.write(ctx, func(tx *sql.Tx) error { return s.appendEventsTx(ctx, tx, evs) })
	if err != nil {
		return fmt.Errorf("append events: %w", err)
	}
	return nil
}

// appendEventsTx inserts evs in tx with the writer's prepared statement,
// setting their ID and, if zero, Time.
func (s *Store) appendEventsTx(ctx context.Context, tx *sql.Tx, evs []*broker.Event) error {
	if len(evs) == 0 {
		return nil
	}
	var now time.Time
	args := make([]any, 0, 6*min(len(evs), eventChunk))
	for len(evs) > 0 {
		n, q := 1, insertEventSQL
		if len(evs) >= eventChunk {
			n, q = eventChunk, insertEventsSQL
		}
		args = args[:0]
		for _, e := range evs[:n] {
			if e.Time.IsZero() {
				if now.IsZero() {
					now = s.now()
				}
				e.Time = now
			}
			data, err := encodeEventData(e.Data)
			if err != nil {
				return fmt.Errorf("event %s: %w", e.Type, err)
			}
			args = append(args, toMillis(e.Time), e.Type, e.SessionID, e.ServerID, e.Owner, data)
		}
		st, err := s.txStmt(ctx, tx, q)
		if err != nil {
			return err
		}
		res, err := st.ExecContext(ctx, args...)
		if err != nil {
			return fmt.Errorf("insert events: %w", err)
		}
		last, err := res.LastInsertId()
		if err != nil {
			return err
		}
		for i, e := range evs[:n] {
			e.ID = last - int64(n-1-i)
		}
		evs = evs[n:]
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
func (s *Store) ListEvents(ctx context.Context, f broker.EventFilter) ([]*broker.Event, error) {
	var (
		where []string
		args  []any
	)
	where = append(where, "id > ?")
	args = append(args, f.AfterID)
	if len(f.Types) > 0 {
		var or []string
		for _, t := range f.Types {
			if p, ok := strings.CutSuffix(t, ".*"); ok {
				p += "."
				or = append(or, "substr(type, 1, ?) = ?")
				args = append(args, len(p), p)
			} else {
				or = append(or, "type = ?")
				args = append(args, t)
			}
		}
		where = append(where, "("+strings.Join(or, " OR ")+")")
	}
	if f.Owner != "" {
		where = append(where, "owner = ?")
		args = append(args, f.Owner)
	}
	limit := f.Limit
	if limit <= 0 {
		limit = defaultEventLimit
	}
	args = append(args, limit)
	q := `SELECT id, time, type, session_id, server_id, owner, data FROM events WHERE ` +
		strings.Join(where, " AND ") + ` ORDER BY id LIMIT ?`
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list events: %w", err)
	}
	defer rows.Close()
	var out []*broker.Event
	for rows.Next() {
		var (
			e    broker.Event
			ms   int64
			data string
		)
		if err := rows.Scan(&e.ID, &ms, &e.Type, &e.SessionID, &e.ServerID, &e.Owner, &data); err != nil {
			return nil, fmt.Errorf("list events: %w", err)
		}
		e.Time = fromMillis(ms)
		if data != "" && data != "{}" {
			if err := json.Unmarshal([]byte(data), &e.Data); err != nil {
				return nil, fmt.Errorf("event %d data: %w", e.ID, err)
			}
		}
		out = append(out, &e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list events: %w", err)
	}
	return out, nil
}

// PurgeEvents removes events older than before.
func (s *Store) PurgeEvents(ctx context.Context, before time.Time) (int, error) {
	var n int64
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM events WHERE time < ?`, toMillis(before))
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("purge events: %w", err)
	}
	return int(n), nil
}
