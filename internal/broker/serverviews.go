package broker

import "context"

// ViewServers is ViewServer for many servers at once: it appends the view of
// each of srvs to out, all computed at one clock reading against one reading
// of the session counts. DescribeSessions pages view up to 1,000 servers.
func (s *Service) ViewServers(ctx context.Context, srvs []*Server, out []*ServerView) []*ServerView {
	if len(srvs) == 0 {
		return out
	}
	now := s.Now()
	counts, err := s.servers.sessionCounts(ctx, s.store, countsMaxAge, now)
	if err != nil {
		s.log.Warn("count sessions for server view", "err", err)
	}
	for _, srv := range srvs {
		out = append(out, s.view(srv, counts, now))
	}
	return out
}
