package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// Setting returns the named value, storing def first if none exists. The
// insert is INSERT ... ON CONFLICT DO NOTHING, which waits for a concurrent
// insert of the same name to commit, so every broker sharing the database
// sees the first value stored.
func (s *Store) Setting(ctx context.Context, name, def string) (_ string, err error) {
	defer unavailable(&err)
	for range maxAttempts {
		var v string
		err := s.pool.QueryRow(ctx, `SELECT value FROM settings WHERE name = $1`, name).Scan(&v)
		if err == nil {
			return v, nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return "", fmt.Errorf("setting %q: %w", name, err)
		}
		err = s.pool.QueryRow(ctx, `INSERT INTO settings (name, value) VALUES ($1, $2)
			ON CONFLICT (name) DO NOTHING RETURNING value`, name, def).Scan(&v)
		if err == nil {
			return v, nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return "", fmt.Errorf("setting %q: %w", name, err)
		}
		// Another broker stored it first: read its value.
	}
	return "", fmt.Errorf("setting %q: %w", name, errRetry)
}
