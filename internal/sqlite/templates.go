package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/berth-dev/berth/internal/broker"
)

// The Store keeps templates and shares too.
var _ broker.TemplateStore = (*Store)(nil)

const templateColumns = `id, name, description, type, requirements, init_file, autorun_file, autorun_args,
	max_concurrent_clients, dcv_gl_enabled, storage_root, user_names, group_names, created_at, updated_at,
	limits, gpus`

// InsertTemplate stores a new template; broker.ErrConflict if its ID or Name is taken.
func (s *Store) InsertTemplate(ctx context.Context, t *broker.Template) error {
	args, err := templateArgs(t)
	if err == nil {
		_, err = s.exec(ctx, `INSERT INTO templates (`+templateColumns+`)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, args...)
	}
	if isUnique(err) {
		err = broker.ErrConflict
	}
	if err != nil {
		return fmt.Errorf("insert template %q: %w", t.Name, err)
	}
	return nil
}

// UpdateTemplate replaces the template with ID t.ID but its CreatedAt;
// broker.ErrNotFound for an unknown ID, broker.ErrConflict for a taken Name.
func (s *Store) UpdateTemplate(ctx context.Context, t *broker.Template) error {
	args, err := templateArgs(t)
	if err == nil {
		var res sql.Result
		res, err = s.exec(ctx, `UPDATE templates SET name = ?, description = ?, type = ?, requirements = ?,
			init_file = ?, autorun_file = ?, autorun_args = ?, max_concurrent_clients = ?, dcv_gl_enabled = ?,
			storage_root = ?, user_names = ?, group_names = ?, updated_at = ?, limits = ?, gpus = ? WHERE id = ?`,
			append(args[1:13:13], args[14], args[15], args[16], args[0])...) // name..group_names, updated_at, limits, gpus, id
		if err == nil {
			if n, _ := res.RowsAffected(); n == 0 {
				err = broker.ErrNotFound
			}
		}
	}
	if isUnique(err) {
		err = broker.ErrConflict
	}
	if err != nil {
		return fmt.Errorf("update template %q: %w", t.ID, err)
	}
	return nil
}

// DeleteTemplate removes a template; broker.ErrNotFound for an unknown ID.
func (s *Store) DeleteTemplate(ctx context.Context, id string) error {
	res, err := s.exec(ctx, `DELETE FROM templates WHERE id = ?`, id)
	if err == nil {
		if n, _ := res.RowsAffected(); n == 0 {
			err = broker.ErrNotFound
		}
	}
	if err != nil {
		return fmt.Errorf("delete template %q: %w", id, err)
	}
	return nil
}

// GetTemplate returns broker.ErrNotFound for an unknown ID.
func (s *Store) GetTemplate(ctx context.Context, id string) (*broker.Template, error) {
	t, err := scanTemplate(s.queryRow(ctx, `SELECT `+templateColumns+` FROM templates WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		err = broker.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("get template %q: %w", id, err)
	}
	return t, nil
}

// ListTemplates returns every template ordered by name.
func (s *Store) ListTemplates(ctx context.Context) ([]*broker.Template, error) {
	rows, err := s.query(ctx, `SELECT `+templateColumns+` FROM templates ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list templates: %w", err)
	}
	defer rows.Close()
	var out []*broker.Template
	for rows.Next() {
		t, err := scanTemplate(rows)
		if err != nil {
			return nil, fmt.Errorf("list templates: %w", err)
		}
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list templates: %w", err)
	}
	return out, nil
}

// templateArgs returns t's columns in the order of templateColumns.
func templateArgs(t *broker.Template) ([]any, error) {
	var lists [3][]byte
	for i, l := range [][]string{t.AutorunFileArguments, t.Users, t.Groups} {
		if l == nil {
			l = []string{}
		}
		b, err := json.Marshal(l)
		if err != nil {
			return nil, err
		}
		lists[i] = b
	}
	limits, err := json.Marshal(t.Limits)
	if err != nil {
		return nil, err
	}
	return []any{t.ID, t.Name, t.Description, t.Type, t.Requirements, t.InitFile, t.AutorunFile, string(lists[0]),
		t.MaxConcurrentClients, t.DcvGlEnabled, t.StorageRoot, string(lists[1]), string(lists[2]),
		toMillis(t.CreatedAt), toMillis(t.UpdatedAt), string(limits), t.GPUs}, nil
}

func scanTemplate(r rowScanner) (*broker.Template, error) {
	var (
		t                   broker.Template
		args, users, groups string
		limits              string
		created, updated    int64
	)
	if err := r.Scan(&t.ID, &t.Name, &t.Description, &t.Type, &t.Requirements, &t.InitFile, &t.AutorunFile, &args,
		&t.MaxConcurrentClients, &t.DcvGlEnabled, &t.StorageRoot, &users, &groups, &created, &updated,
		&limits, &t.GPUs); err != nil {
		return nil, err
	}
	if err := json.Unmarshal([]byte(limits), &t.Limits); err != nil {
		return nil, fmt.Errorf("template %q limits: %w", t.ID, err)
	}
	for _, l := range []struct {
		text string
		to   *[]string
	}{{args, &t.AutorunFileArguments}, {users, &t.Users}, {groups, &t.Groups}} {
		if err := json.Unmarshal([]byte(l.text), l.to); err != nil {
			return nil, fmt.Errorf("template %q: %w", t.ID, err)
		}
		if len(*l.to) == 0 {
			*l.to = nil
		}
	}
	t.CreatedAt, t.UpdatedAt = fromMillis(created), fromMillis(updated)
	return &t, nil
}

// SetShares replaces a session's shares; broker.ErrNotFound if the session
// does not exist.
func (s *Store) SetShares(ctx context.Context, sessionID string, shares []broker.Share) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		var one int
		if err := tx.QueryRowContext(ctx, `SELECT 1 FROM sessions WHERE id = ?`, sessionID).Scan(&one); err != nil {
			if errors.Is(err, sql.ErrNoRows) {
				return broker.ErrNotFound
			}
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM session_shares WHERE session_id = ?`, sessionID); err != nil {
			return err
		}
		for _, sh := range shares {
			if _, err := tx.ExecContext(ctx, `INSERT INTO session_shares (session_id, user_name, level) VALUES (?, ?, ?)
				ON CONFLICT (session_id, user_name) DO UPDATE SET level = excluded.level`,
				sessionID, sh.User, string(sh.Level)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("set shares of session %q: %w", sessionID, err)
	}
	return nil
}

// ListShares returns a session's shares ordered by user.
func (s *Store) ListShares(ctx context.Context, sessionID string) ([]broker.Share, error) {
	return s.shares(ctx, `SELECT session_id, user_name, level FROM session_shares WHERE session_id = ? ORDER BY user_name`, sessionID)
}

// SharesWith returns the shares given to user ordered by session.
func (s *Store) SharesWith(ctx context.Context, user string) ([]broker.Share, error) {
	return s.shares(ctx, `SELECT session_id, user_name, level FROM session_shares WHERE user_name = ? ORDER BY session_id`, user)
}

func (s *Store) shares(ctx context.Context, q string, arg string) ([]broker.Share, error) {
	rows, err := s.query(ctx, q, arg)
	if err != nil {
		return nil, fmt.Errorf("list shares: %w", err)
	}
	defer rows.Close()
	var out []broker.Share
	for rows.Next() {
		var sh broker.Share
		var level string
		if err := rows.Scan(&sh.SessionID, &sh.User, &level); err != nil {
			return nil, fmt.Errorf("list shares: %w", err)
		}
		sh.Level = broker.ShareLevel(level)
		out = append(out, sh)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list shares: %w", err)
	}
	return out, nil
}
