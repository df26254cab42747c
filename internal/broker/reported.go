package broker

import (
	"context"
	"slices"
)

// ReportedNames returns the names by which the server that agentClientID
// registered reported itself in its last host report: its host name, its
// DNS name, its IP address and the addresses of its endpoints, without
// duplicates. These are the only names the agent's web gateway may have a
// certificate for. The server is read from the store, so a report made
// through another broker of a cluster counts. With serverID empty (agents
// of releases that did not name their server) it takes every server of the
// cache that the client registered. It returns ErrNotFound when the client
// has no such server.
func (s *Service) ReportedNames(ctx context.Context, agentClientID, serverID string) ([]string, error) {
	if agentClientID == "" {
		return nil, ErrNotFound
	}
	var servers []*Server
	if serverID != "" {
		srv, err := s.store.GetServer(ctx, serverID)
		if err != nil {
			return nil, err
		}
		servers = append(servers, srv)
	} else {
		servers = s.servers.all()
	}
	var names []string
	add := func(n string) {
		if n != "" && !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	found := false
	for _, srv := range servers {
		if srv.AgentClientID != agentClientID {
			continue
		}
		found = true
		add(srv.Info.Hostname)
		add(srv.Info.DefaultDNSName)
		add(srv.Info.IP)
		for _, ep := range srv.Info.Endpoints {
			add(ep.IPAddress)
		}
	}
	if !found {
		return nil, ErrNotFound
	}
	return names, nil
}
