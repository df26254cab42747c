package broker

import (
	"context"
	"fmt"
	"time"
)

// HostFigures are the volatile figures of a host report: the load averages
// and the memory and swap in use. Agents send them alone when nothing else
// in their report changed.
type HostFigures struct {
	Load1, Load5, Load15 float64
	MemUsed, SwapUsed    int64
}

// figures returns the volatile figures of h.
func (h *Host) figures() HostFigures {
	return HostFigures{Load1: h.Load1, Load5: h.Load5, Load15: h.Load15, MemUsed: h.MemUsed, SwapUsed: h.SwapUsed}
}

// setFigures sets the volatile figures of h to f.
func (h *Host) setFigures(f HostFigures) {
	h.Load1, h.Load5, h.Load15, h.MemUsed, h.SwapUsed = f.Load1, f.Load5, f.Load15, f.MemUsed, f.SwapUsed
}

// AgentFigures records the volatile host figures that serverID's agent sent
// alone, on top of its last full report, and counts as a contact as
// AgentUpdate does. Figures that moved reach the server cache (and so the
// API and placement) at once and the store with the next flush of host
// reports (HostFlushInterval); the rest of the cached server is reused as it
// is, not converted or compared again. Should another broker hold the
// server's record, the whole report is written, as AgentUpdate writes it.
func (s *Service) AgentFigures(ctx context.Context, serverID string, f HostFigures) error {
	now := s.Now()
	switch done, err := s.servers.putFigures(serverID, f, now, s.cfg.BrokerID); {
	case err != nil:
		return err
	case done == figuresMoved:
		s.hosts.mark(serverID)
		s.maybeFlushHosts(ctx, now)
		s.wakeQueue() // a requirement may name the figures
	case done == figuresElsewhere:
		info := s.servers.get(serverID).Info
		info.Host.setFigures(f)
		if err := s.agentHostReport(ctx, serverID, &info, now); err != nil {
			return err
		}
	}
	s.servers.seen(serverID, now)
	return nil
}

// Outcomes of serverCache.putFigures.
const (
	figuresSame      = iota // the cache has them already
	figuresMoved            // the cache has them now
	figuresElsewhere        // another broker holds the record: nothing done
)

// putFigures replaces the cached server by a copy with figures f (and
// LastSeen t), if they moved and this broker (brokerID) holds its record.
// The copy shares everything else with the server it replaces, which was
// prepared when it was put and is never mutated: the figures play no part
// in prepare.
func (c *serverCache) putFigures(id string, f HostFigures, t time.Time, brokerID string) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cur := c.byID[id]
	switch {
	case cur == nil:
		return 0, fmt.Errorf("update server %q: %w", id, ErrNotFound)
	case cur.BrokerID != brokerID:
		return figuresElsewhere, nil
	case cur.Info.Host.figures() == f:
		return figuresSame, nil
	}
	cp := *cur
	cp.Info.Host.setFigures(f)
	cp.LastSeen = t
	c.putLocked(&cp)
	return figuresMoved, nil
}
