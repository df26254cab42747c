package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
)

// Backup writes a consistent copy of the database to path while the broker
// runs (SQLite's VACUUM INTO: one read transaction, so writers go on in WAL
// mode). path must not exist; the copy is written with mode 0600 through a
// temporary file in the same directory and renamed into place, so a failed
// backup leaves nothing behind.
func (s *Store) Backup(ctx context.Context, path string) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	if abs == s.path {
		return errors.New("backup: the target is the database itself")
	}
	if _, err := os.Lstat(abs); err == nil {
		return fmt.Errorf("backup: %s exists; choose a new file", abs)
	}
	tmp := abs + ".partial"
	_ = os.Remove(tmp)
	// A connection of its own: the read pool is query-only, and the writer
	// must stay free for the broker.
	name := (&url.URL{Scheme: "file", Path: filepath.ToSlash(s.path)}).String()
	db, err := sql.Open("sqlite", name+"?_pragma=busy_timeout("+strconv.FormatInt(BusyTimeout.Milliseconds(), 10)+")")
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, `VACUUM INTO ?`, tmp); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("backup: %w", err)
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("backup: %w", err)
	}
	if err := os.Rename(tmp, abs); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("backup: %w", err)
	}
	return nil
}
