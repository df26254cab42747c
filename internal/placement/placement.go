// Package placement decides which desktop server runs each new session.
//
// It is pure logic over a read-only snapshot of the fleet: the caller builds a
// []Host from its store, calls Place with a batch of requests, and commits the
// decisions in a transaction that re-checks capacity with Fits.
//
// For each request, Place filters the hosts, in this order:
//
//  1. excluded: the host already failed this request (Request.Exclude);
//  2. requirements: the Requirements expression does not match the host;
//  3. OS: a VIRTUAL session needs a linux host (Windows hosts run only
//     CONSOLE sessions);
//  4. GL: DCV GL was requested and the host is not GL capable;
//  5. full: for a VIRTUAL session, the host already runs MaxVirtualSessions
//     virtual sessions;
//  6. per user: the owner already has MaxSessionsPerUser sessions on the host;
//  7. console: for a CONSOLE session, the host already runs a console session.
//
// Filters 5 to 7 are the capacity rule, Fits, written once: the planner
// decides through it, and the stores apply it again, to the counts they
// read in the transaction that commits a placement.
//
// Among the remaining hosts it picks the one with the fewest sessions
// (including those assigned earlier in the same batch), then the lowest load
// average, then by a stable hash of (host ID, owner), so that equal hosts are
// not always filled in ID order: host IDs and owners are hashed onto a ring,
// and the owner gets the first tied host at or after its own position
// (wrapping around). Different owners thus start at different hosts, and the
// same snapshot and batch always give the same decisions. When no host
// remains, the decision carries a *NoHostError that counts how many hosts
// each filter rejected.
//
// Place evaluates each distinct requirements expression once per host, and
// keeps the candidates of each (expression, session type, GL) combination
// bucketed by session count, so that a request looks at a few hosts rather
// than the whole fleet.
package placement

import "github.com/berth-dev/berth/internal/requirements"

// Host is one desktop server in the snapshot given to Place.
type Host struct {
	ID string
	// Tags are the agent tags plus the system tags (dcv:os-family,
	// dcv:max-virtual-sessions, ...) that requirements match as tag:KEY.
	Tags map[string]string
	// Props are the server properties keyed by canonical requirements path
	// ("Id", "Host.Os.Family", ...) that requirements match as server:PATH.
	// When absent, "Id" defaults to ID and "Host.Os.Family" to OSFamily.
	Props map[string]string
	// Properties, when set, answers the property lookups that Props does
	// not hold (the broker's cached servers read them from their fields
	// instead of keeping a map per host).
	Properties Properties
	// OSFamily is "linux" or "windows" (compared case-insensitively).
	OSFamily string
	// MaxVirtualSessions caps the virtual sessions on the host; 0 is unlimited.
	MaxVirtualSessions int
	// MaxSessionsPerUser caps the active sessions, of any type, that one
	// owner may have on the host; 0 is unlimited.
	MaxSessionsPerUser int
	// GLCapable reports whether the host can run DCV GL sessions.
	GLCapable bool
	// Virtual and Console count the active sessions on the host now.
	Virtual, Console int
	// ByOwner counts the active sessions on the host now, per owner.
	ByOwner map[string]int
	// Load is the 1-minute load average; it only breaks ties.
	Load float64
}

// Properties looks up a host's server properties by canonical requirements
// path; an absent property returns false.
type Properties interface {
	Property(path string) (string, bool)
}

// Session types accepted in Request.Type.
const (
	TypeVirtual = "VIRTUAL"
	TypeConsole = "CONSOLE"
)

// Request asks for a host for one new session.
type Request struct {
	Owner string
	// Type is TypeVirtual or TypeConsole, compared case-insensitively; any
	// other value is treated as TypeVirtual.
	Type string
	// Requirements restricts the hosts; nil means no requirements.
	Requirements *requirements.Expr
	// GL is DcvGlEnabled: the session needs a GL-capable host.
	GL bool
	// Exclude lists the IDs of hosts that already failed this request.
	Exclude []string
}

// Decision is the outcome of one Request: exactly one of HostID and Err is set.
type Decision struct {
	HostID string
	Err    *NoHostError
}

// Place decides a batch. It treats hosts as a read-only snapshot: it never
// mutates them, but it counts the sessions it assigns earlier in the batch so
// a batch never overfills a host. Decisions are in request order.
//
// Each distinct Requirements expression (by pointer) is evaluated against
// each host at most once per call.
func Place(hosts []Host, reqs []Request) []Decision {
	p := newPlanner(hosts)
	out := make([]Decision, len(reqs))
	for i := range reqs {
		out[i] = p.place(&reqs[i])
	}
	return out
}
