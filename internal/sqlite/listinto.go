package sqlite

import (
	"cmp"
	"context"
	"slices"

	"github.com/berth-dev/berth/internal/broker"
)

// ListSessionsInto is ListSessions filling buf (from its start) rather than
// allocating a page: the broker reuses buf for DescribeSessions pages, which
// then allocate no sessions. The sessions share their strings with the
// store (strings are immutable) and have their own slices.
func (s *Store) ListSessionsInto(ctx context.Context, f broker.SessionFilter, buf []broker.Session) ([]broker.Session, error) {
	if s.m != nil {
		if out, ok := s.m.listInto(f, buf[:0]); ok {
			return out, nil
		}
	}
	list, err := s.listSessionsSQL(ctx, f)
	if err != nil {
		return buf[:0], err
	}
	buf = buf[:0]
	for _, x := range list {
		buf = append(buf, *x)
	}
	return buf, nil
}

// listInto is list appending to buf; ok is false if m is stale.
func (m *mirror) listInto(f broker.SessionFilter, buf []broker.Session) (out []broker.Session, ok bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.stale {
		return buf, false
	}
	var strs []string
	add := func(r *row) {
		buf = append(buf, broker.Session{})
		r.fill(&buf[len(buf)-1], &strs)
	}
	if len(f.IDs) > 0 {
		var rows []*row
		for _, id := range f.IDs {
			if r := m.byID[id]; r != nil && r.seq > f.AfterSeq && m.matchLocked(r, &f) {
				rows = append(rows, r)
			}
		}
		slices.SortFunc(rows, func(a, b *row) int { return cmp.Compare(a.seq, b.seq) })
		rows = slices.Compact(rows) // IDs may repeat
		if f.Limit > 0 && len(rows) > f.Limit {
			rows = rows[:f.Limit]
		}
		for _, r := range rows {
			add(r)
		}
	} else if l := m.indexLocked(&f); l != nil {
		for _, r := range l.rows[l.after(f.AfterSeq):] {
			if r.dead || !m.matchLocked(r, &f) {
				continue
			}
			add(r)
			if len(buf) == f.Limit {
				break
			}
		}
	}
	return buf, true
}
