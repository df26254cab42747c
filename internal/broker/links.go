package broker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/berth-dev/berth/internal/logattr"
)

// A server is AVAILABLE only while its agent is linked to some broker. The
// rule, cheapest first:
//
//   - this broker holds the link (the hub told the Service: AgentConnected,
//     then AgentUpdate, until AgentDisconnected): linked;
//   - this broker saw the link close: not linked (UNREACHABLE_AGENT), unless
//     another broker has heard from the agent since;
//   - the store (a PostgreSQL cluster) names another broker as the link's
//     holder, that broker's heartbeat is fresh (ServerStamp.HolderLive) and it
//     recorded contact within the heartbeat timeout: linked. A broker clears
//     its name from the rows of the links it saw close (LinkClearer), except
//     when it stops, so that its agents wait for it (or move) without
//     flapping;
//   - otherwise the link is awaited: its holder went away (this broker
//     restarted, or the broker that held it stopped or died) and the agent
//     has not relinked yet. For relinkGrace after the holder was last known
//     alive the server is UNAVAILABLE with reason UNKNOWN, its sessions keep
//     their state and deletes are accepted (they reach the agent when it
//     relinks); after that it is UNREACHABLE_AGENT. A server whose agent was
//     already silent past the heartbeat timeout when its holder went away is
//     UNREACHABLE_AGENT at once.
//
// Placement uses only linked servers; a create that finds no linked server
// while some are awaited waits up to relinkWait for the first link
// (Service.awaitLinks).

// relinkWait bounds how long a create waits for the first agent to relink
// after a restart.
const relinkWait = 5 * time.Second

// seenFlushLag bounds how late a pending LastSeen reaches the store (the
// maintenance interval, at most 5 s).
const seenFlushLag = 5 * time.Second

// seenEvery is how often a linked server's contact time is written to the
// store at most, for a heartbeat timeout: half of it. Every agent update
// used to be written (1,000 rows a second at 10,000 agents reporting every
// 10 s, the largest share of an idle broker's store work); the stored time
// is only read to tell whether an agent went silent on another broker, or
// before a restart, and half a timeout is precision enough for that.
func seenEvery(timeout time.Duration) time.Duration { return timeout / 2 }

// seenLag bounds how far a server's stored LastSeen trails its last contact
// with the broker holding its link: a server is silent only when its stored
// LastSeen is older than the heartbeat timeout plus this.
func seenLag(timeout time.Duration) time.Duration { return seenEvery(timeout) + seenFlushLag }

// LinkClearer is implemented by stores that several brokers share
// (internal/postgres): it records that links this broker held are gone, so
// that the other brokers stop counting the servers as linked.
type LinkClearer interface {
	// ClearServerLinks clears the holder of each server in links (server ID
	// → when its link closed) whose row still names brokerID and whose
	// LastSeen is not after that time (the agent did not relink meanwhile).
	ClearServerLinks(ctx context.Context, brokerID string, links map[string]time.Time) error
}

// linkStatus is what a broker knows of a server's agent link.
type linkStatus int

const (
	// linkUp: linked to this broker or to another live one.
	linkUp linkStatus = iota
	// linkAwaited: its holder went away moments ago; it may relink.
	linkAwaited
	// linkLost: the link closed, or the agent has been silent too long.
	linkLost
)

// linkState is the part of serverCache that tracks links (guarded by its mu).
type linkState struct {
	// started is when this broker loaded its servers: links held by an
	// earlier run of it are awaited from then on.
	started time.Time
	// loadMax is, per holder, the newest LastSeen at load: when the holder
	// last recorded contact with any agent before this broker started.
	loadMax map[string]time.Time
	// local holds the servers whose link this broker holds.
	local map[string]struct{}
	// unlinkDirty holds links that closed here, not yet cleared in the store.
	unlinkDirty map[string]time.Time
	// synced is set once the cache synced with a shared store; self is this
	// broker's ID as sync was told it.
	synced bool
	self   string
	// live holds the brokers whose heartbeat the last sync saw fresh, liveAt
	// when a sync last saw each one so.
	live   map[string]bool
	liveAt map[string]time.Time
	// stopping: links that close now close because this broker stops.
	stopping bool
	// wake is closed and replaced when a link comes up (awaitLinks).
	wake chan struct{}
}

// initLinks sets up the link state at load time (c.mu held).
func (c *serverCache) initLinks(list []*Server, now time.Time) {
	l := &c.links
	if l.started.IsZero() {
		l.started = now
	}
	if l.local == nil {
		l.local = make(map[string]struct{})
		l.unlinkDirty = make(map[string]time.Time)
		l.liveAt = make(map[string]time.Time)
		l.wake = make(chan struct{})
	}
	l.loadMax = make(map[string]time.Time)
	for _, s := range list {
		if s.LastSeen.After(l.loadMax[s.BrokerID]) {
			l.loadMax[s.BrokerID] = s.LastSeen
		}
	}
}

