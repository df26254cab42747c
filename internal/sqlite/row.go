package sqlite

import (
	"cmp"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
	"unique"

	"github.com/berth-dev/berth/internal/broker"
)

// handle interns a string: rows keep a pointer-sized handle to one shared
// copy of the values that many sessions have (owners, server IDs, states),
// and the copy goes away with the last handle.
type handle = unique.Handle[string]

func intern(s string) handle {
	if h, ok := common[s]; ok {
		return h
	}
	return interned.get(s)
}

// internCache remembers the handles of recently interned strings: for a
// value it already has, unique.Make costs microseconds (it makes a weak
// pointer strong), a map lookup a fraction of that. It forgets everything
// when full, so it keeps no value alive for long after the rows that had it.
type internCache struct {
	mu sync.Mutex
	m  map[string]handle
}

const internCacheSize = 1 << 15

var interned = internCache{m: make(map[string]handle)}

func (c *internCache) get(s string) handle {
	c.mu.Lock()
	defer c.mu.Unlock()
	if h, ok := c.m[s]; ok {
		return h
	}
	if len(c.m) >= internCacheSize {
		clear(c.m)
	}
	h := unique.Make(s)
	c.m[h.Value()] = h // the key shares the canonical copy
	return h
}

// common holds the handles of the values most rows have (read without a lock).
var common = func() map[string]handle {
	m := make(map[string]handle)
	for _, s := range []string{"", broker.TypeVirtual, broker.TypeConsole, broker.StateCreating, broker.StateReady,
		broker.StateDeleting, broker.StateDeleted, broker.StateUnknown, broker.SubstatePlacing,
		broker.SubstatePendingPreparation} {
		m[s] = unique.Make(s)
	}
	return m
}()

// row is one version of a session as the database holds it (what
// scanSession returns), in 176 bytes: its fields (rowData) and the slot for
// its API encoding (memo). A row is never changed but for dead: a new
// version is a new row, with an empty memo.
type row struct {
	rowData
	memo broker.SessionMemo
}

// rowData is a row's fields: times are unix milliseconds (0: zero time),
// columns with few distinct values are interned, and the fields most
// sessions leave zero live in more. Strings that may be unique to a session
// (ID, name, state reason) are not interned: unique.Make is slow and costly
// for those.
type rowData struct {
	seq                   int64
	id, name, stateReason string

	owner, serverID, typ, state, substate, storageRoot handle

	maxConcurrentClients, numConnections             int64
	creation, lastDisconnection, updated, enqueuedAt int64
	enqueued                                         bool
	// dead marks a row that is no longer its session's (deleted or replaced);
	// the indexes skip it until they compact. Changed only with mu held.
	dead bool
	more *rowMore // nil when all its fields are zero
}

// rowMore holds the fields of a row that are usually zero.
type rowMore struct {
	attempts int
	excluded []string // nil when empty
	spec     broker.SessionSpec
	// The lifetime policies' fields (unix ms; 0: none), set on the READY
	// sessions of a broker with policies.
	lastInput, dueAt int64
	life             broker.SessionLife
}

// newRow makes a row of ss with Seq seq and ID id, but for more.
func newRow(seq int64, id string, ss *broker.Session) *row {
	return &row{rowData: rowData{
		seq: seq, id: id, name: ss.Name,
		owner: intern(ss.Owner), serverID: intern(ss.ServerID), typ: intern(ss.Type), state: intern(ss.State),
		substate: intern(ss.Substate), stateReason: ss.StateReason, storageRoot: intern(ss.StorageRoot),
		maxConcurrentClients: ss.MaxConcurrentClients, numConnections: ss.NumOfConnections,
		creation: toMillis(ss.CreationTime), lastDisconnection: toMillis(ss.LastDisconnectionTime),
		updated: toMillis(ss.UpdatedAt), enqueuedAt: toMillis(ss.EnqueuedAt), enqueued: ss.Enqueued,
	}}
}

// setMore sets r.more to m, or leaves it nil if m is zero; specZero tells
// whether m.spec is.
func (r *row) setMore(m rowMore, specZero bool) {
	if m.attempts != 0 || len(m.excluded) > 0 || !specZero || m.lastInput != 0 || m.dueAt != 0 || !m.life.IsZero() {
		r.more = &m
	}
}

// scannedRow makes a row of a session scanSession returned; the row takes
// over its slices. strs, if not nil, shares equal names and reasons among
// rows.
func scannedRow(ss *broker.Session, strs map[string]string) *row {
	for _, p := range []*string{&ss.Name, &ss.StateReason} {
		if strs == nil || *p == "" {
			continue
		}
		if v, ok := strs[*p]; ok {
			*p = v
		} else {
			strs[*p] = *p
		}
	}
	r := newRow(ss.Seq, ss.ID, ss)
	m := rowMore{attempts: ss.Attempts, spec: ss.Spec, lastInput: toMillis(ss.LastInputTime), dueAt: toMillis(ss.DueAt), life: ss.Life}
	if len(ss.Excluded) > 0 {
		m.excluded = ss.Excluded
	}
	r.setMore(m, reflect.ValueOf(ss.Spec).IsZero())
	return r
}

