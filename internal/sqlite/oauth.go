package sqlite

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"time"

	sqlitedrv "modernc.org/sqlite"

	"github.com/berth-dev/berth/internal/oauth"
)

func init() {
	// berth_sha256(text or blob) is the SHA-256 of its argument; migration
	// 0002 hashes the software statements stored before it with it.
	sqlitedrv.MustRegisterDeterministicScalarFunction("berth_sha256", 1, func(_ *sqlitedrv.FunctionContext, args []driver.Value) (driver.Value, error) {
		var b []byte
		switch v := args[0].(type) {
		case string:
			b = []byte(v)
		case []byte:
			b = v
		case nil:
			return nil, nil
		default:
			return nil, fmt.Errorf("berth_sha256: %T is not text", v)
		}
		h := sha256.Sum256(b)
		return h[:], nil
	})
}

// CreateClient inserts a client. A zero CreatedAt is set to the current time. An
// existing ID is an error.
func (s *Store) CreateClient(ctx context.Context, c *oauth.Client) error {
	created := c.CreatedAt
	if created.IsZero() {
		created = s.now()
	}
	_, err := s.exec(ctx, insertClientSQL,
		c.ID, c.Name, c.Kind, c.SecretHash, c.Salt, boolInt(c.Active), toMillis(created), c.Statement, toMillis(c.LinkedAt))
	if isUnique(err) {
		err = oauth.ErrClientExists
	}
	if err != nil {
		return fmt.Errorf("create client %q: %w", c.ID, err)
	}
	c.CreatedAt = created
	return nil
}

const (
	clientCols      = `id, name, kind, secret_hash, salt, active, created_at, statement, linked_at`
	insertClientSQL = `INSERT INTO clients (` + clientCols + `) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`

	// Agent registration (prepared on the writer: see writeStmts).
	getClientSQL          = `SELECT ` + clientCols + ` FROM clients WHERE id = ?`
	clientExistsSQL       = `SELECT 1 FROM clients WHERE id = ?`
	getStatementByHashSQL = `SELECT ` + statementCols + ` FROM software_statements WHERE hash = ?`
	getStatementSQL       = `SELECT ` + statementCols + ` FROM software_statements WHERE id = ?`
	countStatementUseSQL  = `UPDATE software_statements SET uses = uses + 1 WHERE id = ?`
	reissueAgentSecretSQL = `UPDATE clients SET secret_hash = ?, salt = ?, created_at = ? WHERE id = ? AND kind = ? AND active = 1 AND linked_at = 0`
)

func scanClient(r rowScanner) (*oauth.Client, error) {
	var (
		c               oauth.Client
		created, linked int64
	)
	if err := r.Scan(&c.ID, &c.Name, &c.Kind, &c.SecretHash, &c.Salt, &c.Active, &created, &c.Statement, &linked); err != nil {
		return nil, err
	}
	c.CreatedAt, c.LinkedAt = fromMillis(created), fromMillis(linked)
	return &c, nil
}

