package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/berth-dev/berth/internal/broker"
)

// The web portal's store (portal.Store): portal sessions and single-use
// tokens, keyed by the hash of their secret.

// PutPortalSession stores (or replaces) the portal session of key.
func (s *Store) PutPortalSession(ctx context.Context, key, data []byte, expires time.Time) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		_, err := s.txExec(ctx, tx, `INSERT INTO portal_sessions (key, data, expires_at) VALUES (?, ?, ?)
			ON CONFLICT (key) DO UPDATE SET data = excluded.data, expires_at = excluded.expires_at`,
			key, data, toMillis(expires))
		return err
	})
	if err != nil {
		return fmt.Errorf("store portal session: %w", err)
	}
	return nil
}

// PortalSession returns the portal session of key and its expiry;
// broker.ErrNotFound when there is none.
func (s *Store) PortalSession(ctx context.Context, key []byte) ([]byte, time.Time, error) {
	var (
		data []byte
		exp  int64
	)
	err := s.queryRow(ctx, `SELECT data, expires_at FROM portal_sessions WHERE key = ?`, key).Scan(&data, &exp)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, time.Time{}, broker.ErrNotFound
	}
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("read portal session: %w", err)
	}
	return data, fromMillis(exp), nil
}

// DeletePortalSession removes the portal session of key, if any.
func (s *Store) DeletePortalSession(ctx context.Context, key []byte) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		_, err := s.txExec(ctx, tx, `DELETE FROM portal_sessions WHERE key = ?`, key)
		return err
	})
	if err != nil {
		return fmt.Errorf("delete portal session: %w", err)
	}
	return nil
}

// PutPortalToken stores a single-use portal token.
func (s *Store) PutPortalToken(ctx context.Context, key, data []byte, expires time.Time) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		_, err := s.txExec(ctx, tx, `INSERT INTO portal_tokens (key, data, expires_at) VALUES (?, ?, ?)`,
			key, data, toMillis(expires))
		return err
	})
	if err != nil {
		return fmt.Errorf("store portal token: %w", err)
	}
	return nil
}

// TakePortalToken removes the token of key and returns its data, in one
// statement, so it is taken once; broker.ErrNotFound when there is none or
// it expired before now.
func (s *Store) TakePortalToken(ctx context.Context, key []byte, now time.Time) ([]byte, error) {
	var (
		data []byte
		exp  int64
	)
	err := s.write(ctx, func(tx *sql.Tx) error {
		return s.txQueryRow(ctx, tx, `DELETE FROM portal_tokens WHERE key = ? RETURNING data, expires_at`, key).Scan(&data, &exp)
	})
	if errors.Is(err, sql.ErrNoRows) {
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
func (s *Store) PurgePortal(ctx context.Context, now time.Time) (int64, error) {
	var n int64
	err := s.write(ctx, func(tx *sql.Tx) error {
		for _, q := range []string{`DELETE FROM portal_sessions WHERE expires_at <= ?`, `DELETE FROM portal_tokens WHERE expires_at <= ?`} {
			res, err := s.txExec(ctx, tx, q, toMillis(now))
			if err != nil {
				return err
			}
			k, _ := res.RowsAffected()
			n += k
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("purge portal sessions: %w", err)
	}
	return n, nil
}
