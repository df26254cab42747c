package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

const (
	getSettingSQL    = `SELECT value FROM settings WHERE name = ?`
	insertSettingSQL = `INSERT OR IGNORE INTO settings (name, value) VALUES (?, ?)`
)

// Setting returns the named value, storing def first if none exists, so that
// every broker sharing the database sees the first value stored.
func (s *Store) Setting(ctx context.Context, name, def string) (string, error) {
	var v string
	err := s.queryRow(ctx, getSettingSQL, name).Scan(&v)
	if err == nil {
		return v, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("setting %q: %w", name, err)
	}
	err = s.write(ctx, func(tx *sql.Tx) error {
		if _, err := s.txExec(ctx, tx, insertSettingSQL, name, def); err != nil {
			return err
		}
		return s.txQueryRow(ctx, tx, getSettingSQL, name).Scan(&v)
	})
	if err != nil {
		return "", fmt.Errorf("setting %q: %w", name, err)
	}
	return v, nil
}
