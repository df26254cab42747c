package broker

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"
)

// HostFlushInterval is how long, at most, a server's volatile host figures
// (load averages, memory and swap in use) stay in memory only: a report
// that changes nothing else updates the server cache at once (placement and
// the API see it) and is written to the store with the next flush, which
// writes every server whose figures moved since the last one.
const HostFlushInterval = 5 * time.Minute

// hostReports holds the servers whose volatile figures are newer in the
// cache than in the store.
type hostReports struct {
	mu       sync.Mutex
	dirty    map[string]struct{}
	flushed  time.Time // when the last flush started
	flushing bool
}

// agentHostReport records a host report of serverID's agent. A report that
// only moves volatile figures is kept in the cache and flushed later; any
// other change (capacity, tags, health, addresses, versions, ...) is written
// at once.
func (s *Service) agentHostReport(ctx context.Context, serverID string, info *ServerInfo, now time.Time) error {
	cur := s.servers.get(serverID)
	if cur == nil {
		return fmt.Errorf("update server %q: %w", serverID, ErrNotFound)
	}
	cp := *cur
	cp.Info = *info
	cp.LastSeen = now
	cp.BrokerID = s.cfg.BrokerID
	if cur.BrokerID == s.cfg.BrokerID && onlyVolatile(&cur.Info, info) {
		s.servers.put(&cp)
		s.hosts.mark(serverID)
		s.maybeFlushHosts(ctx, now)
		s.wakeQueue() // a requirement may name the figures
		return nil
	}
	if err := s.store.UpsertServer(ctx, &cp); err != nil {
		return fmt.Errorf("update server %q: %w", serverID, err)
	}
	s.hosts.clear(serverID)
	s.servers.put(&cp)
	s.wakeQueue()
	return nil
}

func (h *hostReports) mark(id string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.dirty == nil {
		h.dirty = make(map[string]struct{})
	}
	h.dirty[id] = struct{}{}
}

func (h *hostReports) clear(id string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.dirty, id)
}

// maybeFlushHosts starts a background flush when HostFlushInterval has
// passed since the last one.
func (s *Service) maybeFlushHosts(ctx context.Context, now time.Time) {
	h := &s.hosts
	h.mu.Lock()
	if h.flushed.IsZero() {
		h.flushed = now // the first report starts the clock
	}
	if h.flushing || now.Sub(h.flushed) < HostFlushInterval {
		h.mu.Unlock()
		return
	}
	h.flushing, h.flushed = true, now
	h.mu.Unlock()
	go func() {
		defer func() {
			h.mu.Lock()
			h.flushing = false
			h.mu.Unlock()
		}()
		s.FlushHostReports(context.WithoutCancel(ctx))
	}()
}

// FlushHostReports writes the volatile host figures that only the cache
// holds to the store, in one transaction (Store.UpdateServers). If the
// write fails, the servers stay marked for the next flush.
func (s *Service) FlushHostReports(ctx context.Context) {
	h := &s.hosts
	h.mu.Lock()
	ids := slices.Collect(maps.Keys(h.dirty))
	h.dirty = nil
	h.mu.Unlock()
	srvs := make([]*Server, 0, len(ids))
	for _, id := range ids {
		srv := s.servers.get(id)
		if srv == nil || srv.BrokerID != s.cfg.BrokerID {
			continue // gone, or another broker holds its link now
		}
		srvs = append(srvs, srv)
	}
	if len(srvs) == 0 {
		return
	}
	if err := s.store.UpdateServers(ctx, srvs); err != nil {
		s.log.Warn("record host figures", "count", len(srvs), "err", err)
		for _, srv := range srvs {
			h.mark(srv.ID) // retried with the next flush
		}
	}
}

// ServerCount returns the number of servers the broker knows (Welcome's
// fleet size).
func (s *Service) ServerCount() int {
	s.servers.mu.RLock()
	defer s.servers.mu.RUnlock()
	return len(s.servers.byID)
}

// onlyVolatile reports whether b differs from a in volatile figures only:
// load averages and memory and swap in use.
func onlyVolatile(a, b *ServerInfo) bool {
	x, y := *a, *b
	x.Host.Load1, x.Host.Load5, x.Host.Load15 = 0, 0, 0
	y.Host.Load1, y.Host.Load5, y.Host.Load15 = 0, 0, 0
	x.Host.MemUsed, x.Host.SwapUsed = 0, 0
	y.Host.MemUsed, y.Host.SwapUsed = 0, 0
	return infoEqual(&x, &y)
}

// infoEqual compares two reports field by field (TestInfoEqual checks
// that it looks at every field).
func infoEqual(a, b *ServerInfo) bool {
	return a.Hostname == b.Hostname && a.IP == b.IP && a.DefaultDNSName == b.DefaultDNSName &&
		a.Port == b.Port && a.WebURLPath == b.WebURLPath && slices.Equal(a.Endpoints, b.Endpoints) &&
		a.Version == b.Version && a.AgentVersion == b.AgentVersion && a.Driver == b.Driver &&
		a.Healthy == b.Healthy && a.HealthReason == b.HealthReason &&
		a.MaxVirtualSessions == b.MaxVirtualSessions && a.MaxConcurrentSessionsPerUser == b.MaxConcurrentSessionsPerUser &&
		a.GLCapable == b.GLCapable && maps.Equal(a.Tags, b.Tags) && (a.Tags == nil) == (b.Tags == nil) &&
		hostEqual(&a.Host, &b.Host)
}

func hostEqual(a, b *Host) bool {
	return a.OSFamily == b.OSFamily && a.OSName == b.OSName && a.OSVersion == b.OSVersion &&
		a.KernelVersion == b.KernelVersion && a.BuildNumber == b.BuildNumber &&
		a.MemTotal == b.MemTotal && a.MemUsed == b.MemUsed && a.SwapTotal == b.SwapTotal && a.SwapUsed == b.SwapUsed &&
		a.AWSRegion == b.AWSRegion && a.EC2InstanceType == b.EC2InstanceType &&
		a.EC2InstanceID == b.EC2InstanceID && a.EC2ImageID == b.EC2ImageID &&
		a.CPUVendor == b.CPUVendor && a.CPUModel == b.CPUModel && a.CPUArch == b.CPUArch &&
		a.CPUs == b.CPUs && a.CoresPerCPU == b.CoresPerCPU &&
		a.Load1 == b.Load1 && a.Load5 == b.Load5 && a.Load15 == b.Load15 &&
		slices.Equal(a.GPUs, b.GPUs) && slices.Equal(a.LoggedInUsers, b.LoggedInUsers)
}
