package gateway

import (
	"slices"
)

// maxClientID bounds a page's clientId.
const maxClientID = 64

// clientID returns id if it is a valid clientId (1 to 64 of A-Z, a-z, 0-9,
// '-' and '_'), else "". The session page makes up one per page load and
// sends it with "websockify" and "session-info", so that session-info can
// leave the page's own connection out of the peers it lists. It is the
// client's word and decides nothing else.
func clientID(id string) string {
	if len(id) == 0 || len(id) > maxClientID {
		return ""
	}
	for _, c := range []byte(id) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return ""
		}
	}
	return id
}

// peers returns the users of a session's live connections, sorted and each
// once, leaving out the connections of the page with clientId self (none
// when self is empty). It reads the bridges the gateway keeps anyway
// (Server.conns), so a session-info request costs a walk of one session's
// connections.
func (s *Server) peers(id, self string) []string {
	s.mu.Lock()
	out := make([]string, 0, len(s.conns[id]))
	for b := range s.conns[id] {
		if self != "" && b.client == self {
			continue
		}
		out = append(out, b.user)
	}
	s.mu.Unlock()
	slices.Sort(out)
	return slices.Compact(out)
}
