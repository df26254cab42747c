package main

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "modernc.org/sqlite"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/audit"
	"github.com/berth-dev/berth/internal/poll"
	"github.com/berth-dev/berth/internal/postgres/pgtest"
	"github.com/berth-dev/berth/internal/sqlite"
)

// auditLines runs `berth-broker audit args...` and decodes its records.
func auditLines(t *testing.T, b *testBroker, args ...string) []audit.Record {
	t.Helper()
	var out strings.Builder
	var errOut strings.Builder
	code := run(context.Background(), append([]string{"audit", "--config", b.writeConfig(t)}, args...), &out, &errOut)
	if code != 0 {
		t.Fatalf("audit %v: exit %d %s", args, code, errOut.String())
	}
	var recs []audit.Record
	sc := bufio.NewScanner(strings.NewReader(out.String()))
	for sc.Scan() {
		var r audit.Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("audit printed %q: %v", sc.Text(), err)
		}
		recs = append(recs, r)
	}
	return recs
}

func actions(recs []audit.Record) string {
	var a []string
	for _, r := range recs {
		a = append(a, r.Action)
	}
	return strings.Join(a, ",")
}

// TestBroker_Audit: a running broker on SQLite records its API calls and
// admin commands; berth-broker audit lists them by session and client;
// audit verify passes, then fails naming the row edited directly in the
// database.
func TestBroker_Audit(t *testing.T) {
	b := MustRunMain(t, t.TempDir(), nil)
	c := b.MustClient(t) // register-api-client: an audited admin command
	ctx := t.Context()
	out, err := c.CreateSessions(ctx, []api.CreateSessionRequest{{Name: "a", Owner: "alice", Type: api.TypeVirtual, EnqueueRequest: true}})
	if err != nil || len(out.SuccessfulList) != 1 {
		t.Fatalf("CreateSessions: %v %+v", err, out)
	}
	sid := out.SuccessfulList[0].Id
	if _, err := c.DeleteSessions(ctx, []api.DeleteSessionRequest{{SessionId: sid, Owner: "alice"}}); err != nil {
		t.Fatal(err)
	}
	var recs []audit.Record
	poll.Until(t, 10*time.Second, "the calls' audit records", func() bool {
		recs = auditLines(t, b, "--session", sid)
		return actions(recs) == "CreateSessions,DeleteSessions"
	})
	for _, r := range recs {
		if r.ActorKind != audit.ActorClient || r.Actor != c.ClientID || r.Source != "127.0.0.1" || r.Result != audit.ResultOK ||
			r.Broker != b.Config.BrokerID || !r.HasTarget(audit.TargetOwner, "alice") {
			t.Errorf("record %+v", r)
		}
	}
	if got := actions(auditLines(t, b, "--client", c.ClientID, "--since", "1h")); got != "CreateSessions,DeleteSessions" {
		t.Errorf("audit --client %s = %s", c.ClientID, got)
	}
	admin := auditLines(t, b, "--action", "register-api-client")
	if len(admin) != 1 || admin[0].ActorKind != audit.ActorAdmin || admin[0].Actor == "" || !admin[0].HasTarget(audit.TargetClient, "test") ||
		!admin[0].HasTarget(audit.TargetClient, c.ClientID) || strings.Contains(fmt.Sprintf("%+v", admin[0]), c.ClientSecret) ||
		!strings.Contains(admin[0].Detail, "--client-name") || admin[0].Result != audit.ResultOK {
		t.Errorf("register-api-client records %+v", admin)
	}
	if got := auditLines(t, b, "--limit", "1"); len(got) != 1 || got[0].Seq != 1 {
		t.Errorf("audit --limit 1 = %+v", got)
	}
	if got := auditLines(t, b, "--since", "2999-01-01T00:00:00Z"); len(got) != 0 {
		t.Errorf("audit --since the future = %+v", got)
	}
	for _, bad := range [][]string{{"audit", "--since", "yesterday"}, {"audit", "--limit", "0"}} {
		if got, code := b.admin(t, bad...); code != 2 || !strings.Contains(got, bad[1]+":") {
			t.Errorf("%v: exit %d %q, want 2 naming %s", bad, code, got, bad[1])
		}
	}

	got, code := b.admin(t, "audit", "verify")
	if code != 0 || !strings.Contains(got, "audit log intact") {
		t.Fatalf("audit verify: exit %d %q", code, got)
	}

	// Someone with the database file changes who deleted the session.
	db, err := sql.Open("sqlite", filepath.Join(b.dir, "berth.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, `UPDATE audit_log SET actor = 'nobody' WHERE action = 'DeleteSessions'`); err == nil {
		t.Fatal("the audit log took an UPDATE")
	}
	if _, err := db.ExecContext(ctx, `DROP TRIGGER audit_log_no_update`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `UPDATE audit_log SET actor = 'nobody' WHERE action = 'DeleteSessions'`); err != nil {
		t.Fatal(err)
	}
	got, code = b.admin(t, "audit", "verify")
	if code != 1 || !strings.Contains(got, "BROKEN") || !strings.Contains(got, "the record was edited") {
		t.Errorf("audit verify after an edit: exit %d %q", code, got)
	}
}

// TestCluster_AuditOneChain: two brokers on one PostgreSQL record their
// calls in one chain, which audit verify checks and which detects a row
// edited in the database.
func TestCluster_AuditOneChain(t *testing.T) {
	dsn := pgtest.DSN(t)
	brokers := []*testBroker{mustRunClusterBroker(t, dsn, "b1"), mustRunClusterBroker(t, dsn, "b2")}
	ctx := t.Context()
	for i, b := range brokers {
		c := b.MustClient(t)
		for range 5 {
			if _, err := c.CreateSessions(ctx, []api.CreateSessionRequest{{Name: "x", Owner: "alice", Type: api.TypeVirtual, EnqueueRequest: true}}); err != nil {
				t.Fatalf("broker %d: %v", i+1, err)
			}
		}
	}
	poll.Until(t, 10*time.Second, "both brokers' records", func() bool {
		recs := auditLines(t, brokers[0], "--action", "CreateSessions")
		n := map[string]int{}
		for _, r := range recs {
			n[r.Broker]++
		}
		return n["b1"] == 5 && n["b2"] == 5
	})
	if got, code := brokers[1].admin(t, "audit", "verify"); code != 0 || !strings.Contains(got, "intact") {
		t.Fatalf("audit verify: exit %d %q", code, got)
	}
	conn := pgtest.Admin(t, dsn)
	if _, err := conn.Exec(ctx, `DROP TRIGGER audit_log_guard ON audit_log`); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `UPDATE audit_log SET source = '203.0.113.1' WHERE seq = 3`); err != nil {
		t.Fatal(err)
	}
	if got, code := brokers[0].admin(t, "audit", "verify"); code != 1 || !strings.Contains(got, "record 3: its contents do not match") {
		t.Errorf("audit verify after an edit: exit %d %q", code, got)
	}
}

