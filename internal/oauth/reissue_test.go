package oauth_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/berth-dev/berth/internal/oauth"
)

// registerServer posts a registration that names serverID and returns the
// answer's client ID and secret (empty unless 201) and the recorder.
func registerServer(t *testing.T, e *env, statement, serverID string) (id, secret string, w *httptest.ResponseRecorder) {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"software_statement": statement, "client_name": "host", "server_id": serverID})
	r := httptest.NewRequest("POST", "/agent/register", bytes.NewReader(body))
	r.RemoteAddr = "192.0.2.1:1"
	w = httptest.NewRecorder()
	e.auth.RegisterAgentHandler().ServeHTTP(w, r)
	if w.Code != 201 {
		return "", "", w
	}
	var out struct {
		ClientID     string `json:"client_id"`
		ClientSecret string `json:"client_secret"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &out); err != nil {
		t.Fatal(err)
	}
	return out.ClientID, out.ClientSecret, w
}

// agentClients returns the IDs of the stored agent clients.
func agentClients(t *testing.T, e *env) []string {
	t.Helper()
	cs, err := e.store.ListClients(t.Context(), oauth.KindAgent)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, c := range cs {
		ids = append(ids, c.ID)
	}
	return ids
}

// TestAuthority_RegisterAgentServer_RetryReissues: an agent whose answer was
// lost registers again for the same server ID and gets the same client with
// a new secret; the lost secret no longer authenticates, no second client is
// left behind and no second use is counted, so a one-use statement still
// serves the retry. Another server ID, or none, gets a client of its own.
func TestAuthority_RegisterAgentServer_RetryReissues(t *testing.T) {
	e := MustEnv(t)
	ctx := t.Context()
	s, err := e.auth.GenerateSoftwareStatement(ctx, "1.0.0", oauth.StatementLimits{MaxUses: 1})
	if err != nil {
		t.Fatal(err)
	}
	lostID, lostSecret, w := registerServer(t, e, s.Statement, "srv-1")
	if w.Code != 201 {
		t.Fatalf("first registration: %d %s", w.Code, w.Body)
	}
	// The agent never saw that answer; it registers again.
	id, secret, w := registerServer(t, e, s.Statement, "srv-1")
	if w.Code != 201 {
		t.Fatalf("retry: %d %s", w.Code, w.Body)
	}
	if id != lostID || secret == lostSecret {
		t.Errorf("retry: client %s (secret changed: %v), want %s with a new secret", id, secret != lostSecret, lostID)
	}
	if ids := agentClients(t, e); len(ids) != 1 {
		t.Errorf("agent clients after a retried registration: %v, want one", ids)
	}
	if _, err := e.auth.Authenticate(ctx, oauth.KindAgent, id, lostSecret); !errors.Is(err, oauth.ErrInvalidClient) {
		t.Errorf("the lost secret: %v, want ErrInvalidClient", err)
	}
	if _, err := e.auth.Authenticate(ctx, oauth.KindAgent, id, secret); err != nil {
		t.Errorf("the new secret: %v", err)
	}
	if st := mustStatement(t, e, s.ID); st.Uses != 1 {
		t.Errorf("statement uses %d, want 1", st.Uses)
	}
	if log := e.log.String(); !strings.Contains(log, "registered again before it ever linked") || strings.Contains(log, s.Statement) || strings.Contains(log, secret) {
		t.Errorf("log lacks the reissue or holds the statement or a secret:\n%s", log)
	}

	// Another server ID is another client (and the one use is spent).
	if _, _, w := registerServer(t, e, s.Statement, "srv-2"); w.Code != 400 || !strings.Contains(w.Body.String(), "maximum number of agents") {
		t.Errorf("another server ID with the used-up statement: %d %s", w.Code, w.Body)
	}
	open, err := e.auth.GenerateSoftwareStatement(ctx, "1.0.0", oauth.StatementLimits{})
	if err != nil {
		t.Fatal(err)
	}
	a, _, _ := registerServer(t, e, open.Statement, "srv-1")
	b, _, _ := registerServer(t, e, open.Statement, "srv-2")
	c, _, _ := registerServer(t, e, open.Statement, "")
	d, _, _ := registerServer(t, e, open.Statement, "")
	if len(map[string]bool{id: true, a: true, b: true, c: true, d: true}) != 5 {
		t.Errorf("clients of distinct statements, server IDs or none share IDs: %s %s %s %s %s", id, a, b, c, d)
	}
}

// TestAuthority_RegisterAgentServer_LinkedNotReissued: once the client
// linked, registering again for its server ID leaves its secret alone and
// creates a new client, as before clients were named by server ID (the
// broker then refuses that client the server ID while the linked one is
// active). A deactivated client is not revived either.
func TestAuthority_RegisterAgentServer_LinkedNotReissued(t *testing.T) {
	e := MustEnv(t)
	ctx := t.Context()
	s, err := e.auth.GenerateSoftwareStatement(ctx, "1.0.0", oauth.StatementLimits{})
	if err != nil {
		t.Fatal(err)
	}
	linked, linkedSecret, _ := registerServer(t, e, s.Statement, "srv-1")
	e.store.clients[linked].LinkedAt = e.clock.Now()
	other, _, w := registerServer(t, e, s.Statement, "srv-1")
	if w.Code != 201 || other == linked || other == "" {
		t.Fatalf("registering again for a linked client's server ID: %d %s (client %s, linked %s)", w.Code, w.Body, other, linked)
	}
	if _, err := e.auth.Authenticate(ctx, oauth.KindAgent, linked, linkedSecret); err != nil {
		t.Errorf("the linked client's secret stopped working: %v", err)
	}

	off, _, _ := registerServer(t, e, s.Statement, "srv-2")
	if err := e.store.SetClientActive(ctx, off, false); err != nil {
		t.Fatal(err)
	}
	again, _, w := registerServer(t, e, s.Statement, "srv-2")
	if w.Code != 201 || again == off {
		t.Errorf("registering again for a deactivated client's server ID: %d %s (client %s)", w.Code, w.Body, again)
	}
	if c, _ := e.store.GetClient(ctx, off); c.Active {
		t.Error("the deactivated client was reactivated")
	}
	if st := mustStatement(t, e, s.ID); st.Uses != 4 {
		t.Errorf("statement uses %d, want 4 (every new client counts)", st.Uses)
	}
}

// TestAuthority_RegisterAgentServer_Concurrent: registrations for one server
// ID at once leave one client, whichever secret came last.
func TestAuthority_RegisterAgentServer_Concurrent(t *testing.T) {
	e := MustEnv(t)
	s, err := e.auth.GenerateSoftwareStatement(t.Context(), "1.0.0", oauth.StatementLimits{})
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg  sync.WaitGroup
		mu  sync.Mutex
		ids = map[string]bool{}
	)
	for range 16 {
		wg.Go(func() {
			id, _, err := e.auth.RegisterAgentServer(context.Background(), s.Statement, "host", "srv-1")
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				t.Error(err)
			}
			ids[id] = true
		})
	}
	wg.Wait()
	if got := agentClients(t, e); len(ids) != 1 || len(got) != 1 {
		t.Errorf("16 registrations for one server ID answered clients %v and left %v, want one", ids, got)
	}
}

// TestAuthority_RegisterAgentHandler_BadServerID: a server_id the agent
// protocol would refuse is a 400 naming the field, and stores nothing.
func TestAuthority_RegisterAgentHandler_BadServerID(t *testing.T) {
	e := MustEnv(t)
	s, err := e.auth.GenerateSoftwareStatement(t.Context(), "1.0.0", oauth.StatementLimits{})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{strings.Repeat("x", 257), "a\nb", "del\x7f"} {
		_, _, w := registerServer(t, e, s.Statement, id)
		if w.Code != 400 || !strings.Contains(w.Body.String(), `"invalid_client_metadata"`) || !strings.Contains(w.Body.String(), "server_id") {
			t.Errorf("server_id %.20q: %d %s", id, w.Code, w.Body)
		}
	}
	if ids := agentClients(t, e); len(ids) != 0 {
		t.Errorf("refused registrations stored clients %v", ids)
	}
}

func mustStatement(t *testing.T, e *env, id string) *oauth.SoftwareStatement {
	t.Helper()
	all, err := e.store.SoftwareStatements(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range all {
		if st.ID == id {
			return st
		}
	}
	t.Fatalf("no statement %s", id)
	return nil
}