// linkMark tells whether this broker holds a cached server's link: up is
// true exactly while the server's ID is in linkState.local. Every version of
// a server in the cache shares its mark, and marks lie close together in
// memory, so that a DescribeSessions page reads a server's link state
// without a lookup in local (BenchmarkDescribeSessionsHandlerCold). Guarded
// by serverCache.mu.
type linkMark struct {
	up bool
}

// markLocked gives s, about to replace old (nil if none) in byID, its link
// mark: old's, or a new one that tells what local holds (c.mu held).
func (c *serverCache) markLocked(s, old *Server) {
	if old != nil && old.link != nil {
		s.link = old.link
		return
	}
	_, up := c.links.local[s.ID]
	s.link = &linkMark{up: up}
}

// setMarkLocked sets the link mark of the cached server id, if any (c.mu
// held).
func (c *serverCache) setMarkLocked(id string, up bool) {
	if s := c.byID[id]; s != nil && s.link != nil {
		s.link.up = up
	}
}

// linkUpLocked records that this broker holds the server's link (c.mu held).
func (c *serverCache) linkUpLocked(id string) {
	l := &c.links
	delete(l.unlinkDirty, id)
	if _, ok := l.local[id]; ok {
		return
	}
	l.local[id] = struct{}{}
	c.setMarkLocked(id, true)
	close(l.wake)
	l.wake = make(chan struct{})
}

// linkDownLocked records that this broker's link to the server closed at t
// (c.mu held).
func (c *serverCache) linkDownLocked(id string, t time.Time) {
	l := &c.links
	delete(l.local, id)
	c.setMarkLocked(id, false)
	if !l.stopping {
		l.unlinkDirty[id] = t
	}
}

// forgetLinkLocked drops a server's link state (c.mu held).
func (c *serverCache) forgetLinkLocked(id string) {
	delete(c.links.local, id)
	c.setMarkLocked(id, false)
	delete(c.links.unlinkDirty, id)
}

// linkStatus tells the state of a server's link at now and since when it is
// lost (zero unless linkLost). timeout is the heartbeat timeout, grace how
// long an awaited link is awaited.
func (c *serverCache) linkStatus(id string, timeout, grace time.Duration, now time.Time) (linkStatus, time.Time) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.linkStatusLocked(id, timeout, grace, now)
}

func (c *serverCache) linkStatusLocked(id string, timeout, grace time.Duration, now time.Time) (linkStatus, time.Time) {
	s, ok := c.byID[id]
	if !ok {
		return linkLost, now
	}
	return c.serverLinkLocked(s, timeout, grace, now)
}

// serverLinkLocked is linkStatusLocked for a server of the cache (c.mu held).
func (c *serverCache) serverLinkLocked(s *Server, timeout, grace time.Duration, now time.Time) (linkStatus, time.Time) {
	id := s.ID
	l := &c.links
	if m := s.link; m != nil {
		if m.up {
			return linkUp, time.Time{}
		}
	} else if _, ok := l.local[id]; ok {
		return linkUp, time.Time{}
	}
	last := s.LastSeen
	if t, ok := c.seenAt[id]; ok && t.After(last) {
		last = t
	}
	if t, ok := c.linkDown[id]; ok {
		if !last.IsZero() && last.Before(t) {
			return linkLost, last
		}
		return linkLost, t
	}
	if last.IsZero() {
		return linkLost, s.CreatedAt
	}
	holder := s.BrokerID
	// ref is when the holder was last known alive.
	ref := l.started
	if l.synced && holder != l.self {
		if holder == "" {
			return linkLost, last // its broker saw the link close
		}
		if l.live[holder] {
			if now.Sub(last) > timeout+seenLag(timeout) {
				return linkLost, last
			}
			return linkUp, time.Time{}
		}
		if t := l.liveAt[holder]; t.After(ref) {
			ref = t
		}
	}
	silent := ref.Sub(last) > timeout+seenLag(timeout)
	if t, ok := l.loadMax[holder]; ok && ref.Equal(l.started) {
		// The holder's newest contact before this broker started stands for
		// when it went away (it may have been down a while).
		silent = t.Sub(last) > timeout+seenLag(timeout)
	}
	if silent || now.Sub(ref) >= grace {
		return linkLost, last
	}
	return linkAwaited, time.Time{}
}

