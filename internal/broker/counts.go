package broker

import (
	"context"
	"log/slog"
	"maps"
	"sync"
	"time"
)

// Session counts kept incrementally.
//
// Placement, server views (VirtualSessions, SERVER_FULL) and the metrics need
// the sessions counted by server, owner, type and state. Counting them in the
// store costs a scan of the sessions (80–230 ms at 100,000 sessions on
// PostgreSQL), so the broker keeps the counts in memory and changes them as it
// changes sessions:
//
//   - Every write of sessions by this broker reports how each session changed
//     (old and new) to a hook: Service.sessionChanged, or the wrappers that
//     call it, Service.updateSession, Service.updateSessions and
//     Service.sessionsInserted; placements report through serverCache.addPlaced,
//     purges through countCache.purged.
//   - The counts are read from the store once, in the background, when Run
//     starts (countCache.run). Until that read is done, readers wait up to
//     countsLoadWait and then count in the store themselves.
//   - They are read again only when needed: after invalidateCounts (a change
//     made without telling how, such as a server deleted with its sessions,
//     or sessions adopted from an agent), and, with a store shared by a
//     cluster of brokers, when they are older than countsResync, since other
//     brokers place and end sessions too.
//
// A read of the store runs while sessions change. The changes reported during
// a read are replayed onto its result; one that committed before the read saw
// the store is then counted twice. A write's hook also runs after its commit,
// so a read may see a commit whose hook comes after the read is installed,
// and count it twice too. Every counted write therefore runs between
// countCache.begin and its end (after its hook): a read during which a write
// was in flight or a change was reported is followed by another one
// countsQuiet later, until a read overlaps none. The counts are exact when
// the broker is alone and quiet, and otherwise off by at most the few
// changes in flight during a read, for at most a second or so. Alone (a
// store not shared), the broker does not refuse a session for want of room
// on such counts: while they are uncertain, placement counts in the store
// before it refuses.
//
// Stale counts never let placement overfill a server: placement plans with
// these counts, but CommitPlacements re-checks every limit against the
// server's current sessions under the store's row locks (SQLite: its single
// writer), and a placement refused there is placed again (with a store read
// first when the store is shared). So a cluster's counts may lag the other
// brokers by up to countsResync without any server holding more sessions than
// its limits.
const (
	// countsResync is how old counts may grow with a shared store before a
	// read brings in the other brokers' changes.
	countsResync = 5 * time.Second
	// countsQuiet is the pause before another read, after a read that
	// overlapped changes or failed.
	countsQuiet = time.Second
	// countsLoadWait is how long a reader waits for the first read before it
	// counts in the store itself.
	countsLoadWait = 2 * time.Second
)

// countCache holds the session counts; see the comment above. Its zero value
// is ready to take changes (they wait for the first read); run reads the
// store.
type countCache struct {
	mu sync.Mutex

	loaded  bool
	servers map[string]*serverTally // placed, active sessions by server
	byState map[string]int          // every stored session by state
	queued  int                     // CREATING sessions without a server
	snap    map[string]Counts       // handed out; nil when changed since
	readAt  time.Time               // when the last read of the store started

	started bool
	done    chan struct{} // closed when the first read is installed
	wake    chan struct{} // asks run for a read
	reading bool
	during  []countDelta // changes reported while a read runs
	again   bool         // read again after countsQuiet
	writing int          // counted writes in flight (begin, not yet ended)
	raced   bool         // a counted write was in flight during this read
	// overlapped: the last read overlapped writes, so a change may be
	// counted twice until a read overlaps none (see uncertain).
	overlapped bool
}

// serverTally is one server's Counts. ByOwner is copied before a change when
// a snapshot may hold it (shared).
type serverTally struct {
	c      Counts
	shared bool
}

// countDelta is one session's share of the counts, added (sign 1) or taken
// away (sign -1); purged DELETED sessions are one delta of sign -n.
type countDelta struct {
	sign     int
	serverID string
	owner    string
	console  bool
	state    string
}

// deltaOf returns the share of x, nil for no session.
func deltaOf(x *Session, sign int) (countDelta, bool) {
	if x == nil {
		return countDelta{}, false
	}
	return countDelta{sign: sign, serverID: x.ServerID, owner: x.Owner, console: x.Type == TypeConsole, state: x.State}, true
}

// init makes the channels; callers hold c.mu.
func (c *countCache) initLocked() {
	if c.done == nil {
		c.done = make(chan struct{})
		c.wake = make(chan struct{}, 1)
	}
}

