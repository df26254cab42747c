package placement

import (
	"cmp"
	"math"
	"slices"
	"sort"

	"github.com/berth-dev/berth/internal/requirements"
)

// classKey identifies requests that pass the same static filters.
type classKey struct {
	expr    *requirements.Expr
	console bool
	gl      bool
}

// class holds, for the requests of one classKey, the hosts that pass the
// static filters (requirements, OS, GL) and an index that finds the best of
// them without scanning them all.
//
// The hosts are kept in static order, by (load, idHash, index); a host's
// position in that order is its rank. The ranks are partitioned into
// buckets by session count. A host whose count grew since it was filed is
// moved up lazily, when a search meets it, so an assignment costs nothing in
// the classes it was not made through; counts only grow within a batch, so a
// host is never filed above its count. Hosts that are full for the class's
// session type are dropped for the rest of the batch.
type class struct {
	key   classKey
	hosts []int32 // by rank

	// Hosts rejected by each static filter.
	requirements, os, gl int

	buckets []*bucket // by ascending total; pick removes the ones it empties
}

// bucket files the ranks of the hosts believed to have total sessions.
type bucket struct {
	total int32
	ranks []int32 // ascending
}

// rejection says which static filter rejected a host.
type rejection uint8

const (
	passed rejection = iota
	byRequirements
	byOS
	byGL
)

// reject applies the static filters to host i; m is the match result of the
// class's expression (nil when it has none).
func (p *planner) reject(i int32, m []bool, k classKey) rejection {
	switch {
	case m != nil && !m[i]:
		return byRequirements
	case !k.console && !p.linux[i]:
		return byOS
	case k.gl && !p.gl[i]:
		return byGL
	}
	return passed
}

// class returns the class of k, building it on first use.
func (p *planner) class(k classKey) *class {
	if cl, ok := p.classes[k]; ok {
		return cl
	}
	m := p.match(k.expr)
	order := p.staticOrder()
	cl := &class{key: k}
	if p.scratch == nil {
		p.scratch = make([]int32, 0, len(order))
	}
	pass := p.scratch[:0]
	for _, i := range order {
		switch p.reject(i, m, k) {
		case byRequirements:
			cl.requirements++
		case byOS:
			cl.os++
		case byGL:
			cl.gl++
		default:
			pass = append(pass, i)
		}
	}
	cl.hosts = slices.Clone(pass)
	p.fileAll(cl)
	p.classes[k] = cl
	return cl
}

// fileAll files every host of the class that is not full into the
// bucket of its total. All buckets share one backing array; each gets a
// capacity-limited window of it, so that growing a bucket later reallocates
// instead of overwriting its neighbour.
func (p *planner) fileAll(cl *class) {
	// Number the distinct totals in ascending order: directly when they
	// span a range comparable to the number of hosts (the usual case),
	// otherwise through a sorted list of the distinct values.
	lo, hi := int32(math.MaxInt32), int32(-1)
	for _, i := range cl.hosts {
		if !p.full(i, cl.key.console) {
			lo, hi = min(lo, p.total[i]), max(hi, p.total[i])
		}
	}
	if hi < 0 {
		return
	}
	var distinct []int32 // nil when slots are total-lo
	var index map[int32]int
	nslots := int(hi-lo) + 1
	if nslots > 2*len(cl.hosts)+64 {
		for _, i := range cl.hosts {
			if !p.full(i, cl.key.console) {
				distinct = append(distinct, p.total[i])
			}
		}
		slices.Sort(distinct)
		distinct = slices.Compact(distinct)
		index = make(map[int32]int, len(distinct))
		for s, t := range distinct {
			index[t] = s
		}
		nslots = len(distinct)
	}
	slot := func(t int32) int {
		if distinct == nil {
			return int(t - lo)
		}
		return index[t]
	}

	sizes := make([]int, nslots)
	n := 0
	for _, i := range cl.hosts {
		if !p.full(i, cl.key.console) {
			sizes[slot(p.total[i])]++
			n++
		}
	}
	used := 0
	for _, size := range sizes {
		if size > 0 {
			used++
		}
	}
	bySlot := make([]*bucket, nslots)
	store := make([]bucket, used)
	cl.buckets = make([]*bucket, 0, used)
	backing := make([]int32, n)
	off := 0
	for s, size := range sizes {
		if size == 0 {
			continue
		}
		t := lo + int32(s)
		if distinct != nil {
			t = distinct[s]
		}
		b := &store[len(cl.buckets)]
		*b = bucket{total: t, ranks: backing[off : off : off+size]}
		off += size
		bySlot[s] = b
		cl.buckets = append(cl.buckets, b)
	}
	for r, i := range cl.hosts {
		if !p.full(i, cl.key.console) {
			b := bySlot[slot(p.total[i])]
			b.ranks = append(b.ranks, int32(r))
		}
	}
}

