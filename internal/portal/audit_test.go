package portal

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/audit"
)

// TestPortal_Audit: the portal's state-changing actions (and connect, which
// hands out a token) are recorded with the signed-in user, the IDs, the
// address and the result; pages that only show are not; no token is.
func TestPortal_Audit(t *testing.T) {
	var app *audit.Appender
	var st audit.Store
	e := newUserEnv(t, func(c *Config) {
		st = c.Store.(audit.Store)
		app = audit.NewAppender(st, "p1", slog.New(slog.DiscardHandler))
		c.Audit = app
	})
	t.Cleanup(func() { _ = app.Close(t.Context()) })
	e.addServer(t, "s1")
	e.readySession(t, "sess-ann", "ann's desk", "ann", "s1")
	ann, bob := e.signIn(t, "ann"), e.signIn(t, "bob")

	resp, _ := ann.do(t, "GET", "/portal/sessions/sess-ann/connect", nil, nil)
	loc := resp.Header.Get("Location")
	tok, _ := url.Parse(loc)
	if resp.StatusCode != http.StatusSeeOther || tok == nil || tok.Query().Get("authToken") == "" {
		t.Fatalf("connect: %s %q", resp.Status, loc)
	}
	if resp, body := ann.post(t, "/portal/sessions/sess-ann/share", url.Values{"user": {"bob"}, "level": {"view"}}); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("share: %s %.300s", resp.Status, body)
	}
	// Shared to view only: bob may not delete it.
	if resp, _ := bob.post(t, "/portal/sessions/sess-ann/delete", nil); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("bob deletes ann's session: %s", resp.Status)
	}
	if resp, body := ann.post(t, "/portal/sessions/sess-ann/delete", nil); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("delete: %s %.300s", resp.Status, body)
	}
	ann.sessions(t) // a read: not recorded

	if err := app.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	recs, err := st.ListAudit(t.Context(), audit.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		actor, action, result string
		status                int
		targets               []audit.Target
	}{
		{"ann", "portal.ConnectSession", audit.ResultOK, http.StatusSeeOther, []audit.Target{{Kind: "session", ID: "sess-ann"}}},
		{"ann", "portal.ShareSession", audit.ResultOK, http.StatusSeeOther, []audit.Target{{Kind: "session", ID: "sess-ann"}, {Kind: "user", ID: "bob"}}},
		{"bob", "portal.DeleteSession", audit.ResultFailed, http.StatusForbidden, []audit.Target{{Kind: "session", ID: "sess-ann"}}},
		{"ann", "portal.DeleteSession", audit.ResultOK, http.StatusSeeOther, []audit.Target{{Kind: "session", ID: "sess-ann"}}},
	}
	if len(recs) != len(want) {
		t.Fatalf("%d records, want %d: %+v", len(recs), len(want), recs)
	}
	for i, w := range want {
		r := recs[i]
		if r.ActorKind != audit.ActorPortal || r.Actor != w.actor || r.Action != w.action || r.Result != w.result || r.Status != w.status ||
			r.Source != "127.0.0.1" || r.Broker != "p1" || fmt.Sprint(r.Targets) != fmt.Sprint(w.targets) {
			t.Errorf("record %d = %+v, want %+v", i+1, r, w)
		}
		if strings.Contains(fmt.Sprintf("%+v", r), tok.Query().Get("authToken")) || strings.Contains(fmt.Sprintf("%+v", r), ann.csrf) {
			t.Errorf("record %d holds a token: %+v", i+1, r)
		}
	}
	if rep, err := audit.Verify(t.Context(), st); err != nil || !rep.OK() {
		t.Errorf("Verify = %+v, %v", rep, err)
	}
}

func TestAuditedRoute(t *testing.T) {
	for _, tt := range []struct {
		pattern, action string
		ok              bool
	}{
		{"POST /portal/sessions/{id}/delete", "portal.DeleteSession", true},
		{"GET /portal/sessions/{id}/connect", "portal.ConnectSession", true},
		{"POST /portal/admin/limits", "portal.POST /portal/admin/limits", true},
		{"GET /portal/admin/servers", "", false},
		{"/portal/admin/", "", false},
	} {
		if a, ok := auditedRoute(tt.pattern); a != tt.action || ok != tt.ok {
			t.Errorf("auditedRoute(%q) = %q, %v; want %q, %v", tt.pattern, a, ok, tt.action, tt.ok)
		}
	}
}
