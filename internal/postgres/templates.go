package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/berth-dev/berth/internal/broker"
)

// The Store keeps templates and shares too.
var _ broker.TemplateStore = (*Store)(nil)

const templateColumns = `id, name, description, type, requirements, init_file, autorun_file, autorun_args,
	max_concurrent_clients, dcv_gl_enabled, storage_root, user_names, group_names, created_at, updated_at,
	limits, gpus`

// InsertTemplate stores a new template; broker.ErrConflict if its ID or Name is taken.
func (s *Store) InsertTemplate(ctx context.Context, t *broker.Template) (err error) {
	defer unavailable(&err)
	args, err := templateArgs(t)
	if err == nil {
		_, err = s.pool.Exec(ctx, `INSERT INTO templates (`+templateColumns+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)`, args...)
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
func (s *Store) UpdateTemplate(ctx context.Context, t *broker.Template) (err error) {
	defer unavailable(&err)
	args, err := templateArgs(t)
	if err != nil {
		return fmt.Errorf("update template %q: %w", t.ID, err)
	}
	tag, err := s.pool.Exec(ctx, `UPDATE templates SET name = $2, description = $3, type = $4, requirements = $5,
		init_file = $6, autorun_file = $7, autorun_args = $8, max_concurrent_clients = $9, dcv_gl_enabled = $10,
		storage_root = $11, user_names = $12, group_names = $13, updated_at = $14, limits = $15, gpus = $16
		WHERE id = $1`, append(args[:13:13], args[14:]...)...)
	switch {
	case isUnique(err):
		err = broker.ErrConflict
	case err == nil && tag.RowsAffected() == 0:
		err = broker.ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("update template %q: %w", t.ID, err)
	}
	return nil
}

// DeleteTemplate removes a template; broker.ErrNotFound for an unknown ID.
func (s *Store) DeleteTemplate(ctx context.Context, id string) (err error) {
	defer unavailable(&err)
	tag, err := s.pool.Exec(ctx, `DELETE FROM templates WHERE id = $1`, id)
	if err == nil && tag.RowsAffected() == 0 {
		err = broker.ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("delete template %q: %w", id, err)
	}
	return nil
}

// GetTemplate returns broker.ErrNotFound for an unknown ID.
func (s *Store) GetTemplate(ctx context.Context, id string) (_ *broker.Template, err error) {
	defer unavailable(&err)
	t, err := scanTemplate(s.pool.QueryRow(ctx, `SELECT `+templateColumns+` FROM templates WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		err = broker.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("get template %q: %w", id, err)
	}
	return t, nil
}

// ListTemplates returns every template ordered by name.
func (s *Store) ListTemplates(ctx context.Context) (_ []*broker.Template, err error) {
	defer unavailable(&err)
	rows, _ := s.pool.Query(ctx, `SELECT `+templateColumns+` FROM templates ORDER BY name`)
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (*broker.Template, error) { return scanTemplate(r) })
	if err != nil {
		return nil, fmt.Errorf("list templates: %w", err)
	}
	return out, nil
}

// templateArgs returns t's columns in the order of templateColumns.
func templateArgs(t *broker.Template) ([]any, error) {
	list := func(l []string) []string {
		if l == nil {
			return []string{}
		}
		return l
	}
	limits, err := json.Marshal(t.Limits)
	if err != nil {
		return nil, fmt.Errorf("limits: %w", err)
	}
	return []any{t.ID, t.Name, t.Description, t.Type, t.Requirements, t.InitFile, t.AutorunFile, list(t.AutorunFileArguments),
		t.MaxConcurrentClients, t.DcvGlEnabled, t.StorageRoot, list(t.Users), list(t.Groups),
		toMillis(t.CreatedAt), toMillis(t.UpdatedAt), string(limits), t.GPUs}, nil
}

func scanTemplate(r pgx.Row) (*broker.Template, error) {
	var (
		t                broker.Template
		created, updated int64
		limits           string
	)
	if err := r.Scan(&t.ID, &t.Name, &t.Description, &t.Type, &t.Requirements, &t.InitFile, &t.AutorunFile,
		&t.AutorunFileArguments, &t.MaxConcurrentClients, &t.DcvGlEnabled, &t.StorageRoot, &t.Users, &t.Groups,
		&created, &updated, &limits, &t.GPUs); err != nil {
		return nil, err
	}
	if err := json.Unmarshal([]byte(limits), &t.Limits); err != nil {
		return nil, fmt.Errorf("template %q limits: %w", t.ID, err)
	}
	for _, l := range []*[]string{&t.AutorunFileArguments, &t.Users, &t.Groups} {
		if len(*l) == 0 {
			*l = nil
		}
	}
	t.CreatedAt, t.UpdatedAt = fromMillis(created), fromMillis(updated)
	return &t, nil
}

// SetShares replaces a session's shares; broker.ErrNotFound if the session
// does not exist.
func (s *Store) SetShares(ctx context.Context, sessionID string, shares []broker.Share) (err error) {
	defer unavailable(&err)
	err = s.inTx(ctx, func(tx pgx.Tx) error {
		var one int
		// FOR KEY SHARE keeps the session from being deleted until the shares are written.
		if err := tx.QueryRow(ctx, `SELECT 1 FROM sessions WHERE id = $1 FOR KEY SHARE`, sessionID).Scan(&one); err != nil {
			if errors.Is(err, pgx.ErrNoRows) {
				return broker.ErrNotFound
			}
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM session_shares WHERE session_id = $1`, sessionID); err != nil {
			return err
		}
		users := make([]string, len(shares))
		levels := make([]string, len(shares))
		for i, sh := range shares {
			users[i], levels[i] = sh.User, string(sh.Level)
		}
		_, err := tx.Exec(ctx, `INSERT INTO session_shares (session_id, user_name, level)
			SELECT $1, u, l FROM unnest($2::text[], $3::text[]) AS x(u, l)
			ON CONFLICT (session_id, user_name) DO UPDATE SET level = excluded.level`, sessionID, users, levels)
		return err
	})
	if err != nil {
		return fmt.Errorf("set shares of session %q: %w", sessionID, err)
	}
	return nil
}

// ListShares returns a session's shares ordered by user.
func (s *Store) ListShares(ctx context.Context, sessionID string) ([]broker.Share, error) {
	return s.shares(ctx, `SELECT session_id, user_name, level FROM session_shares WHERE session_id = $1 ORDER BY user_name`, sessionID)
}

// SharesWith returns the shares given to user ordered by session.
func (s *Store) SharesWith(ctx context.Context, user string) ([]broker.Share, error) {
	return s.shares(ctx, `SELECT session_id, user_name, level FROM session_shares WHERE user_name = $1 ORDER BY session_id`, user)
}

func (s *Store) shares(ctx context.Context, q, arg string) (_ []broker.Share, err error) {
	defer unavailable(&err)
	rows, _ := s.pool.Query(ctx, q, arg)
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (broker.Share, error) {
		var sh broker.Share
		var level string
		err := r.Scan(&sh.SessionID, &sh.User, &level)
		sh.Level = broker.ShareLevel(level)
		return sh, err
	})
	if err != nil {
		return nil, fmt.Errorf("list shares: %w", err)
	}
	return out, nil
}