// GetClient returns oauth.ErrNotFound for an unknown ID.
func (s *Store) GetClient(ctx context.Context, id string) (*oauth.Client, error) {
	c, err := scanClient(s.queryRow(ctx, `SELECT `+clientCols+` FROM clients WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		err = oauth.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("get client %q: %w", id, err)
	}
	return c, nil
}

// ListClients returns the clients of one kind, oldest first.
func (s *Store) ListClients(ctx context.Context, kind string) ([]*oauth.Client, error) {
	rows, err := s.query(ctx, `SELECT `+clientCols+` FROM clients WHERE kind = ? ORDER BY created_at, seq`, kind)
	if err != nil {
		return nil, fmt.Errorf("list clients: %w", err)
	}
	defer rows.Close()
	var out []*oauth.Client
	for rows.Next() {
		c, err := scanClient(rows)
		if err != nil {
			return nil, fmt.Errorf("list clients: %w", err)
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list clients: %w", err)
	}
	return out, nil
}

// SetClientActive returns oauth.ErrNotFound for an unknown ID.
func (s *Store) SetClientActive(ctx context.Context, id string, active bool) error {
	if err := s.updateOne(ctx, `UPDATE clients SET active = ? WHERE id = ?`, boolInt(active), id); err != nil {
		return fmt.Errorf("set client %q active: %w", id, err)
	}
	return nil
}

// AddSigningKey stores k and, in the same transaction, retires every active key
// created no later than k (RetiredAt = k.CreatedAt). A zero k.CreatedAt is set to
// the current time. An existing ID is an error.
func (s *Store) AddSigningKey(ctx context.Context, k *oauth.SigningKey) error {
	created := k.CreatedAt
	if created.IsZero() {
		created = s.now()
	}
	err := s.write(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `UPDATE signing_keys SET retired_at = ?
			WHERE retired_at = 0 AND created_at <= ? AND id != ?`,
			toMillis(created), toMillis(created), k.ID); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO signing_keys (id, algorithm, private_pem, created_at, retired_at)
			VALUES (?, ?, ?, ?, ?)`,
			k.ID, k.Algorithm, k.PrivatePEM, toMillis(created), toMillis(k.RetiredAt))
		if isUnique(err) {
			return errors.New("key ID exists")
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("add signing key %q: %w", k.ID, err)
	}
	k.CreatedAt = created
	return nil
}

// SigningKeys returns all keys, newest first.
func (s *Store) SigningKeys(ctx context.Context) ([]*oauth.SigningKey, error) {
	rows, err := s.query(ctx, `SELECT id, algorithm, private_pem, created_at, retired_at
		FROM signing_keys ORDER BY created_at DESC, seq DESC`)
	if err != nil {
		return nil, fmt.Errorf("list signing keys: %w", err)
	}
	defer rows.Close()
	var out []*oauth.SigningKey
	for rows.Next() {
		var (
			k                oauth.SigningKey
			created, retired int64
		)
		if err := rows.Scan(&k.ID, &k.Algorithm, &k.PrivatePEM, &created, &retired); err != nil {
			return nil, fmt.Errorf("list signing keys: %w", err)
		}
		k.CreatedAt, k.RetiredAt = fromMillis(created), fromMillis(retired)
		out = append(out, &k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list signing keys: %w", err)
	}
	return out, nil
}

// DeleteSigningKeysRetiredBefore removes keys retired before t. Active keys stay.
func (s *Store) DeleteSigningKeysRetiredBefore(ctx context.Context, t time.Time) error {
	if _, err := s.exec(ctx, `DELETE FROM signing_keys WHERE retired_at != 0 AND retired_at < ?`,
		toMillis(t)); err != nil {
		return fmt.Errorf("delete retired signing keys: %w", err)
	}
	return nil
}

// DeleteUnlinkedAgentClients deletes the agent clients that never linked and
// were created before t, and returns their IDs.
func (s *Store) DeleteUnlinkedAgentClients(ctx context.Context, t time.Time) ([]string, error) {
	var ids []string
	err := s.write(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `DELETE FROM clients
			WHERE kind = ? AND linked_at = 0 AND created_at < ? RETURNING id`, oauth.KindAgent, toMillis(t))
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				return err
			}
			ids = append(ids, id)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("delete unlinked agent clients: %w", err)
	}
	return ids, nil
}

const statementCols = `id, hash, issued_at, active, expires_at, max_uses, uses, legacy`

func scanStatement(r rowScanner) (*oauth.SoftwareStatement, error) {
	var (
		st              oauth.SoftwareStatement
		issued, expires int64
	)
	if err := r.Scan(&st.ID, &st.Hash, &issued, &st.Active, &expires, &st.MaxUses, &st.Uses, &st.Legacy); err != nil {
		return nil, err
	}
	st.IssuedAt, st.ExpiresAt = fromMillis(issued), fromMillis(expires)
	return &st, nil
}

