package broker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// errUnchanged aborts an UpdateSession whose fn found nothing to change.
var errUnchanged = errors.New("unchanged")

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// serverCache is the broker's in-memory view of servers: the rows from the store
// plus link state and the session counts that placement and availability need.
// The store stays the source of truth; the cache is reloaded from it.
type serverCache struct {
	mu        sync.RWMutex
	byID      map[string]*Server
	order     []string             // server IDs by Seq
	seenAt    map[string]time.Time // last contact seen by this broker (newer than Server.LastSeen)
	linkDown  map[string]time.Time // servers whose link this broker saw close, and when
	seenDirty map[string]time.Time // LastSeen not yet written to the store
	// seenWritten is the contact time last written for each server whose
	// link this broker holds; seen writes again once seenEvery has passed.
	seenWritten map[string]time.Time
	// timing is the fleet's link timing (linktiming.go): seen writes a
	// contact again once seenEvery of its timeout has passed; a zero timing
	// writes every contact.
	timing linkTiming
	// size is len(byID), readable without mu.
	size  atomic.Int64
	links linkState // which links are up (links.go)
	// flushMu orders the writes of contacts and of closed links.
	flushMu sync.Mutex

	// tally holds the session counts (counts.go).
	tally countCache

	// puts counts put calls; putAt records the count at each server's last
	// put, so that a sync does not drop a server registered while it ran.
	puts  uint64
	putAt map[string]uint64
}

func (c *serverCache) load(ctx context.Context, st Store) error {
	list, err := st.ListServers(ctx, ServerFilter{})
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.byID = make(map[string]*Server, len(list))
	if c.linkDown == nil {
		c.linkDown = make(map[string]time.Time)
		c.seenDirty = make(map[string]time.Time)
		c.seenAt = make(map[string]time.Time)
		c.seenWritten = make(map[string]time.Time)
	}
	c.order = make([]string, len(list))
	for i, s := range list {
		s.prepare()
		c.markLocked(s, nil)
		c.byID[s.ID] = s
		c.order[i] = s.ID
	}
	c.size.Store(int64(len(c.byID)))
	c.initLinks(list, time.Now())
	return nil
}

// put stores a server (replacing any previous value; callers never mutate a
// *Server after putting it, so readers may keep pointers).
func (c *serverCache) put(s *Server) {
	s.prepare()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.putLocked(s)
}

// putLocked is put with c.mu held and s prepared.
func (c *serverCache) putLocked(s *Server) {
	cur := c.byID[s.ID]
	c.markLocked(s, cur)
	if cur != nil && cur.Seq != s.Seq {
		// Deleted and registered again meanwhile: it moves to its new place.
		c.order = slices.DeleteFunc(c.order, func(id string) bool { return id == s.ID })
		delete(c.byID, s.ID)
		cur = nil
	}
	if cur == nil {
		// New servers usually get the highest Seq; those another broker
		// registered meanwhile may not, and go in their place.
		n := len(c.order)
		if n == 0 || c.byID[c.order[n-1]].Seq < s.Seq {
			c.order = append(c.order, s.ID)
		} else {
			i := sort.Search(n, func(i int) bool { return c.byID[c.order[i]].Seq > s.Seq })
			c.order = slices.Insert(c.order, i, s.ID)
		}
	}
	c.byID[s.ID] = s
	c.size.Store(int64(len(c.byID)))
	c.puts++
	if c.putAt == nil {
		c.putAt = make(map[string]uint64)
	}
	c.putAt[s.ID] = c.puts
}

func (c *serverCache) remove(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.byID[id]; !ok {
		return
	}
	delete(c.byID, id)
	c.size.Store(int64(len(c.byID)))
	delete(c.linkDown, id)
	delete(c.seenDirty, id)
	delete(c.seenAt, id)
	delete(c.seenWritten, id)
	delete(c.putAt, id)
	c.forgetLinkLocked(id)
	c.order = slices.DeleteFunc(c.order, func(x string) bool { return x == id })
	c.tally.invalidate() // its sessions went with it
}

func (c *serverCache) get(id string) *Server {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.byID[id]
}

func (c *serverCache) all() []*Server {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make([]*Server, len(c.order))
	for i, id := range c.order {
		out[i] = c.byID[id]
	}
	return out
}

// linkedOpen returns the servers that are open and healthy and whose agent
// link is up, in c.order: the hosts a placement may choose, under one read
// lock (a create storm's snapshot of 10,000 servers locked once per server
// before).
func (c *serverCache) linkedOpen(timeout, grace time.Duration, now time.Time) []*Server {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make([]*Server, 0, len(c.links.local))
	for _, id := range c.order {
		srv := c.byID[id]
		if srv == nil || !srv.Open || !srv.Info.Healthy {
			continue
		}
		if st, _ := c.serverLinkLocked(srv, timeout, grace, now); st == linkUp {
			out = append(out, srv)
		}
	}
	return out
}

// seen records a message from a server's agent on a link this broker holds
// (the store then records this broker as the link's holder): the link is up.
// A command that went through another broker is no such contact. The time
// goes to the store with the next flush when seenEvery has passed since the
// last one written (or one is pending anyway).
func (c *serverCache) seen(id string, t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.linkDown, id)
	c.seenAt[id] = t
	_, timeout := c.timing.at(len(c.byID))
	if _, pending := c.seenDirty[id]; pending || t.Sub(c.seenWritten[id]) >= seenEvery(timeout) {
		c.seenDirty[id] = t
	}
	c.linkUpLocked(id)
}

