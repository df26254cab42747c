package storetest

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/audit"
)

// AuditHarness is a store under the audit contract tests, with direct access
// to its database for the tests that tamper with the log.
type AuditHarness struct {
	// Store is the store under test, empty.
	Store audit.Store
	// Other opens another store on the same database (another broker, or an
	// admin command beside the broker).
	Other func(t *testing.T) audit.Store
	// Exec runs statements directly on the database, as someone with its
	// password would, bypassing the store.
	Exec func(t *testing.T, sql string) error
	// DropGuards is the SQL that drops the triggers keeping the log
	// append-only, the first thing a tamperer does.
	DropGuards string
}

// RunAudit runs the audit.Store contract tests as subtests of t; open returns
// a fresh harness per subtest.
func RunAudit(t *testing.T, open func(t *testing.T) AuditHarness) {
	tests := []struct {
		name string
		fn   func(t *testing.T, h AuditHarness)
	}{
		{"AppendList", testAuditAppendList},
		{"Filters", testAuditFilters},
		{"Guards", testAuditGuards},
		{"VerifyEditedRow", testAuditEditedRow},
		{"VerifyEditedRowRehashed", testAuditEditedRowRehashed},
		{"VerifyDeletedRow", testAuditDeletedRow},
		{"VerifyDeletedTail", testAuditDeletedTail},
		{"VerifyReorderedRows", testAuditReorderedRows},
		{"Purge", testAuditPurge},
		{"ConcurrentWriters", testAuditConcurrent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, open(t)) })
	}
}

// auditT0 is the time of the first record the tests append.
var auditT0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// auditRecord is the i-th test record: client c<i%3> acting on session s<i>.
func auditRecord(i int) *audit.Record {
	r := &audit.Record{Time: auditT0.Add(time.Duration(i) * time.Minute), ActorKind: audit.ActorClient,
		Actor: fmt.Sprintf("c%d", i%3), Action: "DeleteSessions", Source: "192.0.2.1", Result: audit.ResultOK, Status: 200,
		Detail: fmt.Sprintf("item %d", i), Broker: "b1"}
	r.AddTarget(audit.TargetSession, fmt.Sprintf("s%d", i))
	r.AddTarget(audit.TargetOwner, "alice")
	return r
}

// mustAppend appends records first..last (inclusive) of auditRecord, in
// batches of batch.
func mustAppend(t *testing.T, s audit.Store, first, last, batch int) {
	t.Helper()
	var recs []*audit.Record
	flush := func() {
		if err := s.AppendAudit(t.Context(), recs); err != nil {
			t.Fatalf("AppendAudit: %v", err)
		}
		recs = nil
	}
	for i := first; i <= last; i++ {
		recs = append(recs, auditRecord(i))
		if len(recs) == batch {
			flush()
		}
	}
	flush()
}

func mustVerify(t *testing.T, s audit.Store) *audit.Report {
	t.Helper()
	rep, err := audit.Verify(t.Context(), s)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	return rep
}

// wantBroken fails t unless rep names a problem at seq whose reason has want.
func wantBroken(t *testing.T, rep *audit.Report, seq int64, want string) {
	t.Helper()
	for _, p := range rep.Problems {
		if p.Seq == seq && strings.Contains(p.Reason, want) {
			return
		}
	}
	t.Fatalf("Verify found %+v; want a problem at record %d saying %q", rep.Problems, seq, want)
}

func mustExec(t *testing.T, h AuditHarness, sql string) {
	t.Helper()
	if err := h.Exec(t, sql); err != nil {
		t.Fatalf("exec %q: %v", sql, err)
	}
}

