package broker

import (
	"context"
	"sync"
)

// sessionPageStore is implemented by stores that can fill a caller's buffer
// with a page of sessions (the SQLite store, from its in-memory mirror), so
// that DescribeSessionsPage allocates no sessions.
type sessionPageStore interface {
	ListSessionsInto(ctx context.Context, f SessionFilter, buf []Session) ([]Session, error)
}

// SessionPage is a page of DescribeSessions in memory that is reused: its
// views are valid until Release.
type SessionPage struct {
	Views     []SessionView
	NextToken string

	buf    []Session
	pooled bool
}

// maxPooledSessions is the largest session buffer a released page keeps.
const maxPooledSessions = 1001

var sessionPages = sync.Pool{New: func() any { return &SessionPage{pooled: true} }}

// DescribeSessionsPage is DescribeSessions for callers that are done with
// the page before they call Release on it (the API writes it and releases
// it): with a store that can fill a buffer, the sessions of a page live in
// memory the next page reuses.
func (s *Service) DescribeSessionsPage(ctx context.Context, q DescribeQuery) (*SessionPage, error) {
	ps, ok := s.store.(sessionPageStore)
	if !ok {
		views, next, err := s.DescribeSessions(ctx, q)
		if err != nil {
			return nil, err
		}
		return &SessionPage{Views: views, NextToken: next}, nil
	}
	f, fh, err := s.describeFilter(q)
	if err != nil {
		return nil, err
	}
	p := sessionPages.Get().(*SessionPage)
	if p.buf, err = ps.ListSessionsInto(ctx, f, p.buf[:0]); err != nil {
		p.Release()
		return nil, err
	}
	list := p.buf
	if len(list) > q.limit() {
		list = list[:q.limit()]
		p.NextToken = s.encodeCursor(list[len(list)-1].Seq, fh)
	}
	now := s.Now()
	for i := range list {
		p.Views = append(p.Views, s.sessionView(&list[i], now))
	}
	return p, nil
}

// Release gives the page's memory back for reuse; p and its views must not
// be used after.
func (p *SessionPage) Release() {
	if !p.pooled {
		return // a store without ListSessionsInto
	}
	clear(p.buf)
	clear(p.Views)
	if cap(p.buf) > maxPooledSessions {
		p.buf = nil
	}
	p.buf, p.Views, p.NextToken = p.buf[:0], p.Views[:0], ""
	sessionPages.Put(p)
}
