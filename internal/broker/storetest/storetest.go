// Package storetest is the contract test suite of broker.Store. Every
// implementation (internal/sqlite, internal/postgres) runs it from its own tests:
//
//	func TestStore(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) broker.Store {
//			s, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "berth.db"))
//			if err != nil {
//				t.Fatal(err)
//			}
//			t.Cleanup(func() { s.Close() })
//			return s
//		})
//	}
//
// The suite checks behaviour through the interface only. Times it stores have
// millisecond precision and are in UTC, and it expects them back equal (and in
// UTC).
package storetest

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/berth-dev/berth/internal/broker"
)

// Run runs the broker.Store contract tests as subtests of t. open is called once
// per subtest, with that subtest's t, and must return an empty store that stays
// usable until the subtest ends; open is responsible for closing it (with
// t.Cleanup).
func Run(t *testing.T, open func(t *testing.T) broker.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s broker.Store)
	}{
		{"UpsertServer", testUpsertServer},
		{"UpsertServer_Conflict", testUpsertServerConflict},
		{"UpdateServers", testUpdateServers},
		{"GetServer_NotFound", testGetServerNotFound},
		{"ListServers", testListServers},
		{"SetServerOpen", testSetServerOpen},
		{"SetServerSeen", testSetServerSeen},
		{"DeleteServer", testDeleteServer},
		{"InsertSessions", testInsertSessions},
		{"InsertSessions_Conflict", testInsertSessionsConflict},
		{"GetSession_NotFound", testGetSessionNotFound},
		{"ListSessions", testListSessions},
		{"ListSessions_Pagination", testListSessionsPagination},
		{"ListSessions_TagsFollowServer", testListSessionsTagsFollowServer},
		{"ListSessions_CreateBatch", testListSessionsCreateBatch},
		{"CommitPlacements_VirtualLimit", testCommitVirtualLimit},
		{"CommitPlacements_OwnerLimit", testCommitOwnerLimit},
		{"CommitPlacements_SingleConsole", testCommitSingleConsole},
		{"CommitPlacements_DeletedDoNotCount", testCommitDeletedDoNotCount},
		{"CommitPlacements_UnknownServer", testCommitUnknownServer},
		{"CommitPlacements_MixedBatch", testCommitMixedBatch},
		{"CommitPlacements_Move", testCommitMove},
		{"CommitPlacements_MoveErrors", testCommitMoveErrors},
		{"CommitPlacements_MoveStale", testCommitMoveStale},
		{"CommitPlacements_DuplicateID", testCommitDuplicateID},
		{"CommitPlacements_Empty", testCommitEmpty},
		{"CommitPlacements_Concurrent", testCommitConcurrent},
		{"CommitPlacements_QuotaUser", testCommitQuotaUser},
		{"CommitPlacements_QuotaGPUsGroupsTemplates", testCommitQuotaGPUsGroupsTemplates},
		{"CommitPlacements_QuotaConcurrent", testCommitQuotaConcurrent},
		{"UpdateSession", testUpdateSession},
		{"UpdateSession_Abort", testUpdateSessionAbort},
		{"UpdateSession_NotFound", testUpdateSessionNotFound},
		{"UpdateSession_Concurrent", testUpdateSessionConcurrent},
		{"UpdateSessions", testUpdateSessions},
		{"UpdateSessions_Edges", testUpdateSessionsEdges},
		{"UpdateSessions_Concurrent", testUpdateSessionsConcurrent},
		{"DeleteSession", testDeleteSession},
		{"PurgeDeleted", testPurgeDeleted},
		{"CountSessions", testCountSessions},
		{"CountByState", testCountByState},
		{"LifetimeFields", testLifetimeFields},
		{"ListSessions_DueBefore", testListSessionsDueBefore},
		{"UpdateSessionsDue", testUpdateSessionsDue},
		{"Setting", testSetting},
		{"Setting_Concurrent", testSettingConcurrent},
		{"Ping", testPing},
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
	runSyncer(t, open)
}

// T0 is the base time of the suite's data: UTC, millisecond precision.
var T0 = time.Date(2025, 3, 14, 15, 9, 26, 535_000_000, time.UTC)

// at returns T0 plus d.
func at(d time.Duration) time.Time { return T0.Add(d) }

// diffOpts compare stored values: nil and empty slices and maps are equal, and
// unexported (cache) fields are ignored.
var diffOpts = []cmp.Option{
	cmpopts.EquateEmpty(),
	cmpopts.IgnoreUnexported(broker.Server{}, broker.Session{}),
}

// NewServer returns a server with every field set, the given limits and tags.
func NewServer(id string, maxVirtual, maxPerUser int, tags map[string]string) *broker.Server {
	return &broker.Server{
		ID:            id,
		AgentClientID: "agent-" + id,
		Open:          true,
		LastSeen:      at(time.Minute),
		BrokerID:      "broker-1",
		CreatedAt:     at(0),
		Info: broker.ServerInfo{
			Hostname:       id + ".example.com",
			IP:             "10.0.0.1",
			DefaultDNSName: id + ".internal",
			Port:           8443,
			WebURLPath:     "/",
			Endpoints: []broker.Endpoint{
				{IPAddress: "10.0.0.1", Port: 8443, WebURLPath: "/", Protocol: "HTTP"},
				{IPAddress: "10.0.0.1", Port: 8443, Protocol: "QUIC"},
			},
			Version:                      "2024.0-17979",
			AgentVersion:                 "0.1.0",
			Driver:                       "vnc",
			Healthy:                      true,
			MaxVirtualSessions:           maxVirtual,
			MaxConcurrentSessionsPerUser: maxPerUser,
			GLCapable:                    true,
			Host: broker.Host{
				OSFamily: "linux", OSName: "Ubuntu", OSVersion: "24.04", KernelVersion: "6.8.0",
				MemTotal: 16 << 30, MemUsed: 4 << 30, CPUVendor: "GenuineIntel", CPUModel: "Xeon",
				CPUArch: "x86_64", CPUs: 1, CoresPerCPU: 8, Load1: 0.5, Load5: 0.25, Load15: 0.125,
				GPUs:          []broker.GPU{{Vendor: "NVIDIA", Model: "T4"}},
				LoggedInUsers: []string{"root"},
			},
			Tags: tags,
		},
	}
}

