package httpapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/audit"
	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/oauth"
	"github.com/berth-dev/berth/internal/sqlite"
)

// tokenVerifier knows a fixed set of bearer tokens.
type tokenVerifier map[string]*oauth.Principal

func (v tokenVerifier) VerifyAccessToken(ctx context.Context, tok string) (*oauth.Principal, error) {
	if p, ok := v[tok]; ok {
		return p, nil
	}
	return nil, errors.New("unknown token")
}

var auditTokens = tokenVerifier{
	"admin": {ClientID: "c-admin", Kind: oauth.KindAPI},
	"other": {ClientID: "c-other", Kind: oauth.KindAPI},
	"agent": {ClientID: "agent-1", Kind: oauth.KindAgent},
	"ext":   {ClientID: "ext-1", Kind: oauth.KindExternal},
}

// connToken is the connection token secretTokens issues: no record may
// hold it.
const connToken = "conn-token-d41d8cd98f00b204"

type secretTokens struct{}

func (secretTokens) IssueConnectionToken(ctx context.Context, sessionID, owner, user string) (string, error) {
	return connToken, nil
}

// auditBroker is a broker with one server behind an API that records its
// calls in the store's audit log.
func auditBroker(t *testing.T, srv *Server) (*sqlite.Store, *audit.Appender, *httptest.Server) {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "b.db"))
	if err != nil {
		t.Fatal(err)
	}
	svc, err := broker.New(ctx, st, acceptAll{}, secretTokens{}, broker.Config{BrokerID: "test", HeartbeatTimeout: time.Hour}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { _ = svc.Run(rctx); close(done) }()
	if err := svc.AgentConnected(ctx, "", "srv-0", testInfo(0), nil); err != nil {
		t.Fatal(err)
	}
	app := audit.NewAppender(st, "b1", slog.New(slog.DiscardHandler))
	srv.Service, srv.Logger, srv.Audit, srv.AuditLog = svc, slog.New(slog.DiscardHandler), app, st
	ts := httptest.NewTLSServer(srv.Handler())
	t.Cleanup(func() { ts.Close(); _ = app.Close(context.Background()); cancel(); <-done; st.Close() })
	return st, app, ts
}

// bearerClient is an api.Client of ts that sends tok.
func bearerClient(ts *httptest.Server, tok string) *api.Client {
	return bearerOver(ts, ts.Client(), tok)
}

// bearerOver is bearerClient over hc.
func bearerOver(ts *httptest.Server, hc *http.Client, tok string) *api.Client {
	c := *hc
	next := c.Transport
	c.Transport = roundTripper(func(r *http.Request) (*http.Response, error) {
		r = r.Clone(r.Context())
		r.Header.Set("Authorization", "Bearer "+tok)
		return next.RoundTrip(r)
	})
	return &api.Client{BrokerURL: ts.URL, HTTPClient: &c}
}

