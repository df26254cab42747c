// Package postgres keeps the broker's state in PostgreSQL, so that several
// brokers can share it. Its Store implements broker.Store, broker.ServerSyncer
// and oauth.Store with hand-written SQL over github.com/jackc/pgx/v5.
//
// A Store holds one pgxpool.Pool. Open applies the embedded numbered migrations
// in migrations/ in one transaction that first takes a transaction-scoped
// advisory lock keyed on the current schema, so that brokers starting together
// on one database apply each migration once: one applies them, the others
// wait for its commit and find nothing left to do. schema_migrations records
// what was applied; a schema migrated by a newer version is refused.
//
// There is no cache in front of the tables: every read is a query, and the
// indexes in migrations/0001_init.sql make the frequent ones (a
// DescribeSessions page of one owner, the placement queue, the capacity
// re-checks) index range scans. Writes that must see a consistent picture lock
// the rows they depend on. CommitPlacements locks the servers of a batch with
// SELECT ... FOR UPDATE in ID order (the same order in every broker, so two
// brokers placing on the same servers queue rather than deadlock), then
// re-counts those servers' sessions and decides in Go; its reads and writes go
// in two pipelined batches, so a transaction of 1,000 placements costs a few
// round trips. UpdateSession locks its session row; UpsertServer and
// DeleteServer lock their server row. A transaction that fails with a
// serialization failure or a deadlock is run again a few times.
//
// Session, server and OAuth times are stored as BIGINT unix milliseconds in
// UTC, 0 for the zero time, as internal/sqlite stores them; JSON values (a
// session's spec and excluded servers, a server's info) are stored as text.
// Every change to a server other than its contact time and broker takes a new
// Version from a sequence, which ServerStamps returns for the brokers' server
// caches.
//
// Migration 0002 creates the tables of internal/cluster (brokers, leases,
// relayed commands), which uses the Store's pool.
package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/migration"
	"github.com/berth-dev/berth/internal/oauth"
)

// Interface guards.
var (
	_ broker.Store        = (*Store)(nil)
	_ broker.ServerSyncer = (*Store)(nil)
	_ broker.LinkClearer  = (*Store)(nil)
	_ oauth.Store         = (*Store)(nil)
)

// PingTimeout bounds Ping, so that a health check fails promptly when
// PostgreSQL does not answer.
const PingTimeout = 2 * time.Second

// maxAttempts is how many times a transaction runs when it fails with a
// serialization failure or a deadlock.
const maxAttempts = 5

//go:embed migrations/*.sql
var migrationFS embed.FS

// Store is a broker.Store, broker.ServerSyncer and oauth.Store on a
// PostgreSQL database. It is safe for concurrent use. Create it with Open and
// release it with Close.
type Store struct {
	// Now returns the current time. The store uses it only where a caller leaves
	// a time zero that must be set: the CreatedAt of a new server, client or
	// signing key and the IssuedAt of a software statement. Open sets it to
	// time.Now; replace it before first use.
	Now func() time.Time

	pool *pgxpool.Pool
	log  *slog.Logger

	closeOnce sync.Once
}

// Open connects to the database that dsn names (a postgres:// URL or
// key=value pairs, as pgx accepts; pool_max_conns sets the pool size, which is
// otherwise max(8, 4*GOMAXPROCS)), applies pending migrations and returns the
// store. Tables live in the first schema of the connection's search_path,
// which the DSN may set (search_path=...). log may be nil.
func Open(ctx context.Context, dsn string, log *slog.Logger) (*Store, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	if !strings.Contains(dsn, "pool_max_conns") {
		cfg.MaxConns = int32(max(8, 4*runtime.GOMAXPROCS(0)))
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = 10 * time.Second
	}
	if _, ok := cfg.ConnConfig.RuntimeParams["application_name"]; !ok {
		cfg.ConnConfig.RuntimeParams["application_name"] = "berth"
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	s := &Store{Now: time.Now, pool: pool, log: log.With("component", "postgres")}
	if err := s.migrate(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("open store: %w", err)
	}
	return s, nil
}

// Pool returns the store's connection pool, for packages that keep their own
// tables in the same database (internal/cluster). Closing the store closes it.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Ping checks that the database answers, within PingTimeout.
func (s *Store) Ping(ctx context.Context) (err error) {
	defer unavailable(&err)
	ctx, cancel := context.WithTimeout(ctx, PingTimeout)
	defer cancel()
	if err := s.pool.Ping(ctx); err != nil {
		return fmt.Errorf("ping store: %w", err)
	}
	return nil
}

// closeTimeout bounds how long Close waits for the pool's connections to
// close, which can take pgx up to 15 s when the database does not answer.
const closeTimeout = 3 * time.Second

// Close closes the pool: it waits for connections in use to be released and
// closed, for up to a few seconds, after which they go on closing in the
// background. Later calls do nothing.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		done := make(chan struct{})
		go func() {
			defer close(done)
			s.pool.Close()
		}()
		select {
		case <-done:
		case <-time.After(closeTimeout):
			s.log.Warn("connections still closing", "after", closeTimeout)
		}
	})
	return nil
}

