package broker

import (
	"context"
	"sync"
	"sync/atomic"
)

// sessionPageStore is implemented by stores that can fill a caller's buffer
// with a page of sessions (the SQLite store, from its in-memory mirror), so
// that DescribeSessionsPage allocates no sessions.
type sessionPageStore interface {
	ListSessionsInto(ctx context.Context, f SessionFilter, buf []Session) ([]Session, error)
}

// sessionMemoStore is a sessionPageStore that also keeps a SessionMemo for
// each version of a session it holds, and hands them out with a page:
// memos[i] is the memo of the i-th session appended to buf.
type sessionMemoStore interface {
	ListSessionsMemo(ctx context.Context, f SessionFilter, buf []Session, memos []*SessionMemo) ([]Session, []*SessionMemo, error)
}

// SessionMemo is a store's slot for the API encoding of one version of a
// session: the SQLite store gives each version it keeps in memory one, and
// a new version a new, empty one, so that a page writer encodes a session
// once and copies the bytes on every later page until it changes. It costs
// the store a pointer per version, and a filled memo the encoding's bytes.
type SessionMemo struct {
	p atomic.Pointer[SessionEncoding]
}

// Load returns the memo's encoding, nil until one is stored.
func (m *SessionMemo) Load() *SessionEncoding { return m.p.Load() }

// Store keeps e as the encoding of the memo's version (the first writer
// wins a race; both encodings are equal).
func (m *SessionMemo) Store(e *SessionEncoding) { m.p.CompareAndSwap(nil, e) }

// SessionEncoding is a session's encoding around its server's: Bytes[:Split]
// comes before the server, Bytes[Split:] after it.
type SessionEncoding struct {
	Bytes []byte
	Split int
}

// SessionPage is a page of DescribeSessions in memory that is reused: its
// views are valid until Release.
type SessionPage struct {
	Views     []SessionView
	NextToken string
	// Servers are the views of the page's distinct servers, in the order
	// of their first session, all computed at one clock reading against
	// one reading of the session counts.
	Servers []ServerView
	// ServerIndex[i] is the place in Servers of the server of Views[i],
	// -1 for a session without one.
	ServerIndex []int32
	// Memos[i], when Memos is as long as Views, is the memo of the version
	// of Views[i].Session that the store holds; nil where the page shows
	// the session otherwise (UNKNOWN on a server that is not linked).
	// Empty for stores that keep none.
	Memos []*SessionMemo

	buf    []Session
	lookup []pageServer
	seen   map[*Server]int32
	pooled bool
}

// maxPooledSessions is the largest session buffer a released page keeps.
const maxPooledSessions = 1001

var sessionPages = sync.Pool{New: func() any {
	return &SessionPage{pooled: true, seen: make(map[*Server]int32)}
}}

// DescribeSessionsPage is DescribeSessions for callers that are done with
// the page before they call Release on it (the API writes it and releases
// it): with a store that can fill a buffer, the sessions of a page live in
// memory the next page reuses. The page's servers are looked up, and their
// link states read, under one read lock of the server cache.
func (s *Service) DescribeSessionsPage(ctx context.Context, q DescribeQuery) (*SessionPage, error) {
	ps, ok := s.store.(sessionPageStore)
	if !ok {
		views, next, err := s.DescribeSessions(ctx, q)
		if err != nil {
			return nil, err
		}
		p := &SessionPage{Views: views, NextToken: next, seen: make(map[*Server]int32)}
		id := func(i int) string {
			if v := views[i]; v.Server != nil {
				return v.Server.ID
			}
			return ""
		}
		p.lookup, p.ServerIndex = s.servers.lookupPage(len(views), id, s.heartbeatTimeout(), s.relinkGrace(), s.Now(), p.seen, nil, nil)
		s.pageServers(ctx, p)
		return p, nil
	}
	f, fh, err := s.describeFilter(q)
	if err != nil {
		return nil, err
	}
	p := sessionPages.Get().(*SessionPage)
	if ms, ok := ps.(sessionMemoStore); ok {
		p.buf, p.Memos, err = ms.ListSessionsMemo(ctx, f, p.buf[:0], p.Memos[:0])
	} else {
		p.buf, err = ps.ListSessionsInto(ctx, f, p.buf[:0])
	}
	if err != nil {
		p.Release()
		return nil, err
	}
	list := p.buf
	if len(list) > q.limit() {
		list = list[:q.limit()]
		p.NextToken = s.encodeCursor(list[len(list)-1].Seq, fh)
	}
	if len(p.Memos) != len(p.buf) {
		p.Memos = p.Memos[:0]
	}
	p.Memos = p.Memos[:min(len(p.Memos), len(list))]
	id := func(i int) string { return list[i].ServerID }
	p.lookup, p.ServerIndex = s.servers.lookupPage(len(list), id, s.heartbeatTimeout(), s.relinkGrace(), s.Now(),
		p.seen, p.lookup, p.ServerIndex)
	for i := range list {
		sess, k := &list[i], p.ServerIndex[i]
		var srv *Server
		if k >= 0 {
			srv = p.lookup[k].srv
		}
		if sess.ServerID != "" && sess.State == StateReady && (srv == nil || p.lookup[k].link == linkLost) {
			// The page's own copy: sessionView's rule, without a copy.
			sess.State = StateUnknown
			sess.StateReason = reasonUnreachableSession
			if i < len(p.Memos) {
				p.Memos[i] = nil // the store's encoding says READY
			}
		}
		p.Views = append(p.Views, SessionView{Session: sess, Server: srv})
	}
	s.pageServers(ctx, p)
	return p, nil
}

// pageServers sets p.Servers from p.lookup.
func (s *Service) pageServers(ctx context.Context, p *SessionPage) {
	if len(p.lookup) == 0 {
		return
	}
	counts, err := s.servers.sessionCounts(ctx, s.store, countsMaxAge, s.Now())
	if err != nil {
		s.log.Warn("count sessions for server view", "err", err)
	}
	for _, ps := range p.lookup {
		p.Servers = append(p.Servers, viewOf(ps.srv, counts[ps.srv.ID], ps.link))
	}
}

// Release gives the page's memory back for reuse; p and its views must not
// be used after.
func (p *SessionPage) Release() {
	if !p.pooled {
		return // a store without ListSessionsInto
	}
	clear(p.buf)
	clear(p.Views)
	clear(p.Servers)
	clear(p.lookup)
	clear(p.seen)
	clear(p.Memos[:cap(p.Memos)])
	if cap(p.buf) > maxPooledSessions {
		p.buf, p.Views, p.Servers, p.ServerIndex, p.lookup, p.Memos = nil, nil, nil, nil, nil, nil
	}
	p.buf, p.Views, p.NextToken, p.Memos = p.buf[:0], p.Views[:0], "", p.Memos[:0]
	p.Servers, p.ServerIndex, p.lookup = p.Servers[:0], p.ServerIndex[:0], p.lookup[:0]
	sessionPages.Put(p)
}
