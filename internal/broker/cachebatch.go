package broker

import "time"

// pageServer is what a page of sessions needs to know of one session's
// server: the cached server (nil if unplaced or gone) and its link state.
type pageServer struct {
	srv  *Server
	link linkStatus
}

// lookupPage appends to out the server and link state of each of list's
// sessions, all read under one read lock at one clock reading; a server is
// looked at once however many of the sessions it runs. seen is scratch
// space, cleared by the caller.
func (c *serverCache) lookupPage(list []Session, timeout, grace time.Duration, now time.Time, seen map[*Server]linkStatus, out []pageServer) []pageServer {
	c.mu.RLock()
	defer c.mu.RUnlock()
	for i := range list {
		id := list[i].ServerID
		if id == "" {
			out = append(out, pageServer{link: linkLost})
			continue
		}
		srv := c.byID[id]
		if srv == nil {
			out = append(out, pageServer{link: linkLost})
			continue
		}
		link, ok := seen[srv]
		if !ok {
			link, _ = c.serverLinkLocked(srv, timeout, grace, now)
			seen[srv] = link
		}
		out = append(out, pageServer{srv: srv, link: link})
	}
	return out
}
