package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/audit"
)

const (
	auditHeadSQL   = `SELECT seq, hash, anchor_seq, anchor_hash FROM audit_head WHERE id = 1`
	auditInsertSQL = `INSERT INTO audit_log (seq, time, actor_kind, actor, action, targets, source, result, status, error, detail, broker, prev_hash, hash)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
	auditSetHeadSQL = `UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1`
	auditColumns    = `seq, time, actor_kind, actor, action, targets, source, result, status, error, detail, broker, prev_hash, hash`
)

// auditInsertRows is the most rows of one INSERT of AppendAudit;
// auditInsertCols the columns of a row.
const (
	auditInsertRows = 32
	auditInsertCols = 14
)

// auditInsertManySQL is the INSERT of n audit rows.
func auditInsertManySQL(n int) string {
	if n == auditInsertRows {
		return auditInsertFullSQL
	}
	return auditInsertSQL + strings.Repeat(", (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", n-1)
}

// auditInsertFullSQL inserts auditInsertRows rows.
var auditInsertFullSQL = auditInsertSQL + strings.Repeat(", (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", auditInsertRows-1)

// AppendAudit seals recs after the chain's last record and inserts them in
// one write transaction: SQLite's single writer (BEGIN IMMEDIATE, also
// across processes: the admin commands) keeps the chain linear.
func (s *Store) AppendAudit(ctx context.Context, recs []*audit.Record) error {
	if len(recs) == 0 {
		return nil
	}
	err := s.write(ctx, func(tx *sql.Tx) error {
		var h audit.Head
		if err := s.txQueryRow(ctx, tx, auditHeadSQL).Scan(&h.Seq, &h.Hash, &h.AnchorSeq, &h.AnchorHash); err != nil {
			return err
		}
		seq, prev := h.Seq, h.Hash
		args := make([]any, 0, auditInsertRows*auditInsertCols)
		for i, r := range recs {
			audit.Seal(r, seq, prev)
			targets, err := json.Marshal(r.Targets)
			if err != nil {
				return err
			}
			args = append(args, r.Seq, toMillis(r.Time), r.ActorKind, r.Actor, r.Action, string(targets),
				r.Source, r.Result, r.Status, r.Error, r.Detail, r.Broker, r.PrevHash, r.Hash)
			seq, prev = r.Seq, r.Hash
			if n := len(args) / auditInsertCols; n == auditInsertRows || i == len(recs)-1 {
				// Up to auditInsertRows rows a statement: one step for
				// many rows (the full statement is prepared at Open).
				if _, err := s.txExec(ctx, tx, auditInsertManySQL(n), args...); err != nil {
					return err
				}
				args = args[:0]
			}
		}
		_, err := s.txExec(ctx, tx, auditSetHeadSQL, seq, prev)
		return err
	})
	if err != nil {
		return fmt.Errorf("append audit records: %w", err)
	}
	return nil
}

// AuditHead returns the chain's end and anchor.
func (s *Store) AuditHead(ctx context.Context) (audit.Head, error) {
	var h audit.Head
	if err := s.queryRow(ctx, auditHeadSQL).Scan(&h.Seq, &h.Hash, &h.AnchorSeq, &h.AnchorHash); err != nil {
		return h, fmt.Errorf("read the audit head: %w", err)
	}
	return h, nil
}

// ListAudit returns the records f selects, by sequence number.
func (s *Store) ListAudit(ctx context.Context, f audit.Filter) ([]audit.Record, error) {
	q, args := auditQuery(f, func(int) string { return "?" }, "instr(targets, %s) > 0")
	rows, err := s.query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list audit records: %w", err)
	}
	defer rows.Close()
	var out []audit.Record
	for rows.Next() {
		var (
			r       audit.Record
			ms      int64
			targets string
		)
		if err := rows.Scan(&r.Seq, &ms, &r.ActorKind, &r.Actor, &r.Action, &targets, &r.Source, &r.Result,
			&r.Status, &r.Error, &r.Detail, &r.Broker, &r.PrevHash, &r.Hash); err != nil {
			return nil, fmt.Errorf("list audit records: %w", err)
		}
		r.Time = time.UnixMilli(ms).UTC()
		if err := json.Unmarshal([]byte(targets), &r.Targets); err != nil {
			// A row edited into bad JSON: keep it listed, verify reports it.
			r.Targets = []audit.Target{{Kind: "unreadable", ID: targets}}
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list audit records: %w", err)
	}
	return out, nil
}

// auditQuery builds the SELECT of f for both SQL dialects: ph(i) is the
// placeholder of the i-th argument (1-based), contains a format whose %s is
// the placeholder of a substring that targets must contain.
func auditQuery(f audit.Filter, ph func(int) string, contains string) (string, []any) {
	var (
		where []string
		args  []any
	)
	add := func(cond string, v any) {
		args = append(args, v)
		where = append(where, fmt.Sprintf(cond, ph(len(args))))
	}
	if f.AfterSeq != 0 {
		add("seq > %s", f.AfterSeq)
	}
	if !f.Since.IsZero() {
		add("time >= %s", f.Since.UnixMilli())
	}
	if !f.Until.IsZero() {
		add("time < %s", f.Until.UnixMilli())
	}
	if f.Actor != "" {
		add("actor = %s", f.Actor)
	}
	if f.Action != "" {
		add("action = %s", f.Action)
	}
	if f.Session != "" {
		needle, _ := json.Marshal(audit.Target{Kind: audit.TargetSession, ID: f.Session})
		add(contains, string(needle))
	}
	limit := f.Limit
	if limit <= 0 {
		limit = audit.DefaultLimit
	}
	limit = min(limit, audit.MaxLimit)
	q := "SELECT " + auditColumns + " FROM audit_log"
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	return q + fmt.Sprintf(" ORDER BY seq LIMIT %d", limit), args
}

// PurgeAudit deletes the oldest records up to the first one at or after
// before (records out of time order, from brokers with skewed clocks, are
// kept with the ones after them), and makes the last deleted the anchor, so
// that the rest still verifies.
func (s *Store) PurgeAudit(ctx context.Context, before time.Time) (int, error) {
	var n int
	err := s.write(ctx, func(tx *sql.Tx) error {
		var last sql.NullInt64
		if err := tx.QueryRowContext(ctx, `SELECT CASE
				WHEN EXISTS (SELECT 1 FROM audit_log WHERE time >= ?1) THEN (SELECT min(seq) FROM audit_log WHERE time >= ?1) - 1
				ELSE (SELECT max(seq) FROM audit_log) END`, before.UnixMilli()).Scan(&last); err != nil {
			return err
		}
		var anchor int64
		if err := tx.QueryRowContext(ctx, `SELECT anchor_seq FROM audit_head WHERE id = 1`).Scan(&anchor); err != nil {
			return err
		}
		if !last.Valid || last.Int64 <= anchor {
			return nil
		}
		var hash string
		if err := tx.QueryRowContext(ctx, `SELECT hash FROM audit_log WHERE seq = ?`, last.Int64).Scan(&hash); err != nil {
			return fmt.Errorf("read the new anchor %d: %w", last.Int64, err)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE audit_head SET anchor_seq = ?, anchor_hash = ? WHERE id = 1`, last.Int64, hash); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM audit_log WHERE seq <= ?`, last.Int64)
		if err != nil {
			return err
		}
		d, _ := res.RowsAffected()
		n = int(d)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("purge audit records: %w", err)
	}
	return n, nil
}
