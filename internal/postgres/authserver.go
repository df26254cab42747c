package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/berth-dev/berth/internal/oauth"
)

// PutAuthServer registers a or replaces the options of the server of its
// URL, keeping its CreatedAt (set in a). A zero a.CreatedAt means now.
func (s *Store) PutAuthServer(ctx context.Context, a *oauth.AuthServer) (err error) {
	defer unavailable(&err)
	created := a.CreatedAt
	if created.IsZero() {
		created = s.now()
	}
	var ms int64
	err = s.pool.QueryRow(ctx, `INSERT INTO auth_servers (url, jws_algorithm, issuer, audience, created_at)
		VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (url) DO UPDATE SET jws_algorithm = excluded.jws_algorithm,
			issuer = excluded.issuer, audience = excluded.audience
		RETURNING created_at`,
		a.URL, a.Algorithm, a.Issuer, a.Audience, toMillis(created)).Scan(&ms)
	if err != nil {
		return fmt.Errorf("register auth server %q: %w", a.URL, err)
	}
	a.CreatedAt = fromMillis(ms)
	return nil
}

// AuthServers returns the registered servers, oldest first.
func (s *Store) AuthServers(ctx context.Context) (_ []*oauth.AuthServer, err error) {
	defer unavailable(&err)
	rows, _ := s.pool.Query(ctx, `SELECT url, jws_algorithm, issuer, audience, created_at
		FROM auth_servers ORDER BY created_at, seq`)
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (*oauth.AuthServer, error) {
		var (
			a       oauth.AuthServer
			created int64
		)
		if err := r.Scan(&a.URL, &a.Algorithm, &a.Issuer, &a.Audience, &created); err != nil {
			return nil, err
		}
		a.CreatedAt = fromMillis(created)
		return &a, nil
	})
	if err != nil {
		return nil, fmt.Errorf("list auth servers: %w", err)
	}
	return out, nil
}

// DeleteAuthServer unregisters the server of URL url; oauth.ErrNotFound if
// there is none.
func (s *Store) DeleteAuthServer(ctx context.Context, url string) (err error) {
	defer unavailable(&err)
	if err := s.updateOne(ctx, `DELETE FROM auth_servers WHERE url = $1`, url); err != nil {
		return fmt.Errorf("unregister auth server %q: %w", url, err)
	}
	return nil
}
