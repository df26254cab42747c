package broker_test

import (
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/sqlite"
)

// TestDescribeSessions_StatesAndServer: berth's own DescribeQuery filters
// (States, ServerID) narrow the sessions in the store, page with cursors
// like the API's, and a cursor of one filter is refused on another.
func TestDescribeSessions_StatesAndServer(t *testing.T) {
	ctx := t.Context()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "berth.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	now := time.Now().UTC().Truncate(time.Millisecond)
	states := []string{broker.StateReady, broker.StateDeleted, broker.StateCreating}
	var ss []*broker.Session
	for i := range 12 {
		ss = append(ss, &broker.Session{ID: fmt.Sprintf("x%02d", i), Name: "d", Owner: "ann", Type: broker.TypeVirtual,
			ServerID: fmt.Sprintf("s%d", i%2), State: states[i%3], CreationTime: now, UpdatedAt: now})
	}
	if err := st.InsertSessions(ctx, ss); err != nil {
		t.Fatal(err)
	}
	svc, err := broker.New(ctx, st, nil, nil, broker.Config{BrokerID: "b1"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ids := func(q broker.DescribeQuery) []string {
		t.Helper()
		var out []string
		for {
			views, next, err := svc.DescribeSessions(ctx, q)
			if err != nil {
				t.Fatalf("%+v: %v", q, err)
			}
			for _, v := range views {
				out = append(out, v.ID)
			}
			if next == "" {
				return out
			}
			q.NextToken = next
		}
	}
	for _, tt := range []struct {
		name string
		q    broker.DescribeQuery
		want []string
	}{
		{"READY", broker.DescribeQuery{States: []string{broker.StateReady}, MaxResults: 2}, []string{"x00", "x03", "x06", "x09"}},
		{"server s1", broker.DescribeQuery{ServerID: "s1", MaxResults: 2}, []string{"x01", "x03", "x05", "x07", "x09", "x11"}},
		{"READY on s1", broker.DescribeQuery{States: []string{broker.StateReady}, ServerID: "s1"}, []string{"x03", "x09"}},
		{"CREATING or DELETED on s0", broker.DescribeQuery{States: []string{broker.StateCreating, broker.StateDeleted}, ServerID: "s0", MaxResults: 1},
			[]string{"x02", "x04", "x08", "x10"}},
		{"no such server", broker.DescribeQuery{ServerID: "s9"}, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := ids(tt.q); !slices.Equal(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
	_, next, err := svc.DescribeSessions(ctx, broker.DescribeQuery{States: []string{broker.StateReady}, MaxResults: 1})
	if err != nil || next == "" {
		t.Fatalf("first READY page: next %q, %v", next, err)
	}
	if _, _, err := svc.DescribeSessions(ctx, broker.DescribeQuery{MaxResults: 1, NextToken: next}); err == nil {
		t.Error("a cursor of the READY filter was accepted without it")
	}
	if got := broker.StatesShowing(broker.StateUnknown); !slices.Equal(got, []string{broker.StateReady, broker.StateUnknown}) {
		t.Errorf("StatesShowing(UNKNOWN) = %v", got)
	}
}
