package storetest

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/berth-dev/berth/internal/broker"
)

// testUpdateServers: UpdateServers writes Info, LastSeen and BrokerID of
// existing rows in one call (tag rows follow, Open, Seq and CreatedAt are
// kept, a ServerSyncer's Version moves only when the report changed),
// skips unknown servers and servers of another agent client, inserts
// nothing and leaves its arguments alone.
func testUpdateServers(t *testing.T, s broker.Store) {
	ctx := t.Context()
	if err := s.UpdateServers(ctx, nil); err != nil {
		t.Fatalf("UpdateServers(nil): %v", err)
	}
	a, b, c := NewServer("s-a", 0, 0, map[string]string{"zone": "a"}), NewServer("s-b", 0, 0, nil), NewServer("s-c", 0, 0, nil)
	MustUpsertServers(t, s, a, b, c)
	if err := s.SetServerOpen(ctx, "s-b", false); err != nil {
		t.Fatal(err)
	}
	MustInsertSessions(t, s, NewSession("1", "alice", broker.TypeVirtual, "s-a", broker.StateReady),
		NewSession("2", "bob", broker.TypeVirtual, "s-b", broker.StateReady))
	before := map[string]*broker.Server{"s-a": MustGetServer(t, s, "s-a"), "s-b": MustGetServer(t, s, "s-b"), "s-c": MustGetServer(t, s, "s-c")}

	ua, ub := *before["s-a"], *before["s-b"]
	ua.Info.Host.Load1, ua.Info.Host.MemUsed = 3.5, 9<<30
	ua.LastSeen, ua.BrokerID = at(time.Hour), "broker-2"
	ub.Info.Host.Load1 = 1.5
	ub.Info.Tags = map[string]string{"zone": "a"}
	ub.Open = true // not written: Open is kept
	other := *before["s-c"]
	other.AgentClientID = "agent-intruder"
	other.Info.Hostname = "stolen.example.com"
	gone := NewServer("s-gone", 0, 0, nil)
	args := []*broker.Server{&ua, &ub, &other, gone}
	argsBefore := []broker.Server{ua, ub, other, *gone}
	if err := s.UpdateServers(ctx, args); err != nil {
		t.Fatalf("UpdateServers: %v", err)
	}
	for i, srv := range args {
		if d := cmp.Diff(argsBefore[i], *srv, diffOpts...); d != "" {
			t.Errorf("UpdateServers modified server %s (-before +after):\n%s", srv.ID, d)
		}
	}

	for _, want := range []*broker.Server{&ua, &ub} {
		got := MustGetServer(t, s, want.ID)
		w := *want
		w.Open, w.Version = before[want.ID].Open, got.Version
		if d := cmp.Diff(&w, got, diffOpts...); d != "" {
			t.Errorf("%s after UpdateServers (-want +got):\n%s", want.ID, d)
		}
		if _, ok := s.(broker.ServerSyncer); ok && got.Version == before[want.ID].Version {
			t.Errorf("%s: Version %d did not move with a changed report", want.ID, got.Version)
		}
	}
	if d := cmp.Diff(before["s-c"], MustGetServer(t, s, "s-c"), diffOpts...); d != "" {
		t.Errorf("another agent client's update changed s-c (-want +got):\n%s", d)
	}
	if _, err := s.GetServer(ctx, "s-gone"); err == nil {
		t.Error("UpdateServers inserted an unknown server")
	}
	// Tag rows follow: s-b is in zone a now.
	got := MustListSessions(t, s, broker.SessionFilter{Tags: map[string]string{"zone": "a"}})
	if d := cmp.Diff([]string{"1", "2"}, ids(got)); d != "" {
		t.Errorf("sessions in zone a (-want +got):\n%s", d)
	}

	// Only LastSeen and BrokerID moved: a ServerSyncer keeps the Version.
	again := MustGetServer(t, s, "s-a")
	v := again.Version
	again.LastSeen = at(2 * time.Hour)
	if err := s.UpdateServers(ctx, []*broker.Server{again}); err != nil {
		t.Fatal(err)
	}
	if got := MustGetServer(t, s, "s-a"); !got.LastSeen.Equal(at(2*time.Hour)) || got.Version != v {
		t.Errorf("s-a: LastSeen %v Version %d, want %v and %d", got.LastSeen, got.Version, at(2*time.Hour), v)
	}
}