// TestAudit_EveryStateChangingCall drives each state-changing API over real
// HTTPS and checks its record: who, what, which IDs, from where, the result;
// read-only calls and calls without a valid token are not recorded; nothing
// secret is.
func TestAudit_EveryStateChangingCall(t *testing.T) {
	st, app, ts := auditBroker(t, &Server{Verifier: auditTokens})
	ctx := t.Context()
	c := bearerClient(ts, "admin")

	created, err := c.CreateSessions(ctx, []api.CreateSessionRequest{
		{Name: "a", Owner: "alice", Type: "Virtual"},
		{Name: "b", Owner: "bob", Type: "Nonsense"},
	})
	if err != nil || len(created.SuccessfulList) != 1 {
		t.Fatalf("CreateSessions = %+v, %v", created, err)
	}
	sid := created.SuccessfulList[0].Id
	const perms = "[permissions]\n%owner% allow builtin\nsecret-user allow display\n"
	if _, err := c.UpdateSessionPermissions(ctx, []api.UpdateSessionPermissionsRequest{{SessionId: sid, Owner: "alice", PermissionsFile: perms}}); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Truncate(time.Millisecond)
	if err := st.InsertSessions(ctx, []*broker.Session{{ID: "ready-1", Name: "r", Owner: "alice", Type: broker.TypeVirtual,
		ServerID: "srv-0", State: broker.StateReady, CreationTime: now, UpdatedAt: now}}); err != nil {
		t.Fatal(err)
	}
	if cd, err := c.GetSessionConnectionData(ctx, "ready-1", "alice"); err != nil || cd.ConnectionToken != connToken {
		t.Fatalf("GetSessionConnectionData = %+v, %v", cd, err)
	}
	if _, err := c.CloseServers(ctx, []api.CloseServerRequest{{ServerId: "srv-0", Force: true}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.OpenServers(ctx, []api.OpenServerRequest{{ServerId: "srv-0"}}); err != nil {
		t.Fatal(err)
	}
	tpl, err := c.CreateTemplate(ctx, api.Template{Name: "Dev", Type: "virtual", Users: []string{"carol"}})
	if err != nil {
		t.Fatal(err)
	}
	tid := tpl.Template.Id
	launched, err := c.LaunchTemplate(ctx, tid, api.LaunchTemplateRequest{Owner: "carol"})
	if err != nil || launched.Session == nil {
		t.Fatalf("LaunchTemplate = %+v, %v", launched, err)
	}
	if _, err := c.DeleteTemplate(ctx, tid); err != nil {
		t.Fatal(err)
	}
	if _, err := bearerClient(ts, "other").DeleteSessions(ctx, []api.DeleteSessionRequest{{SessionId: sid, Owner: "alice"}}); err != nil {
		t.Fatal(err)
	}
	// Not recorded: reads, and calls without a valid token.
	if _, err := c.DescribeSessions(ctx, api.DescribeSessionsRequest{}); err != nil {
		t.Fatal(err)
	}
	if _, err := bearerClient(ts, "forged").DeleteSessions(ctx, []api.DeleteSessionRequest{{SessionId: sid}}); err == nil {
		t.Fatal("DeleteSessions with a forged token succeeded")
	}
	// A bad body: recorded as failed, with its status and code.
	resp, err := bearerClient(ts, "admin").HTTPClient.Post(ts.URL+"/createSessions", "application/json", strings.NewReader("{"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	if err := app.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	recs, err := st.ListAudit(ctx, audit.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	type want struct {
		action, actor, result, err string
		targets                    []string
	}
	wants := []want{
		{OpCreateSessions, "c-admin", audit.ResultPartial, "1 of 2 failed", []string{"owner:alice", "owner:bob", "session:" + sid}},
		// Refused for a session not yet READY: a batch whose every item failed.
		{OpUpdateSessionPermissions, "c-admin", audit.ResultFailed, "1 of 1 failed: the session is CREATING", []string{"session:" + sid, "owner:alice"}},
		{OpGetSessionConnectionData, "c-admin", audit.ResultOK, "", []string{"session:ready-1", "user:alice", "server:srv-0"}},
		{OpCloseServers, "c-admin", audit.ResultOK, "", []string{"server:srv-0"}},
		{OpOpenServers, "c-admin", audit.ResultOK, "", []string{"server:srv-0"}},
		{OpCreateTemplate, "c-admin", audit.ResultOK, "", []string{"template:" + tid}},
		{OpLaunchTemplate, "c-admin", audit.ResultOK, "", []string{"template:" + tid, "owner:carol", "session:" + launched.Session.Id}},
		{OpDeleteTemplate, "c-admin", audit.ResultOK, "", []string{"template:" + tid}},
		{OpDeleteSessions, "c-other", audit.ResultOK, "", []string{"session:" + sid, "owner:alice"}},
		{OpCreateSessions, "c-admin", audit.ResultFailed, "400 INVALID_INPUT", nil},
	}
	if len(recs) != len(wants) {
		for _, r := range recs {
			t.Logf("recorded %s %s %v", r.Action, r.Result, r.Targets)
		}
		t.Fatalf("%d records, want %d", len(recs), len(wants))
	}
	for i, w := range wants {
		r := recs[i]
		if r.Action != w.action || r.ActorKind != audit.ActorClient || r.Actor != w.actor || r.Source != "127.0.0.1" ||
			r.Broker != "b1" || (w.result != "" && r.Result != w.result) || !strings.HasPrefix(r.Error, w.err) || r.Time.IsZero() {
			t.Errorf("record %d = %+v, want %+v from 127.0.0.1", i+1, r, w)
		}
		for _, tg := range w.targets {
			kind, id, _ := strings.Cut(tg, ":")
			if !r.HasTarget(kind, id) {
				t.Errorf("record %d (%s) targets %v, want %s among them", i+1, r.Action, r.Targets, tg)
			}
		}
		if rs := fmt.Sprintf("%+v", r); strings.Contains(rs, "secret-user") || strings.Contains(rs, connToken) || strings.Contains(rs, "Bearer") {
			t.Errorf("record %d holds a secret (the permissions file, a token): %+v", i+1, r)
		}
	}
	if d := recs[1].Detail; !strings.Contains(d, fmt.Sprintf("%d bytes sha256:", len(perms))) {
		t.Errorf("UpdateSessionPermissions detail %q, want the file's size and hash", d)
	}
	if rep, err := audit.Verify(ctx, st); err != nil || !rep.OK() {
		t.Errorf("Verify = %+v, %v", rep, err)
	}
}

// TestDescribeAudit: GET /berth/v1/audit answers the broker's own API
// clients (those of AuditClients when set) with the records the query
// selects, refuses agents, external clients and others, and names a bad
// parameter.
func TestDescribeAudit(t *testing.T) {
	st, _, ts := auditBroker(t, &Server{Verifier: auditTokens, AuditClients: []string{"c-admin"}})
	ctx := t.Context()
	t0 := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	var recs []*audit.Record
	for i := range 5 {
		r := &audit.Record{Time: t0.Add(time.Duration(i) * time.Hour), ActorKind: audit.ActorClient, Actor: fmt.Sprintf("c%d", i%2),
			Action: OpDeleteSessions, Source: "192.0.2.9", Result: audit.ResultOK}
		r.AddTarget(audit.TargetSession, fmt.Sprintf("s%d", i))
		recs = append(recs, r)
	}
	if err := st.AppendAudit(ctx, recs); err != nil {
		t.Fatal(err)
	}
	c := bearerOver(ts, specChecked(t, ts), "admin") // answers checked against api/openapi.yaml
	seqs := func(q api.AuditQuery) string {
		t.Helper()
		resp, err := c.DescribeAudit(ctx, q)
		if err != nil {
			t.Fatalf("DescribeAudit(%+v): %v", q, err)
		}
		var s []string
		for _, r := range resp.Records {
			s = append(s, fmt.Sprint(r.Seq))
		}
		return strings.Join(s, ",") + fmt.Sprintf(" next=%d", resp.NextAfter)
	}
	for _, tc := range []struct {
		q    api.AuditQuery
		want string
	}{
		{api.AuditQuery{}, "1,2,3,4,5 next=0"},
		{api.AuditQuery{Client: "c1"}, "2,4 next=0"},
		{api.AuditQuery{Session: "s3"}, "4 next=0"},
		{api.AuditQuery{Since: t0.Add(3 * time.Hour)}, "4,5 next=0"},
		{api.AuditQuery{Until: t0.Add(time.Hour)}, "1 next=0"},
		{api.AuditQuery{Limit: 2}, "1,2 next=2"},
		{api.AuditQuery{After: 2, Limit: 2}, "3,4 next=4"},
		{api.AuditQuery{Action: "CreateSessions"}, " next=0"},
	} {
		if got := seqs(tc.q); got != tc.want {
			t.Errorf("DescribeAudit(%+v) = %s, want %s", tc.q, got, tc.want)
		}
	}
	resp, err := c.DescribeAudit(ctx, api.AuditQuery{Limit: 1})
	if err != nil || len(resp.Records) != 1 {
		t.Fatal(resp, err)
	}
	if r := resp.Records[0]; r.Actor != "c0" || r.Source != "192.0.2.9" || r.Targets[0] != (api.AuditTarget{Kind: "session", Id: "s0"}) ||
		r.Hash == "" || r.PrevHash != audit.GenesisHash || !r.Time.Equal(t0) {
		t.Errorf("record 1 = %+v", r)
	}
	for _, tok := range []string{"other", "agent", "ext"} {
		_, err := bearerOver(ts, specChecked(t, ts), tok).DescribeAudit(ctx, api.AuditQuery{})
		var ae *api.Error
		if !errors.As(err, &ae) || ae.StatusCode != http.StatusForbidden {
			t.Errorf("DescribeAudit as %s: %v, want 403", tok, err)
		}
	}
	for _, q := range []string{"since=yesterday", "limit=-1", "limit=10001", "after=x", "until=2026-13-01T00:00:00Z"} {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, ts.URL+"/berth/v1/audit?"+q, nil)
		req.Header.Set("Authorization", "Bearer admin")
		resp, err := ts.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		name, _, _ := strings.Cut(q, "=")
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), name+": ") {
			t.Errorf("GET /berth/v1/audit?%s = %d %s, want 400 naming %s", q, resp.StatusCode, body, name)
		}
	}
}
