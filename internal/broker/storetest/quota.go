package storetest

import (
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/berth-dev/berth/internal/broker"
)

// withQuotas returns Insert placements of ss that must hold qs.
func withQuotas(qs []broker.Quota, ss ...*broker.Session) []broker.Placement {
	ps := Place(ss...)
	for i := range ps {
		ps[i].Quotas = qs
	}
	return ps
}

// gpuSession returns a new session for placement with gpus GPUs, launched
// from template tpl with the identity provider groups groups.
func gpuSession(id, owner, server string, gpus int, tpl string, groups ...string) *broker.Session {
	ss := newPlaced(id, owner, broker.TypeVirtual, server)
	ss.Spec.GPUs, ss.Spec.Template, ss.Spec.Groups = gpus, tpl, groups
	return ss
}

// checkQuotaErr fails t unless err is a *broker.QuotaError of the quota
// with key and use.
func checkQuotaErr(t *testing.T, err error, key string, use broker.QuotaUse) {
	t.Helper()
	var qe *broker.QuotaError
	if !errors.As(err, &qe) || !errors.Is(err, broker.ErrOverQuota) {
		t.Fatalf("got %v, want a *QuotaError matching ErrOverQuota", err)
	}
	if qe.Quota.Key() != key || qe.Use != use {
		t.Errorf("quota %s use %+v, want %s use %+v", qe.Quota.Key(), qe.Use, key, use)
	}
}

func testCommitQuotaUser(t *testing.T, s broker.Store) {
	MustUpsertServers(t, s, NewServer("s-a", 0, 0, nil), NewServer("s-b", 0, 0, nil))
	// What counts: placed, not DELETED sessions of the owner.
	deleted := newPlaced("d", "alice", broker.TypeVirtual, "s-a")
	deleted.State = broker.StateDeleted
	queued := newPlaced("q", "alice", broker.TypeVirtual, "")
	MustInsertSessions(t, s, newPlaced("0", "alice", broker.TypeVirtual, "s-b"), deleted, queued)
	q := []broker.Quota{{Kind: broker.QuotaUser, Name: "alice", MaxSessions: 3}}
	use, err := s.QuotaUse(t.Context(), q)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]broker.QuotaUse{{Sessions: 1}}, use); d != "" {
		t.Errorf("QuotaUse (-want +got):\n%s", d)
	}
	ps := withQuotas(q,
		newPlaced("1", "alice", broker.TypeVirtual, "s-a"),
		newPlaced("2", "alice", broker.TypeVirtual, "s-b"),
		newPlaced("3", "alice", broker.TypeVirtual, "s-a"), // the fourth
	)
	ps = append(ps, Place(newPlaced("4", "bob", broker.TypeVirtual, "s-a"))...) // no quota
	errs := MustCommit(t, s, ps...)
	checkErrs(t, errs, []error{nil, nil, broker.ErrOverQuota, nil})
	checkQuotaErr(t, errs[2], "user:alice", broker.QuotaUse{Sessions: 3})
	checkNotStored(t, s, "3")
	// A later commit, and a queued session moved onto a server, count the same.
	queued.ServerID = "s-a"
	errs = MustCommit(t, s, broker.Placement{Session: queued, Quotas: q})
	checkErrs(t, errs, []error{broker.ErrOverQuota})
	// A deleted session frees its place.
	MustUpdateState(t, s, "0", broker.StateDeleted)
	checkErrs(t, MustCommit(t, s, broker.Placement{Session: queued, Quotas: q}), []error{nil})
}

func testCommitQuotaGPUsGroupsTemplates(t *testing.T, s broker.Store) {
	MustUpsertServers(t, s, NewServer("s-a", 0, 0, nil))
	MustInsertSessions(t, s,
		gpuSession("0", "alice", "s-a", 2, "tpl-1"),
		gpuSession("1", "zed", "s-a", 1, "", "students"), // a member by its launch's groups
		gpuSession("2", "other", "s-a", 4, "tpl-2"),
	)
	group := broker.Quota{Kind: broker.QuotaGroup, Name: "students", Members: []string{"alice", "bob"}, MaxGPUs: 4}
	user := broker.Quota{Kind: broker.QuotaUser, Name: "alice", MaxGPUs: 3}
	tpl := broker.Quota{Kind: broker.QuotaTemplate, Name: "tpl-1", MaxSessions: 2}
	use, err := s.QuotaUse(t.Context(), []broker.Quota{group, user, tpl})
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]broker.QuotaUse{{Sessions: 2, GPUs: 3}, {Sessions: 1, GPUs: 2}, {Sessions: 1, GPUs: 2}}, use); d != "" {
		t.Errorf("QuotaUse (-want +got):\n%s", d)
	}
	errs := MustCommit(t, s,
		broker.Placement{Session: gpuSession("3", "alice", "s-a", 2, ""), Insert: true, Quotas: []broker.Quota{user, group}},   // alice 4 > 3
		broker.Placement{Session: gpuSession("4", "bob", "s-a", 1, "tpl-1"), Insert: true, Quotas: []broker.Quota{group, tpl}}, // group 4, tpl 2
		broker.Placement{Session: gpuSession("5", "bob", "s-a", 0, "tpl-1"), Insert: true, Quotas: []broker.Quota{group, tpl}}, // tpl 3 > 2
		broker.Placement{Session: gpuSession("6", "bob", "s-a", 0, ""), Insert: true, Quotas: []broker.Quota{group}},           // no GPU: fits
		broker.Placement{Session: gpuSession("7", "bob", "s-a", 1, ""), Insert: true, Quotas: []broker.Quota{group}},           // group 5 > 4
	)
	checkErrs(t, errs, []error{broker.ErrOverQuota, nil, broker.ErrOverQuota, nil, broker.ErrOverQuota})
	checkQuotaErr(t, errs[0], "user:alice", broker.QuotaUse{Sessions: 1, GPUs: 2})
	checkQuotaErr(t, errs[2], "template:tpl-1", broker.QuotaUse{Sessions: 2, GPUs: 3})
	checkQuotaErr(t, errs[4], "group:students", broker.QuotaUse{Sessions: 4, GPUs: 4})
	checkNotStored(t, s, "3", "5", "7")
}

func testCommitQuotaConcurrent(t *testing.T, s broker.Store) {
	const limit, workers, each = 5, 8, 4
	MustUpsertServers(t, s, NewServer("s-a", 0, 0, nil), NewServer("s-b", 0, 0, nil))
	q := []broker.Quota{{Kind: broker.QuotaGroup, Name: "lab", Members: []string{"u0", "u1", "u2", "u3", "u4", "u5", "u6", "u7"}, MaxSessions: limit}}
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		placed int
		failed []error
	)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				server := []string{"s-a", "s-b"}[(w+i)%2]
				ss := newPlaced(fmt.Sprintf("w%d-%d", w, i), fmt.Sprintf("u%d", w), broker.TypeVirtual, server)
				errs, err := s.CommitPlacements(t.Context(), withQuotas(q, ss))
				mu.Lock()
				switch {
				case err != nil:
					failed = append(failed, err)
				case errs[0] == nil:
					placed++
				case !errors.Is(errs[0], broker.ErrOverQuota):
					failed = append(failed, errs[0])
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	for _, err := range failed {
		t.Errorf("concurrent CommitPlacements: %v", err)
	}
	use, err := s.QuotaUse(t.Context(), q)
	if err != nil {
		t.Fatal(err)
	}
	if placed != limit || use[0].Sessions != limit {
		t.Errorf("%d placements succeeded, %d sessions stored, want %d", placed, use[0].Sessions, limit)
	}
}