// migrate applies the pending migrations in one transaction and records each
// in schema_migrations. The transaction first takes an advisory lock keyed on
// the current schema, so concurrent Opens on one schema apply them once. It
// refuses a schema migrated by a newer version.
func (s *Store) migrate(ctx context.Context) error {
	ms, err := migration.Load(migrationFS, "migrations")
	if err != nil {
		return fmt.Errorf("read migrations: %w", err)
	}
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var schema *string
		if err := tx.QueryRow(ctx, `SELECT current_schema()`).Scan(&schema); err != nil {
			return fmt.Errorf("read current schema: %w", err)
		}
		if schema == nil {
			return errors.New("no schema of the search_path exists")
		}
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext('berth-migrate:' || $1::text))`, *schema); err != nil {
			return fmt.Errorf("lock schema %q for migration: %w", *schema, err)
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version    INTEGER     PRIMARY KEY,
			name       TEXT        NOT NULL,
			applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
		)`); err != nil {
			return fmt.Errorf("create schema_migrations: %w", err)
		}
		var cur int
		if err := tx.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM schema_migrations`).Scan(&cur); err != nil {
			return fmt.Errorf("read schema version: %w", err)
		}
		if n := len(ms); n > 0 && cur > ms[n-1].Version {
			return fmt.Errorf("database schema version %d is newer than this program knows (%d)", cur, ms[n-1].Version)
		}
		for _, m := range ms {
			if m.Version <= cur {
				continue
			}
			if _, err := tx.Exec(ctx, m.SQL); err != nil {
				return fmt.Errorf("apply migration %s: %w", m.Name, err)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version, name) VALUES ($1, $2)`,
				m.Version, m.Name); err != nil {
				return fmt.Errorf("record migration %s: %w", m.Name, err)
			}
			s.log.Info("applied migration", "schema", *schema, "migration", m.Name)
		}
		return nil
	})
}

// inTx runs fn in a transaction and commits it if fn returns nil. If the
// transaction fails with a serialization failure or a deadlock, it runs fn
// again in a new one, up to maxAttempts times; fn must be safe to repeat.
func (s *Store) inTx(ctx context.Context, fn func(tx pgx.Tx) error) error {
	for attempt := 1; ; attempt++ {
		err := pgx.BeginFunc(ctx, s.pool, fn)
		if err == nil || attempt == maxAttempts || !retryable(err) {
			return err
		}
		s.log.Debug("transaction failed, trying again", "attempt", attempt, "err", err)
		// Back off a little, with jitter, so the transactions that collided do
		// not collide again.
		d := time.Duration(attempt)*5*time.Millisecond + rand.N(5*time.Millisecond)
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return err
		}
	}
}

// SQLSTATE codes the store handles.
const (
	codeUniqueViolation      = "23505"
	codeSerializationFailure = "40001"
	codeDeadlockDetected     = "40P01"
)

// pgCode returns the SQLSTATE of err, or "" if it is not a PostgreSQL error.
func pgCode(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// isUnique reports whether err is a UNIQUE or PRIMARY KEY violation.
func isUnique(err error) bool { return pgCode(err) == codeUniqueViolation }

// errRetry makes inTx run a transaction again: it lost a race that the next
// attempt will see the outcome of.
var errRetry = errors.New("concurrent change, try again")

// retryable reports whether a transaction that failed with err may succeed if
// run again.
func retryable(err error) bool {
	if errors.Is(err, errRetry) {
		return true
	}
	switch pgCode(err) {
	case codeSerializationFailure, codeDeadlockDetected:
		return true
	}
	return false
}

// now returns s.Now() in UTC, truncated to the stored precision.
func (s *Store) now() time.Time {
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	return fromMillis(toMillis(now()))
}

// toMillis converts t to unix milliseconds; the zero time is 0.
func toMillis(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// fromMillis converts unix milliseconds to a UTC time; 0 is the zero time.
func fromMillis(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}

// unavailable wraps *err with broker.ErrStoreUnavailable when it says that
// PostgreSQL cannot be reached (down, restarting, the connection lost), so
// that the API answers 503 and not 500.
func unavailable(err *error) {
	if *err == nil || errors.Is(*err, broker.ErrStoreUnavailable) {
		return
	}
	if isUnavailable(*err) {
		*err = fmt.Errorf("%w (%w)", broker.ErrStoreUnavailable, *err)
	}
}

// isUnavailable reports whether err is a failure to reach PostgreSQL rather
// than an answer from it.
func isUnavailable(err error) bool {
	var ce *pgconn.ConnectError
	var ne net.Error
	switch {
	case errors.As(err, &ce), errors.As(err, &ne), pgconn.Timeout(err),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed):
		return true
	}
	if strings.HasPrefix(pgCode(err), "08") { // connection exception
		return true
	}
	switch pgCode(err) {
	case "57P01", "57P02", "57P03", // admin shutdown, crash shutdown, cannot connect now
		"53300": // too many connections
		return true
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return false
	}
	// pgx reports a connection that died under a query as "conn closed".
	return strings.Contains(err.Error(), "conn closed") || strings.Contains(err.Error(), "closed pool")
}
