package audit_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/audit"
)

func baseRecord() audit.Record {
	r := audit.Record{Seq: 7, Time: time.Date(2026, 1, 2, 3, 4, 5, 6e6, time.UTC), ActorKind: audit.ActorClient, Actor: "c1",
		Action: "DeleteSessions", Source: "192.0.2.1", Result: audit.ResultOK, Status: 200, Detail: "d", Broker: "b"}
	r.AddTarget(audit.TargetSession, "s1")
	return r
}

// TestCanonical_EveryFieldCounts: changing any field the hash covers changes
// the encoding, and moving bytes between adjacent fields does too.
func TestCanonical_EveryFieldCounts(t *testing.T) {
	base := baseRecord()
	want := string(audit.Canonical(&base))
	tests := []struct {
		name   string
		change func(r *audit.Record)
	}{
		{"seq", func(r *audit.Record) { r.Seq++ }},
		{"time", func(r *audit.Record) { r.Time = r.Time.Add(time.Millisecond) }},
		{"actor kind", func(r *audit.Record) { r.ActorKind = audit.ActorPortal }},
		{"actor", func(r *audit.Record) { r.Actor = "c2" }},
		{"actor and action shift a byte", func(r *audit.Record) { r.Actor, r.Action = "c1D", "eleteSessions" }},
		{"action", func(r *audit.Record) { r.Action = "CreateSessions" }},
		{"target id", func(r *audit.Record) { r.Targets[0].ID = "s2" }},
		{"target kind", func(r *audit.Record) { r.Targets[0].Kind = audit.TargetServer }},
		{"another target", func(r *audit.Record) { r.AddTarget(audit.TargetOwner, "alice") }},
		{"no target", func(r *audit.Record) { r.Targets = nil }},
		{"source", func(r *audit.Record) { r.Source = "192.0.2.2" }},
		{"result", func(r *audit.Record) { r.Result = audit.ResultFailed }},
		{"status", func(r *audit.Record) { r.Status = 400 }},
		{"error", func(r *audit.Record) { r.Error = "x" }},
		{"detail", func(r *audit.Record) { r.Detail = "" }},
		{"broker", func(r *audit.Record) { r.Broker = "b2" }},
	}
	for _, tt := range tests {
		r := baseRecord()
		tt.change(&r)
		if string(audit.Canonical(&r)) == want {
			t.Errorf("%s: the canonical encoding did not change", tt.name)
		}
	}
	// The hashes are not part of the encoding; the previous hash is part of
	// the hash.
	r := baseRecord()
	r.PrevHash, r.Hash = "x", "y"
	if string(audit.Canonical(&r)) != want {
		t.Error("the encoding covers PrevHash or Hash")
	}
	if audit.HashOf(audit.GenesisHash, &r) == audit.HashOf("ab", &r) {
		t.Error("the hash does not cover the previous hash")
	}
}

func TestVerifyRecords(t *testing.T) {
	var recs []audit.Record
	seq, prev := int64(10), "anchor"
	for i := range 4 {
		r := baseRecord()
		r.Detail = fmt.Sprint(i)
		audit.Seal(&r, seq, prev)
		seq, prev = r.Seq, r.Hash
		recs = append(recs, r)
	}
	if rep := audit.VerifyRecords(recs, 10, "anchor"); !rep.OK() || rep.Checked != 4 || rep.First != 11 || rep.Last != 14 {
		t.Fatalf("intact chain: %+v", rep)
	}
	if rep := audit.VerifyRecords(recs, 10, "other anchor"); rep.OK() {
		t.Error("a chain after another anchor verified")
	}
	edited := append([]audit.Record(nil), recs...)
	edited[2].Actor = "mallory"
	if rep := audit.VerifyRecords(edited, 10, "anchor"); rep.OK() || rep.Problems[0].Seq != 13 {
		t.Errorf("edited record 13: %+v", rep)
	}
	swapped := []audit.Record{recs[0], recs[2], recs[1], recs[3]}
	if rep := audit.VerifyRecords(swapped, 10, "anchor"); rep.OK() {
		t.Error("reordered records verified")
	}
	if rep := audit.VerifyRecords(append(recs[:1:1], recs[2:]...), 10, "anchor"); rep.OK() || rep.Problems[0].Seq != 12 {
		t.Errorf("deleted record 12: %+v", rep)
	}
}

// memStore is an audit store in memory that can fail on demand.
type memStore struct {
	mu      sync.Mutex
	recs    []audit.Record
	batches int
	fail    int // the next appends that fail
	block   chan struct{}
}