// noteSyncLocked records a sync's view of which brokers are alive (c.mu
// held).
func (c *serverCache) noteSyncLocked(self string, stamps []ServerStamp, now time.Time) {
	l := &c.links
	l.synced = true
	l.self = self
	live := make(map[string]bool)
	for i := range stamps {
		if b := stamps[i].BrokerID; b != "" && stamps[i].HolderLive {
			live[b] = true
			l.liveAt[b] = now
		}
	}
	l.live = live
}

// flushLinksLocked clears in the store the links that closed here, when the
// store is shared with other brokers (c.flushMu held, so that a contact
// written before the link closed never lands after the clear).
// A failed write is kept for the next flush.
func (c *serverCache) flushLinksLocked(ctx context.Context, st Store, brokerID string) error {
	lc, ok := st.(LinkClearer)
	c.mu.Lock()
	pending := c.links.unlinkDirty
	if len(pending) == 0 {
		c.mu.Unlock()
		return nil
	}
	c.links.unlinkDirty = make(map[string]time.Time)
	c.mu.Unlock()
	if !ok {
		return nil // one broker: nobody else reads link state from the store
	}
	err := lc.ClearServerLinks(ctx, brokerID, pending)
	if err != nil && !errors.Is(err, ErrNotFound) {
		c.mu.Lock()
		for id, t := range pending {
			if _, up := c.links.local[id]; !up {
				if _, ok := c.links.unlinkDirty[id]; !ok {
					c.links.unlinkDirty[id] = t
				}
			}
		}
		c.mu.Unlock()
		return fmt.Errorf("record %d closed agent links: %w", len(pending), err)
	}
	return nil
}

// stop marks the links that close from now on as closed by this broker's
// stop: they are not cleared in the store, so that the other brokers await
// the agents instead of reporting them unreachable.
func (c *serverCache) stop() {
	c.mu.Lock()
	c.links.stopping = true
	c.mu.Unlock()
}

// linkCounts returns how many servers are linked and how many awaited.
func (c *serverCache) linkCounts(timeout, grace time.Duration, now time.Time) (up, awaited int) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	for id := range c.byID {
		switch st, _ := c.linkStatusLocked(id, timeout, grace, now); st {
		case linkUp:
			up++
		case linkAwaited:
			awaited++
		}
	}
	return up, awaited
}

// anyLocalLink reports whether the agent of a known server is linked to
// this broker: linkCounts' up is then above 0.
func (c *serverCache) anyLocalLink() bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	for id := range c.links.local {
		if _, ok := c.byID[id]; ok {
			return true
		}
	}
	return false
}

// linkWake returns a channel closed when the next link comes up here.
func (c *serverCache) linkWake() <-chan struct{} {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.links.wake
}

// relinkGrace is how long a server whose holder went away is awaited before
// it is UNREACHABLE_AGENT: the heartbeat timeout, the time the broker has
// always given a silent agent.
func (s *Service) relinkGrace() time.Duration { return s.heartbeatTimeout() }

// linkStatus tells the state of the server's agent link now.
func (s *Service) linkStatus(id string, now time.Time) (linkStatus, time.Time) {
	return s.servers.linkStatus(id, s.heartbeatTimeout(), s.relinkGrace(), now)
}

// serverLinked reports whether the server's agent is linked to some broker:
// placement uses only such servers.
func (s *Service) serverLinked(id string, now time.Time) bool {
	st, _ := s.linkStatus(id, now)
	return st == linkUp
}

// awaitLinks waits, up to relinkWait or until ctx ends, while no server is
// linked and some are awaited (the moments after a restart, before the
// agents relink), so that a create then is placed instead of failing. It
// returns at once otherwise.
func (s *Service) awaitLinks(ctx context.Context) {
	if s.servers.anyLocalLink() {
		return // the usual case, without looking at every server
	}
	deadline := time.NewTimer(relinkWait)
	defer deadline.Stop()
	tick := time.NewTicker(100 * time.Millisecond) // remote links arrive by sync
	defer tick.Stop()
	for {
		wake := s.servers.linkWake()
		up, awaited := s.servers.linkCounts(s.heartbeatTimeout(), s.relinkGrace(), s.Now())
		if up > 0 || awaited == 0 {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-deadline.C:
			return
		case <-wake:
		case <-tick.C:
		}
	}
}

// Stopping tells the Service that the broker is stopping: the agent links
// that close from now on close because of it, so they are not recorded as
// lost for the other brokers of a cluster (which await the agents instead of
// reporting them unreachable), and the last contacts are written to the
// store. Call it before closing the agent hub.
func (s *Service) Stopping(ctx context.Context) {
	s.servers.stop()
	s.servers.flushSeen(ctx, s.store, s.cfg.BrokerID, s.log)
	s.log.Debug("stopping: agent links that close now are not recorded as lost", logattr.BrokerID, s.cfg.BrokerID)
}