// NewSession returns a session with every field set.
func NewSession(id, owner, typ, serverID, state string) *broker.Session {
	return &broker.Session{
		ID:                    id,
		Name:                  "name of " + id,
		Owner:                 owner,
		Type:                  typ,
		ServerID:              serverID,
		State:                 state,
		Substate:              broker.SubstatePlacing,
		StateReason:           "reason of " + id,
		MaxConcurrentClients:  3,
		StorageRoot:           "/home/" + owner,
		CreationTime:          at(time.Second),
		LastDisconnectionTime: at(2 * time.Second),
		NumOfConnections:      1,
		UpdatedAt:             at(3 * time.Second),
		Spec: broker.SessionSpec{
			DcvGlEnabled:         true,
			InitFile:             "/etc/init.sh",
			AutorunFile:          "/usr/bin/app",
			AutorunFileArguments: []string{"-a", "b c"},
			PermissionsFile:      "[permissions]\n%owner% allow builtin\n",
			Requirements:         "server:Host.Os.Family = 'linux'",
			EnqueueRequest:       true,
		},
		Attempts:   2,
		Excluded:   []string{"s-x", "s-y"},
		Enqueued:   true,
		EnqueuedAt: at(4 * time.Second),
	}
}

// MustUpsertServers upserts servers and fails tb on error.
func MustUpsertServers(tb testing.TB, s broker.Store, srvs ...*broker.Server) {
	tb.Helper()
	for _, srv := range srvs {
		if err := s.UpsertServer(tb.Context(), srv); err != nil {
			tb.Fatalf("UpsertServer(%q): %v", srv.ID, err)
		}
	}
}

// MustInsertSessions inserts sessions and fails tb on error.
func MustInsertSessions(tb testing.TB, s broker.Store, ss ...*broker.Session) {
	tb.Helper()
	if err := s.InsertSessions(tb.Context(), ss); err != nil {
		tb.Fatalf("InsertSessions: %v", err)
	}
}

// MustGetServer returns the server and fails tb on error.
func MustGetServer(tb testing.TB, s broker.Store, id string) *broker.Server {
	tb.Helper()
	srv, err := s.GetServer(tb.Context(), id)
	if err != nil {
		tb.Fatalf("GetServer(%q): %v", id, err)
	}
	return srv
}

// MustGetSession returns the session and fails tb on error.
func MustGetSession(tb testing.TB, s broker.Store, id string) *broker.Session {
	tb.Helper()
	ss, err := s.GetSession(tb.Context(), id)
	if err != nil {
		tb.Fatalf("GetSession(%q): %v", id, err)
	}
	return ss
}

// MustListSessions lists sessions and fails tb on error.
func MustListSessions(tb testing.TB, s broker.Store, f broker.SessionFilter) []*broker.Session {
	tb.Helper()
	ss, err := s.ListSessions(tb.Context(), f)
	if err != nil {
		tb.Fatalf("ListSessions(%+v): %v", f, err)
	}
	return ss
}

// MustCommit commits placements and fails tb if the transaction fails or the
// result has the wrong length.
func MustCommit(tb testing.TB, s broker.Store, ps ...broker.Placement) []error {
	tb.Helper()
	errs, err := s.CommitPlacements(tb.Context(), ps)
	if err != nil {
		tb.Fatalf("CommitPlacements: %v", err)
	}
	if len(errs) != len(ps) {
		tb.Fatalf("CommitPlacements returned %d errors for %d placements", len(errs), len(ps))
	}
	return errs
}

// Place returns Insert placements of ss.
func Place(ss ...*broker.Session) []broker.Placement {
	ps := make([]broker.Placement, len(ss))
	for i, s := range ss {
		ps[i] = broker.Placement{Session: s, Insert: true}
	}
	return ps
}

// ids returns the IDs of ss in order.
func ids(ss []*broker.Session) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = s.ID
	}
	return out
}

// checkErrs compares per-item errors with want (nil, or the sentinel each must wrap).
func checkErrs(t *testing.T, got, want []error) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d errors, want %d", len(got), len(want))
	}
	for i := range want {
		switch {
		case want[i] == nil && got[i] != nil:
			t.Errorf("placement %d: unexpected error %v", i, got[i])
		case want[i] != nil && !errors.Is(got[i], want[i]):
			t.Errorf("placement %d: got error %v, want %v", i, got[i], want[i])
		}
	}
}

// checkUTC fails t if a non-zero time is not in UTC.
func checkUTC(t *testing.T, what string, ts ...time.Time) {
	t.Helper()
	for i, tm := range ts {
		if !tm.IsZero() && tm.Location() != time.UTC {
			t.Errorf("%s: time %d is in %v, want UTC", what, i, tm.Location())
		}
	}
}

// activeOn returns the IDs of the active sessions on server id.
func activeOn(t *testing.T, s broker.Store, id string) []string {
	t.Helper()
	var out []string
	for _, ss := range MustListSessions(t, s, broker.SessionFilter{ServerID: id}) {
		if ss.Active() {
			out = append(out, ss.ID)
		}
	}
	slices.Sort(out)
	return out
}

func sessionIDs(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%03d", prefix, i)
	}
	return out
}
