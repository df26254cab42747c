package storetest

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/berth-dev/berth/internal/broker"
)

// runSyncer runs the broker.ServerSyncer contract tests as subtests of
// t.Run("ServerSyncer"), which is skipped if the stores open returns do not
// implement it.
func runSyncer(t *testing.T, open func(t *testing.T) broker.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s broker.Store, sy broker.ServerSyncer)
	}{
		{"ServerStamps", testServerStamps},
		{"Version_Upsert", testVersionUpsert},
		{"Version_SetServerOpen", testVersionSetServerOpen},
		{"Version_SetServerSeen", testVersionSetServerSeen},
		{"Version_DeleteServer", testVersionDeleteServer},
	}
	t.Run("ServerSyncer", func(t *testing.T) {
		if _, ok := open(t).(broker.ServerSyncer); !ok {
			t.Skip("the store does not implement broker.ServerSyncer")
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				s := open(t)
				tt.fn(t, s, s.(broker.ServerSyncer))
			})
		}
	})
}

// MustServerStamps returns the stamps by server ID and fails tb on error or
// if a server has two.
func MustServerStamps(tb testing.TB, sy broker.ServerSyncer) map[string]broker.ServerStamp {
	tb.Helper()
	stamps, err := sy.ServerStamps(tb.Context())
	if err != nil {
		tb.Fatalf("ServerStamps: %v", err)
	}
	out := make(map[string]broker.ServerStamp, len(stamps))
	for _, st := range stamps {
		if _, dup := out[st.ID]; dup {
			tb.Fatalf("ServerStamps returned %q twice", st.ID)
		}
		out[st.ID] = st
	}
	return out
}

// stampOf returns the stamp that the stored server should have.
func stampOf(srv *broker.Server) broker.ServerStamp {
	return broker.ServerStamp{ID: srv.ID, Version: srv.Version, LastSeen: srv.LastSeen, BrokerID: srv.BrokerID}
}

// version returns the stored server's Version, checking that its stamp has
// the same one.
func version(t *testing.T, s broker.Store, sy broker.ServerSyncer, id string) int64 {
	t.Helper()
	v := MustGetServer(t, s, id).Version
	if st, ok := MustServerStamps(t, sy)[id]; !ok || st.Version != v {
		t.Fatalf("stamp of %s = %+v (found %v), want Version %d as GetServer", id, st, ok, v)
	}
	return v
}

func testServerStamps(t *testing.T, s broker.Store, sy broker.ServerSyncer) {
	if got := MustServerStamps(t, sy); len(got) != 0 {
		t.Fatalf("ServerStamps on an empty store = %v", got)
	}
	a, b := NewServer("s-a", 0, 0, nil), NewServer("s-b", 0, 0, map[string]string{"zone": "b"})
	b.LastSeen, b.BrokerID = time.Time{}, ""
	MustUpsertServers(t, s, a, b)
	if a.Version == 0 || b.Version == 0 {
		t.Errorf("UpsertServer left Version zero: %d, %d", a.Version, b.Version)
	}
	want := map[string]broker.ServerStamp{"s-a": stampOf(a), "s-b": stampOf(b)}
	got := MustServerStamps(t, sy)
	if d := cmp.Diff(want, got, cmpopts.EquateEmpty()); d != "" {
		t.Errorf("ServerStamps (-want +got):\n%s", d)
	}
	for _, st := range got {
		checkUTC(t, "stamp "+st.ID, st.LastSeen)
	}
	servers, err := s.ListServers(t.Context(), broker.ServerFilter{})
	if err != nil {
		t.Fatal(err)
	}
	for _, srv := range servers {
		if srv.Version != got[srv.ID].Version {
			t.Errorf("ListServers: %s has Version %d, its stamp %d", srv.ID, srv.Version, got[srv.ID].Version)
		}
	}
}

