package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/webhook"
)

// The Store keeps webhooks and their delivery logs.
var _ webhook.Store = (*Store)(nil)

const webhookColumns = `id, url, event_types, secret, created_at, state, disabled_reason, cursor, attempts,
	failing_since, next_attempt, last_error`

// InsertWebhook stores a new webhook; broker.ErrConflict if its ID is taken.
func (s *Store) InsertWebhook(ctx context.Context, w *webhook.Webhook) (err error) {
	defer unavailable(&err)
	_, err = s.pool.Exec(ctx, `INSERT INTO webhooks (`+webhookColumns+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`,
		w.ID, w.URL, nonNilTypes(w.Types), w.Secret, toMillis(w.CreatedAt), w.State, w.DisabledReason, w.Cursor, w.Attempts,
		toMillis(w.FailingSince), toMillis(w.NextAttempt), w.LastError)
	if isUnique(err) {
		err = broker.ErrConflict
	}
	if err != nil {
		return fmt.Errorf("insert webhook %q: %w", w.ID, err)
	}
	return nil
}

// ListWebhooks returns every webhook ordered by creation.
func (s *Store) ListWebhooks(ctx context.Context) (_ []*webhook.Webhook, err error) {
	defer unavailable(&err)
	rows, err := s.pool.Query(ctx, `SELECT `+webhookColumns+` FROM webhooks ORDER BY created_at, id`)
	if err != nil {
		return nil, fmt.Errorf("list webhooks: %w", err)
	}
	defer rows.Close()
	var out []*webhook.Webhook
	for rows.Next() {
		w, err := scanWebhook(rows)
		if err != nil {
			return nil, fmt.Errorf("list webhooks: %w", err)
		}
		out = append(out, w)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list webhooks: %w", err)
	}
	return out, nil
}

// GetWebhook returns broker.ErrNotFound for an unknown ID.
func (s *Store) GetWebhook(ctx context.Context, id string) (_ *webhook.Webhook, err error) {
	defer unavailable(&err)
	w, err := scanWebhook(s.pool.QueryRow(ctx, `SELECT `+webhookColumns+` FROM webhooks WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		err = broker.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("get webhook %q: %w", id, err)
	}
	return w, nil
}

// DeleteWebhook removes a webhook and its delivery log; broker.ErrNotFound
// for an unknown ID.
func (s *Store) DeleteWebhook(ctx context.Context, id string) (err error) {
	defer unavailable(&err)
	tag, err := s.pool.Exec(ctx, `DELETE FROM webhooks WHERE id = $1`, id)
	if err == nil && tag.RowsAffected() == 0 {
		err = broker.ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("delete webhook %q: %w", id, err)
	}
	return nil
}

// SaveDeliveries writes w's delivery state, moves its cursor forward
// (never back) and adds ds to its log, trimmed to the newest keep entries,
// in one transaction; broker.ErrNotFound for an unknown webhook.
func (s *Store) SaveDeliveries(ctx context.Context, w *webhook.Webhook, ds []*webhook.Delivery, keep int) (err error) {
	defer unavailable(&err)
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE webhooks SET state = $1, disabled_reason = $2, cursor = GREATEST(cursor, $3),
			attempts = $4, failing_since = $5, next_attempt = $6, last_error = $7 WHERE id = $8`,
			w.State, w.DisabledReason, w.Cursor, w.Attempts, toMillis(w.FailingSince), toMillis(w.NextAttempt), w.LastError, w.ID)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return broker.ErrNotFound
		}
		if len(ds) == 0 {
			return nil
		}
		var b pgx.Batch
		for _, d := range ds {
			b.Queue(`INSERT INTO webhook_deliveries (webhook_id, event_id, event_type, attempt, at, status, error, duration_us)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`, w.ID, d.EventID, d.EventType, d.Attempt, toMillis(d.Time), d.Status,
				d.Error, d.Duration.Microseconds())
		}
		b.Queue(`DELETE FROM webhook_deliveries WHERE webhook_id = $1 AND seq <= (
			SELECT seq FROM webhook_deliveries WHERE webhook_id = $1 ORDER BY seq DESC LIMIT 1 OFFSET $2)`, w.ID, keep)
		return tx.SendBatch(ctx, &b).Close()
	})
	if err != nil {
		return fmt.Errorf("save deliveries of webhook %q: %w", w.ID, err)
	}
	return nil
}

// ListDeliveries returns a webhook's delivery log, newest first.
func (s *Store) ListDeliveries(ctx context.Context, webhookID string, limit int) (_ []*webhook.Delivery, err error) {
	defer unavailable(&err)
	rows, err := s.pool.Query(ctx, `SELECT webhook_id, event_id, event_type, attempt, at, status, error, duration_us
		FROM webhook_deliveries WHERE webhook_id = $1 ORDER BY seq DESC LIMIT $2`, webhookID, limit)
	if err != nil {
		return nil, fmt.Errorf("list deliveries of webhook %q: %w", webhookID, err)
	}
	defer rows.Close()
	var out []*webhook.Delivery
	for rows.Next() {
		var (
			d      webhook.Delivery
			at, us int64
			status int64
			att    int64
		)
		if err := rows.Scan(&d.WebhookID, &d.EventID, &d.EventType, &att, &at, &status, &d.Error, &us); err != nil {
			return nil, fmt.Errorf("list deliveries of webhook %q: %w", webhookID, err)
		}
		d.Attempt, d.Status = int(att), int(status)
		d.Time, d.Duration = fromMillis(at), time.Duration(us)*time.Microsecond
		out = append(out, &d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list deliveries of webhook %q: %w", webhookID, err)
	}
	return out, nil
}

// LastEventID returns the ID of the newest event, 0 when there is none: a
// new webhook's starting cursor (webhook.LastEventIDer).
func (s *Store) LastEventID(ctx context.Context) (_ int64, err error) {
	defer unavailable(&err)
	var id int64
	if err := s.pool.QueryRow(ctx, `SELECT coalesce(max(id), 0) FROM events`).Scan(&id); err != nil {
		return 0, fmt.Errorf("last event ID: %w", err)
	}
	return id, nil
}

func scanWebhook(r pgx.Row) (*webhook.Webhook, error) {
	var (
		w                          webhook.Webhook
		created, failing, nextTime int64
	)
	if err := r.Scan(&w.ID, &w.URL, &w.Types, &w.Secret, &created, &w.State, &w.DisabledReason, &w.Cursor, &w.Attempts,
		&failing, &nextTime, &w.LastError); err != nil {
		return nil, err
	}
	if len(w.Types) == 0 {
		w.Types = nil
	}
	w.CreatedAt, w.FailingSince, w.NextAttempt = fromMillis(created), fromMillis(failing), fromMillis(nextTime)
	return &w, nil
}

// nonNilTypes returns l, or an empty list for nil (stored as '{}').
func nonNilTypes(l []string) []string {
	if l == nil {
		return []string{}
	}
	return l
}
