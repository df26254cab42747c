package broker_test

import (
	"fmt"
	"sync"
	"testing"

	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/groups"
	"github.com/berth-dev/berth/internal/postgres"
	"github.com/berth-dev/berth/internal/postgres/pgtest"
)

// TestQuota_TwoBrokersPostgres: two brokers on one PostgreSQL database,
// each with its own server, create sessions concurrently from many
// goroutines; no user and no group quota is exceeded, counted in the
// database after.
func TestQuota_TwoBrokersPostgres(t *testing.T) {
	dsn := pgtest.DSN(t)
	const perUser, perGroup = 3, 7
	users := []string{"u0", "u1", "u2", "u3"}
	var svcs []*broker.Service
	var first broker.Store
	for i := range 2 {
		st, err := postgres.Open(t.Context(), dsn, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		if first == nil {
			first = st
		}
		src := groups.NewLearned()
		for _, u := range users {
			src.Learn(u, []string{"lab"})
		}
		cfg := broker.Config{BrokerID: fmt.Sprint("b", i), Limits: broker.SessionLimits{MaxSessions: perUser},
			Groups: src, GroupLimits: map[string]broker.SessionLimits{"lab": {MaxSessions: perGroup}}}
		svcs = append(svcs, startQuotaBroker(t, st, cfg, fmt.Sprint("s", i), 0))
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	for g := range 16 {
		svc := svcs[g%2]
		wg.Go(func() {
			for k := range 5 {
				res, err := svc.CreateSessions(t.Context(), []broker.CreateRequest{{Name: "d", Owner: users[(g+k)%len(users)], Type: broker.TypeVirtual}})
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				} else if r := res[0].FailureReason; r != "" && !isQuotaReason(r) {
					errs = append(errs, fmt.Errorf("unexpected failure: %s", r))
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		t.Error(err)
	}
	total := 0
	for _, u := range users {
		n := placedOf(t, first, u)
		if n > perUser {
			t.Errorf("%s has %d placed sessions, quota %d", u, n, perUser)
		}
		total += n
	}
	if total != perGroup {
		t.Errorf("group lab has %d placed sessions, want its quota %d", total, perGroup)
	}
}

func isQuotaReason(r string) bool { return len(r) > 7 && r[:7] == "quota: " }
