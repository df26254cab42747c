package main

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/agent"
	"github.com/berth-dev/berth/internal/oauth"
	"github.com/berth-dev/berth/internal/poll"
)

// registerFor posts an agent registration for serverID and returns the
// answer's client ID and secret.
func (b *testBroker) registerFor(t *testing.T, stmt, serverID string) (id, secret string) {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"software_statement": stmt, "client_name": "host", "server_id": serverID})
	resp, err := b.hc.Post("https://"+b.AgentAddr()+"/agent/register", "application/json", strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		ClientID     string `json:"client_id"`
		ClientSecret string `json:"client_secret"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusCreated || out.ClientSecret == "" {
		t.Fatalf("registration for %s: %d, %v", serverID, resp.StatusCode, err)
	}
	return out.ClientID, out.ClientSecret
}

// agentClientIDs lists the broker's agent clients.
func (b *testBroker) agentClientIDs(t *testing.T) []string {
	t.Helper()
	cs, err := b.store.ListClients(t.Context(), oauth.KindAgent)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, c := range cs {
		ids = append(ids, c.ID)
	}
	return ids
}

// TestBroker_RegistrationRetryLeavesOneClient: an agent registers, but the
// answer never reaches it (the test throws it away, as a timed-out agent
// does); the agent then registers again itself and links. The broker holds
// exactly one agent client, the one first answered, with the secret of the
// second answer: the lost secret no longer authenticates. Once that client
// has linked, a registration for its server ID gets a client of its own
// (as before) and leaves the linked client's secret working: the agent
// relinks after a restart.
func TestBroker_RegistrationRetryLeavesOneClient(t *testing.T) {
	t.Parallel()
	b := MustRunMain(t, t.TempDir(), nil)
	c := b.MustClient(t)
	ctx := context.Background()
	raw, err := os.ReadFile(filepath.Join(b.dir, SoftwareStatementFile))
	if err != nil {
		t.Fatal(err)
	}
	stmt := strings.TrimSpace(string(raw))
	stateDir := t.TempDir()
	serverID, err := agent.LoadOrCreateServerID(stateDir)
	if err != nil {
		t.Fatal(err)
	}
	lostID, lostSecret := b.registerFor(t, stmt, serverID) // lost on its way to the agent

	ag := b.MustStartSimAgent(t, stateDir, nil, hostReport("host-r", 0, nil))
	poll.Until(t, 15*time.Second, "the agent to register again and link", func() bool {
		return servers(t, c)["host-r"].Availability == "AVAILABLE"
	})
	if ids := b.agentClientIDs(t); len(ids) != 1 || ids[0] != lostID {
		t.Fatalf("agent clients after a lost answer and a retry: %v, want only %s", ids, lostID)
	}
	if _, err := b.auth.Authenticate(ctx, oauth.KindAgent, lostID, lostSecret); !errors.Is(err, oauth.ErrInvalidClient) {
		t.Errorf("the lost secret: %v, want ErrInvalidClient", err)
	}
	creds, err := os.ReadFile(filepath.Join(stateDir, "agent-credentials.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(creds), lostID) {
		t.Errorf("the agent holds credentials of another client than %s", lostID)
	}

	// Linked: never reissued.
	otherID, _ := b.registerFor(t, stmt, serverID)
	if otherID == lostID {
		t.Fatalf("a registration for a linked client's server ID reissued client %s", lostID)
	}
	ag.Stop()
	again := b.MustStartSimAgent(t, stateDir, nil, hostReport("host-r", 0, nil))
	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := again.WaitLinked(wctx); err != nil {
		t.Fatalf("the linked agent did not relink with its own secret: %v", err)
	}
	if creds2, _ := os.ReadFile(filepath.Join(stateDir, "agent-credentials.json")); string(creds2) != string(creds) {
		t.Error("the agent registered again instead of relinking with its credentials")
	}
	if ids := b.agentClientIDs(t); len(ids) != 2 {
		t.Errorf("agent clients: %v, want the linked one and the new one", ids)
	}
}