// pick returns the best feasible host of the class for owner, or -1: the
// fewest sessions, then the lowest load, then the first host on the hash
// ring at or after the owner's position (see ringHash), then the lowest
// index. It moves stale hosts up and drops full ones as it meets them.
func (p *planner) pick(cl *class, a Ask) int32 {
	oh := ringHash(a.Owner)
	for bi := 0; bi < len(cl.buckets); {
		b := cl.buckets[bi]
		p.drops = p.drops[:0]
		host := p.search(cl, b, a, oh)
		if len(p.drops) > 0 {
			p.refile(cl, b)
		}
		if host >= 0 {
			return host
		}
		if len(b.ranks) == 0 {
			cl.buckets = slices.Delete(cl.buckets, bi, bi+1)
			continue
		}
		bi++
	}
	return -1
}

// search looks for the best feasible host in bucket b. It visits the runs of
// equal load in order and, within a run, starts at the owner's position on
// the ring and wraps around. Stale and full hosts it meets are appended to
// p.drops.
func (p *planner) search(cl *class, b *bucket, a Ask, oh uint64) int32 {
	ranks := b.ranks
	for j := 0; j < len(ranks); {
		lo, hi := p.run(cl, ranks[j])
		k := j + 1
		if hi-lo > 1 {
			k = j + sort.Search(len(ranks)-j, func(x int) bool { return ranks[j+x] >= hi })
		}
		start := j
		if k-j > 1 {
			s := lo + int32(sort.Search(int(hi-lo), func(x int) bool { return p.idHash[cl.hosts[lo+int32(x)]] >= oh }))
			start = j + sort.Search(k-j, func(x int) bool { return ranks[j+x] >= s })
		}
		for q := start; q < k; q++ {
			if host := p.visit(cl, b, ranks[q], a); host >= 0 {
				return host
			}
		}
		for q := j; q < start; q++ {
			if host := p.visit(cl, b, ranks[q], a); host >= 0 {
				return host
			}
		}
		j = k
	}
	return -1
}

// visit checks the host at rank r of bucket b and returns it if feasible.
func (p *planner) visit(cl *class, b *bucket, r int32, a Ask) int32 {
	i := cl.hosts[r]
	switch p.check(i, b.total, a) {
	case feasible:
		return i
	case stale, gone:
		p.drops = append(p.drops, r)
	}
	return -1
}

// run returns the rank range [lo, hi) of the hosts with the same load as
// the host at rank r.
func (p *planner) run(cl *class, r int32) (lo, hi int32) {
	load := p.load[cl.hosts[r]]
	n := int32(len(cl.hosts))
	lo, hi = r, r+1
	if lo > 0 && p.load[cl.hosts[lo-1]] == load {
		lo = int32(sort.Search(int(r), func(x int) bool { return p.load[cl.hosts[x]] >= load }))
	}
	if hi < n && p.load[cl.hosts[hi]] == load {
		hi = r + 1 + int32(sort.Search(int(n-r-1), func(x int) bool { return p.load[cl.hosts[r+1+int32(x)]] > load }))
	}
	return lo, hi
}

// refile removes the ranks in p.drops from bucket b and files the stale ones
// that are not full under their current total.
func (p *planner) refile(cl *class, b *bucket) {
	slices.Sort(p.drops)
	// Close the gaps left by the dropped ranks, moving each kept segment
	// once. Positions below prev may already be overwritten, so each
	// search looks only at ranks[prev:].
	ranks := b.ranks
	w, prev := -1, 0
	for _, r := range p.drops {
		pos, _ := slices.BinarySearch(ranks[prev:], r)
		pos += prev
		if w < 0 {
			w = pos
		} else {
			w += copy(ranks[w:], ranks[prev:pos])
		}
		prev = pos + 1
	}
	w += copy(ranks[w:], ranks[prev:])
	b.ranks = ranks[:w]
	for _, r := range p.drops {
		i := cl.hosts[r]
		if !p.full(i, cl.key.console) {
			cl.file(p.total[i], r)
		}
	}
}

// file adds rank r to the bucket for total, creating the bucket if needed.
func (cl *class) file(total, r int32) {
	bi, ok := slices.BinarySearchFunc(cl.buckets, total, func(b *bucket, t int32) int { return cmp.Compare(b.total, t) })
	if !ok {
		cl.buckets = slices.Insert(cl.buckets, bi, &bucket{total: total})
	}
	b := cl.buckets[bi]
	pos, _ := slices.BinarySearch(b.ranks, r)
	b.ranks = slices.Insert(b.ranks, pos, r)
}
