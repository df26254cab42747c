package sqlite

import (
	"reflect"
	"slices"
	"testing"

	"github.com/berth-dev/berth/internal/broker"
)

// TestRow_Fields fails when broker.Session or broker.SessionSpec gain or lose a
// field: row, rowFields, fill and writtenRow (which copies a spec without JSON
// when it can) must learn about it, as must the sessions table.
func TestRow_Fields(t *testing.T) {
	for _, tc := range []struct {
		v    any
		want []string
	}{
		{broker.Session{}, []string{"Seq", "ID", "Name", "Owner", "Type", "ServerID", "State", "Substate",
			"StateReason", "MaxConcurrentClients", "StorageRoot", "CreationTime", "LastDisconnectionTime",
			"NumOfConnections", "LastInputTime", "DueAt", "Life", "UpdatedAt", "Spec", "Attempts", "Excluded", "Enqueued",
			"EnqueuedAt",
			"Events"}}, // transient: inserted into events with the row (events.go), never read back
		{broker.SessionSpec{}, []string{"DcvGlEnabled", "InitFile", "AutorunFile", "AutorunFileArguments",
			"PermissionsFile", "Requirements", "EnqueueRequest", "DisableRetryOnFailure", "Template", "TemplateLimits",
			"GPUs", "Groups"}},
	} {
		typ := reflect.TypeOf(tc.v)
		var got []string
		for f := range typ.Fields() {
			got = append(got, f.Name)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%v has fields %v, the mirror knows %v", typ, got, tc.want)
		}
	}
}

// TestSeqList checks an index against a map through random adds, drops and
// revivals.
func TestSeqList(t *testing.T) {
	var l seqList
	cur := map[int64]*row{} // live rows by Seq
	var next int64 = 1
	for i := range 20000 {
		switch op := (i * 7919) % 10; {
		case op < 4 || len(cur) == 0: // append a new session
			r := &row{rowData: rowData{seq: next}}
			next++
			l.add(r)
			cur[r.seq] = r
		case op < 8: // drop one
			for seq, r := range cur {
				r.dead = true
				l.drop(r)
				delete(cur, seq)
				break
			}
		default: // a session with an older Seq comes back or is replaced
			seq := int64(i%int(next)) + 1
			r := &row{rowData: rowData{seq: seq}}
			if old := cur[seq]; old != nil {
				old.dead = true
				l.replace(r)
			} else {
				l.add(r)
			}
			cur[seq] = r
		}
	}
	if l.live() != len(cur) {
		t.Fatalf("live() = %d, want %d", l.live(), len(cur))
	}
	dead := 0
	for i, r := range l.rows {
		if i > 0 && l.rows[i-1].seq >= r.seq {
			t.Fatalf("not sorted at %d", i)
		}
		if r.dead {
			dead++
		} else if cur[r.seq] != r {
			t.Fatalf("row %d is not the current one", r.seq)
		}
	}
	if dead != l.dead {
		t.Fatalf("%d dead rows, counted %d", dead, l.dead)
	}
	if l.dead > l.live()+32 {
		t.Errorf("%d dead rows for %d live: compaction does not run", l.dead, l.live())
	}
}
