package storetest

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/berth-dev/berth/internal/broker"
)

func testUpsertServer(t *testing.T, s broker.Store) {
	ctx := t.Context()
	a := NewServer("s-a", 10, 2, map[string]string{"zone": "a"})
	MustUpsertServers(t, s, a)
	if a.Seq <= 0 {
		t.Fatalf("UpsertServer assigned Seq %d, want > 0", a.Seq)
	}
	want := *a
	got := MustGetServer(t, s, "s-a")
	if d := cmp.Diff(&want, got, diffOpts...); d != "" {
		t.Fatalf("GetServer after insert (-want +got):\n%s", d)
	}
	checkUTC(t, "GetServer", got.LastSeen, got.CreatedAt)

	b := NewServer("s-b", 0, 0, nil)
	MustUpsertServers(t, s, b)
	if b.Seq <= a.Seq {
		t.Errorf("second server got Seq %d, want > %d", b.Seq, a.Seq)
	}

	// An agent report: new Info, LastSeen and BrokerID; Open, Seq and CreatedAt
	// of the stored row stay.
	if err := s.SetServerOpen(ctx, "s-a", false); err != nil {
		t.Fatal(err)
	}
	up := NewServer("s-a", 20, 0, map[string]string{"zone": "b", "gpu": "yes"})
	up.Open = true
	up.Seq = 0
	up.CreatedAt = at(time.Hour)
	up.LastSeen = at(2 * time.Hour)
	up.BrokerID = "broker-2"
	up.Info.Hostname = "renamed"
	up.Info.Endpoints = up.Info.Endpoints[:1]
	up.Info.Host.Load1 = 3.5
	if err := s.UpsertServer(ctx, up); err != nil {
		t.Fatalf("UpsertServer update: %v", err)
	}
	want = *up
	want.Seq, want.Open, want.CreatedAt = a.Seq, false, a.CreatedAt
	got = MustGetServer(t, s, "s-a")
	if d := cmp.Diff(&want, got, diffOpts...); d != "" {
		t.Fatalf("GetServer after update (-want +got):\n%s", d)
	}

	// A report with a zero LastSeen stores the zero time.
	up.LastSeen = time.Time{}
	MustUpsertServers(t, s, up)
	if got := MustGetServer(t, s, "s-a"); !got.LastSeen.IsZero() {
		t.Errorf("LastSeen = %v, want zero", got.LastSeen)
	}
}

func testUpsertServerConflict(t *testing.T, s broker.Store) {
	a := NewServer("s-a", 10, 2, nil)
	MustUpsertServers(t, s, a)
	want := MustGetServer(t, s, "s-a")

	other := NewServer("s-a", 99, 0, map[string]string{"zone": "z"})
	other.AgentClientID = "another-agent"
	other.BrokerID = "broker-9"
	err := s.UpsertServer(t.Context(), other)
	if !errors.Is(err, broker.ErrConflict) {
		t.Fatalf("UpsertServer with another agent client: got %v, want ErrConflict", err)
	}
	if d := cmp.Diff(want, MustGetServer(t, s, "s-a"), diffOpts...); d != "" {
		t.Errorf("server changed by a rejected upsert (-want +got):\n%s", d)
	}
}

func testGetServerNotFound(t *testing.T, s broker.Store) {
	MustUpsertServers(t, s, NewServer("s-a", 0, 0, nil))
	if _, err := s.GetServer(t.Context(), "s-missing"); !errors.Is(err, broker.ErrNotFound) {
		t.Fatalf("GetServer(unknown): got %v, want ErrNotFound", err)
	}
}

