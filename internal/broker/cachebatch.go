package broker

import "time"

// pageServer is a distinct server of a page of sessions, with its link state.
type pageServer struct {
	srv  *Server
	link linkStatus
}

// lookupChunk is how many servers lookupPage looks up at once.
const lookupChunk = 32

// lookupPage looks up the servers of n sessions, whose server IDs id gives,
// all under one read lock at one clock reading: it appends each distinct
// server with its link state to servers (once however many of the sessions
// it runs), and to index the place in servers of each session's server (-1
// when it has none, or it is gone). seen maps the servers already in servers
// to their place; the caller clears it.
func (c *serverCache) lookupPage(n int, id func(int) string, timeout, grace time.Duration, now time.Time,
	seen map[*Server]int32, servers []pageServer, index []int32) ([]pageServer, []int32) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	// The servers are looked up first, in a loop that does nothing else, so
	// that the CPU's loads of their map entries overlap
	// (BenchmarkDescribeSessionsHandlerCold).
	var srvs [lookupChunk]*Server
	for i := range n {
		if i%lookupChunk == 0 {
			for k := range min(lookupChunk, n-i) {
				srvs[k] = c.byID[id(i+k)] // nil for ""
			}
		}
		srv := srvs[i%lookupChunk]
		if srv == nil {
			index = append(index, -1)
			continue
		}
		k, ok := seen[srv]
		if !ok {
			link, _ := c.serverLinkLocked(srv, timeout, grace, now)
			k = int32(len(servers))
			seen[srv] = k
			servers = append(servers, pageServer{srv: srv, link: link})
		}
		index = append(index, k)
	}
	return servers, index
}
