package portal

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/oauth"
	"github.com/berth-dev/berth/internal/postgres"
	"github.com/berth-dev/berth/internal/postgres/pgtest"
)

// clusterPortal is one broker of a cluster: its own store connection, core
// and portal, on a PostgreSQL shared with the others.
func clusterPortal(t *testing.T, dsn, id string) (*httptest.Server, *postgres.Store) {
	t.Helper()
	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)
	st, err := postgres.Open(ctx, dsn, log)
	if err != nil {
		t.Fatal(err)
	}
	auth := oauth.New(st, oauth.BrokerIssuer)
	if err := auth.EnsureKey(ctx); err != nil {
		t.Fatal(err)
	}
	svc, err := broker.New(ctx, st, newUserAgents(t), auth, broker.Config{BrokerID: id, HeartbeatTimeout: time.Hour}, log)
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { _ = svc.Run(rctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done; st.Close() })
	p, err := New(Config{Service: svc, Store: st, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/portal/", p.Handler())
	srv := httptest.NewTLSServer(mux)
	t.Cleanup(srv.Close)
	return srv, st
}

// TestPortal_TwoBrokersPostgres: a user signed in on one broker keeps
// working on another of the same PostgreSQL (the portal session, its CSRF
// token and the session list are the cluster's), and signing out on one
// signs out on both.
func TestPortal_TwoBrokersPostgres(t *testing.T) {
	dsn := pgtest.DSN(t)
	srvA, stA := clusterPortal(t, dsn, "broker-a")
	srvB, _ := clusterPortal(t, dsn, "broker-b")
	now := time.Now().UTC().Truncate(time.Millisecond)
	if err := stA.InsertSessions(context.Background(), []*broker.Session{{ID: "sess-c", Name: "cluster desk", Owner: "ann",
		Type: broker.TypeVirtual, State: broker.StateCreating, Substate: broker.SubstatePlacing, Enqueued: true, EnqueuedAt: now,
		CreationTime: now, UpdatedAt: now}}); err != nil {
		t.Fatal(err)
	}
	e := &userEnv{srv: srvA, clock: &testClock{t: time.Now()}}
	tok, err := CreateLink(context.Background(), stA, "ann", nil, false, time.Minute, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ann := e.browser() // its cookie jar serves both brokers (same host, cookies ignore ports)
	if resp, body := ann.do(t, "POST", "/portal/link", url.Values{"token": {tok}}, nil); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign in on broker A: %s\n%.300s", resp.Status, body)
	}
	_, body := ann.do(t, "GET", "/portal/", nil, nil)
	ann.csrf = csrfOf(t, body)

	onB := &browser{e: &userEnv{srv: srvB}, hc: ann.hc, csrf: ann.csrf}
	resp, body := onB.do(t, "GET", "/portal/", nil, nil)
	if resp.StatusCode != 200 || !strings.Contains(body, "cluster desk") || !strings.Contains(body, "number 1 in the queue") {
		t.Fatalf("My sessions on broker B: %s\n%.1500s", resp.Status, body)
	}
	if resp, body := onB.post(t, "/portal/sessions/sess-c/delete", nil); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("delete on broker B with broker A's form token: %s\n%.300s", resp.Status, body)
	}
	if s, err := stA.GetSession(context.Background(), "sess-c"); err != nil || s.State != broker.StateDeleted {
		t.Fatalf("the session after the delete on B: %+v %v", s, err)
	}
	saved := ann.hc.Jar.Cookies(mustURL(t, srvA.URL+"/portal/"))
	if resp, _ := onB.post(t, "/portal/logout", nil); resp.StatusCode != 200 {
		t.Fatalf("sign out on broker B: %s", resp.Status)
	}
	// A copy of the cookie kept from before is refused on A too.
	replay := e.browser()
	replay.hc.Jar.SetCookies(mustURL(t, srvA.URL+"/portal/"), saved)
	if resp, _ := replay.do(t, "GET", "/portal/api/sessions", nil, nil); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("broker A after sign-out on B: %s, want 401", resp.Status)
	}
}

func csrfOf(t *testing.T, body string) string {
	t.Helper()
	const mark = `name="csrf" value="`
	i := strings.Index(body, mark)
	if i < 0 {
		t.Fatalf("no CSRF token in the page:\n%.500s", body)
	}
	rest := body[i+len(mark):]
	return rest[:strings.IndexByte(rest, '"')]
}
