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
	buf, _, err := s.listPage(ctx, f, buf, nil)
	return buf, err
}

// ListSessionsMemo is ListSessionsInto that also fills memos (from its
// start) with each listed session's memo: one per version of a session the
// mirror holds, a new one for each new version. A page read from SQLite
// (the mirror is stale) has no memos.
func (s *Store) ListSessionsMemo(ctx context.Context, f broker.SessionFilter, buf []broker.Session, memos []*broker.SessionMemo) ([]broker.Session, []*broker.SessionMemo, error) {
	if memos == nil {
		memos = []*broker.SessionMemo{} // nil asks for none
	}
	return s.listPage(ctx, f, buf, memos[:0])
}

// listPage lists into buf, and into memos unless it is nil.
func (s *Store) listPage(ctx context.Context, f broker.SessionFilter, buf []broker.Session, memos []*broker.SessionMemo) ([]broker.Session, []*broker.SessionMemo, error) {
	if s.m != nil {
		if out, ms, ok := s.m.listInto(f, buf[:0], memos); ok {
			return out, ms, nil
		}
	}
	list, err := s.listSessionsSQL(ctx, f)
	if err != nil {
		return buf[:0], memos[:0], err
	}
	buf = buf[:0]
	for _, x := range list {
		buf = append(buf, *x)
	}
	return buf, memos[:0], nil
}

// listInto is list appending to buf, and each row's memo to memos unless
// it is nil; ok is false if m is stale.
func (m *mirror) listInto(f broker.SessionFilter, buf []broker.Session, memos []*broker.SessionMemo) (out []broker.Session, outMemos []*broker.SessionMemo, ok bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.stale {
		return buf, memos, false
	}
	var strs []string
	add := func(r *row) {
		buf = append(buf, broker.Session{})
		r.fill(&buf[len(buf)-1], &strs)
		if memos != nil {
			memos = append(memos, &r.memo)
		}
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
		// The rows are picked in chunks by a loop that only tests them, then
		// filled: a page's rows lie all over the heap, and the short loop
		// lets the CPU load many of them at once rather than one after the
		// other between fills (BenchmarkDescribeSessionsHandlerCold).
		var chunk [pickChunk]*row
		rows := l.rows[l.after(f.AfterSeq):]
		for len(rows) > 0 && (f.Limit <= 0 || len(buf) < f.Limit) {
			want := pickChunk
			if f.Limit > 0 {
				want = min(want, f.Limit-len(buf))
			}
			n, used := m.pickLocked(rows, &f, chunk[:want])
			rows = rows[used:]
			for _, r := range chunk[:n] {
				add(r)
			}
		}
	}
	return buf, memos, true
}

// pickChunk is how many rows listInto picks before it fills them.
const pickChunk = 32

// pickLocked puts the first len(into) rows of rows that f selects (not
// dead) in into; it returns how many it put and how many of rows it looked
// at.
func (m *mirror) pickLocked(rows []*row, f *broker.SessionFilter, into []*row) (n, used int) {
	for used < len(rows) && n < len(into) {
		r := rows[used]
		used++
		if !r.dead && m.matchLocked(r, f) {
			into[n] = r
			n++
		}
	}
	return n, used
}
