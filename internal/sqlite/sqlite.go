// Package sqlite keeps the broker's state in a SQLite database file. Its Store
// implements broker.Store and oauth.Store with hand-written SQL over
// modernc.org/sqlite (pure Go, no cgo) and applies the embedded numbered
// migrations in migrations/ when it opens the file.
//
// Writes go through one dedicated connection whose transactions start with
// BEGIN IMMEDIATE, so concurrent goroutines queue in database/sql instead of
// failing with SQLITE_BUSY; reads use a separate pool and, in WAL mode, are never
// blocked by the writer. Another process (the admin CLI) may open the same file:
// busy_timeout makes each side wait for the other's write lock.
//
// A Store opened with Open keeps a write-through, in-memory mirror of the
// sessions table (see mirror.go) and serves session reads from it. That needs
// the broker process to own the file: Open takes an exclusive lock on
// <path>.lock, and processes that only manage clients, keys, statements and
// settings beside a running broker open the file with OpenWith and
// Options.NoSessionCache. The broker opens its store with
// Options.LoadInBackground, so that the mirror loads while the rest of the
// broker starts.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	sqlitedrv "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/migration"
	"github.com/berth-dev/berth/internal/oauth"
)

// Interface guards.
var (
	_ broker.Store = (*Store)(nil)
	_ oauth.Store  = (*Store)(nil)
)

// BusyTimeout is how long a connection waits for a lock held by another
// connection or process before it fails with SQLITE_BUSY.
const BusyTimeout = 10 * time.Second