// CreateSoftwareStatement inserts a statement (its hash, not its text). A zero
// IssuedAt is set to the current time. An existing ID or hash is an error.
func (s *Store) CreateSoftwareStatement(ctx context.Context, st *oauth.SoftwareStatement) error {
	issued := st.IssuedAt
	if issued.IsZero() {
		issued = s.now()
	}
	if len(st.Hash) == 0 {
		return fmt.Errorf("create software statement %q: no hash", st.ID)
	}
	_, err := s.exec(ctx, `INSERT INTO software_statements (`+statementCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
		st.ID, st.Hash, toMillis(issued), boolInt(st.Active), toMillis(st.ExpiresAt), st.MaxUses, st.Uses, boolInt(st.Legacy))
	if isUnique(err) {
		err = errors.New("statement ID or hash exists")
	}
	if err != nil {
		return fmt.Errorf("create software statement %q: %w", st.ID, err)
	}
	st.IssuedAt = issued
	return nil
}

// SoftwareStatements returns all statements, oldest first, without text.
func (s *Store) SoftwareStatements(ctx context.Context) ([]*oauth.SoftwareStatement, error) {
	rows, err := s.query(ctx, `SELECT `+statementCols+` FROM software_statements ORDER BY issued_at, seq`)
	if err != nil {
		return nil, fmt.Errorf("list software statements: %w", err)
	}
	defer rows.Close()
	var out []*oauth.SoftwareStatement
	for rows.Next() {
		st, err := scanStatement(rows)
		if err != nil {
			return nil, fmt.Errorf("list software statements: %w", err)
		}
		out = append(out, st)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list software statements: %w", err)
	}
	return out, nil
}

// SetSoftwareStatementActive sets Active on the statement with ID id. It
// returns oauth.ErrNotFound if there is none.
func (s *Store) SetSoftwareStatementActive(ctx context.Context, id string, active bool) error {
	if err := s.updateOne(ctx, `UPDATE software_statements SET active = ? WHERE id = ?`, boolInt(active), id); err != nil {
		return fmt.Errorf("set software statement active: %w", err)
	}
	return nil
}

// RegisterWithStatement checks and counts a use of the statement whose hash
// is hash and inserts agent client c, in one write transaction (SQLite has
// one writer, so uses never exceed MaxUses). On a refusal it returns the
// statement with the error.
func (s *Store) RegisterWithStatement(ctx context.Context, hash []byte, c *oauth.Client) (*oauth.SoftwareStatement, error) {
	if c.CreatedAt.IsZero() {
		c.CreatedAt = s.now()
	}
	var st *oauth.SoftwareStatement
	err := s.write(ctx, func(tx *sql.Tx) error {
		var err error
		st, err = scanStatement(s.txQueryRow(ctx, tx, getStatementByHashSQL, hash))
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return oauth.ErrNotFound
		case err != nil:
			return err
		}
		if err := statementUsable(st, c.CreatedAt); err != nil {
			return err
		}
		if _, err := s.txExec(ctx, tx, countStatementUseSQL, st.ID); err != nil {
			return err
		}
		st.Uses++
		c.Statement = st.ID
		_, err = s.txExec(ctx, tx, insertClientSQL,
			c.ID, c.Name, c.Kind, c.SecretHash, c.Salt, boolInt(c.Active), toMillis(c.CreatedAt), c.Statement, toMillis(c.LinkedAt))
		if isUnique(err) {
			err = oauth.ErrClientExists
		}
		return err
	})
	switch {
	case errors.Is(err, oauth.ErrNotFound):
		return nil, fmt.Errorf("register agent client: %w", err)
	case errors.Is(err, oauth.ErrInvalidStatement):
		return st, fmt.Errorf("register agent client: %w", err)
	case err != nil:
		return nil, fmt.Errorf("register agent client %q: %w", c.ID, err)
	}
	return st, nil
}

