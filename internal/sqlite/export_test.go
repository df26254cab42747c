package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"strings"

	"github.com/berth-dev/berth/internal/placement"
)

// HoldLoad makes background loads wait, until ctx ends, for release to be
// closed; it undoes that when tb ends. Tests using it must not run in
// parallel.
func HoldLoad(tb interface{ Cleanup(func()) }, release <-chan struct{}) {
	beforeLoad = func(ctx context.Context) {
		select {
		case <-release:
		case <-ctx.Done():
		}
	}
	tb.Cleanup(func() { beforeLoad = nil })
}

// Capacity returns the limits and counts that a placement of owner on
// server is checked against, leaving out session skip, from the mirror and
// from capacitySQL; found is false when capacitySQL has no row (and then the
// mirror must not know the server).
func (s *Store) Capacity(ctx context.Context, server, owner, skip string) (mirror, fromSQL placement.Counts, ml, sl placement.Limits, found bool, err error) {
	if s.m == nil {
		return mirror, fromSQL, ml, sl, false, errors.New("no mirror")
	}
	ml, mirror, mfound, ok := s.m.capacity(server, owner, skip)
	if !ok {
		return mirror, fromSQL, ml, sl, false, errors.New("mirror is stale")
	}
	var seq int64
	if err := s.queryRow(ctx, `SELECT seq FROM sessions WHERE id = ?`, skip).Scan(&seq); err != nil && !errors.Is(err, sql.ErrNoRows) {
		return mirror, fromSQL, ml, sl, false, err
	}
	err = s.queryRow(ctx, capacitySQL, owner, seq, server).Scan(&sl.MaxVirtual, &sl.MaxPerUser, &fromSQL.Virtual, &fromSQL.Owned, &fromSQL.Console)
	if errors.Is(err, sql.ErrNoRows) {
		if mfound {
			return mirror, fromSQL, ml, sl, false, fmt.Errorf("the mirror has limits %+v for unknown server %q", ml, server)
		}
		return mirror, placement.Counts{}, ml, sl, false, nil
	}
	if !mfound && err == nil {
		return mirror, fromSQL, ml, sl, true, fmt.Errorf("the mirror does not know server %q", server)
	}
	return mirror, fromSQL, ml, sl, true, err
}

// CheckMirror checks the invariants of the store's session mirror; a store
// without one passes.
func (s *Store) CheckMirror() error {
	if s.m == nil {
		return nil
	}
	m := s.m
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.stale {
		return fmt.Errorf("mirror is stale")
	}
	states := make(map[string]int)
	for id, r := range m.byID {
		if r.dead || r.id != id {
			return fmt.Errorf("byID[%q] is row %q (dead %v)", id, r.id, r.dead)
		}
		states[r.state.Value()]++
	}
	if !maps.Equal(states, m.states) {
		return fmt.Errorf("states %v, rows have %v", m.states, states)
	}
	check := func(name string, l *seqList, key func(*row) string) (int, error) {
		dead := 0
		for i, r := range l.rows {
			if i > 0 && l.rows[i-1].seq >= r.seq {
				return 0, fmt.Errorf("%s: not sorted at %d", name, i)
			}
			if r.dead {
				dead++
				continue
			}
			if m.byID[r.id] != r {
				return 0, fmt.Errorf("%s: live row %q is not byID's", name, r.id)
			}
			if key != nil && key(r) != l.key {
				return 0, fmt.Errorf("%s: row %q has key %q", name, r.id, key(r))
			}
		}
		if dead != l.dead {
			return 0, fmt.Errorf("%s: %d dead rows, counted %d", name, dead, l.dead)
		}
		if key != nil && l.live() == 0 {
			return 0, fmt.Errorf("%s: empty index kept", name)
		}
		var c activeCounts
		for _, r := range l.rows {
			if !r.dead {
				c.count(r, 1)
			}
		}
		if c.virtual != l.active.virtual || c.console != l.active.console ||
			!maps.Equal(c.counts().ByOwner, l.active.counts().ByOwner) {
			if name != "all" && !strings.HasPrefix(name, "byOwner") {
				return 0, fmt.Errorf("%s: counts %+v, rows have %+v", name, l.active, c)
			}
		}
		return l.live(), nil
	}
	n, err := check("all", &m.all, nil)
	if err != nil {
		return err
	}
	if n != len(m.byID) {
		return fmt.Errorf("all has %d live rows, byID %d", n, len(m.byID))
	}
	for _, idx := range []struct {
		name string
		m    map[string]*seqList
		key  func(*row) string
	}{
		{"byOwner", m.byOwner, func(r *row) string { return r.owner.Value() }},
		{"byServer", m.byServer, func(r *row) string { return r.serverID.Value() }},
	} {
		total := 0
		for k, l := range idx.m {
			if l.key != k {
				return fmt.Errorf("%s[%q] has key %q", idx.name, k, l.key)
			}
			n, err := check(fmt.Sprintf("%s[%q]", idx.name, k), l, idx.key)
			if err != nil {
				return err
			}
			total += n
		}
		if total != len(m.byID) {
			return fmt.Errorf("%s has %d live rows, byID %d", idx.name, total, len(m.byID))
		}
	}
	return nil
}

// CacheSizes returns PRAGMA cache_size of the writer and of a reader.
func (s *Store) CacheSizes(ctx context.Context) (writer, reader int, err error) {
	if err := s.w.QueryRowContext(ctx, `PRAGMA cache_size`).Scan(&writer); err != nil {
		return 0, 0, err
	}
	err = s.r.QueryRowContext(ctx, `PRAGMA cache_size`).Scan(&reader)
	return writer, reader, err
}
