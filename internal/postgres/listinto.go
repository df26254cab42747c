package postgres

import (
	"context"
	"fmt"

	"github.com/berth-dev/berth/internal/broker"
)

// ListSessionsInto is ListSessions filling buf (from its start) rather than
// allocating a page of *Session: the broker reuses buf for DescribeSessions
// pages, so a page allocates only the sessions' strings.
func (s *Store) ListSessionsInto(ctx context.Context, f broker.SessionFilter, buf []broker.Session) (_ []broker.Session, err error) {
	defer unavailable(&err)
	buf = buf[:0]
	query, args := listSessionsQuery(&f)
	rows, err := s.pool.Query(ctx, query, args...)
	if err != nil {
		return buf, fmt.Errorf("list sessions: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		buf = append(buf, broker.Session{})
		if err := scanSessionInto(rows, &buf[len(buf)-1]); err != nil {
			return buf[:0], fmt.Errorf("list sessions: %w", err)
		}
	}
	if err := rows.Err(); err != nil {
		return buf[:0], fmt.Errorf("list sessions: %w", err)
	}
	return buf, nil
}