func TestAuditArgs(t *testing.T) {
	tests := []struct{ in, want string }{
		{"audit verify", "audit-verify"},
		{"audit --config f verify", "audit-verify --config f"},
		{"audit --config=f verify --x", "audit-verify --config=f --x"},
		{"audit --client verify", "audit --client verify"},
		{"audit --since 1h", "audit --since 1h"},
		{"audit other verify", "audit other verify"},
		{"backup verify", "backup verify"},
		{"audit", "audit"},
	}
	for _, tt := range tests {
		if got := strings.Join(auditArgs(strings.Fields(tt.in)), " "); got != tt.want {
			t.Errorf("auditArgs(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestBroker_AuditRetention: a broker started with audit-retention-days = 30
// purges the older records at once (then hourly), anchors the rest, and
// audit verify still passes.
func TestBroker_AuditRetention(t *testing.T) {
	dir := t.TempDir()
	st, err := sqlite.Open(t.Context(), filepath.Join(dir, "berth.db"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	var recs []*audit.Record
	for i, age := range []time.Duration{90, 60, 31, 29, 1} {
		recs = append(recs, &audit.Record{Time: now.Add(-age * 24 * time.Hour), ActorKind: audit.ActorAdmin, Actor: "root",
			Action: fmt.Sprintf("old-%d", i), Source: "local", Result: audit.ResultOK})
	}
	if err := st.AppendAudit(t.Context(), recs); err != nil {
		t.Fatal(err)
	}
	st.Close()
	b := MustRunMain(t, dir, func(c *Config) { c.AuditRetention = 30 * 24 * time.Hour })
	poll.Until(t, 10*time.Second, "the purge", func() bool {
		got := auditLines(t, b)
		return len(got) > 0 && got[0].Seq == 4
	})
	if got := actions(auditLines(t, b, "--until", "1h")); got != "old-3,old-4" {
		t.Errorf("records kept: %s, want old-3,old-4", got)
	}
	if got, code := b.admin(t, "audit", "verify"); code != 0 || !strings.Contains(got, "intact") || !strings.Contains(got, "records up to 3 were purged") {
		t.Errorf("audit verify after the purge: exit %d %q", code, got)
	}
}
