package sqlite_test

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

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

// TestStore_ListSessionsMemo_OnePerVersion checks the memos that pages of
// the mirror hand out: the same memo for a session until it changes, a new
// and empty one for its new version, the old encoding kept across a write
// of its lifetime only (not in the API's shape), and none from SQL.
func TestStore_ListSessionsMemo_OnePerVersion(t *testing.T) {
	ctx := t.Context()
	path := tempPath(t)
	s := MustOpen(t, path)
	now := time.Now().UTC().Truncate(time.Millisecond)
	var ss []*broker.Session
	for i := range 3 {
		ss = append(ss, &broker.Session{ID: fmt.Sprintf("s%d", i), Name: "n", Owner: "alice", Type: broker.TypeVirtual,
			ServerID: "srv", State: broker.StateReady, CreationTime: now, UpdatedAt: now})
	}
	if err := s.InsertSessions(ctx, ss); err != nil {
		t.Fatal(err)
	}
	f := broker.SessionFilter{Owner: "alice"}
	list := func(st *sqlite.Store) ([]broker.Session, []*broker.SessionMemo) {
		t.Helper()
		buf, memos, err := st.ListSessionsMemo(ctx, f, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		return buf, memos
	}
	buf, first := list(s)
	if len(buf) != 3 || len(first) != 3 {
		t.Fatalf("%d sessions, %d memos; want 3 and 3", len(buf), len(first))
	}
	for i, m := range first {
		if m == nil || m.Load() != nil {
			t.Fatalf("memo %d: %v, want an empty one", i, m)
		}
		m.Store(&broker.SessionEncoding{Bytes: []byte(buf[i].ID)})
	}

	// s1 changes; s2's lifetime bookkeeping is written.
	if errs, err := s.UpdateSessions(ctx, []string{"s1"}, func(x *broker.Session) error {
		x.NumOfConnections = 1
		return nil
	}); err != nil || errs[0] != nil {
		t.Fatal(err, errs)
	}
	_, cur := list(s)
	read := buf[2]
	if ok, err := s.UpdateSessionsDue(ctx, []broker.DueWrite{{Read: &read, DueAt: now.Add(time.Hour)}}); err != nil || !ok[0] {
		t.Fatal(err, ok)
	}
	_, after := list(s)

	tests := []struct {
		i         int
		sameMemo  bool
		wantBytes string
	}{
		{0, true, "s0"},  // unchanged
		{1, false, ""},   // a new version: a new, empty memo
		{2, false, "s2"}, // a new row for its lifetime, with the old encoding
	}
	for _, tt := range tests {
		if got := after[tt.i] == first[tt.i]; got != tt.sameMemo {
			t.Errorf("s%d: same memo %v, want %v", tt.i, got, tt.sameMemo)
		}
		var got string
		if e := after[tt.i].Load(); e != nil {
			got = string(e.Bytes)
		}
		if got != tt.wantBytes {
			t.Errorf("s%d: memo holds %q, want %q", tt.i, got, tt.wantBytes)
		}
	}
	if cur[1] == first[1] {
		t.Error("s1's memo outlived its version")
	}

	// A store that reads its pages from SQL has no memos to hand out.
	b := MustOpenWith(t, path, sqlite.Options{NoSessionCache: true})
	if buf, memos := list(b); len(buf) != 3 || len(memos) != 0 {
		t.Fatalf("without the mirror: %d sessions, %d memos; want 3 and 0", len(buf), len(memos))
	}
}
