// Package placement decides which desktop server runs each new session.
//
// It is pure logic over a read-only snapshot of the fleet: the caller builds a
// []Host from its store, calls Place with a batch of requests, and commits the
// decisions in a transaction that re-checks capacity.
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
// Among the remaining hosts it picks the one with the fewest sessions
// (including those assigned earlier in the same batch), then the lowest load
// average, then the lowest stable hash of (host ID, owner), so that equal
// hosts are not always filled in ID order. When no host remains, the decision
// carries a *NoHostError that counts how many hosts each filter rejected.
package placement

import (
	"fmt"
	"math"
	"strings"

	"github.com/berth-dev/berth/internal/requirements"
)

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

// NoHostError reports that no host could take a request. Total is the number
// of hosts considered; each other count is the number of hosts that the
// corresponding filter rejected (a host counts under the first filter it
// fails), so the counts add up to Total.
type NoHostError struct {
	Total, Excluded, Requirements, OS, GL, Full, PerUser, Console int
	// Owner is the owner of the request, named in the per-user message.
	Owner string
}

// Error says which condition no host met, for example
// `no DCV server found for the given criteria: of 12 servers, 3 do not match
// the requirements, 9 are full (max_virtual_sessions reached)`.
func (e *NoHostError) Error() string {
	const prefix = "no DCV server found for the given criteria: "
	if e.Total == 0 {
		return prefix + "0 servers available"
	}
	var b strings.Builder
	b.WriteString(prefix)
	fmt.Fprintf(&b, "of %d %s", e.Total, plural(e.Total, "server", "servers"))
	n := b.Len()
	add := func(count int, one, many string) {
		if count > 0 {
			fmt.Fprintf(&b, ", %d %s", count, plural(count, one, many))
		}
	}
	add(e.Excluded, "is excluded after failed attempts", "are excluded after failed attempts")
	add(e.Requirements, "does not match the requirements", "do not match the requirements")
	add(e.OS, "cannot run VIRTUAL sessions (not linux)", "cannot run VIRTUAL sessions (not linux)")
	add(e.GL, "does not support DCV GL", "do not support DCV GL")
	add(e.Full, "is full (max_virtual_sessions reached)", "are full (max_virtual_sessions reached)")
	perUser := fmt.Sprintf("at the per-user limit (max_concurrent_sessions_per_user reached for owner %q)", e.Owner)
	add(e.PerUser, "is "+perUser, "are "+perUser)
	add(e.Console, "already runs a console session", "already run a console session")
	if b.Len() == n {
		b.WriteString(", none is eligible")
	}
	return b.String()
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
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

// planner holds the per-call state of Place: a compact copy of the numbers
// it reads in the hot loop, updated as the batch assigns sessions.
type planner struct {
	hosts []Host

	total   []int32   // Virtual + Console, including this batch
	virtual []int32   // Virtual, including this batch
	console []int32   // Console, including this batch
	maxVirt []int32   // MaxVirtualSessions, 0 unlimited
	maxUser []int32   // MaxSessionsPerUser, 0 unlimited
	load    []float64 // Load, NaN as +Inf
	idHash  []uint64  // hash of ID, computed lazily; 0 is not yet computed

	// added counts the sessions this batch placed per owner and host, only
	// for hosts with a per-user limit.
	added map[ownerHost]int32

	matches map[*requirements.Expr][]bool
	classes map[classKey]*class

	// Exclusion support, built on first use: the index of the first host
	// with each ID, the next host with the same ID (nil when IDs are
	// unique), and a scratch mark per host for the current request.
	byID     map[string]int32
	sameID   []int32
	excluded []bool
}

// ownerHost keys per-owner session counts on one host.
type ownerHost struct {
	owner string
	host  int32
}

// classKey identifies requests that pass the same static filters.
type classKey struct {
	expr    *requirements.Expr
	console bool
	gl      bool
}

// class is the result of the static filters (requirements, OS, GL) for a
// classKey: the surviving hosts and how many each filter rejected.
type class struct {
	cands        []int32
	requirements int
	os           int
	gl           int
}

// rejection says which static filter rejected a host.
type rejection uint8

const (
	passed rejection = iota
	byRequirements
	byOS
	byGL
)

func newPlanner(hosts []Host) *planner {
	n := len(hosts)
	p := &planner{
		hosts:   hosts,
		total:   make([]int32, n),
		virtual: make([]int32, n),
		console: make([]int32, n),
		maxVirt: make([]int32, n),
		maxUser: make([]int32, n),
		load:    make([]float64, n),
		idHash:  make([]uint64, n),
		matches: make(map[*requirements.Expr][]bool),
		classes: make(map[classKey]*class),
	}
	for i := range hosts {
		h := &hosts[i]
		p.virtual[i] = clamp(h.Virtual)
		p.console[i] = clamp(h.Console)
		p.total[i] = clamp(h.Virtual + h.Console)
		p.maxVirt[i] = clamp(h.MaxVirtualSessions)
		p.maxUser[i] = clamp(h.MaxSessionsPerUser)
		p.load[i] = h.Load
		if math.IsNaN(h.Load) {
			p.load[i] = math.Inf(1)
		}
	}
	return p
}

// clamp converts a count to int32, mapping negatives to 0.
func clamp(v int) int32 {
	switch {
	case v < 0:
		return 0
	case v > math.MaxInt32:
		return math.MaxInt32
	}
	return int32(v)
}

// place decides one request and records the assignment.
func (p *planner) place(r *Request) Decision {
	console := strings.EqualFold(r.Type, TypeConsole)
	cl := p.class(classKey{expr: r.Requirements, console: console, gl: r.GL})
	if len(r.Exclude) > 0 {
		p.markExcluded(r.Exclude, true)
		defer p.markExcluded(r.Exclude, false)
	}
	ownerHash := hashString(r.Owner)

	// Scan the candidates for the best score, checking the dynamic filters
	// only for a host that would beat the best so far.
	best := int32(-1)
	var bestTotal int32
	var bestLoad float64
	var bestKey uint64
	haveKey := false
	for _, i := range cl.cands {
		t := p.total[i]
		if best >= 0 {
			if t > bestTotal {
				continue
			}
			if t == bestTotal {
				l := p.load[i]
				if l > bestLoad {
					continue
				}
				if l == bestLoad {
					if !haveKey {
						bestKey, haveKey = p.tieKey(best, ownerHash), true
					}
					k := p.tieKey(i, ownerHash)
					if k >= bestKey || !p.feasible(i, r.Owner, console) {
						continue
					}
					best, bestTotal, bestLoad, bestKey = i, t, l, k
					continue
				}
			}
		}
		if !p.feasible(i, r.Owner, console) {
			continue
		}
		best, bestTotal, bestLoad, haveKey = i, t, p.load[i], false
	}
	if best < 0 {
		return Decision{Err: p.explain(r, cl, console)}
	}
	p.assign(best, r.Owner, console)
	return Decision{HostID: p.hosts[best].ID}
}

// feasible applies the dynamic filters (excluded, full, per user, console).
func (p *planner) feasible(i int32, owner string, console bool) bool {
	if console {
		if p.console[i] > 0 {
			return false
		}
	} else if m := p.maxVirt[i]; m > 0 && p.virtual[i] >= m {
		return false
	}
	if p.excluded != nil && p.excluded[i] {
		return false
	}
	if m := p.maxUser[i]; m > 0 && p.ownerSessions(i, owner) >= m {
		return false
	}
	return true
}

// ownerSessions counts the owner's sessions on host i, including this batch.
func (p *planner) ownerSessions(i int32, owner string) int32 {
	n := clamp(p.hosts[i].ByOwner[owner])
	if p.added != nil {
		n += p.added[ownerHost{owner, i}]
	}
	return n
}

// assign records a session placed on host i.
func (p *planner) assign(i int32, owner string, console bool) {
	p.total[i]++
	if console {
		p.console[i]++
	} else {
		p.virtual[i]++
	}
	if p.maxUser[i] > 0 {
		if p.added == nil {
			p.added = make(map[ownerHost]int32)
		}
		p.added[ownerHost{owner, i}]++
	}
}

// class returns the static filter result for k, computing it on first use.
func (p *planner) class(k classKey) *class {
	if cl, ok := p.classes[k]; ok {
		return cl
	}
	m := p.match(k.expr)
	cl := &class{}
	for i := range p.hosts {
		switch p.reject(int32(i), m, k) {
		case byRequirements:
			cl.requirements++
		case byOS:
			cl.os++
		case byGL:
			cl.gl++
		default:
			cl.cands = append(cl.cands, int32(i))
		}
	}
	p.classes[k] = cl
	return cl
}

// reject applies the static filters to host i; m is the match result of the
// class's expression (nil when it has none).
func (p *planner) reject(i int32, m []bool, k classKey) rejection {
	h := &p.hosts[i]
	switch {
	case m != nil && !m[i]:
		return byRequirements
	case !k.console && !strings.EqualFold(h.OSFamily, "linux"):
		return byOS
	case k.gl && !h.GLCapable:
		return byGL
	}
	return passed
}

// match evaluates e against every host once per Place call; nil e is nil.
func (p *planner) match(e *requirements.Expr) []bool {
	if e == nil {
		return nil
	}
	if m, ok := p.matches[e]; ok {
		return m
	}
	m := make([]bool, len(p.hosts))
	for i := range p.hosts {
		m[i] = e.Match((*subject)(&p.hosts[i]))
	}
	p.matches[e] = m
	return m
}

// markExcluded sets or clears the exclusion mark of every host whose ID is
// in ids.
func (p *planner) markExcluded(ids []string, v bool) {
	if p.excluded == nil {
		p.indexIDs()
	}
	for _, id := range ids {
		i, ok := p.byID[id]
		for ok && i >= 0 {
			p.excluded[i] = v
			if p.sameID == nil {
				break
			}
			i = p.sameID[i]
		}
	}
}

// indexIDs builds the ID index used for exclusions.
func (p *planner) indexIDs() {
	n := len(p.hosts)
	p.byID = make(map[string]int32, n)
	p.excluded = make([]bool, n)
	last := make(map[string]int32) // only for duplicate IDs
	for i := range p.hosts {
		id := p.hosts[i].ID
		first, dup := p.byID[id]
		if !dup {
			p.byID[id] = int32(i)
			continue
		}
		if p.sameID == nil {
			p.sameID = make([]int32, n)
			for j := range p.sameID {
				p.sameID[j] = -1
			}
		}
		prev, ok := last[id]
		if !ok {
			prev = first
		}
		p.sameID[prev] = int32(i)
		last[id] = int32(i)
	}
}

// explain builds the error for a request that no host can take. The static
// counts come from the class, corrected for excluded hosts (the first
// filter); the dynamic filters are counted over the class's candidates.
func (p *planner) explain(r *Request, cl *class, console bool) *NoHostError {
	e := &NoHostError{
		Total:        len(p.hosts),
		Owner:        r.Owner,
		Requirements: cl.requirements,
		OS:           cl.os,
		GL:           cl.gl,
	}
	if len(r.Exclude) > 0 {
		k := classKey{expr: r.Requirements, console: console, gl: r.GL}
		m := p.match(r.Requirements)
		for i, x := range p.excluded {
			if !x {
				continue
			}
			e.Excluded++
			switch p.reject(int32(i), m, k) {
			case byRequirements:
				e.Requirements--
			case byOS:
				e.OS--
			case byGL:
				e.GL--
			}
		}
	}
	for _, i := range cl.cands {
		switch {
		case p.excluded != nil && p.excluded[i]:
			// Counted above.
		case !console && p.maxVirt[i] > 0 && p.virtual[i] >= p.maxVirt[i]:
			e.Full++
		case p.maxUser[i] > 0 && p.ownerSessions(i, r.Owner) >= p.maxUser[i]:
			e.PerUser++
		case console && p.console[i] > 0:
			e.Console++
		}
	}
	return e
}

// tieKey is the last tie-breaker: a stable hash of (host ID, owner).
func (p *planner) tieKey(i int32, ownerHash uint64) uint64 {
	h := p.idHash[i]
	if h == 0 {
		h = hashString(p.hosts[i].ID) | 1
		p.idHash[i] = h
	}
	return mix(h ^ ownerHash)
}

// hashString is 64-bit FNV-1a.
func hashString(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

// mix is the splitmix64 finalizer, so that nearby inputs spread out.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// subject adapts a Host to requirements.Subject without copying it.
type subject Host

var _ requirements.Subject = (*subject)(nil)

// Tag returns the host tag key.
func (s *subject) Tag(key string) (string, bool) {
	v, ok := s.Tags[key]
	return v, ok
}

// Property returns the host property at the canonical path, defaulting Id
// and Host.Os.Family to the Host fields.
func (s *subject) Property(path string) (string, bool) {
	if v, ok := s.Props[path]; ok {
		return v, true
	}
	switch {
	case path == "Id" && s.ID != "":
		return s.ID, true
	case path == "Host.Os.Family" && s.OSFamily != "":
		return s.OSFamily, true
	}
	return "", false
}