// The bounds of the page caches, in KiB: the writer's, and each of the
// read pool's. A cache grows only as pages are read and, once full, holds
// what was used last. The store's hot pages are the indexes and the
// sessions placement and updates touch; the servers' rows (about 1.5 KB
// each, with the host report) are rewritten only every minute or so, and
// once read at start. With 32 and 16 MiB a broker of 10,000 servers kept
// its whole servers table in two caches (about 15 MB each).
const (
	WriterCacheKiB = 8192
	ReaderCacheKiB = 4096
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// Store is a broker.Store and oauth.Store on one SQLite file. It is safe for
// concurrent use. Create it with Open and release it with Close.
type Store struct {
	// Now returns the current time. The store uses it only where a caller leaves
	// a time zero that must be set: the CreatedAt of a new server, client or
	// signing key and the IssuedAt of a software statement. Open sets it to
	// time.Now; replace it before first use.
	Now func() time.Time

	path string
	w    *sql.DB // the single writer connection
	r    *sql.DB // the read pool
	ws   stmtCache
	rs   stmtCache

	// wsem (capacity 1) is held by every write transaction from BEGIN until
	// the mirror has applied its commit, so that the mirror applies commits in
	// commit order.
	wsem chan struct{}
	// m mirrors the sessions table; nil with Options.NoSessionCache.
	m *mirror
	// lock is the open <path>.lock: held exclusively for the store's lifetime
	// by a store with a mirror, and shared for the duration of each session
	// write by one without.
	lock *os.File
	// loaded is closed once the mirror's first load has ended; stopLoad
	// cancels a load in the background (Options.LoadInBackground).
	loaded   chan struct{}
	stopLoad context.CancelFunc
	loadErr  error // the background load's; read after loaded is closed

	closeOnce sync.Once
	closeErr  error
}

// Options change how OpenWith opens a store. The zero value gives what Open
// gives.
type Options struct {
	// NoSessionCache opens the file without the in-memory mirror of the
	// sessions table and without taking the lock file, so that it can be used
	// while a broker (a store opened with the mirror) runs on the same file:
	// for the broker's admin commands, which manage clients, signing keys,
	// software statements and settings. Session reads then run SQL. Writes of
	// sessions and servers (InsertSessions, CommitPlacements, UpdateSession,
	// DeleteSession, PurgeDeleted, UpsertServer, DeleteServer), which would
	// leave the broker's mirror out of date, fail with a *LockError while a
	// store with the mirror holds the file.
	NoSessionCache bool
	// LoadInBackground returns from Open before the sessions are in the
	// mirror: a goroutine loads them, holding the writer so that writes wait
	// for it, while reads run SQL as they do when the mirror is stale. A
	// failed load leaves the mirror stale, and the next session write loads it
	// again. Loaded says when the load has ended, and LoadError how. The
	// broker opens its store so, and starts the rest of itself meanwhile.
	LoadInBackground bool
}

// LockError is the error of Open while another store with a session mirror
// (another broker) holds the database file, and of the session and server
// writes of a NoSessionCache store in that case.
type LockError struct {
	// Path is the absolute path of the database file.
	Path string
}

// Error says which file is held and what to do.
func (e *LockError) Error() string {
	return "another broker is using " + e.Path + ": stop it or point persistence-dsn elsewhere"
}

// Open opens (creating it with mode 0600 if needed) the database file at path,
// applies pending migrations, loads the sessions into the store's in-memory
// mirror and returns the store. It takes an exclusive lock on path + ".lock"
// until Close, and fails with a *LockError if another store with a mirror, in
// this process or another, holds it. It is OpenWith with zero Options.
func Open(ctx context.Context, path string) (*Store, error) {
	return OpenWith(ctx, path, Options{})
}

// OpenWith opens the database file at path as Open does, with opts.
func OpenWith(ctx context.Context, path string, opts Options) (*Store, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	s := &Store{Now: time.Now, path: abs, wsem: make(chan struct{}, 1)}
	if err := s.openLock(!opts.NoSessionCache); err != nil {
		s.Close()
		return nil, fmt.Errorf("open store: %w", err)
	}
	// Create the file ourselves so that it gets mode 0600; SQLite gives its -wal
	// and -shm files the mode of the database file. O_EXCL means an existing file
	// is never opened here: closing a descriptor of a database file that SQLite
	// holds POSIX locks on would drop those locks.
	f, err := os.OpenFile(abs, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	switch {
	case err == nil:
		if err := f.Close(); err != nil {
			return nil, fmt.Errorf("open store: %w", err)
		}
	case errors.Is(err, fs.ErrExist):
	default:
		return nil, fmt.Errorf("open store: %w", err)
	}

	name := (&url.URL{Scheme: "file", Path: filepath.ToSlash(abs)}).String()
	busy := "_pragma=busy_timeout(" + strconv.FormatInt(BusyTimeout.Milliseconds(), 10) + ")"
	// journal_size_limit truncates the WAL to 64 MiB after a checkpoint.
	wdsn := name + "?" + busy + "&_pragma=foreign_keys(1)&_pragma=journal_mode(WAL)" +
		"&_pragma=synchronous(NORMAL)&_pragma=cache_size(" + strconv.Itoa(-WriterCacheKiB) + ")" +
		"&_pragma=journal_size_limit(67108864)&_txlock=immediate"
	rdsn := name + "?" + busy + "&_pragma=foreign_keys(1)&_pragma=query_only(1)&_pragma=cache_size(" + strconv.Itoa(-ReaderCacheKiB) + ")"

	if s.w, err = sql.Open("sqlite", wdsn); err != nil {
		s.Close()
		return nil, fmt.Errorf("open store: %w", err)
	}
	s.w.SetMaxOpenConns(1)
	s.w.SetMaxIdleConns(1)
	s.w.SetConnMaxLifetime(0)
	s.w.SetConnMaxIdleTime(0)
	s.ws.db = s.w
	if err := s.open(ctx, rdsn); err != nil {
		s.Close()
		return nil, fmt.Errorf("open store %s: %w", abs, err)
	}
	s.loaded = make(chan struct{})
	switch {
	case opts.NoSessionCache:
		close(s.loaded)
	case opts.LoadInBackground:
		s.m = newMirror()
		s.m.stale = true
		s.wsem <- struct{}{} // the loader's until it has loaded
		lctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		s.stopLoad = cancel
		go s.loadInBackground(lctx)
	default:
		if err := s.write(ctx, func(tx *sql.Tx) (err error) {
			s.m, err = loadMirror(ctx, tx)
			return err
		}); err != nil {
			s.Close()
			return nil, fmt.Errorf("open store %s: load sessions: %w", abs, err)
		}
		close(s.loaded)
	}
	return s, nil
}

// loadInBackground loads the mirror for Open with LoadInBackground. Open
// has taken the writer's turn for it, so no session or server write commits
// until the mirror has it, and it gives the turn back when done. It reads in
// a transaction of the read pool, so that statements run on the writer's
// connection outside a turn (those of clients, keys and server flags, which
// the mirror does not hold) need not wait for the load.
func (s *Store) loadInBackground(ctx context.Context) {
	defer close(s.loaded)
	defer s.releaseWriter()
	if beforeLoad != nil {
		beforeLoad(ctx)
	}
	var fresh *mirror
	tx, err := s.r.BeginTx(ctx, nil)
	if err == nil {
		fresh, err = loadMirror(ctx, tx)
		tx.Rollback() // a read: nothing to commit
	}
	if err != nil {
		s.loadErr = fmt.Errorf("load sessions: %w", err)
	}
	s.m.reset(fresh, err == nil)
}

// beforeLoad, when tests set it, runs at the start of loadInBackground.
var beforeLoad func(ctx context.Context)

// Loaded returns a channel closed once the store's sessions are in its
// mirror, or the attempt to load them has failed (the mirror is then stale,
// and reads run SQL until a write loads it). It is closed when Open returns,
// unless the store was opened with LoadInBackground.
func (s *Store) Loaded() <-chan struct{} { return s.loaded }

// LoadError returns why the background load failed, nil if it did not or
// has not ended (see Loaded).
func (s *Store) LoadError() error {
	select {
	case <-s.loaded:
		return s.loadErr
	default:
		return nil
	}
}

// openLock opens the lock file and, if exclusive, takes the lock for the
// store's lifetime.
func (s *Store) openLock(exclusive bool) error {
	f, err := os.OpenFile(s.path+".lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("open lock file: %w", err)
	}
	s.lock = f
	if !exclusive {
		return nil
	}
	ok, err := tryLock(f, true)
	if err != nil {
		return fmt.Errorf("lock %s: %w", f.Name(), err)
	}
	if !ok {
		return &LockError{Path: s.path}
	}
	return nil
}

// open migrates the database, prepares the writer's statements and opens the
// read pool on rdsn.
func (s *Store) open(ctx context.Context, rdsn string) error {
	if err := s.migrate(ctx); err != nil {
		return err
	}
	// Refresh the planner's statistics where they are stale (cheap; what SQLite
	// recommends on opening a long-lived connection), so that the read
	// connections opened below plan with them.
	if _, err := s.w.ExecContext(ctx, `PRAGMA optimize=0x10002`); err != nil {
		return fmt.Errorf("optimize: %w", err)
	}
	if err := s.ws.prepare(ctx, writeStmts...); err != nil {
		return err
	}
	r, err := sql.Open("sqlite", rdsn)
	if err != nil {
		return err
	}
	s.r = r
	n := max(4, runtime.GOMAXPROCS(0))
	s.r.SetMaxOpenConns(n)
	s.r.SetMaxIdleConns(n)
	s.r.SetConnMaxLifetime(0)
	s.r.SetConnMaxIdleTime(0)
	s.rs.db = s.r
	return s.r.PingContext(ctx)
}

// Path returns the absolute path of the database file.
func (s *Store) Path() string { return s.path }

// Ping checks that both the writer and the read pool answer.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.w.PingContext(ctx); err != nil {
		return fmt.Errorf("ping store: %w", err)
	}
	if err := s.r.PingContext(ctx); err != nil {
		return fmt.Errorf("ping store: %w", err)
	}
	return nil
}

