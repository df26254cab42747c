package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/webhook"
)

// The Store keeps webhooks and their delivery logs.
var _ webhook.Store = (*Store)(nil)

const webhookColumns = `id, url, event_types, secret, created_at, state, disabled_reason, cursor, attempts,
	failing_since, next_attempt, last_error`

// InsertWebhook stores a new webhook; broker.ErrConflict if its ID is taken.
func (s *Store) InsertWebhook(ctx context.Context, w *webhook.Webhook) error {
	types, err := json.Marshal(nonNil(w.Types))
	if err == nil {
		_, err = s.exec(ctx, `INSERT INTO webhooks (`+webhookColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			w.ID, w.URL, string(types), w.Secret, toMillis(w.CreatedAt), w.State, w.DisabledReason, w.Cursor, w.Attempts,
			toMillis(w.FailingSince), toMillis(w.NextAttempt), w.LastError)
	}
	if isUnique(err) {
		err = broker.ErrConflict
	}
	if err != nil {
		return fmt.Errorf("insert webhook %q: %w", w.ID, err)
	}
	return nil
}

// ListWebhooks returns every webhook ordered by creation.
func (s *Store) ListWebhooks(ctx context.Context) ([]*webhook.Webhook, error) {
	rows, err := s.query(ctx, `SELECT `+webhookColumns+` FROM webhooks ORDER BY created_at, id`)
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
func (s *Store) GetWebhook(ctx context.Context, id string) (*webhook.Webhook, error) {
	w, err := scanWebhook(s.queryRow(ctx, `SELECT `+webhookColumns+` FROM webhooks WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		err = broker.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("get webhook %q: %w", id, err)
	}
	return w, nil
}

// DeleteWebhook removes a webhook and its delivery log; broker.ErrNotFound
// for an unknown ID.
func (s *Store) DeleteWebhook(ctx context.Context, id string) error {
	res, err := s.exec(ctx, `DELETE FROM webhooks WHERE id = ?`, id)
	if err == nil {
		if n, _ := res.RowsAffected(); n == 0 {
			err = broker.ErrNotFound
		}
	}
	if err != nil {
		return fmt.Errorf("delete webhook %q: %w", id, err)
	}
	return nil
}

// SaveDeliveries writes w's delivery state, moves its cursor forward
// (never back) and adds ds to its log, trimmed to the newest keep entries,
// in one transaction; broker.ErrNotFound for an unknown webhook.
func (s *Store) SaveDeliveries(ctx context.Context, w *webhook.Webhook, ds []*webhook.Delivery, keep int) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE webhooks SET state = ?, disabled_reason = ?, cursor = max(cursor, ?),
			attempts = ?, failing_since = ?, next_attempt = ?, last_error = ? WHERE id = ?`,
			w.State, w.DisabledReason, w.Cursor, w.Attempts, toMillis(w.FailingSince), toMillis(w.NextAttempt), w.LastError, w.ID)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return broker.ErrNotFound
		}
		for _, d := range ds {
			if _, err := tx.ExecContext(ctx, `INSERT INTO webhook_deliveries (webhook_id, event_id, event_type, attempt, at,
				status, error, duration_us) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`, w.ID, d.EventID, d.EventType, d.Attempt,
				toMillis(d.Time), d.Status, d.Error, d.Duration.Microseconds()); err != nil {
				return err
			}
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM webhook_deliveries WHERE webhook_id = ? AND seq <= (
			SELECT seq FROM webhook_deliveries WHERE webhook_id = ? ORDER BY seq DESC LIMIT 1 OFFSET ?)`, w.ID, w.ID, keep)
		return err
	})
	if err != nil {
		return fmt.Errorf("save deliveries of webhook %q: %w", w.ID, err)
	}
	return nil
}

// ListDeliveries returns a webhook's delivery log, newest first.
func (s *Store) ListDeliveries(ctx context.Context, webhookID string, limit int) ([]*webhook.Delivery, error) {
	rows, err := s.query(ctx, `SELECT webhook_id, event_id, event_type, attempt, at, status, error, duration_us
		FROM webhook_deliveries WHERE webhook_id = ? ORDER BY seq DESC LIMIT ?`, webhookID, limit)
	if err != nil {
		return nil, fmt.Errorf("list deliveries of webhook %q: %w", webhookID, err)
	}
	defer rows.Close()
	var out []*webhook.Delivery
	for rows.Next() {
		var (
			d      webhook.Delivery
			at, us int64
		)
		if err := rows.Scan(&d.WebhookID, &d.EventID, &d.EventType, &d.Attempt, &at, &d.Status, &d.Error, &us); err != nil {
			return nil, fmt.Errorf("list deliveries of webhook %q: %w", webhookID, err)
		}
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
func (s *Store) LastEventID(ctx context.Context) (int64, error) {
	var id int64
	if err := s.queryRow(ctx, `SELECT coalesce(max(id), 0) FROM events`).Scan(&id); err != nil {
		return 0, fmt.Errorf("last event ID: %w", err)
	}
	return id, nil
}

func scanWebhook(r rowScanner) (*webhook.Webhook, error) {
	var (
		w                          webhook.Webhook
		types                      string
		created, failing, nextTime int64
	)
	if err := r.Scan(&w.ID, &w.URL, &types, &w.Secret, &created, &w.State, &w.DisabledReason, &w.Cursor, &w.Attempts,
		&failing, &nextTime, &w.LastError); err != nil {
		return nil, err
	}
	if err := json.Unmarshal([]byte(types), &w.Types); err != nil {
		return nil, fmt.Errorf("webhook %q event types: %w", w.ID, err)
	}
	if len(w.Types) == 0 {
		w.Types = nil
	}
	w.CreatedAt, w.FailingSince, w.NextAttempt = fromMillis(created), fromMillis(failing), fromMillis(nextTime)
	return &w, nil
}

// nonNil returns l, or an empty list for nil (stored as []).
func nonNil(l []string) []string {
	if l == nil {
		return []string{}
	}
	return l
}
