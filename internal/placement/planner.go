package placement

import (
	"cmp"
	"math"
	"slices"
	"strings"

	"github.com/berth-dev/berth/internal/requirements"
)

// planner holds the per-call state of Place: a compact copy of the numbers
// it reads in the hot path, updated as the batch assigns sessions. It never
// writes to the caller's hosts.
type planner struct {
	hosts []Host

	total   []int32   // Virtual + Console, including this batch
	virtual []int32   // Virtual, including this batch
	console []int32   // Console, including this batch
	limits  []Limits  // the capacity limits, for Fits
	load    []float64 // Load, NaN as +Inf
	linux   []bool    // OSFamily is linux
	gl      []bool    // GLCapable
	idHash  []uint64  // ring position of the host ID, see ringHash

	// order lists all hosts by (load, idHash, index); built on first use.
	order []int32

	// added counts the sessions this batch placed per owner and host, only
	// for hosts with a per-user limit.
	added map[ownerHost]int32

	matches map[*requirements.Expr][]bool
	classes map[classKey]*class

	// Exclusion support, built on first use: the index of the first host
	// with each ID, the next host with the same ID (nil while IDs are
	// unique), and a mark per host for the current request.
	byID     map[string]int32
	sameID   []int32
	excluded []bool

	drops   []int32 // scratch for pick
	scratch []int32 // scratch for class
}

// ownerHost keys per-owner session counts on one host.
type ownerHost struct {
	owner string
	host  int32
}