// ReissueAgentSecret gives the never-linked agent client c.ID the secret of
// c and c.CreatedAt, if it registered with the statement whose hash is hash
// and that statement still registers agents (uses aside), in one write
// transaction: see oauth.Store.
func (s *Store) ReissueAgentSecret(ctx context.Context, hash []byte, c *oauth.Client) (*oauth.SoftwareStatement, error) {
	if c.CreatedAt.IsZero() {
		c.CreatedAt = s.now()
	}
	// Most registrations are an agent's first: a read settles those
	// without taking the writer. A client inserted after this read is
	// the caller's to handle (oauth.ErrClientExists from the insert).
	var one int
	switch err := s.queryRow(ctx, clientExistsSQL, c.ID).Scan(&one); {
	case errors.Is(err, sql.ErrNoRows):
		return nil, fmt.Errorf("reissue agent client %q: %w", c.ID, oauth.ErrNotFound)
	case err != nil:
		return nil, fmt.Errorf("reissue agent client %q: %w", c.ID, err)
	}
	var (
		st     *oauth.SoftwareStatement
		stored *oauth.Client
	)
	err := s.write(ctx, func(tx *sql.Tx) error {
		var err error
		stored, err = scanClient(s.txQueryRow(ctx, tx, getClientSQL, c.ID))
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return oauth.ErrNotFound
		case err != nil:
			return err
		case stored.Kind != oauth.KindAgent || !stored.Active || !stored.LinkedAt.IsZero():
			return oauth.ErrNotReissuable
		}
		st, err = scanStatement(s.txQueryRow(ctx, tx, getStatementSQL, stored.Statement))
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return oauth.ErrNotReissuable
		case err != nil:
			return err
		case !bytes.Equal(st.Hash, hash):
			st = nil
			return oauth.ErrNotReissuable
		}
		if err := reissuable(st, c.CreatedAt); err != nil {
			return err
		}
		res, err := s.txExec(ctx, tx, reissueAgentSecretSQL,
			c.SecretHash, c.Salt, toMillis(c.CreatedAt), c.ID, oauth.KindAgent)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n != 1 {
			return cmp.Or(err, oauth.ErrNotReissuable)
		}
		return nil
	})
	switch {
	case errors.Is(err, oauth.ErrNotFound), errors.Is(err, oauth.ErrNotReissuable):
		return nil, fmt.Errorf("reissue agent client %q: %w", c.ID, err)
	case errors.Is(err, oauth.ErrInvalidStatement):
		return st, fmt.Errorf("reissue agent client %q: %w", c.ID, err)
	case err != nil:
		return nil, fmt.Errorf("reissue agent client %q: %w", c.ID, err)
	}
	stored.SecretHash, stored.Salt, stored.CreatedAt = c.SecretHash, c.Salt, fromMillis(toMillis(c.CreatedAt))
	*c = *stored
	return st, nil
}

// reissuable returns why st lets no client it registered have a new secret
// at t, or nil: as statementUsable, but uses are not checked.
func reissuable(st *oauth.SoftwareStatement, t time.Time) error {
	u := *st
	u.MaxUses = 0
	return statementUsable(&u, t)
}

// statementUsable returns why st registers no agent at t, or nil.
func statementUsable(st *oauth.SoftwareStatement, t time.Time) error {
	switch {
	case !st.Active:
		return oauth.ErrStatementInactive
	case !st.ExpiresAt.IsZero() && !t.Before(st.ExpiresAt):
		return oauth.ErrStatementExpired
	case st.MaxUses > 0 && st.Uses >= st.MaxUses:
		return oauth.ErrStatementUsedUp
	}
	return nil
}

// updateOne runs an UPDATE and returns oauth.ErrNotFound if it matched no row.
func (s *Store) updateOne(ctx context.Context, q string, args ...any) error {
	res, err := s.exec(ctx, q, args...)
	if err != nil {
		return err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return oauth.ErrNotFound
	}
	return nil
}
