package postgres_test

import (
	"fmt"
	"syscall"
	"testing"
	"time"

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

// BenchmarkListSessionsIntoOwnerPage is BenchmarkListSessionsOwnerPage
// through ListSessionsInto with one reused buffer, as DescribeSessions pages
// read; cpu-µs/op is this process's share (PostgreSQL's own is not in it).
func BenchmarkListSessionsIntoOwnerPage(b *testing.B) {
	const total, owners, servers = 100_000, 100, 1_000
	s := MustOpenFresh(b)
	benchServers(b, s, servers, 0, 0)
	benchSessions(b, s, total, owners, servers)
	first := storetest.MustListSessions(b, s, broker.SessionFilter{Limit: 1})[0].Seq
	var buf []broker.Session
	i := 0
	b.ReportAllocs()
	cpu0 := processCPU()
	for b.Loop() {
		f := broker.SessionFilter{Owner: fmt.Sprintf("user-%03d", i%owners), AfterSeq: first + int64((i*7919)%(total/2)), Limit: 101}
		var err error
		if buf, err = s.ListSessionsInto(b.Context(), f, buf); err != nil {
			b.Fatal(err)
		}
		if len(buf) != 101 {
			b.Fatalf("page of %d sessions, want 101", len(buf))
		}
		clear(buf)
		i++
	}
	b.ReportMetric(float64(processCPU()-cpu0)/1e3/float64(i), "cpu-µs/op")
}

// processCPU is the user and system CPU time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
