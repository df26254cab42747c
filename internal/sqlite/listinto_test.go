package sqlite_test

import (
	"math/rand/v2"
	"testing"

	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/sqlite"
	"github.com/google/go-cmp/cmp"
)

// TestStore_ListSessionsIntoMatchesListSessions runs the mirror workload and
// checks that ListSessionsInto, reusing one buffer for every call, lists what
// ListSessions lists, from the mirror and from SQL (a store without it).
func TestStore_ListSessionsIntoMatchesListSessions(t *testing.T) {
	ctx := t.Context()
	path := tempPath(t)
	a := MustOpen(t, path)
	b := MustOpenWith(t, path, sqlite.Options{NoSessionCache: true})
	w := newWorkload(rand.New(rand.NewPCG(7, 1)))
	var buf []broker.Session
	for i := range 600 {
		w.step(t, a)
		if i%20 != 19 {
			continue
		}
		for range 10 {
			f := w.filter()
			want, err := b.ListSessions(ctx, f)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range []*sqlite.Store{a, b} {
				if buf, err = s.ListSessionsInto(ctx, f, buf); err != nil {
					t.Fatal(err)
				}
				var got []*broker.Session // nil when empty, as ListSessions answers
				for k := range buf {
					got = append(got, &buf[k])
				}
				if d := cmp.Diff(want, got, exact); d != "" {
					t.Fatalf("ListSessionsInto(%+v) (-ListSessions +ListSessionsInto):\n%s", f, d)
				}
			}
		}
	}
}
