package sqlite_test

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/broker/storetest"
	"github.com/berth-dev/berth/internal/sqlite"
)

// TestQuotaUse_MirrorMatchesSQL: the quota use that the mirror counts equals
// what SQL counts (a handle without the mirror on the same file), over
// random sessions: owners, templates, launch groups, GPUs, states, placed
// or queued.
func TestQuotaUse_MirrorMatchesSQL(t *testing.T) {
	path := tempPath(t)
	st := MustOpen(t, path)
	storetest.MustUpsertServers(t, st, storetest.NewServer("s1", 0, 0, nil))
	rng := rand.New(rand.NewPCG(1, 2))
	owners := []string{"ann", "bob", "cat", "dan"}
	var ss []*broker.Session
	for i := range 300 {
		server := "s1"
		if rng.IntN(5) == 0 {
			server = ""
		}
		state := []string{broker.StateCreating, broker.StateReady, broker.StateDeleting, broker.StateDeleted}[rng.IntN(4)]
		s := storetest.NewSession(fmt.Sprint("q", i), owners[rng.IntN(len(owners))], broker.TypeVirtual, server, state)
		s.Spec.GPUs = rng.IntN(3)
		if rng.IntN(3) == 0 {
			s.Spec.Template = fmt.Sprint("tpl-", rng.IntN(3))
		}
		if rng.IntN(3) == 0 {
			s.Spec.Groups = []string{[]string{"lab", "ops"}[rng.IntN(2)], "all"}
		}
		ss = append(ss, s)
	}
	storetest.MustInsertSessions(t, st, ss...)
	qs := []broker.Quota{
		{Kind: broker.QuotaUser, Name: "ann"}, {Kind: broker.QuotaUser, Name: "nobody"},
		{Kind: broker.QuotaGroup, Name: "lab", Members: []string{"ann", "bob"}}, {Kind: broker.QuotaGroup, Name: "ops"},
		{Kind: broker.QuotaTemplate, Name: "tpl-1"}, {Kind: broker.QuotaTemplate, Name: "tpl-9"},
	}
	mirrored, err := st.QuotaUse(t.Context(), qs)
	if err != nil {
		t.Fatal(err)
	}
	plain := MustOpenWith(t, path, sqlite.Options{NoSessionCache: true})
	fromSQL, err := plain.QuotaUse(t.Context(), qs)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(fromSQL, mirrored); d != "" {
		t.Errorf("quota use, mirror vs SQL (-sql +mirror):\n%s", d)
	}
	if mirrored[0].Sessions == 0 || mirrored[2].Sessions == 0 || mirrored[4].Sessions == 0 || mirrored[3].Sessions == 0 {
		t.Errorf("the fixture counts nothing for some quota: %+v", mirrored)
	}
}