func testAuditAppendList(t *testing.T, h AuditHarness) {
	s := h.Store
	if rep := mustVerify(t, s); !rep.OK() || rep.Checked != 0 {
		t.Fatalf("empty log: Verify = %+v, want OK with nothing checked", rep)
	}
	mustAppend(t, s, 1, 5, 2)
	got, err := s.ListAudit(t.Context(), audit.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 5 {
		t.Fatalf("ListAudit: %d records, want 5", len(got))
	}
	prev := audit.GenesisHash
	for i, r := range got {
		want := auditRecord(i + 1)
		if r.Seq != int64(i+1) || !r.Time.Equal(want.Time) || r.Actor != want.Actor || r.Action != want.Action ||
			r.Source != want.Source || r.Result != want.Result || r.Status != want.Status || r.Detail != want.Detail ||
			r.Broker != want.Broker || len(r.Targets) != 2 || r.Targets[0] != want.Targets[0] {
			t.Errorf("record %d = %+v, want the fields of %+v", i+1, r, want)
		}
		if r.PrevHash != prev || r.Hash != audit.HashOf(prev, &r) {
			t.Errorf("record %d: chain prev %s hash %s, want prev %s and its own hash", r.Seq, r.PrevHash, r.Hash, prev)
		}
		prev = r.Hash
	}
	head, err := s.AuditHead(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if head.Seq != 5 || head.Hash != prev || head.AnchorSeq != 0 || head.AnchorHash != audit.GenesisHash {
		t.Errorf("AuditHead = %+v, want record 5 and no anchor", head)
	}
	if rep := mustVerify(t, s); !rep.OK() || rep.Checked != 5 {
		t.Errorf("Verify = %+v, want OK with 5 checked", rep)
	}
	// A large batch (stores may insert it in several statements).
	mustAppend(t, s, 6, 105, 100)
	if rep := mustVerify(t, s); !rep.OK() || rep.Checked != 105 || rep.Last != 105 {
		t.Errorf("Verify after a batch of 100 = %+v, want OK with 105 checked", rep)
	}
	got, err = s.ListAudit(t.Context(), audit.Filter{AfterSeq: 69, Limit: 1})
	if err != nil || len(got) != 1 || got[0].Detail != "item 70" || !got[0].HasTarget(audit.TargetSession, "s70") {
		t.Errorf("record 70 = %+v, %v", got, err)
	}
}

func testAuditFilters(t *testing.T, h AuditHarness) {
	mustAppend(t, h.Store, 1, 9, 9)
	seqs := func(f audit.Filter) string {
		got, err := h.Store.ListAudit(t.Context(), f)
		if err != nil {
			t.Fatal(err)
		}
		var b []string
		for _, r := range got {
			b = append(b, fmt.Sprint(r.Seq))
		}
		return strings.Join(b, ",")
	}
	tests := []struct {
		name string
		f    audit.Filter
		want string
	}{
		{"all", audit.Filter{}, "1,2,3,4,5,6,7,8,9"},
		{"after", audit.Filter{AfterSeq: 7}, "8,9"},
		{"limit", audit.Filter{Limit: 2}, "1,2"},
		{"actor", audit.Filter{Actor: "c1"}, "1,4,7"},
		{"session", audit.Filter{Session: "s4"}, "4"},
		{"session not a prefix", audit.Filter{Session: "s"}, ""},
		{"owner is not a session", audit.Filter{Session: "alice"}, ""},
		{"since", audit.Filter{Since: auditT0.Add(8 * time.Minute)}, "8,9"},
		{"until", audit.Filter{Until: auditT0.Add(3 * time.Minute)}, "1,2"},
		{"action", audit.Filter{Action: "DeleteSessions", Actor: "c0", Since: auditT0.Add(4 * time.Minute)}, "6,9"},
		{"no action", audit.Filter{Action: "CreateSessions"}, ""},
	}
	for _, tt := range tests {
		if got := seqs(tt.f); got != tt.want {
			t.Errorf("%s: ListAudit(%+v) = [%s], want [%s]", tt.name, tt.f, got, tt.want)
		}
	}
}

// testAuditGuards: the store refuses to update rows or delete rows that
// retention has not purged.
func testAuditGuards(t *testing.T, h AuditHarness) {
	mustAppend(t, h.Store, 1, 3, 3)
	if err := h.Exec(t, `UPDATE audit_log SET actor = 'mallory' WHERE seq = 2`); err == nil {
		t.Error("UPDATE of an audit row succeeded, want it refused")
	}
	if err := h.Exec(t, `DELETE FROM audit_log WHERE seq = 2`); err == nil {
		t.Error("DELETE of an audit row succeeded, want it refused")
	}
	if rep := mustVerify(t, h.Store); !rep.OK() {
		t.Errorf("Verify = %+v, want OK", rep)
	}
}

func testAuditEditedRow(t *testing.T, h AuditHarness) {
	mustAppend(t, h.Store, 1, 4, 4)
	mustExec(t, h, h.DropGuards)
	mustExec(t, h, `UPDATE audit_log SET actor = 'mallory' WHERE seq = 2`)
	wantBroken(t, mustVerify(t, h.Store), 2, "edited")
}

// testAuditEditedRowRehashed: a tamperer who recomputes the edited row's hash
// breaks the next row's link.
func testAuditEditedRowRehashed(t *testing.T, h AuditHarness) {
	mustAppend(t, h.Store, 1, 4, 4)
	recs, err := h.Store.ListAudit(t.Context(), audit.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	r := recs[1]
	r.Result, r.Status = audit.ResultFailed, 400
	mustExec(t, h, h.DropGuards)
	mustExec(t, h, fmt.Sprintf(`UPDATE audit_log SET result = 'failed', status = 400, hash = '%s' WHERE seq = 2`, audit.HashOf(r.PrevHash, &r)))
	rep := mustVerify(t, h.Store)
	wantBroken(t, rep, 3, "previous hash")
	if len(rep.Problems) != 1 {
		t.Errorf("Verify = %+v, want only record 3's link", rep.Problems)
	}
}

func testAuditDeletedRow(t *testing.T, h AuditHarness) {
	mustAppend(t, h.Store, 1, 4, 4)
	mustExec(t, h, h.DropGuards)
	mustExec(t, h, `DELETE FROM audit_log WHERE seq = 2`)
	rep := mustVerify(t, h.Store)
	wantBroken(t, rep, 2, "missing")
	wantBroken(t, rep, 3, "previous hash")
}

func testAuditDeletedTail(t *testing.T, h AuditHarness) {
	mustAppend(t, h.Store, 1, 4, 4)
	mustExec(t, h, h.DropGuards)
	mustExec(t, h, `DELETE FROM audit_log WHERE seq = 4`)
	wantBroken(t, mustVerify(t, h.Store), 4, "missing at the end")
}

// testAuditReorderedRows swaps two rows' places (their sequence numbers).
func testAuditReorderedRows(t *testing.T, h AuditHarness) {
	mustAppend(t, h.Store, 1, 4, 4)
	mustExec(t, h, h.DropGuards)
	mustExec(t, h, `UPDATE audit_log SET seq = -2 WHERE seq = 2`)
	mustExec(t, h, `UPDATE audit_log SET seq = 2 WHERE seq = 3`)
	mustExec(t, h, `UPDATE audit_log SET seq = 3 WHERE seq = -2`)
	rep := mustVerify(t, h.Store)
	wantBroken(t, rep, 2, "previous hash")
	wantBroken(t, rep, 2, "edited")
}

// testAuditPurge: retention deletes the oldest records and anchors the rest,
// which still verify, as do the records appended after.
func testAuditPurge(t *testing.T, h AuditHarness) {
	mustAppend(t, h.Store, 1, 6, 6)
	// Record 7 is out of time order (a broker with a slow clock): the purge
	// stops at the first record at or after its cutoff and keeps it.
	late := auditRecord(7)
	late.Time = auditT0
	if err := h.Store.AppendAudit(t.Context(), []*audit.Record{late}); err != nil {
		t.Fatal(err)
	}
	n, err := h.Store.PurgeAudit(t.Context(), auditT0.Add(4*time.Minute))
	if err != nil || n != 3 {
		t.Fatalf("PurgeAudit = %d, %v; want 3 records deleted", n, err)
	}
	head, err := h.Store.AuditHead(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if head.AnchorSeq != 3 || head.Seq != 7 {
		t.Errorf("AuditHead = %+v, want the anchor at record 3 and the head at 7", head)
	}
	if rep := mustVerify(t, h.Store); !rep.OK() || rep.Checked != 4 {
		t.Errorf("Verify after the purge = %+v, want OK with 4 checked", rep)
	}
	if n, err := h.Store.PurgeAudit(t.Context(), auditT0.Add(4*time.Minute)); err != nil || n != 0 {
		t.Errorf("PurgeAudit again = %d, %v; want 0", n, err)
	}
	mustAppend(t, h.Store, 8, 9, 2)
	if rep := mustVerify(t, h.Store); !rep.OK() || rep.Checked != 6 {
		t.Errorf("Verify after more appends = %+v, want OK with 6 checked", rep)
	}
	// The anchor cannot be used to hide a deletion of the first record kept.
	mustExec(t, h, h.DropGuards)
	mustExec(t, h, `DELETE FROM audit_log WHERE seq = 4`)
	wantBroken(t, mustVerify(t, h.Store), 4, "missing")
}

// testAuditConcurrent: several writers on one database (brokers of a cluster,
// an admin command beside the broker) keep one linear chain.
func testAuditConcurrent(t *testing.T, h AuditHarness) {
	stores := []audit.Store{h.Store, h.Other(t), h.Store, h.Other(t)}
	const each = 25
	var wg sync.WaitGroup
	errs := make(chan error, len(stores)*each)
	for w, s := range stores {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				r := auditRecord(w*each + i)
				if err := s.AppendAudit(context.WithoutCancel(t.Context()), []*audit.Record{r, auditRecord(1000 + w*each + i)}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("AppendAudit: %v", err)
	}
	rep := mustVerify(t, h.Store)
	if want := int64(len(stores) * each * 2); !rep.OK() || rep.Checked != want || rep.Last != want {
		t.Errorf("Verify = %+v, want OK with %d records checked", rep, want)
	}
}