// writtenRow makes the row that scanSession would return once ss has been
// written with Seq seq and ID id, its Excluded and Spec stored as the JSON
// excluded and spec (see encodeSession). It copies what it keeps of ss's
// slices.
func writtenRow(seq int64, id string, ss *broker.Session, excluded, spec string) (*row, error) {
	r := newRow(seq, id, ss)
	m := rowMore{attempts: ss.Attempts, lastInput: toMillis(ss.LastInputTime), dueAt: toMillis(ss.DueAt),
		life: lifeCopy(&ss.Life)}
	// json.Marshal writes invalid UTF-8 as U+FFFD (escaped as \ufffd before
	// Go 1.27, raw since), which does not decode back to the original;
	// without one the JSON decodes to an equal value.
	switch {
	case len(excluded) <= 2: // "[]"
	case hasReplacement(excluded):
		if err := json.Unmarshal([]byte(excluded), &m.excluded); err != nil {
			return nil, fmt.Errorf("decode excluded: %w", err)
		}
	default:
		m.excluded = slices.Clone(ss.Excluded)
	}
	switch {
	case len(spec) <= 2: // "{}"
	case hasReplacement(spec):
		if err := json.Unmarshal([]byte(spec), &m.spec); err != nil {
			return nil, fmt.Errorf("decode spec: %w", err)
		}
	default:
		m.spec = ss.Spec
		m.spec.AutorunFileArguments = nil
		if len(ss.Spec.AutorunFileArguments) > 0 {
			m.spec.AutorunFileArguments = slices.Clone(ss.Spec.AutorunFileArguments)
		}
		m.spec.Groups = slices.Clone(ss.Spec.Groups)
		if ss.Spec.TemplateLimits != nil {
			l := *ss.Spec.TemplateLimits
			m.spec.TemplateLimits = &l
		}
	}
	r.setMore(m, len(spec) <= 2)
	return r, nil
}

// lifeCopy returns a copy of l with its own slices, its times in UTC as
// the store gives them back.
func lifeCopy(l *broker.SessionLife) broker.SessionLife {
	c := *l
	c.LifetimeWarned = slices.Clone(l.LifetimeWarned)
	c.IdleWarned = slices.Clone(l.IdleWarned)
	for _, t := range []*time.Time{&c.LifetimeWarnedFor, &c.IdleWarnedFor, &c.IdleActedFor, &c.RetryAt} {
		if !t.IsZero() {
			*t = t.UTC()
		}
	}
	return c
}

// hasReplacement reports whether JSON text holds U+FFFD, escaped or not:
// where json.Marshal put it for invalid UTF-8.
func hasReplacement(js string) bool {
	return strings.Contains(js, `\ufffd`) || strings.ContainsRune(js, utf8.RuneError)
}

// fill sets ss to the session r holds, with its own copies of the slices,
// which it takes from strs (see take); ss must be zero (assigning field by
// field is cheaper than a struct copy while the GC runs).
func (r *row) fill(ss *broker.Session, strs *[]string) {
	ss.Seq, ss.ID, ss.Name = r.seq, r.id, r.name
	ss.Owner, ss.ServerID, ss.Type = r.owner.Value(), r.serverID.Value(), r.typ.Value()
	ss.State, ss.Substate, ss.StateReason = r.state.Value(), r.substate.Value(), r.stateReason
	ss.MaxConcurrentClients, ss.StorageRoot = r.maxConcurrentClients, r.storageRoot.Value()
	ss.CreationTime, ss.LastDisconnectionTime = fromMillis(r.creation), fromMillis(r.lastDisconnection)
	ss.NumOfConnections, ss.UpdatedAt = r.numConnections, fromMillis(r.updated)
	ss.Enqueued, ss.EnqueuedAt = r.enqueued, fromMillis(r.enqueuedAt)
	m := r.more
	if m == nil {
		return
	}
	ss.Attempts, ss.Spec = m.attempts, m.spec
	ss.LastInputTime, ss.DueAt = fromMillis(m.lastInput), fromMillis(m.dueAt)
	if !m.life.IsZero() {
		ss.Life = lifeCopy(&m.life)
	}
	if len(m.excluded) > 0 {
		ss.Excluded = take(strs, m.excluded)
	}
	if len(m.spec.AutorunFileArguments) > 0 {
		ss.Spec.AutorunFileArguments = take(strs, m.spec.AutorunFileArguments)
	}
	if len(m.spec.Groups) > 0 {
		ss.Spec.Groups = take(strs, m.spec.Groups)
	}
	if m.spec.TemplateLimits != nil {
		l := *m.spec.TemplateLimits
		ss.Spec.TemplateLimits = &l
	}
}

