package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/berth-dev/berth/internal/broker"
)

// The web portal's store (portal.Store): portal sessions and single-use
// tokens, keyed by the hash of their secret, shared by every broker.

// PutPortalSession stores (or replaces) the portal session of key.
func (s *Store) PutPortalSession(ctx context.Context, key, data []byte, expires time.Time) (err error) {
	defer unavailable(&err)
	_, err = s.pool.Exec(ctx, `INSERT INTO portal_sessions (key, data, expires_at) VALUES ($1, $2, $3)
		ON CONFLICT (key) DO UPDATE SET data = excluded.data, expires_at = excluded.expires_at`,
		key, data, toMillis(expires))
	if err != nil {
		return fmt.Errorf("store portal session: %w", err)
	}
	return nil
}

// PortalSession returns the portal session of key and its expiry;
// broker.ErrNotFound when there is none.
func (s *Store) PortalSession(ctx context.Context, key []byte) (_ []byte, _ time.Time, err error) {
	defer unavailable(&err)
	var (
		data []byte
		exp  int64
	)
	err = s.pool.QueryRow(ctx, `SELECT data, expires_at FROM portal_sessions WHERE key = $1`, key).Scan(&data, &exp)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, time.Time{}, broker.ErrNotFound
	}
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("read portal session: %w", err)
	}
	return data, fromMillis(exp), nil
}

// DeletePortalSession removes the portal session of key, if any.
func (s *Store) DeletePortalSession(ctx context.Context, key []byte) (err error) {
	defer unavailable(&err)
	if _, err = s.pool.Exec(ctx, `DELETE FROM portal_sessions WHERE key = $1`, key); err != nil {
		return fmt.Errorf("delete portal session: %w", err)
	}
	return nil
}

// PutPortalToken stores a single-use portal token.
func (s *Store) PutPortalToken(ctx context.Context, key, data []byte, expires time.Time) (err error) {
	defer unavailable(&err)
	_, err = s.pool.Exec(ctx, `INSERT INTO portal_tokens (key, data, expires_at) VALUES ($1, $2, $3)`,
		key, data, toMillis(expires))
	if err != nil {
		return fmt.Errorf("store portal token: %w", err)
	}
	return nil
}

// TakePortalToken removes the token of key and returns its data, in one
// statement, so it is taken once by one broker; broker.ErrNotFound when
// there is none or it expired before now.
func (s *Store) TakePortalToken(ctx context.Context, key []byte, now time.Time) (_ []byte, err error) {
	defer unavailable(&err)
	var (
		data []byte
		exp  int64
	)
	err = s.pool.QueryRow(ctx, `DELETE FROM portal_tokens WHERE key = $1 RETURNING data, expires_at`, key).Scan(&data, &exp)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, broker.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("take portal token: %w", err)
	}
	if exp <= toMillis(now) {
		return nil, broker.ErrNotFound
	}
	return data, nil
}

// PurgePortal removes the portal sessions and tokens that expired before
// now and returns how many.
func (s *Store) PurgePortal(ctx context.Context, now time.Time) (_ int64, err error) {
	defer unavailable(&err)
	var n int64
	for _, q := range []string{`DELETE FROM portal_sessions WHERE expires_at <= $1`, `DELETE FROM portal_tokens WHERE expires_at <= $1`} {
		tag, err := s.pool.Exec(ctx, q, toMillis(now))
		if err != nil {
			return n, fmt.Errorf("purge portal sessions: %w", err)
		}
		n += tag.RowsAffected()
	}
	return n, nil
}
