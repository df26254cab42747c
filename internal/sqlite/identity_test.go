package sqlite_test

import (
	"bytes"
	"database/sql"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/oauth"
	"github.com/berth-dev/berth/internal/oauth/oauthtest"
)

func TestStore_ServerBinding(t *testing.T) {
	oauthtest.RunServerBinding(t, func(t *testing.T) oauthtest.BindingStore { return MustOpen(t, tempPath(t)) })
}

// legacyStatement is a statement of the old format (no secret), as a
// version before migration 0002 stored it in clear.
const legacyStatement = "eyJpZCI6IjExMTExMTExLTIyMjItNDMzMy04NDQ0LTU1NTU1NTU1NTU1NSIsImFjdGl2ZSI6dHJ1ZSwiaXNzdWVkQXQiOjE3MDAwMDAwMDAuMTIzLCJicm9rZXJWZXJzaW9uIjoiMC4xIn0="

// TestOpen_MigratesAgentIdentity opens a database of the previous schema with
// a statement in clear, agent clients and a server: the statement is hashed
// (its text is gone from the file) and still registers agents, marked legacy;
// the older agent clients count as linked (pruning spares them); the existing
// server's ID is bound to its agent client.
func TestOpen_MigratesAgentIdentity(t *testing.T) {
	path := tempPath(t)
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	init, err := os.ReadFile("migrations/0001_init.sql")
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)`,
		string(init),
		`INSERT INTO schema_migrations VALUES (1, '0001_init.sql', 0)`,
		`INSERT INTO software_statements (id, statement, issued_at, active) VALUES ('11111111-2222-4333-8444-555555555555', '` + legacyStatement + `', 1700000000123, 1)`,
		`INSERT INTO clients (id, name, kind, active, created_at, statement) VALUES
			('agent-old', 'h', 'agent', 1, 1700000001000, '11111111-2222-4333-8444-555555555555'),
			('agent-other', 'h2', 'agent', 1, 1700000002000, '11111111-2222-4333-8444-555555555555'),
			('api-1', 'p', 'api', 1, 1700000003000, '')`,
		`INSERT INTO servers (id, agent_client_id, open, created_at) VALUES ('srv-1', 'agent-old', 1, 1700000004000)`,
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%.60s: %v", q, err)
		}
	}
	db.Close()

	s := MustOpen(t, path)
	ctx := t.Context()
	sts := oauthtest.MustStatements(t, s)
	if len(sts) != 1 || !sts[0].Legacy || !sts[0].Active || sts[0].Statement != "" || !bytes.Equal(sts[0].Hash, oauth.StatementHash(legacyStatement)) {
		t.Fatalf("migrated statements = %+v", sts)
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
	err = s.UpsertServer(ctx, &broker.Server{ID: "srv-1", AgentClientID: "agent-other", Open: true})
	if !errors.Is(err, broker.ErrConflict) {
		t.Errorf("another agent client took a server ID bound before the migration: %v", err)
	}
}
