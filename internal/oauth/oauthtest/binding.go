package oauthtest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/oauth"
)

// BindingStore is a store that keeps both the OAuth clients and the broker's
// servers, as internal/sqlite and internal/postgres do.
type BindingStore interface {
	oauth.Store
	UpsertServer(ctx context.Context, s *broker.Server) error
	GetServer(ctx context.Context, id string) (*broker.Server, error)
	DeleteServer(ctx context.Context, id string) error
}

// RunServerBinding runs the contract tests of server ID bindings: a server ID
// stays bound to the agent client that first linked it after the server's row
// is deleted (an unreachable server forgotten), so that another agent client
// cannot claim it, until the bound client is deactivated or deleted. open
// returns an empty store for each subtest.
func RunServerBinding(t *testing.T, open func(t *testing.T) BindingStore) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s BindingStore)
	}{
		{"OutlivesServer", testBindingOutlivesServer},
		{"ReleasedByDeactivation", testBindingReleasedByDeactivation},
		{"ReleasedByPruning", testBindingReleasedByPruning},
		{"MarksLinked", testBindingMarksLinked},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Each case has a store of its own (a file, a schema): they run
			// at once, which matters for PostgreSQL, where opening one
			// applies every migration.
			t.Parallel()
			tt.fn(t, open(t))
		})
	}
}

func newServer(id, agent string) *broker.Server {
	return &broker.Server{ID: id, AgentClientID: agent, Open: true, LastSeen: T0, CreatedAt: T0, BrokerID: "b1"}
}

// mustAgents creates active, unlinked agent clients.
func mustAgents(t *testing.T, s oauth.Store, ids ...string) {
	t.Helper()
	for _, id := range ids {
		MustCreateClients(t, s, NewClient(id, oauth.KindAgent, T0))
	}
}

func upsert(t *testing.T, s BindingStore, id, agent string) error {
	t.Helper()
	return s.UpsertServer(t.Context(), newServer(id, agent))
}

func mustUpsert(t *testing.T, s BindingStore, id, agent string) {
	t.Helper()
	if err := upsert(t, s, id, agent); err != nil {
		t.Fatalf("UpsertServer(%s by %s): %v", id, agent, err)
	}
}

func mustDeleteServer(t *testing.T, s BindingStore, id string) {
	t.Helper()
	if err := s.DeleteServer(t.Context(), id); err != nil {
		t.Fatalf("DeleteServer(%s): %v", id, err)
	}
	if _, err := s.GetServer(t.Context(), id); !errors.Is(err, broker.ErrNotFound) {
		t.Fatalf("GetServer(%s) after DeleteServer: %v", id, err)
	}
}

func testBindingOutlivesServer(t *testing.T, s BindingStore) {
	mustAgents(t, s, "agent-a", "agent-b")
	mustUpsert(t, s, "srv-1", "agent-a")
	if err := upsert(t, s, "srv-1", "agent-b"); !errors.Is(err, broker.ErrConflict) {
		t.Fatalf("another agent with the server row present: %v, want ErrConflict", err)
	}
	mustDeleteServer(t, s, "srv-1")
	err := upsert(t, s, "srv-1", "agent-b")
	if !errors.Is(err, broker.ErrConflict) {
		t.Fatalf("another agent after the server was forgotten: %v, want ErrConflict", err)
	}
	if _, err := s.GetServer(t.Context(), "srv-1"); !errors.Is(err, broker.ErrNotFound) {
		t.Errorf("the refused upsert stored the server: %v", err)
	}
	// The bound agent comes back.
	mustUpsert(t, s, "srv-1", "agent-a")
	if got, err := s.GetServer(t.Context(), "srv-1"); err != nil || got.AgentClientID != "agent-a" {
		t.Errorf("server after the bound agent came back: %+v, %v", got, err)
	}
	// Other server IDs are free.
	mustUpsert(t, s, "srv-2", "agent-b")
}

func testBindingReleasedByDeactivation(t *testing.T, s BindingStore) {
	mustAgents(t, s, "agent-a", "agent-b")
	mustUpsert(t, s, "srv-1", "agent-a")
	mustDeleteServer(t, s, "srv-1")
	if err := s.SetClientActive(t.Context(), "agent-a", false); err != nil {
		t.Fatal(err)
	}
	mustUpsert(t, s, "srv-1", "agent-b")
	mustDeleteServer(t, s, "srv-1")
	// Now bound to agent-b: agent-a, active again, is refused.
	if err := s.SetClientActive(t.Context(), "agent-a", true); err != nil {
		t.Fatal(err)
	}
	if err := upsert(t, s, "srv-1", "agent-a"); !errors.Is(err, broker.ErrConflict) {
		t.Errorf("the previous agent after a rebinding: %v, want ErrConflict", err)
	}
}

func testBindingReleasedByPruning(t *testing.T, s BindingStore) {
	// A binding to a client that no longer exists (pruned, or a server of
	// an agent registered without authorization: agent client "") binds
	// nothing.
	mustAgents(t, s, "agent-b")
	mustUpsert(t, s, "srv-1", "agent-gone")
	mustDeleteServer(t, s, "srv-1")
	mustUpsert(t, s, "srv-1", "agent-b")
	mustUpsert(t, s, "srv-anon", "")
	mustDeleteServer(t, s, "srv-anon")
	mustUpsert(t, s, "srv-anon", "agent-b")
}

func testBindingMarksLinked(t *testing.T, s BindingStore) {
	ctx := t.Context()
	mustAgents(t, s, "agent-a", "agent-idle")
	mustUpsert(t, s, "srv-1", "agent-a")
	if got := MustGetClient(t, s, "agent-a"); got.LinkedAt.IsZero() {
		t.Error("an agent client that linked a server has no LinkedAt")
	}
	first := MustGetClient(t, s, "agent-a").LinkedAt
	mustDeleteServer(t, s, "srv-1")
	srv := newServer("srv-1", "agent-a")
	srv.CreatedAt = T0.Add(time.Hour)
	if err := s.UpsertServer(ctx, srv); err != nil {
		t.Fatal(err)
	}
	if got := MustGetClient(t, s, "agent-a").LinkedAt; !got.Equal(first) {
		t.Errorf("LinkedAt moved from %v to %v: it is the first link", first, got)
	}
	// Pruning spares the linked client.
	ids, err := s.DeleteUnlinkedAgentClients(ctx, T0.Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) != 1 || ids[0] != "agent-idle" {
		t.Errorf("pruned %v, want only agent-idle", ids)
	}
}