func testListServers(t *testing.T, s broker.Store) {
	ctx := t.Context()
	if got, err := s.ListServers(ctx, broker.ServerFilter{}); err != nil || len(got) != 0 {
		t.Fatalf("ListServers on an empty store = %v, %v; want none", got, err)
	}
	names := []string{"s-e", "s-c", "s-a", "s-d", "s-b"} // Seq order is insertion order, not ID order
	for _, id := range names {
		MustUpsertServers(t, s, NewServer(id, 0, 0, nil))
	}
	MustUpsertServers(t, s, NewServer("s-c", 5, 0, nil)) // an update keeps the Seq

	all, err := s.ListServers(ctx, broker.ServerFilter{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for i, srv := range all {
		got = append(got, srv.ID)
		if i > 0 && srv.Seq <= all[i-1].Seq {
			t.Errorf("ListServers not ordered by Seq: %d after %d", srv.Seq, all[i-1].Seq)
		}
	}
	if d := cmp.Diff(names, got); d != "" {
		t.Fatalf("ListServers (-want +got):\n%s", d)
	}
	if d := cmp.Diff(MustGetServer(t, s, "s-c"), all[1], diffOpts...); d != "" {
		t.Errorf("ListServers entry differs from GetServer (-want +got):\n%s", d)
	}

	// Pages of 2 by AfterSeq.
	var paged []string
	var after int64
	for range 10 {
		page, err := s.ListServers(ctx, broker.ServerFilter{AfterSeq: after, Limit: 2})
		if err != nil {
			t.Fatal(err)
		}
		if len(page) > 2 {
			t.Fatalf("page of %d servers, want at most 2", len(page))
		}
		if len(page) == 0 {
			break
		}
		for _, srv := range page {
			paged = append(paged, srv.ID)
		}
		after = page[len(page)-1].Seq
	}
	if d := cmp.Diff(names, paged); d != "" {
		t.Errorf("paged ListServers (-want +got):\n%s", d)
	}

	byID, err := s.ListServers(ctx, broker.ServerFilter{IDs: []string{"s-b", "s-missing", "s-e"}})
	if err != nil {
		t.Fatal(err)
	}
	got = nil
	for _, srv := range byID {
		got = append(got, srv.ID)
	}
	if d := cmp.Diff([]string{"s-e", "s-b"}, got); d != "" {
		t.Errorf("ListServers by IDs (-want +got):\n%s", d)
	}

	rest, err := s.ListServers(ctx, broker.ServerFilter{IDs: []string{"s-e", "s-c", "s-b"}, AfterSeq: all[0].Seq, Limit: 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(rest) != 1 || rest[0].ID != "s-c" {
		t.Errorf("ListServers by IDs after s-e, limit 1 = %v, want [s-c]", rest)
	}
}

func testSetServerOpen(t *testing.T, s broker.Store) {
	ctx := t.Context()
	MustUpsertServers(t, s, NewServer("s-a", 0, 0, nil), NewServer("s-b", 0, 0, nil))
	if err := s.SetServerOpen(ctx, "s-a", false); err != nil {
		t.Fatal(err)
	}
	if MustGetServer(t, s, "s-a").Open {
		t.Error("s-a open after SetServerOpen(false)")
	}
	if !MustGetServer(t, s, "s-b").Open {
		t.Error("SetServerOpen(s-a) closed s-b")
	}
	if err := s.SetServerOpen(ctx, "s-a", true); err != nil {
		t.Fatal(err)
	}
	if !MustGetServer(t, s, "s-a").Open {
		t.Error("s-a closed after SetServerOpen(true)")
	}
	if err := s.SetServerOpen(ctx, "s-missing", true); !errors.Is(err, broker.ErrNotFound) {
		t.Errorf("SetServerOpen(unknown): got %v, want ErrNotFound", err)
	}
}

func testSetServerSeen(t *testing.T, s broker.Store) {
	ctx := t.Context()
	a := NewServer("s-a", 0, 0, nil)
	MustUpsertServers(t, s, a)
	seen := at(time.Hour + 123*time.Millisecond)
	if err := s.SetServerSeen(ctx, "s-a", "broker-7", seen); err != nil {
		t.Fatal(err)
	}
	got := MustGetServer(t, s, "s-a")
	if !got.LastSeen.Equal(seen) || got.BrokerID != "broker-7" {
		t.Errorf("after SetServerSeen: LastSeen %v, BrokerID %q; want %v, broker-7", got.LastSeen, got.BrokerID, seen)
	}
	checkUTC(t, "LastSeen", got.LastSeen)
	want := *a
	want.LastSeen, want.BrokerID = got.LastSeen, got.BrokerID
	if d := cmp.Diff(&want, got, diffOpts...); d != "" {
		t.Errorf("SetServerSeen changed other fields (-want +got):\n%s", d)
	}

	if err := s.SetServerSeen(ctx, "s-a", "broker-7", time.Time{}); err != nil {
		t.Fatal(err)
	}
	if got := MustGetServer(t, s, "s-a"); !got.LastSeen.IsZero() {
		t.Errorf("LastSeen after link loss = %v, want zero", got.LastSeen)
	}
	if err := s.SetServerSeen(ctx, "s-missing", "broker-7", seen); !errors.Is(err, broker.ErrNotFound) {
		t.Errorf("SetServerSeen(unknown): got %v, want ErrNotFound", err)
	}

	// Many at once: unknown IDs are skipped, the others written, nothing
	// else changed.
	b := NewServer("s-b", 0, 0, nil)
	MustUpsertServers(t, s, b)
	seenB := at(2*time.Hour + 7*time.Millisecond)
	if err := s.SetServersSeen(ctx, "broker-8", map[string]time.Time{"s-a": seen, "s-b": seenB, "s-missing": seen}); err != nil {
		t.Fatal(err)
	}
	for _, w := range []struct {
		srv  *broker.Server
		seen time.Time
	}{{a, seen}, {b, seenB}} {
		got := MustGetServer(t, s, w.srv.ID)
		want := *w.srv
		want.LastSeen, want.BrokerID = w.seen, "broker-8"
		if d := cmp.Diff(&want, got, diffOpts...); d != "" {
			t.Errorf("after SetServersSeen, %s (-want +got):\n%s", w.srv.ID, d)
		}
	}
	if err := s.SetServersSeen(ctx, "broker-8", nil); err != nil {
		t.Errorf("SetServersSeen(nil): %v", err)
	}
}

func testDeleteServer(t *testing.T, s broker.Store) {
	ctx := t.Context()
	MustUpsertServers(t, s,
		NewServer("s-a", 0, 0, map[string]string{"zone": "a"}),
		NewServer("s-b", 0, 0, map[string]string{"zone": "a"}))
	MustInsertSessions(t, s,
		NewSession("x1", "alice", broker.TypeVirtual, "s-a", broker.StateReady),
		NewSession("x2", "bob", broker.TypeVirtual, "s-a", broker.StateDeleted),
		NewSession("x3", "alice", broker.TypeVirtual, "s-b", broker.StateReady),
		NewSession("x4", "alice", broker.TypeVirtual, "", broker.StateCreating))
	if err := s.DeleteServer(ctx, "s-a"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetServer(ctx, "s-a"); !errors.Is(err, broker.ErrNotFound) {
		t.Errorf("GetServer after DeleteServer: got %v, want ErrNotFound", err)
	}
	for _, id := range []string{"x1", "x2"} {
		if _, err := s.GetSession(ctx, id); !errors.Is(err, broker.ErrNotFound) {
			t.Errorf("GetSession(%s) of a deleted server: got %v, want ErrNotFound", id, err)
		}
	}
	if d := cmp.Diff([]string{"x3", "x4"}, ids(MustListSessions(t, s, broker.SessionFilter{}))); d != "" {
		t.Errorf("sessions left (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]string{"x3"}, ids(MustListSessions(t, s, broker.SessionFilter{Tags: map[string]string{"zone": "a"}}))); d != "" {
		t.Errorf("sessions by tag after DeleteServer (-want +got):\n%s", d)
	}
	MustGetServer(t, s, "s-b")

	// The ID can be registered again, by another agent client too.
	c := NewServer("s-a", 0, 0, nil)
	c.AgentClientID = "another-agent"
	MustUpsertServers(t, s, c)
	if got := MustGetServer(t, s, "s-a"); got.AgentClientID != "another-agent" {
		t.Errorf("re-registered server has agent client %q", got.AgentClientID)
	}
	if d := cmp.Diff([]string{"x3"}, ids(MustListSessions(t, s, broker.SessionFilter{Tags: map[string]string{"zone": "a"}}))); d != "" {
		t.Errorf("re-registered server kept its old tags (-want +got):\n%s", d)
	}
}