// change records that a session changed from old to new (old nil: inserted;
// new nil: removed from the store). It is the hook every session write calls
// once it has committed.
func (c *countCache) change(old, new *Session) {
	a, okA := deltaOf(old, -1)
	b, okB := deltaOf(new, 1)
	if okA && okB && a.serverID == b.serverID && a.owner == b.owner && a.console == b.console && a.state == b.state {
		return // no count changes
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.initLocked()
	for _, d := range []struct {
		d  countDelta
		ok bool
	}{{a, okA}, {b, okB}} {
		if !d.ok {
			continue
		}
		if c.reading {
			c.during = append(c.during, d.d)
		}
		if c.loaded {
			c.applyLocked(d.d)
		}
	}
}

// begin marks the start of a counted write (before it goes to the store);
// call the returned end once its hook has run.
func (c *countCache) begin() (end func()) {
	c.mu.Lock()
	c.writing++
	if c.reading {
		c.raced = true
	}
	c.mu.Unlock()
	return c.end
}

func (c *countCache) end() {
	c.mu.Lock()
	c.writing--
	c.mu.Unlock()
}

// uncertain reports whether the counts may count a change twice: the last
// read of the store overlapped writes and no read has overlapped none
// since.
func (c *countCache) uncertain() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.overlapped
}

// applyLocked adds one delta to the counts. Deltas arrive in any order
// (a hook runs after its commit, so a placement of a retried session may
// be reported before the retry that queued it), so a count may be negative
// for a while and is never clamped here: clamping would make the result
// depend on the order. Only what is handed out is clamped at zero
// (snapshot, states).
func (c *countCache) applyLocked(d countDelta) {
	c.byState[d.state] += d.sign
	if c.byState[d.state] == 0 {
		delete(c.byState, d.state)
	}
	if d.state == StateCreating && d.serverID == "" {
		c.queued += d.sign
	}
	if d.state == StateDeleted || d.serverID == "" {
		return
	}
	c.snap = nil
	t := c.servers[d.serverID]
	if t == nil {
		t = &serverTally{}
		c.servers[d.serverID] = t
	}
	if t.shared || t.c.ByOwner == nil {
		by := make(map[string]int, len(t.c.ByOwner)+1)
		maps.Copy(by, t.c.ByOwner)
		t.c.ByOwner, t.shared = by, false
	}
	if d.console {
		t.c.Console += d.sign
	} else {
		t.c.Virtual += d.sign
	}
	t.c.ByOwner[d.owner] += d.sign
	if t.c.ByOwner[d.owner] == 0 {
		delete(t.c.ByOwner, d.owner)
	}
	if t.c.Virtual == 0 && t.c.Console == 0 && len(t.c.ByOwner) == 0 {
		delete(c.servers, d.serverID)
	}
}

// purged takes n DELETED sessions, removed from the store, off the counts.
func (c *countCache) purged(n int) {
	if n <= 0 {
		return
	}
	d := countDelta{sign: -n, state: StateDeleted}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.reading {
		c.during = append(c.during, d)
	}
	if c.loaded {
		c.applyLocked(d)
	}
}

// invalidate asks for a read of the store: sessions changed in ways that
// were not reported (see the comment above).
func (c *countCache) invalidate() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.initLocked()
	if c.reading {
		c.again = true
		return
	}
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// run reads the counts from st at once and again when asked (invalidate, a
// read that overlapped changes, or, with shared, counts older than
// countsResync when read), until ctx ends.
func (c *countCache) run(ctx context.Context, st Store, shared bool, log *slog.Logger) {
	c.mu.Lock()
	c.initLocked()
	c.started = true
	c.mu.Unlock()
	retry := time.NewTimer(0)
	defer retry.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.wake:
		case <-retry.C:
		}
		err := c.read(ctx, st)
		c.mu.Lock()
		again := c.again || err != nil
		c.again = false
		c.mu.Unlock()
		switch {
		case err != nil && ctx.Err() == nil && !failing:
			log.Warn("count sessions in the store", "err", err)
			failing = true
		case err == nil && failing:
			log.Info("counting sessions in the store again")
			failing = false
		}
		if again {
			retry.Reset(countsQuiet)
		}
	}
}

