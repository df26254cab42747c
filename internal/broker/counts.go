package broker

import (
	"context"
	"time"
)

// invalidateCounts makes the next snapshot re-read session counts.
func (c *serverCache) invalidateCounts() {
	c.mu.Lock()
	c.countsValid = false
	c.countsGen++
	c.mu.Unlock()
}

// sessionCounts returns per-server counts, re-reading them from the store when
// invalid or older than maxAge. Counts that are merely old are returned at
// once while one background read refreshes them (a count over 100,000
// sessions on PostgreSQL takes a few hundred milliseconds, which requests
// should not wait for); invalidated counts are read before returning.
func (c *serverCache) sessionCounts(ctx context.Context, st Store, maxAge time.Duration, now time.Time) (map[string]Counts, error) {
	c.mu.Lock()
	if c.countsValid && now.Sub(c.countsAt) < maxAge {
		m := c.counts
		c.mu.Unlock()
		return m, nil
	}
	if c.countsValid {
		m := c.counts
		if !c.refreshing {
			c.refreshing = true
			go c.refreshCounts(context.WithoutCancel(ctx), st, now)
		}
		c.mu.Unlock()
		return m, nil
	}
	c.mu.Unlock()
	m, err := st.CountSessions(ctx)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.counts, c.countsValid, c.countsAt = m, true, now
	c.mu.Unlock()
	return m, nil
}

// refreshCounts re-reads the counts in the background for sessionCounts.
func (c *serverCache) refreshCounts(ctx context.Context, st Store, now time.Time) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	c.mu.Lock()
	gen := c.countsGen
	c.mu.Unlock()
	m, err := st.CountSessions(ctx)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.refreshing = false
	// Placements, releases and invalidations meanwhile changed the counts
	// this read may predate: keep theirs (the next call reads again).
	if err != nil || gen != c.countsGen {
		return
	}
	c.counts, c.countsValid, c.countsAt = m, true, now
}

// addPlaced adds committed placements to the cached counts (copy on write, so
// snapshots handed out earlier stay unchanged).
func (c *serverCache) addPlaced(ss []*Session) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.countsValid {
		return
	}
	c.countsGen++
	m := make(map[string]Counts, len(c.counts))
	for k, v := range c.counts {
		m[k] = v
	}
	touched := map[string]bool{}
	for _, s := range ss {
		cnt := m[s.ServerID]
		if !touched[s.ServerID] {
			by := make(map[string]int, len(cnt.ByOwner)+1)
			for k, v := range cnt.ByOwner {
				by[k] = v
			}
			cnt.ByOwner = by
			touched[s.ServerID] = true
		}
		if s.Type == TypeConsole {
			cnt.Console++
		} else {
			cnt.Virtual++
		}
		cnt.ByOwner[s.Owner]++
		m[s.ServerID] = cnt
	}
	c.counts = m
}

// released takes a session that stopped counting (now DELETED) off the cached
// counts, so a delete does not force a full recount.
func (c *serverCache) released(was *Session) {
	if was.ServerID == "" {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.countsValid {
		return
	}
	cnt, ok := c.counts[was.ServerID]
	if !ok {
		return
	}
	c.countsGen++
	m := make(map[string]Counts, len(c.counts))
	for k, v := range c.counts {
		m[k] = v
	}
	by := make(map[string]int, len(cnt.ByOwner))
	for k, v := range cnt.ByOwner {
		by[k] = v
	}
	if was.Type == TypeConsole {
		cnt.Console = max(0, cnt.Console-1)
	} else {
		cnt.Virtual = max(0, cnt.Virtual-1)
	}
	if by[was.Owner] <= 1 {
		delete(by, was.Owner)
	} else {
		by[was.Owner]--
	}
	cnt.ByOwner = by
	m[was.ServerID] = cnt
	c.counts = m
}
