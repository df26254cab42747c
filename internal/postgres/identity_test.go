package postgres_test

import (
	"bytes"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/oauth"
	"github.com/berth-dev/berth/internal/oauth/oauthtest"
	"github.com/berth-dev/berth/internal/postgres/pgtest"
)

func TestStore_ServerBinding(t *testing.T) {
	oauthtest.RunServerBinding(t, func(t *testing.T) oauthtest.BindingStore { return MustOpenFresh(t) })
}

// TestRegisterWithStatement_TwoBrokers registers agents at once through three
// stores (three brokers) on one database with a statement of a few uses: the
// uses never exceed its maximum.
func TestRegisterWithStatement_TwoBrokers(t *testing.T) {
	dsn := pgtest.DSN(t)
	stores := []oauth.Store{MustOpen(t, dsn), MustOpen(t, dsn), MustOpen(t, dsn)}
	oauthtest.MustRegisterConcurrently(t, stores, 30, 7)
}

// legacyStatement is a statement of the old format (no secret), as a version
// before migration 0003 stored it in clear.
const legacyStatement = "eyJpZCI6IjExMTExMTExLTIyMjItNDMzMy04NDQ0LTU1NTU1NTU1NTU1NSIsImFjdGl2ZSI6dHJ1ZSwiaXNzdWVkQXQiOjE3MDAwMDAwMDAuMTIzLCJicm9rZXJWZXJzaW9uIjoiMC4xIn0="

// TestOpen_MigratesAgentIdentity opens a schema of the previous version with
// a statement in clear, agent clients and a server: the statement is hashed
// (its text column is gone) and still registers agents, marked legacy; the
// older agent clients count as linked (pruning spares them); the existing
// server's ID is bound to its agent client.
func TestOpen_MigratesAgentIdentity(t *testing.T) {
	dsn := pgtest.DSN(t)
	conn := pgtest.Admin(t, dsn)
	ctx := t.Context()
	var old []string
	for _, f := range []string{"migrations/0001_init.sql", "migrations/0002_cluster.sql"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		old = append(old, string(b))
	}
	for _, q := range append(old,
		`CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())`,
		`INSERT INTO schema_migrations (version, name) VALUES (1, '0001_init.sql'), (2, '0002_cluster.sql')`,
		`INSERT INTO software_statements (id, statement, issued_at, active) VALUES ('11111111-2222-4333-8444-555555555555', '`+legacyStatement+`', 1700000000123, true)`,
		`INSERT INTO clients (id, name, kind, active, created_at, statement) VALUES
			('agent-old', 'h', 'agent', true, 1700000001000, '11111111-2222-4333-8444-555555555555'),
			('agent-other', 'h2', 'agent', true, 1700000002000, '11111111-2222-4333-8444-555555555555'),
			('api-1', 'p', 'api', true, 1700000003000, '')`,
		`INSERT INTO servers (id, agent_client_id, open, created_at) VALUES ('srv-1', 'agent-old', true, 1700000004000)`,
	) {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%.60s: %v", q, err)
		}
	}

	s := MustOpen(t, dsn)
	sts := oauthtest.MustStatements(t, s)
	if len(sts) != 1 || !sts[0].Legacy || !sts[0].Active || sts[0].Statement != "" || !bytes.Equal(sts[0].Hash, oauth.StatementHash(legacyStatement)) {
		t.Fatalf("migrated statements = %+v", sts)
	}
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = 'software_statements' AND column_name = 'statement'`).Scan(&n); err != nil || n != 0 {
		t.Errorf("the statement text column is still there (%d, %v)", n, err)
	}
	c := oauthtest.NewClient("agent-new", oauth.KindAgent, oauthtest.T0)
	if _, err := s.RegisterWithStatement(ctx, oauth.StatementHash(legacyStatement), c); err != nil {
		t.Errorf("the migrated statement no longer registers: %v", err)
	}
	if got := oauthtest.MustGetClient(t, s, "agent-old"); !got.LinkedAt.Equal(got.CreatedAt) {
		t.Errorf("older agent client LinkedAt = %v, want its CreatedAt %v", got.LinkedAt, got.CreatedAt)
	}
	if got := oauthtest.MustGetClient(t, s, "api-1"); !got.LinkedAt.IsZero() {
		t.Errorf("API client LinkedAt = %v", got.LinkedAt)
	}
	if ids, err := s.DeleteUnlinkedAgentClients(ctx, oauthtest.T0.Add(time.Second)); err != nil || len(ids) != 1 || ids[0] != "agent-new" {
		t.Errorf("pruned %v, %v; want only the new unlinked agent-new", ids, err)
	}
	if err := s.DeleteServer(ctx, "srv-1"); err != nil {
		t.Fatal(err)
	}
	err := s.UpsertServer(ctx, &broker.Server{ID: "srv-1", AgentClientID: "agent-other", Open: true})
	if !errors.Is(err, broker.ErrConflict) {
		t.Errorf("another agent client took a server ID bound before the migration: %v", err)
	}
}
