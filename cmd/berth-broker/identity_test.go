package main

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/oauth"
	"github.com/berth-dev/berth/internal/poll"
)

// lockedBuffer is a bytes.Buffer safe for concurrent writes (an agent's log).
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestBroker_ServerIDBinding reproduces the review's finding 8 (first item):
// a server was bound to its agent client only while its row existed, so once
// an offline host's server was forgotten (seconds-before-deleting-unreachable-
// dcv-server), any other registered agent could take its server ID and
// receive its sessions. Agent A links as server S and goes away; S is
// forgotten; agent B, another registered client, says hello as S and is
// refused; A comes back as S. After unregister-agent-client of A, B may take S.
func TestBroker_ServerIDBinding(t *testing.T) {
	t.Parallel() // it mostly waits for the broker's timeouts: overlap it with the others that do
	b := MustRunMain(t, t.TempDir(), func(c *Config) {
		c.UnreachableServerTimeout = time.Second
		c.UnreachableSessionsTimeout = time.Second
	})
	c := b.MustClient(t)
	available := func(host string) bool {
		s, ok := servers(t, c)[host]
		return ok && s.Availability == api.AvailabilityAvailable
	}

	stateA := t.TempDir()
	a := b.MustStartSimAgent(t, stateA, nil, hostReport("host-s", 0, nil))
	poll.Until(t, 10*time.Second, "agent A's server", func() bool { return available("host-s") })
	a.Stop()
	poll.Until(t, 15*time.Second, "the broker to forget the unreachable server", func() bool {
		_, ok := servers(t, c)["host-s"]
		return !ok
	})

	// B: another host that copied A's server ID, with no credentials: it
	// registers with the statement (a client of its own) and says hello as S.
	stateB := t.TempDir()
	id, err := os.ReadFile(filepath.Join(stateA, "server-id"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(stateB, "server-id"), id, 0o600); err != nil {
		t.Fatal(err)
	}
	agentB := b.MustStartSimAgent(t, stateB, nil, hostReport("host-b", 0, nil))
	agentB.Stop()
	var logB lockedBuffer
	rogue := *agentB.Agent
	rogue.Logger = slog.New(slog.NewTextHandler(&logB, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = rogue.Run(ctx) }()
	stopB := func() { cancel(); <-done }
	defer stopB()
	poll.Until(t, 15*time.Second, "agent B refused as S", func() bool {
		return strings.Contains(logB.String(), "server id belongs to another agent client")
	})
	if _, err := os.Stat(filepath.Join(stateB, "agent-credentials.json")); err != nil {
		t.Errorf("agent B did not register (the test needs another registered client): %v", err)
	}
	if s, ok := servers(t, c)["host-b"]; ok {
		t.Fatalf("agent B took the server ID of an offline host: %+v", s)
	}
	stopB()

	// A comes back as S.
	a = b.MustStartSimAgent(t, stateA, nil, hostReport("host-s", 0, nil))
	poll.Until(t, 10*time.Second, "agent A back as its server", func() bool { return available("host-s") })
	a.Stop()
	poll.Until(t, 15*time.Second, "the broker to forget the server again", func() bool {
		_, ok := servers(t, c)["host-s"]
		return !ok
	})

	// Unregistering A releases S.
	credsA, err := os.ReadFile(filepath.Join(stateA, "agent-credentials.json"))
	if err != nil {
		t.Fatal(err)
	}
	var idA string
	for _, cl := range mustAgentClients(t, b) {
		if strings.Contains(string(credsA), cl.ID) {
			idA = cl.ID
		}
	}
	if out, code := b.admin(t, "unregister-agent-client", "--client-id", idA); code != 0 {
		t.Fatalf("unregister-agent-client: %d %s", code, out)
	}
	b.MustStartSimAgent(t, stateB, nil, hostReport("host-b", 0, nil))
	poll.Until(t, 10*time.Second, "agent B as S once A is unregistered", func() bool { return available("host-b") })
}

func mustAgentClients(t *testing.T, b *testBroker) []*oauth.Client {
	t.Helper()
	cs, err := b.store.ListClients(context.Background(), oauth.KindAgent)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// TestBroker_PruneUnlinkedAgentClients reproduces the review's finding 7
// (third item): registrations that never link piled up as permanent agent
// clients. With seconds-before-deleting-unlinked-agent-clients, the broker's
// cleanup deletes them and spares the agents that linked; an agent whose
// client was pruned registers again when it comes up.
func TestBroker_PruneUnlinkedAgentClients(t *testing.T) {
	t.Parallel() // it mostly waits for the broker's timeouts: overlap it with the others that do
	b := MustRunMain(t, t.TempDir(), func(c *Config) {
		c.UnlinkedAgentTimeout = 2 * time.Second
		// The maintenance that prunes runs every DeleteSessionDuration/4,
		// at least every second (no sessions here to keep).
		c.DeleteSessionDuration = time.Second
	})
	c := b.MustClient(t)
	linked := b.MustStartSimAgent(t, t.TempDir(), nil, hostReport("linked", 0, nil))
	poll.Until(t, 10*time.Second, "the linked agent's server", func() bool { _, ok := servers(t, c)["linked"]; return ok })

	// A flood of registrations that never link, and an agent that linked
	// once and went away.
	stmt, err := os.ReadFile(filepath.Join(b.dir, SoftwareStatementFile))
	if err != nil {
		t.Fatal(err)
	}
	var flood []string
	for range 5 {
		code, body := b.registerStatus(t, strings.TrimSpace(string(stmt)))
		if code != 201 {
			t.Fatalf("register: %d %s", code, body)
		}
		var r struct {
			ClientID string `json:"client_id"`
		}
		if err := json.Unmarshal([]byte(body), &r); err != nil || r.ClientID == "" {
			t.Fatalf("register: %s", body)
		}
		flood = append(flood, r.ClientID)
	}
	late := b.MustStartSimAgent(t, t.TempDir(), nil, hostReport("late", 0, nil))
	poll.Until(t, 10*time.Second, "the late agent's server", func() bool { _, ok := servers(t, c)["late"]; return ok })
	late.Stop()
	has := func(id string) bool {
		for _, cl := range mustAgentClients(t, b) {
			if cl.ID == id {
				return true
			}
		}
		return false
	}
	poll.Until(t, 20*time.Second, "the unlinked agent clients pruned", func() bool {
		for _, id := range flood {
			if has(id) {
				return false
			}
		}
		return true
	})
	if n := len(mustAgentClients(t, b)); n != 2 {
		t.Errorf("%d agent clients left, want the 2 that linked", n)
	}
	_ = linked

	// An agent whose client was pruned: registered, never linked (its
	// credentials written by hand, as a crash right after registering would
	// leave them), comes up later: refused, it registers again and links.
	code, body := b.registerStatus(t, strings.TrimSpace(string(stmt)))
	if code != 201 {
		t.Fatalf("register: %d %s", code, body)
	}
	poll.Until(t, 20*time.Second, "the new unlinked client pruned", func() bool { return len(mustAgentClients(t, b)) == 2 })
	crashed := t.TempDir()
	if err := os.WriteFile(filepath.Join(crashed, "agent-credentials.json"), []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	b.MustStartSimAgent(t, crashed, nil, hostReport("crashed", 0, nil))
	poll.Until(t, 10*time.Second, "the pruned agent registered again and linked", func() bool { _, ok := servers(t, c)["crashed"]; return ok })
}