// read counts the sessions in the store and installs the counts, with the
// changes reported meanwhile replayed onto them.
func (c *countCache) read(ctx context.Context, st Store) error {
	c.mu.Lock()
	c.initLocked()
	c.reading = true
	c.raced = c.writing > 0
	c.during = c.during[:0]
	start := time.Now()
	c.mu.Unlock()
	servers, byState, queued, err := countInStore(ctx, st)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reading = false
	if err != nil {
		c.during = nil
		return err
	}
	c.servers = make(map[string]*serverTally, len(servers))
	for id, cnt := range servers {
		if cnt.Virtual > 0 || cnt.Console > 0 {
			c.servers[id] = &serverTally{c: cnt}
		}
	}
	c.byState, c.queued = byState, queued
	c.loaded, c.snap, c.readAt = true, nil, start
	for _, d := range c.during {
		c.applyLocked(d)
	}
	c.overlapped = c.raced || len(c.during) > 0
	if c.overlapped {
		c.again = true
	}
	c.during = nil
	select {
	case <-c.done:
	default:
		close(c.done)
	}
	return nil
}

// countInStore counts the sessions in the store: placed active ones by server,
// all by state, and the unplaced CREATING ones.
func countInStore(ctx context.Context, st Store) (map[string]Counts, map[string]int, int, error) {
	servers, err := st.CountSessions(ctx)
	if err != nil {
		return nil, nil, 0, err
	}
	byState, err := st.CountByState(ctx)
	if err != nil {
		return nil, nil, 0, err
	}
	queued, err := st.ListSessions(ctx, SessionFilter{Unplaced: true, States: []string{StateCreating}})
	if err != nil {
		return nil, nil, 0, err
	}
	if byState == nil {
		byState = make(map[string]int)
	}
	return servers, byState, len(queued), nil
}

// ready waits for the first read, at most countsLoadWait; with shared it
// asks for a read when the counts are older than countsResync. It reports
// whether the counts are loaded.
func (c *countCache) ready(ctx context.Context, shared bool, now time.Time) bool {
	c.mu.Lock()
	c.initLocked()
	loaded, started, done := c.loaded, c.started, c.done
	if loaded && shared && !c.reading && now.Sub(c.readAt) > countsResync {
		select {
		case c.wake <- struct{}{}:
		default:
		}
	}
	c.mu.Unlock()
	if loaded || !started {
		return loaded
	}
	t := time.NewTimer(countsLoadWait)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
	case <-ctx.Done():
	}
	return false
}

// snapshot returns the counts by server. The map and its values must not be
// changed; later changes do not show in it.
func (c *countCache) snapshot() map[string]Counts {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.snap == nil {
		c.snap = make(map[string]Counts, len(c.servers))
		for id, t := range c.servers {
			if t.c.Virtual < 0 || t.c.Console < 0 || negative(t.c.ByOwner) {
				if cnt := clamped(t.c); cnt.Virtual != 0 || cnt.Console != 0 || len(cnt.ByOwner) > 0 {
					c.snap[id] = cnt
				}
				continue
			}
			c.snap[id] = t.c
			t.shared = true
		}
	}
	return c.snap
}

// lookup returns the counts of srvs, in order, as snapshot's map holds
// them, without building that map when it is stale: a create storm's
// placement snapshot asked for every server's counts after every batch,
// and rebuilt the map of all of them each time.
func (c *countCache) lookup(srvs []*Server) []Counts {
	out := make([]Counts, len(srvs))
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.snap != nil {
		for i, srv := range srvs {
			out[i] = c.snap[srv.ID]
		}
		return out
	}
	for i, srv := range srvs {
		t := c.servers[srv.ID]
		if t == nil {
			continue
		}
		if t.c.Virtual < 0 || t.c.Console < 0 || negative(t.c.ByOwner) {
			if cnt := clamped(t.c); cnt.Virtual != 0 || cnt.Console != 0 || len(cnt.ByOwner) > 0 {
				out[i] = cnt
			}
			continue
		}
		out[i] = t.c
		t.shared = true
	}
	return out
}

// clamped is c without negative counts: a delta that arrived before its
// partner hands out zeros rather than room that is not there.
func clamped(c Counts) Counts {
	cnt := Counts{Virtual: max(0, c.Virtual), Console: max(0, c.Console), ByOwner: make(map[string]int, len(c.ByOwner))}
	for o, n := range c.ByOwner {
		if n > 0 {
			cnt.ByOwner[o] = n
		}
	}
	return cnt
}

// states returns the sessions by state (a copy) and the number queued.
func (c *countCache) states() (map[string]int, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int, len(c.byState))
	for st, n := range c.byState {
		if n > 0 {
			out[st] = n
		}
	}
	return out, max(0, c.queued)
}

// negative reports whether a count in by is below zero.
func negative(by map[string]int) bool {
	for _, n := range by {
		if n < 0 {
			return true
		}
	}
	return false
}