func testVersionUpsert(t *testing.T, s broker.Store, sy broker.ServerSyncer) {
	a, b := NewServer("s-a", 4, 2, map[string]string{"zone": "a"}), NewServer("s-b", 0, 0, nil)
	MustUpsertServers(t, s, a, b)
	v := version(t, s, sy, "s-a")
	if v != a.Version {
		t.Fatalf("UpsertServer set Version %d, GetServer has %d", a.Version, v)
	}
	vb := version(t, s, sy, "s-b")

	// A report that changes only LastSeen and BrokerID keeps the Version.
	same := NewServer("s-a", 4, 2, map[string]string{"zone": "a"})
	same.LastSeen, same.BrokerID = at(time.Hour), "broker-2"
	MustUpsertServers(t, s, same)
	if got := version(t, s, sy, "s-a"); got != v || same.Version != v {
		t.Errorf("report with new LastSeen and BrokerID: Version %d (set %d), want %d kept", got, same.Version, v)
	}
	if st := MustServerStamps(t, sy)["s-a"]; !st.LastSeen.Equal(same.LastSeen) || st.BrokerID != "broker-2" {
		t.Errorf("stamp after a report = %+v, want LastSeen %v and broker-2", st, same.LastSeen)
	}

	// Any other change takes a greater Version, which UpsertServer sets.
	changes := []struct {
		name   string
		change func(*broker.Server)
	}{
		{"load", func(srv *broker.Server) { srv.Info.Host.Load1 = 7.5 }},
		{"tags", func(srv *broker.Server) { srv.Info.Tags = map[string]string{"zone": "b"} }},
		{"max virtual sessions", func(srv *broker.Server) { srv.Info.MaxVirtualSessions = 8 }},
		{"max sessions per user", func(srv *broker.Server) { srv.Info.MaxConcurrentSessionsPerUser = 1 }},
		{"healthy", func(srv *broker.Server) { srv.Info.Healthy = false }},
	}
	cur := same
	for _, c := range changes {
		next := *cur
		c.change(&next)
		MustUpsertServers(t, s, &next)
		got := version(t, s, sy, "s-a")
		if got <= v || next.Version != got {
			t.Errorf("report that changes %s: Version %d (set %d), want > %d", c.name, got, next.Version, v)
		}
		v, cur = got, &next
	}

	// A rejected report changes nothing.
	other := *cur
	other.AgentClientID = "another-agent"
	other.Info.Hostname = "impostor"
	if err := s.UpsertServer(t.Context(), &other); !errors.Is(err, broker.ErrConflict) {
		t.Fatalf("UpsertServer with another agent client: got %v, want ErrConflict", err)
	}
	if got := version(t, s, sy, "s-a"); got != v {
		t.Errorf("rejected report changed Version from %d to %d", v, got)
	}
	if got := version(t, s, sy, "s-b"); got != vb {
		t.Errorf("reports of s-a changed the Version of s-b from %d to %d", vb, got)
	}
}

func testVersionSetServerOpen(t *testing.T, s broker.Store, sy broker.ServerSyncer) {
	ctx := t.Context()
	MustUpsertServers(t, s, NewServer("s-a", 0, 0, nil), NewServer("s-b", 0, 0, nil))
	v, vb := version(t, s, sy, "s-a"), version(t, s, sy, "s-b")
	for _, open := range []bool{false, true} {
		if err := s.SetServerOpen(ctx, "s-a", open); err != nil {
			t.Fatal(err)
		}
		got := version(t, s, sy, "s-a")
		if got <= v {
			t.Errorf("SetServerOpen(%v): Version %d, want > %d", open, got, v)
		}
		v = got
	}
	if got := version(t, s, sy, "s-b"); got != vb {
		t.Errorf("SetServerOpen(s-a) changed the Version of s-b from %d to %d", vb, got)
	}
}

func testVersionSetServerSeen(t *testing.T, s broker.Store, sy broker.ServerSyncer) {
	MustUpsertServers(t, s, NewServer("s-a", 0, 0, nil))
	v := version(t, s, sy, "s-a")
	seen := at(2*time.Hour + 7*time.Millisecond)
	if err := s.SetServerSeen(t.Context(), "s-a", "broker-3", seen); err != nil {
		t.Fatal(err)
	}
	want := broker.ServerStamp{ID: "s-a", Version: v, LastSeen: seen, BrokerID: "broker-3"}
	if d := cmp.Diff(want, MustServerStamps(t, sy)["s-a"]); d != "" {
		t.Errorf("stamp after SetServerSeen (-want +got):\n%s", d)
	}
	if err := s.SetServerSeen(t.Context(), "s-a", "broker-3", time.Time{}); err != nil {
		t.Fatal(err)
	}
	want.LastSeen = time.Time{}
	if d := cmp.Diff(want, MustServerStamps(t, sy)["s-a"]); d != "" {
		t.Errorf("stamp after link loss (-want +got):\n%s", d)
	}
}

// testVersionDeleteServer: a deleted server has no stamp, and registered
// again it does not reuse its old Version (a broker that missed the deletion
// must still re-read it).
func testVersionDeleteServer(t *testing.T, s broker.Store, sy broker.ServerSyncer) {
	MustUpsertServers(t, s, NewServer("s-a", 0, 0, nil), NewServer("s-b", 0, 0, nil))
	old := version(t, s, sy, "s-a")
	if err := s.DeleteServer(t.Context(), "s-a"); err != nil {
		t.Fatal(err)
	}
	stamps := MustServerStamps(t, sy)
	if _, ok := stamps["s-a"]; ok || len(stamps) != 1 {
		t.Errorf("stamps after DeleteServer(s-a) = %v, want s-b only", stamps)
	}
	again := NewServer("s-a", 0, 0, nil)
	again.Info.Hostname = "reinstalled"
	MustUpsertServers(t, s, again)
	if got := version(t, s, sy, "s-a"); got == old {
		t.Errorf("server registered again reused Version %d", old)
	}
}
