package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/audit"
	"github.com/jackc/pgx/v5"
)

const (
	// auditLockSQL takes the transaction-scoped advisory lock that makes the
	// chain linear across brokers: every append reads the head and inserts
	// after it while holding it (keyed on the schema, as the migrations'
	// lock is). Appends of all brokers are serialized; each is one round of
	// statements, batched per transaction by audit.Appender.
	auditLockSQL   = `SELECT pg_advisory_xact_lock(hashtext('berth-audit:' || current_schema()))`
	auditHeadSQL   = `SELECT seq, hash, anchor_seq, anchor_hash FROM audit_head WHERE id = 1`
	auditColumns   = `seq, time, actor_kind, actor, action, targets, source, result, status, error, detail, broker, prev_hash, hash`
	auditInsertSQL = `INSERT INTO audit_log (` + auditColumns + `) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)`
)

// AppendAudit seals recs after the chain's last record and inserts them in
// one transaction under the audit advisory lock, so that the chain stays
// linear while several brokers append.
func (s *Store) AppendAudit(ctx context.Context, recs []*audit.Record) (err error) {
	defer unavailable(&err)
	if len(recs) == 0 {
		return nil
	}
	err = s.inTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, auditLockSQL); err != nil {
			return err
		}
		var h audit.Head
		if err := tx.QueryRow(ctx, auditHeadSQL).Scan(&h.Seq, &h.Hash, &h.AnchorSeq, &h.AnchorHash); err != nil {
			return err
		}
		b := &pgx.Batch{}
		seq, prev := h.Seq, h.Hash
		for _, r := range recs {
			audit.Seal(r, seq, prev)
			targets, err := json.Marshal(r.Targets)
			if err != nil {
				return err
			}
			b.Queue(auditInsertSQL, r.Seq, r.Time.UnixMilli(), r.ActorKind, r.Actor, r.Action, string(targets),
				r.Source, r.Result, r.Status, r.Error, r.Detail, r.Broker, r.PrevHash, r.Hash)
			seq, prev = r.Seq, r.Hash
		}
		b.Queue(`UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1`, seq, prev)
		return tx.SendBatch(ctx, b).Close()
	})
	if err != nil {
		return fmt.Errorf("append audit records: %w", err)
	}
	return nil
}

// AuditHead returns the chain's end and anchor.
func (s *Store) AuditHead(ctx context.Context) (h audit.Head, err error) {
	defer unavailable(&err)
	if err := s.pool.QueryRow(ctx, auditHeadSQL).Scan(&h.Seq, &h.Hash, &h.AnchorSeq, &h.AnchorHash); err != nil {
		return h, fmt.Errorf("read the audit head: %w", err)
	}
	return h, nil
}

// ListAudit returns the records f selects, by sequence number.
func (s *Store) ListAudit(ctx context.Context, f audit.Filter) (_ []audit.Record, err error) {
	defer unavailable(&err)
	var (
		where []string
		args  []any
	)
	add := func(cond string, v any) {
		args = append(args, v)
		where = append(where, fmt.Sprintf(cond, fmt.Sprintf("$%d", len(args))))
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
		add("strpos(targets, %s) > 0", string(needle))
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
	q += fmt.Sprintf(" ORDER BY seq LIMIT %d", limit)
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list audit records: %w", err)
	}
	defer rows.Close()
	var out []audit.Record
	for rows.Next() {
		var (
			r       audit.Record
			ms      int64
			status  int32
			targets string
		)
		if err := rows.Scan(&r.Seq, &ms, &r.ActorKind, &r.Actor, &r.Action, &targets, &r.Source, &r.Result,
			&status, &r.Error, &r.Detail, &r.Broker, &r.PrevHash, &r.Hash); err != nil {
			return nil, fmt.Errorf("list audit records: %w", err)
		}
		r.Time, r.Status = time.UnixMilli(ms).UTC(), int(status)
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

// PurgeAudit deletes the oldest records up to the first one at or after
// before (records out of time order, from brokers with skewed clocks, are
// kept with the ones after them), and makes the last deleted the anchor, so
// that the rest still verifies. It holds the audit lock, as appends do.
func (s *Store) PurgeAudit(ctx context.Context, before time.Time) (n int, err error) {
	defer unavailable(&err)
	err = s.inTx(ctx, func(tx pgx.Tx) error {
		n = 0
		if _, err := tx.Exec(ctx, auditLockSQL); err != nil {
			return err
		}
		var last *int64
		if err := tx.QueryRow(ctx, `SELECT CASE
				WHEN EXISTS (SELECT 1 FROM audit_log WHERE time >= $1) THEN (SELECT min(seq) FROM audit_log WHERE time >= $1) - 1
				ELSE (SELECT max(seq) FROM audit_log) END`, before.UnixMilli()).Scan(&last); err != nil {
			return err
		}
		var anchor int64
		if err := tx.QueryRow(ctx, `SELECT anchor_seq FROM audit_head WHERE id = 1`).Scan(&anchor); err != nil {
			return err
		}
		if last == nil || *last <= anchor {
			return nil
		}
		var hash string
		if err := tx.QueryRow(ctx, `SELECT hash FROM audit_log WHERE seq = $1`, *last).Scan(&hash); err != nil {
			if errors.Is(err, pgx.ErrNoRows) {
				return fmt.Errorf("the new anchor, record %d, is missing: run berth-broker audit verify", *last)
			}
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE audit_head SET anchor_seq = $1, anchor_hash = $2 WHERE id = 1`, *last, hash); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `DELETE FROM audit_log WHERE seq <= $1`, *last)
		if err != nil {
			return err
		}
		n = int(tag.RowsAffected())
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("purge audit records: %w", err)
	}
	return n, nil
}
