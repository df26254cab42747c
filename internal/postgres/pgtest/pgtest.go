// Package pgtest gives tests a PostgreSQL schema of their own. Tests that need
// PostgreSQL call DSN, which skips them unless BERTH_TEST_PG_DSN names a
// database (for example postgres://postgres@127.0.0.1:5432/test?sslmode=disable)
// and fails them instead if BERTH_TEST_PG_REQUIRED=1, as CI sets it.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Environment variables that DSN reads.
const (
	// EnvDSN names the database that tests create their schemas in.
	EnvDSN = "BERTH_TEST_PG_DSN"
	// EnvRequired, set to 1, makes DSN fail a test instead of skipping it when
	// EnvDSN is not set.
	EnvRequired = "BERTH_TEST_PG_REQUIRED"
)

// DSN creates a fresh schema berth_t_<random hex> in the database that
// BERTH_TEST_PG_DSN names and returns that DSN with search_path set to the
// schema, so that everything a store opened with it creates lives there. The
// schema is dropped (CASCADE) when tb ends. Without BERTH_TEST_PG_DSN, DSN
// skips tb, or fails it if BERTH_TEST_PG_REQUIRED=1.
func DSN(tb testing.TB) string {
	tb.Helper()
	base := os.Getenv(EnvDSN)
	if base == "" {
		if os.Getenv(EnvRequired) == "1" {
			tb.Fatalf("%s is not set and %s=1", EnvDSN, EnvRequired)
		}
		tb.Skipf("%s is not set", EnvDSN)
	}
	var b [8]byte
	rand.Read(b[:])
	schema := "berth_t_" + hex.EncodeToString(b[:])

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		tb.Fatalf("pgtest: connect to %s: %v", EnvDSN, err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `CREATE SCHEMA `+pgx.Identifier{schema}.Sanitize()); err != nil {
		tb.Fatalf("pgtest: create schema %s: %v", schema, err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, base)
		if err != nil {
			tb.Errorf("pgtest: drop schema %s: %v", schema, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, `DROP SCHEMA `+pgx.Identifier{schema}.Sanitize()+` CASCADE`); err != nil {
			tb.Errorf("pgtest: drop schema %s: %v", schema, err)
		}
	})
	return WithSearchPath(tb, base, schema)
}

// WithSearchPath returns dsn, a URL or key=value pairs, with the search_path
// run-time parameter set to schema.
func WithSearchPath(tb testing.TB, dsn, schema string) string {
	tb.Helper()
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			tb.Fatalf("pgtest: parse %s: %v", EnvDSN, err)
		}
		q := u.Query()
		q.Set("search_path", schema)
		u.RawQuery = q.Encode()
		return u.String()
	}
	return dsn + " search_path=" + schema
}

// Admin connects to dsn (BERTH_TEST_PG_DSN or one that DSN returned) with one
// connection that tb closes when it ends, for tests that inspect or change the
// database behind a store's back.
func Admin(tb testing.TB, dsn string) *pgx.Conn {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		tb.Fatalf("pgtest: connect: %v", err)
	}
	tb.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}