// down records that this broker's link to the server closed.
func (c *serverCache) down(id string, t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.linkDown[id] = t
	// Another broker may hold the server's link next: do not overwrite its
	// record of the server with this broker's older contact. A relink here
	// writes its first contact at once.
	delete(c.seenDirty, id)
	delete(c.seenWritten, id)
	c.linkDownLocked(id, t)
}

// unreachableSince returns since when the server's agent is unreachable, or
// zero if it is not: linked to a broker, or awaited after its broker went
// away (links.go). timeout is the heartbeat timeout, which is also how long
// an awaited link is awaited.
func (c *serverCache) unreachableSince(id string, timeout time.Duration, now time.Time) time.Time {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if _, ok := c.byID[id]; !ok {
		return time.Time{}
	}
	if st, since := c.linkStatusLocked(id, timeout, timeout, now); st == linkLost {
		return since
	}
	return time.Time{}
}

// flushSeen writes pending LastSeen times to the store, then clears the
// links that closed here (flushLinksLocked).
func (c *serverCache) flushSeen(ctx context.Context, st Store, brokerID string, log *slog.Logger) {
	c.flushMu.Lock()
	defer c.flushMu.Unlock()
	c.mu.Lock()
	pending := c.seenDirty
	c.seenDirty = make(map[string]time.Time, len(pending))
	c.mu.Unlock()
	if err := st.SetServersSeen(ctx, brokerID, pending); err != nil {
		log.Warn("record server contact", "servers", len(pending), "err", err)
		c.mu.Lock()
		for id, t := range pending { // keep them for the next flush
			if cur, ok := c.seenDirty[id]; !ok || cur.Before(t) {
				c.seenDirty[id] = t
			}
		}
		c.mu.Unlock()
	} else if len(pending) > 0 {
		c.mu.Lock()
		if c.seenWritten == nil {
			c.seenWritten = make(map[string]time.Time)
		}
		for id, t := range pending {
			if _, up := c.links.local[id]; up { // not gone or moved meanwhile
				c.seenWritten[id] = t
			}
		}
		c.mu.Unlock()
	}
	if err := c.flushLinksLocked(ctx, st, brokerID); err != nil {
		log.Warn("record closed agent links", "err", err)
	}
}

// sync brings the cache up to date with a store shared with other brokers: it
// takes every server's stamp, re-reads the servers whose Version changed (or
// that are new), drops those that are gone, and takes LastSeen and BrokerID
// from the stamps. A link this broker saw close no longer counts once another
// broker has heard from the server since.
func (c *serverCache) sync(ctx context.Context, st Store, sy ServerSyncer, self string) error {
	c.flushMu.Lock()
	err := c.flushLinksLocked(ctx, st, self)
	c.flushMu.Unlock()
	if err != nil {
		return err
	}
	c.mu.RLock()
	start := c.puts
	c.mu.RUnlock()
	stamps, err := sy.ServerStamps(ctx)
	if err != nil {
		return err
	}
	c.mu.RLock()
	var changed []string
	for i := range stamps {
		if cur, ok := c.byID[stamps[i].ID]; !ok || cur.Version != stamps[i].Version {
			changed = append(changed, stamps[i].ID)
		}
	}
	c.mu.RUnlock()
	var fresh []*Server
	if len(changed) > 0 {
		if fresh, err = st.ListServers(ctx, ServerFilter{IDs: changed}); err != nil {
			return err
		}
	}
	for _, s := range fresh {
		s.prepare()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range fresh {
		if cur, ok := c.byID[s.ID]; ok && c.putAt[s.ID] > start && cur.Version > s.Version {
			continue // this broker stored a newer row meanwhile
		}
		c.putLocked(s)
	}
	live := make(map[string]bool, len(stamps))
	for i := range stamps {
		st := &stamps[i]
		live[st.ID] = true
		cur, ok := c.byID[st.ID]
		if !ok {
			continue
		}
		if !cur.LastSeen.Equal(st.LastSeen) || cur.BrokerID != st.BrokerID {
			cp := *cur
			cp.LastSeen, cp.BrokerID = st.LastSeen, st.BrokerID
			c.byID[st.ID] = &cp
		}
		if down, ok := c.linkDown[st.ID]; ok && st.BrokerID != self && st.LastSeen.After(down) {
			delete(c.linkDown, st.ID)
		}
	}
	c.noteSyncLocked(self, stamps, time.Now())
	gone := false
	for id := range c.byID {
		if !live[id] && c.putAt[id] <= start {
			delete(c.byID, id)
			delete(c.linkDown, id)
			delete(c.seenDirty, id)
			delete(c.seenAt, id)
			delete(c.seenWritten, id)
			delete(c.putAt, id)
			c.forgetLinkLocked(id)
			gone = true
		}
	}
	if gone {
		c.size.Store(int64(len(c.byID)))
		c.order = slices.DeleteFunc(c.order, func(id string) bool { return c.byID[id] == nil })
		c.tally.invalidate() // their sessions went with them
	}
	return nil
}