// Close refreshes the planner's statistics if they are stale, releases the
// session mirror and the lock file, and closes the read pool and the writer.
// Later calls return the first call's result.
func (s *Store) Close() error {
	s.closeOnce.Do(func() { s.closeErr = s.close() })
	return s.closeErr
}

func (s *Store) close() error {
	if s.stopLoad != nil {
		s.stopLoad()
		<-s.loaded
	}
	if s.m != nil {
		s.m.drop() // reads now reach the closed database and fail
	}
	errs := []error{s.rs.close(), s.ws.close()}
	if s.w != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := s.w.ExecContext(ctx, `PRAGMA optimize`)
		cancel()
		errs = append(errs, err)
	}
	if s.r != nil {
		errs = append(errs, s.r.Close())
	}
	if s.w != nil {
		errs = append(errs, s.w.Close())
	}
	if s.lock != nil {
		errs = append(errs, s.lock.Close()) // releases the lock
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close store: %w", err)
	}
	return nil
}

// migrate applies the pending migrations in one transaction and records each in
// schema_migrations. It refuses a database migrated by a newer version.
func (s *Store) migrate(ctx context.Context) error {
	ms, err := migration.Load(migrationFS, "migrations")
	if err != nil {
		return fmt.Errorf("read migrations: %w", err)
	}
	return s.write(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version    INTEGER PRIMARY KEY,
			name       TEXT    NOT NULL,
			applied_at INTEGER NOT NULL
		)`); err != nil {
			return fmt.Errorf("create schema_migrations: %w", err)
		}
		var cur int
		if err := tx.QueryRowContext(ctx, `SELECT coalesce(max(version), 0) FROM schema_migrations`).Scan(&cur); err != nil {
			return fmt.Errorf("read schema version: %w", err)
		}
		if n := len(ms); n > 0 && cur > ms[n-1].Version {
			return fmt.Errorf("database schema version %d is newer than this program knows (%d)", cur, ms[n-1].Version)
		}
		for _, m := range ms {
			if m.Version <= cur {
				continue
			}
			if _, err := tx.ExecContext(ctx, m.SQL); err != nil {
				return fmt.Errorf("apply migration %s: %w", m.Name, err)
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)`,
				m.Version, m.Name, time.Now().UnixMilli()); err != nil {
				return fmt.Errorf("record migration %s: %w", m.Name, err)
			}
		}
		return nil
	})
}