func newPlanner(hosts []Host) *planner {
	n := len(hosts)
	p := &planner{
		hosts:   hosts,
		total:   make([]int32, n),
		virtual: make([]int32, n),
		console: make([]int32, n),
		limits:  make([]Limits, n),
		load:    make([]float64, n),
		linux:   make([]bool, n),
		gl:      make([]bool, n),
		idHash:  make([]uint64, n),
		matches: make(map[*requirements.Expr][]bool),
		classes: make(map[classKey]*class),
	}
	for i := range hosts {
		h := &hosts[i]
		p.virtual[i] = clamp(h.Virtual)
		p.console[i] = clamp(h.Console)
		p.total[i] = clamp(h.Virtual + h.Console)
		p.limits[i] = h.limits()
		p.load[i] = h.Load
		if math.IsNaN(h.Load) {
			p.load[i] = math.Inf(1)
		}
		p.linux[i] = strings.EqualFold(h.OSFamily, "linux")
		p.gl[i] = h.GLCapable
		p.idHash[i] = ringHash(h.ID)
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

// limits returns the host's capacity limits.
func (h *Host) limits() Limits {
	return Limits{MaxVirtual: h.MaxVirtualSessions, MaxPerUser: h.MaxSessionsPerUser}
}

// place decides one request and records the assignment.
func (p *planner) place(r *Request) Decision {
	a := AskOf(r.Owner, r.Type)
	cl := p.class(classKey{expr: r.Requirements, console: a.Console, gl: r.GL})
	if len(r.Exclude) > 0 {
		p.markExcluded(r.Exclude, true)
		defer p.markExcluded(r.Exclude, false)
	}
	i := p.pick(cl, a)
	if i < 0 {
		return Decision{Err: p.explain(r, a, cl)}
	}
	p.assign(i, a)
	return Decision{HostID: p.hosts[i].ID}
}

// verdict is what the dynamic filters say about a host in a bucket.
type verdict uint8

const (
	feasible verdict = iota
	stale            // the host's total moved past its bucket
	gone             // full (VIRTUAL) or running a console (CONSOLE) until the batch ends
	skip             // excluded or at the per-user limit, for this request only
)

// check applies the dynamic filters to host i, found in the bucket for total t.
func (p *planner) check(i, t int32, a Ask) verdict {
	switch {
	case p.total[i] != t:
		return stale
	case p.full(i, a.Console):
		return gone
	case p.excluded != nil && p.excluded[i]:
		return skip
	}
	if l := p.limits[i]; refuse(l, p.counts(i, l, a.Owner), a) != 0 {
		return skip // the owner's limit, for this request only
	}
	return feasible
}

// counts returns the counts of host i for the capacity rule (Fits) with
// limits l, including the sessions this batch placed. Owned, the owner's
// sessions, costs a map lookup: it is counted only where Fits reads it,
// on a host with a per-user limit.
func (p *planner) counts(i int32, l Limits, owner string) Counts {
	c := Counts{Virtual: int(p.virtual[i]), Console: int(p.console[i])}
	if l.MaxPerUser > 0 {
		c.Owned = int(p.ownerSessions(i, owner))
	}
	return c
}

// full reports whether host i has no room for a session of the type,
// whoever asks: the capacity rule refuses it to an owner with no session
// on the host. Counts only grow within a batch, so a full host stays full
// until the batch ends.
func (p *planner) full(i int32, console bool) bool {
	c := Counts{Virtual: int(p.virtual[i]), Console: int(p.console[i])}
	return refuse(p.limits[i], c, Ask{Console: console}) != 0
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
func (p *planner) assign(i int32, a Ask) {
	p.total[i]++
	if a.Console {
		p.console[i]++
	} else {
		p.virtual[i]++
	}
	if p.limits[i].MaxPerUser > 0 { // counts reads the owner's sessions only then
		if p.added == nil {
			p.added = make(map[ownerHost]int32)
		}
		p.added[ownerHost{a.Owner, i}]++
	}
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

// staticOrder returns all hosts sorted by (load, idHash, index), the order
// in which ties on the session count are broken.
func (p *planner) staticOrder() []int32 {
	if p.order != nil {
		return p.order
	}
	type key struct {
		load float64
		hash uint64
		i    int32
	}
	keys := make([]key, len(p.hosts))
	for i := range keys {
		keys[i] = key{p.load[i], p.idHash[i], int32(i)}
	}
	slices.SortFunc(keys, func(a, b key) int {
		switch {
		case a.load != b.load:
			return cmp.Compare(a.load, b.load)
		case a.hash != b.hash:
			return cmp.Compare(a.hash, b.hash)
		}
		return cmp.Compare(a.i, b.i)
	})
	p.order = make([]int32, len(keys))
	for r, k := range keys {
		p.order[r] = k.i
	}
	return p.order
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
	var last map[string]int32 // last host seen with a duplicate ID
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
			last = make(map[string]int32)
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
// filter); the dynamic filters are counted over the class's hosts.
func (p *planner) explain(r *Request, a Ask, cl *class) *NoHostError {
	e := &NoHostError{
		Total:        len(p.hosts),
		Owner:        r.Owner,
		Requirements: cl.requirements,
		OS:           cl.os,
		GL:           cl.gl,
	}
	if len(r.Exclude) > 0 {
		m := p.match(r.Requirements)
		for i, x := range p.excluded {
			if !x {
				continue
			}
			e.Excluded++
			switch p.reject(int32(i), m, cl.key) {
			case byRequirements:
				e.Requirements--
			case byOS:
				e.OS--
			case byGL:
				e.GL--
			}
		}
	}
	for _, i := range cl.hosts {
		if p.excluded == nil || !p.excluded[i] { // excluded: counted above
			l := p.limits[i]
			e.refused(refuse(l, p.counts(i, l, a.Owner), a))
		}
	}
	return e
}

// ringHash places a host ID or an owner on the tie-breaking ring:
// FNV-1a, then the splitmix64 finalizer so that similar names spread out.
func ringHash(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	h ^= h >> 31
	return h
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
	if s.Properties != nil {
		if v, ok := s.Properties.Property(path); ok {
			return v, true
		}
	}
	switch {
	case path == "Id" && s.ID != "":
		return s.ID, true
	case path == "Host.Os.Family" && s.OSFamily != "":
		return s.OSFamily, true
	}
	return "", false
}