// sessionCounts returns the active sessions per server: the kept counts, or,
// before the first read of the store is done (countsLoadWait), a count in
// the store. maxAge is unused: the counts are current (see the comment
// above).
func (c *serverCache) sessionCounts(ctx context.Context, st Store, maxAge time.Duration, now time.Time) (map[string]Counts, error) {
	_ = maxAge
	if c.tally.ready(ctx, isShared(st), now) {
		return c.tally.snapshot(), nil
	}
	return st.CountSessions(ctx)
}

// countsOf is sessionCounts for srvs alone, in their order.
func (c *serverCache) countsOf(ctx context.Context, st Store, now time.Time, srvs []*Server) ([]Counts, error) {
	if c.tally.ready(ctx, isShared(st), now) {
		return c.tally.lookup(srvs), nil
	}
	m, err := st.CountSessions(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]Counts, len(srvs))
	for i, srv := range srvs {
		out[i] = m[srv.ID]
	}
	return out, nil
}

// isShared reports whether st is shared by a cluster of brokers.
func isShared(st Store) bool {
	_, ok := st.(ServerSyncer)
	return ok
}

// invalidateCounts asks for a read of the counts from the store, for a
// change of sessions that was not reported to sessionChanged (sessions
// adopted from an agent, a server deleted with its sessions). The current
// counts stay in use meanwhile.
func (c *serverCache) invalidateCounts() { c.tally.invalidate() }

// addPlaced counts committed placements: new sessions (insert) or queued
// ones that got a server.
func (c *serverCache) addPlaced(ss []*Session, insert bool) {
	for _, x := range ss {
		var old *Session
		if !insert {
			o := *x
			o.ServerID = ""
			old = &o
		}
		c.tally.change(old, x)
	}
}

// released counts a session that ended: it was was, and is now DELETED.
// Callers that write through Service.updateSession or updateSessions must
// not call it too (they count already).
func (c *serverCache) released(was *Session) {
	now := *was
	now.State = StateDeleted
	c.tally.change(was, &now)
}

// sessionStates returns the sessions by state and the number queued: the
// kept counts, or, before the first read of the store is done
// (countsLoadWait), a count in the store.
func (s *Service) sessionStates(ctx context.Context, now time.Time) (map[string]int, int, error) {
	if s.servers.tally.ready(ctx, isShared(s.store), now) {
		byState, queued := s.servers.tally.states()
		return byState, queued, nil
	}
	_, byState, queued, err := countInStore(ctx, s.store)
	return byState, queued, err
}

// sessionChanged is the hook for every write of a session by this broker:
// old is the session before, new after (old nil: inserted; new nil: removed
// from the store). Call it once the write has committed.
func (s *Service) sessionChanged(old, new *Session) { s.servers.tally.change(old, new) }

// sessionsInserted counts sessions inserted into the store.
func (s *Service) sessionsInserted(ss []*Session) {
	for _, x := range ss {
		s.servers.tally.change(nil, x)
	}
}

// updateSession is Store.UpdateSession that counts the change.
func (s *Service) updateSession(ctx context.Context, id string, fn func(*Session) error) error {
	defer s.servers.tally.begin()()
	var old, new Session
	err := s.store.UpdateSession(ctx, id, func(x *Session) error {
		old = *x
		if err := fn(x); err != nil {
			return err
		}
		s.stampDue(ctx, x)
		s.attachEvents(&old, x)
		new = *x
		return nil
	})
	if err == nil {
		s.sessionChanged(&old, &new)
		s.eventsWritten(&new)
	}
	return err
}

// updateSessions is Store.UpdateSessions that counts the changes.
func (s *Service) updateSessions(ctx context.Context, ids []string, fn func(*Session) error) ([]error, error) {
	defer s.servers.tally.begin()()
	type change struct{ old, new Session }
	var mu sync.Mutex
	changes := make(map[string]change, len(ids))
	res, err := s.store.UpdateSessions(ctx, ids, func(x *Session) error {
		old := *x
		if err := fn(x); err != nil {
			return err
		}
		s.stampDue(ctx, x)
		s.attachEvents(&old, x)
		mu.Lock()
		changes[x.ID] = change{old, *x}
		mu.Unlock()
		return nil
	})
	if err != nil {
		return res, err
	}
	wrote := false
	for i, id := range ids {
		if res[i] == nil {
			ch := changes[id]
			s.sessionChanged(&ch.old, &ch.new)
			wrote = wrote || len(ch.new.Events) > 0
		}
	}
	if wrote {
		s.hub.notify()
	}
	return res, nil
}