// write runs fn in a write transaction (BEGIN IMMEDIATE on the single writer
// connection) and commits it if fn returns nil. fn must not call other Store
// methods that write: the writer is busy until write returns. Transactions that
// change sessions or server tags use writeMirrored instead.
func (s *Store) write(ctx context.Context, fn func(tx *sql.Tx) error) error {
	if err := s.acquireWriter(ctx); err != nil {
		return err
	}
	defer s.releaseWriter()
	return s.runTx(ctx, fn)
}

// writeMirrored is write for a transaction that changes sessions or server
// tags. With a mirror, it calls apply (which may be nil) with the mirror
// locked once the transaction has committed, before another write transaction
// can begin; if the commit fails, and so may or may not have happened, it
// reloads the mirror from the database. Without a mirror, it holds the lock
// file shared for the transaction, and fails with a *LockError if a store with
// a mirror holds it.
func (s *Store) writeMirrored(ctx context.Context, fn func(tx *sql.Tx) error, apply func(m *mirror)) error {
	if err := s.acquireWriter(ctx); err != nil {
		return err
	}
	defer s.releaseWriter()
	if s.m == nil {
		ok, err := tryLock(s.lock, false)
		if err != nil {
			return fmt.Errorf("lock %s: %w", s.lock.Name(), err)
		}
		if !ok {
			return &LockError{Path: s.path}
		}
		defer unlock(s.lock)
		return s.runTx(ctx, fn)
	}
	if s.m.isStale() {
		s.reloadMirror(ctx)
	}
	err := s.runTx(ctx, fn)
	var ce commitError
	switch {
	case errors.As(err, &ce):
		s.reloadMirror(ctx)
	case err == nil && apply != nil:
		s.m.apply(apply)
	}
	return err
}

// acquireWriter waits for the store's turn to write, or for ctx to end.
func (s *Store) acquireWriter(ctx context.Context) error {
	select {
	case s.wsem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("begin: %w", ctx.Err())
	}
}

func (s *Store) releaseWriter() { <-s.wsem }

// runTx runs fn in a transaction of the writer; the caller holds the writer.
// A failed commit is a commitError.
func (s *Store) runTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return commitError{err}
	}
	return nil
}

// commitError is a failed COMMIT, after which the transaction's outcome is
// not known for sure.
type commitError struct{ err error }

func (e commitError) Error() string { return "commit: " + e.err.Error() }
func (e commitError) Unwrap() error { return e.err }

// reloadMirror replaces the mirror's contents with the database's; the caller
// holds the writer. If that fails, the mirror is marked stale: reads run SQL
// and the next mirrored write tries again.
func (s *Store) reloadMirror(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), BusyTimeout)
	defer cancel()
	var fresh *mirror
	err := s.runTx(ctx, func(tx *sql.Tx) (err error) {
		fresh, err = loadMirror(ctx, tx)
		return err
	})
	s.m.reset(fresh, err == nil)
}

// maxCachedStmts bounds each statement cache; ListSessions builds one statement
// per combination of filter fields, so the number of distinct queries is small.
const maxCachedStmts = 128

// writeStmts are the statements the writer prepares at Open: those that run
// often. The writer's cache cannot prepare more later, as preparing needs its
// only connection, which a transaction may hold.
var writeStmts = []string{
	getServerForUpsertSQL, insertServerSQL, updateServerSQL, deleteServerTagsSQL, setServerOpenSQL, setServerSeenSQL,
	insertSessionSQL, updateSessionSQL, updateLiveSQL, getSessionSQL, findSessionSQL, capacitySQL, deleteSessionSQL,
	getSettingSQL, insertSettingSQL, insertEventSQL, insertEventsSQL,
	auditHeadSQL, auditInsertSQL, auditInsertFullSQL, auditSetHeadSQL, // audit.go: every batch of the audit log
	// Agent registration and first link (oauth.go, server.go).
	getClientSQL, getStatementByHashSQL, getStatementSQL, countStatementUseSQL, insertClientSQL, reissueAgentSecretSQL,
	getBindingSQL, bindServerSQL, markLinkedSQL,
}