// take returns a copy of src, appended to *strs if it has room (so that one
// allocation serves a page of sessions) and capped so that appending to the
// copy reallocates it rather than overwrite the next.
func take(strs *[]string, src []string) []string {
	b := *strs
	if cap(b)-len(b) < len(src) {
		return slices.Clone(src)
	}
	i := len(b)
	b = append(b, src...)
	*strs = b
	return b[i:len(b):len(b)]
}

// strings returns how many strings fill copies for r.
func (r *row) strings() int {
	if r.more == nil {
		return 0
	}
	return len(r.more.excluded) + len(r.more.spec.AutorunFileArguments) + len(r.more.spec.Groups)
}

// seqList is an index: rows sorted by Seq, dead ones among them.
type seqList struct {
	key  string // the owner or server ID its rows share
	rows []*row
	dead int
	// active counts the live rows that are not DELETED; kept for the indexes
	// of byServer only, for CountSessions.
	active activeCounts
}

// activeCounts are broker.Counts kept up to date.
type activeCounts struct {
	virtual, console int
	byOwner          []ownerCount // few per server: a slice is smaller than a map
}

type ownerCount struct {
	owner handle
	n     int
}

var (
	typeVirtual  = unique.Make(broker.TypeVirtual)
	typeConsole  = unique.Make(broker.TypeConsole)
	stateDeleted = unique.Make(broker.StateDeleted)
)

// count adds d (1 or -1) for r, if r is not DELETED.
func (c *activeCounts) count(r *row, d int) {
	if r.state == stateDeleted {
		return
	}
	switch r.typ {
	case typeVirtual:
		c.virtual += d
	case typeConsole:
		c.console += d
	}
	i := slices.IndexFunc(c.byOwner, func(oc ownerCount) bool { return oc.owner == r.owner })
	switch {
	case i < 0 && d > 0:
		c.byOwner = append(c.byOwner, ownerCount{r.owner, d})
	case i < 0:
	case c.byOwner[i].n+d > 0:
		c.byOwner[i].n += d
	default:
		c.byOwner = slices.Delete(c.byOwner, i, i+1)
	}
}

// counts returns c as broker.Counts.
func (c *activeCounts) counts() broker.Counts {
	out := broker.Counts{Virtual: c.virtual, Console: c.console, ByOwner: make(map[string]int, len(c.byOwner))}
	for _, oc := range c.byOwner {
		out.ByOwner[oc.owner.Value()] = oc.n
	}
	return out
}

func (l *seqList) live() int { return len(l.rows) - l.dead }

// search returns the index of the row with Seq seq, or where it would go.
func (l *seqList) search(seq int64) (int, bool) {
	return slices.BinarySearchFunc(l.rows, seq, func(r *row, seq int64) int { return cmp.Compare(r.seq, seq) })
}

// after returns the index of the first row with Seq > seq.
func (l *seqList) after(seq int64) int {
	return sort.Search(len(l.rows), func(i int) bool { return l.rows[i].seq > seq })
}

// add inserts r, which is not in l; it takes the place of a dead row with its
// Seq (the session left l and comes back).
func (l *seqList) add(r *row) {
	if n := len(l.rows); n == 0 || l.rows[n-1].seq < r.seq {
		l.rows = append(l.rows, r)
		return
	}
	i, found := l.search(r.seq)
	if found {
		if l.rows[i].dead {
			l.dead--
		}
		l.rows[i] = r
		return
	}
	l.rows = slices.Insert(l.rows, i, r)
}

// replace puts r in the place of the live row with its Seq.
func (l *seqList) replace(r *row) {
	if i, found := l.search(r.seq); found {
		l.rows[i] = r
		return
	}
	l.add(r) // not reached while the indexes agree
}

// drop counts old, which is marked dead, as dead in l and compacts l when
// half its rows are dead.
func (l *seqList) drop(old *row) {
	if i, found := l.search(old.seq); !found || l.rows[i] != old {
		return // not reached while the indexes agree
	}
	l.dead++
	if l.dead >= 32 && 2*l.dead >= len(l.rows) {
		l.compact()
	}
}

func (l *seqList) compact() {
	n := 0
	for _, r := range l.rows {
		if !r.dead {
			l.rows[n] = r
			n++
		}
	}
	clear(l.rows[n:])
	l.rows, l.dead = l.rows[:n], 0
	if cap(l.rows) > 4*n+64 {
		l.rows = slices.Clip(slices.Clone(l.rows))
	}
}

// listFor returns the index of key in idx, creating it.
func listFor(idx map[string]*seqList, key string) *seqList {
	l := idx[key]
	if l == nil {
		l = &seqList{key: key}
		idx[key] = l
	}
	return l
}

// dropFrom drops old from the index of key in idx, deleting an index left
// without live rows. It returns the index, nil if there was none.
func dropFrom(idx map[string]*seqList, key string, old *row) *seqList {
	l := idx[key]
	if l == nil {
		return nil
	}
	l.drop(old)
	if l.live() == 0 {
		delete(idx, key)
	}
	return l
}
