package postgres_test

import (
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/broker/storetest"
)

// TestStore_ListSessionsIntoMatchesListSessions lists pages with every kind
// of filter through ListSessionsInto, reusing one buffer for all of them
// (a long page, then shorter ones), and checks each against ListSessions.
func TestStore_ListSessionsIntoMatchesListSessions(t *testing.T) {
	ctx := t.Context()
	s := MustOpenFresh(t)
	var batch []*broker.Session
	for i := range 300 {
		server := fmt.Sprintf("s-%d", i%7)
		if i%10 == 0 {
			server = ""
		}
		x := storetest.NewSession(fmt.Sprintf("sess-%03d", i), fmt.Sprintf("user-%d", i%5), broker.TypeVirtual, server, broker.StateReady)
		if i%3 == 0 {
			x.State = broker.StateCreating
			x.Excluded = []string{"s-9", "s-8"}
			x.Spec.AutorunFileArguments = []string{"-a", "b c"}
			x.Spec.Requirements = "ram.gb >= 4"
		}
		batch = append(batch, x)
	}
	storetest.MustInsertSessions(t, s, batch...)
	filters := []broker.SessionFilter{
		{Limit: 1001},
		{Owner: "user-3", Limit: 11},
		{Owner: "user-3", AfterSeq: 40, Limit: 11},
		{ServerID: "s-2"},
		{Unplaced: true, Limit: 5},
		{States: []string{broker.StateCreating}, Limit: 50},
		{IDs: []string{"sess-007", "sess-003", "sess-299", "sess-nope", "sess-003"}},
		{Owner: "nobody"},
	}
	var buf []broker.Session
	for _, f := range filters {
		want, err := s.ListSessions(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		if buf, err = s.ListSessionsInto(ctx, f, buf); err != nil {
			t.Fatal(err)
		}
		var got []*broker.Session
		for k := range buf {
			got = append(got, &buf[k])
		}
		if d := cmp.Diff(want, got, cmpopts.EquateEmpty()); d != "" {
			t.Fatalf("ListSessionsInto(%+v) (-ListSessions +ListSessionsInto):\n%s", f, d)
		}
	}
}