// stmtCache keeps prepared statements by SQL text, so that frequent queries are
// parsed and planned once per connection instead of on every call.
type stmtCache struct {
	db *sql.DB
	mu sync.Mutex
	m  map[string]*sql.Stmt
	// frozen caches prepare nothing after prepare; get returns nil for others.
	frozen bool
}

// prepare prepares qs and freezes the cache.
func (c *stmtCache) prepare(ctx context.Context, qs ...string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[string]*sql.Stmt)
	}
	for _, q := range qs {
		st, err := c.db.PrepareContext(ctx, q)
		if err != nil {
			return fmt.Errorf("prepare %q: %w", q, err)
		}
		c.m[q] = st
	}
	c.frozen = true
	return nil
}

// get returns the prepared statement for q, or nil (and no error) if the cache
// is full or frozen and q must run unprepared.
func (c *stmtCache) get(ctx context.Context, q string) (*sql.Stmt, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st, ok := c.m[q]; ok {
		return st, nil
	}
	if c.frozen || len(c.m) >= maxCachedStmts {
		return nil, nil
	}
	st, err := c.db.PrepareContext(ctx, q)
	if err != nil {
		return nil, err
	}
	if c.m == nil {
		c.m = make(map[string]*sql.Stmt)
	}
	c.m[q] = st
	return st, nil
}

func (c *stmtCache) close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	for _, st := range c.m {
		errs = append(errs, st.Close())
	}
	c.m = nil
	return errors.Join(errs...)
}

// query runs a read query on the read pool.
func (s *Store) query(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	st, err := s.rs.get(ctx, q)
	if err != nil {
		return nil, err
	}
	if st == nil {
		return s.r.QueryContext(ctx, q, args...)
	}
	return st.QueryContext(ctx, args...)
}

// queryRow runs a one-row read query on the read pool.
func (s *Store) queryRow(ctx context.Context, q string, args ...any) rowScanner {
	st, err := s.rs.get(ctx, q)
	if err != nil {
		return errRow{err}
	}
	if st == nil {
		return s.r.QueryRowContext(ctx, q, args...)
	}
	return st.QueryRowContext(ctx, args...)
}

// exec runs a statement on the writer outside an explicit transaction.
func (s *Store) exec(ctx context.Context, q string, args ...any) (sql.Result, error) {
	st, err := s.ws.get(ctx, q)
	if err != nil {
		return nil, err
	}
	if st == nil {
		return s.w.ExecContext(ctx, q, args...)
	}
	return st.ExecContext(ctx, args...)
}

// txStmt returns q prepared for tx (a transaction of the writer), reusing the
// writer's cached statement.
func (s *Store) txStmt(ctx context.Context, tx *sql.Tx, q string) (*sql.Stmt, error) {
	st, err := s.ws.get(ctx, q)
	if err != nil {
		return nil, err
	}
	if st == nil {
		return tx.PrepareContext(ctx, q)
	}
	return tx.StmtContext(ctx, st), nil
}

// txExec runs q in tx with a cached statement.
func (s *Store) txExec(ctx context.Context, tx *sql.Tx, q string, args ...any) (sql.Result, error) {
	st, err := s.txStmt(ctx, tx, q)
	if err != nil {
		return nil, err
	}
	return st.ExecContext(ctx, args...)
}

// txQueryRow runs a one-row query in tx with a cached statement.
func (s *Store) txQueryRow(ctx context.Context, tx *sql.Tx, q string, args ...any) rowScanner {
	st, err := s.txStmt(ctx, tx, q)
	if err != nil {
		return errRow{err}
	}
	return st.QueryRowContext(ctx, args...)
}

// rowScanner is *sql.Row or *sql.Rows.
type rowScanner interface{ Scan(dest ...any) error }

// errRow is a rowScanner whose query could not be prepared.
type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }

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

// isUnique reports whether err is a UNIQUE or PRIMARY KEY constraint violation.
func isUnique(err error) bool {
	var e *sqlitedrv.Error
	if !errors.As(err, &e) {
		return false
	}
	switch e.Code() {
	case sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
		return true
	}
	return false
}

// placeholders returns "?, ?, ?" with n marks.
func placeholders(n int) string {
	return strings.TrimSuffix(strings.Repeat("?, ", n), ", ")
}

// boolInt stores a bool as 0 or 1.
func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