func (m *memStore) AppendAudit(ctx context.Context, recs []*audit.Record) error {
	if m.block != nil {
		<-m.block
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail > 0 {
		m.fail--
		return errors.New("store down")
	}
	seq, prev := int64(0), audit.GenesisHash
	if n := len(m.recs); n > 0 {
		seq, prev = m.recs[n-1].Seq, m.recs[n-1].Hash
	}
	for _, r := range recs {
		audit.Seal(r, seq, prev)
		seq, prev = r.Seq, r.Hash
		m.recs = append(m.recs, *r)
	}
	m.batches++
	return nil
}

// TestAppender_BatchesInOrder: records added while an append runs are
// appended together in the next one, in the order added; finish runs before
// the seal; Flush waits for them; a failing store is tried again.
func TestAppender_BatchesInOrder(t *testing.T) {
	st := &memStore{block: make(chan struct{}), fail: 1}
	a := audit.NewAppender(st, "b9", nil)
	ctx := t.Context()
	a.Add(ctx, &audit.Record{Action: "first"}, nil)
	for i := range 50 {
		a.Add(ctx, &audit.Record{Action: fmt.Sprint(i)}, func(r *audit.Record) { r.Detail = "finished " + r.Action })
	}
	close(st.block) // the first append fails, then everything is appended
	if err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	st.mu.Lock()
	recs, batches := st.recs, st.batches
	st.mu.Unlock()
	if len(recs) != 51 || batches > 3 {
		t.Fatalf("%d records in %d batches, want 51 in at most 3", len(recs), batches)
	}
	for i, r := range recs[1:] {
		if r.Action != fmt.Sprint(i) || r.Detail != "finished "+r.Action || r.Broker != "b9" {
			t.Fatalf("record %d = %+v", i+2, r)
		}
	}
	if rep := audit.VerifyRecords(recs, 0, audit.GenesisHash); !rep.OK() {
		t.Errorf("chain: %+v", rep)
	}
	if err := a.Close(ctx); err != nil {
		t.Fatal(err)
	}
	a.Add(ctx, &audit.Record{Action: "late"}, nil) // dropped and logged, not a hang
}

// TestRecord_AddTarget: targets keep their first-seen order without
// duplicates, past the size where the record indexes them, and when
// Targets was set directly.
func TestRecord_AddTarget(t *testing.T) {
	ids := func(n int) []string {
		var out []string
		for i := range n {
			out = append(out, fmt.Sprintf("s%d", i))
		}
		return out
	}
	tests := []struct {
		name   string
		preset []audit.Target
		add    []string // each added twice, then all again
		want   int
	}{
		{"none", nil, nil, 0},
		{"few", nil, ids(3), 3},
		{"at the index size", nil, ids(16), 16},
		{"past it", nil, ids(1000), 1000},
		{"preset", []audit.Target{{Kind: audit.TargetSession, ID: "s5"}, {Kind: audit.TargetOwner, ID: "s6"}}, ids(40), 41},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := audit.Record{Targets: append([]audit.Target(nil), tc.preset...)}
			for _, id := range tc.add {
				r.AddTarget(audit.TargetSession, id)
				r.AddTarget(audit.TargetSession, id)
				r.AddTarget(audit.TargetSession, "")
			}
			for _, id := range tc.add {
				r.AddTarget(audit.TargetSession, id)
				if !r.HasTarget(audit.TargetSession, id) || r.HasTarget(audit.TargetServer, id) {
					t.Fatalf("HasTarget wrong for %q", id)
				}
			}
			if len(r.Targets) != tc.want {
				t.Fatalf("%d targets, want %d", len(r.Targets), tc.want)
			}
			seen := map[audit.Target]bool{}
			for i, x := range r.Targets {
				if seen[x] {
					t.Fatalf("target %d %v twice", i, x)
				}
				seen[x] = true
			}
			if len(tc.preset) > 0 && r.Targets[0] != tc.preset[0] {
				t.Fatalf("first target %v, want %v", r.Targets[0], tc.preset[0])
			}
		})
	}
}

// BenchmarkRecordTargets names the 1,000 sessions of a batch call, as the
// API's audit does for a CreateSessions of 1,000.
func BenchmarkRecordTargets(b *testing.B) {
	ids := make([]string, 1000)
	for i := range ids {
		ids[i] = fmt.Sprintf("7b1a608e-43d6-4a6a-b35e-%012d", i)
	}
	for b.Loop() {
		var r audit.Record
		for _, id := range ids {
			r.AddTarget(audit.TargetSession, id)
		}
	}
}
