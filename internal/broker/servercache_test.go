package broker

import (
	"context"
	"slices"
	"testing"
	"time"
)

// syncStore is the part of a shared store that serverCache.sync reads.
type syncStore struct {
	Store // not called
	rows  map[string]*Server
	// during runs inside ServerStamps, after the stamps are taken.
	during func()
	// dead names the brokers whose heartbeat is stale; the others are live.
	dead map[string]bool
	// cleared records ClearServerLinks calls.
	cleared []map[string]time.Time
}

func (f *syncStore) ClearServerLinks(_ context.Context, broker string, links map[string]time.Time) error {
	f.cleared = append(f.cleared, links)
	for id, t := range links {
		if s, ok := f.rows[id]; ok && s.BrokerID == broker && !s.LastSeen.After(t) {
			s.BrokerID = ""
		}
	}
	return nil
}

func (f *syncStore) ServerStamps(context.Context) ([]ServerStamp, error) {
	var out []ServerStamp
	for _, s := range f.rows {
		out = append(out, ServerStamp{ID: s.ID, Version: s.Version, LastSeen: s.LastSeen, BrokerID: s.BrokerID,
			HolderLive: s.BrokerID != "" && !f.dead[s.BrokerID]})
	}
	if f.during != nil {
		f.during()
	}
	return out, nil
}

func (f *syncStore) ListServers(_ context.Context, flt ServerFilter) ([]*Server, error) {
	var out []*Server
	for _, id := range flt.IDs {
		if s, ok := f.rows[id]; ok {
			cp := *s
			out = append(out, &cp)
		}
	}
	return out, nil
}

func (c *serverCache) ids() []string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return slices.Clone(c.order)
}

func TestServerCache_PutKeepsSeqOrder(t *testing.T) {
	var c serverCache
	if err := c.load(t.Context(), &syncStore{}); err != nil {
		t.Fatal(err)
	}
	for _, seq := range []int64{5, 1, 9, 3, 7} {
		c.put(&Server{ID: string(rune('a' + seq)), Seq: seq})
	}
	// Deleted and registered again: a new, higher Seq.
	c.put(&Server{ID: string(rune('a' + 1)), Seq: 10})
	want := []string{"d", "f", "h", "j", "b"}
	if got := c.ids(); !slices.Equal(got, want) {
		t.Fatalf("order %v, want %v", got, want)
	}
}

func TestServerCache_Sync(t *testing.T) {
	t0 := time.Unix(1000, 0)
	st := &syncStore{rows: map[string]*Server{
		"a": {ID: "a", Seq: 1, Version: 1, BrokerID: "b1", LastSeen: t0, Info: ServerInfo{Hostname: "a1"}},
		"b": {ID: "b", Seq: 2, Version: 1, BrokerID: "b2", LastSeen: t0},
		"c": {ID: "c", Seq: 3, Version: 1, BrokerID: "b2", LastSeen: t0},
	}}
	var c serverCache
	if err := c.load(t.Context(), &syncStore{}); err != nil {
		t.Fatal(err)
	}
	if err := c.sync(t.Context(), st, st, "b1"); err != nil {
		t.Fatal(err)
	}
	if got := c.ids(); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Fatalf("after the first sync: %v", got)
	}
	a := c.get("a")

	// b1 saw a's link close; then a's agent reconnected to b2.
	c.down("a", t0.Add(time.Second))
	t1 := t0.Add(2 * time.Second)
	st.rows["a"].BrokerID, st.rows["a"].LastSeen = "b2", t1
	// b's info changed (new version), c was deleted, d registered elsewhere.
	st.rows["b"].Version, st.rows["b"].Info.Hostname = 2, "b-new"
	delete(st.rows, "c")
	st.rows["d"] = &Server{ID: "d", Seq: 4, Version: 1, BrokerID: "b3", LastSeen: t1}
	// e registers on this broker while the sync runs: not in the stamps, but kept.
	st.during = func() { c.put(&Server{ID: "e", Seq: 5}) }
	if err := c.sync(t.Context(), st, st, "b1"); err != nil {
		t.Fatal(err)
	}
	if got := c.ids(); !slices.Equal(got, []string{"a", "b", "d", "e"}) {
		t.Fatalf("after the second sync: %v", got)
	}
	if got := c.get("a"); got.BrokerID != "b2" || !got.LastSeen.Equal(t1) || got.Info.Hostname != "a1" || got == a {
		t.Fatalf("a is %+v: want the stamp's broker and time, a new value, the same info", got)
	}
	if !c.unreachableSince("a", 30*time.Second, t1.Add(time.Second)).IsZero() {
		t.Fatal("a counts as unreachable although b2 heard from it after its link to b1 closed")
	}
	if got := c.get("b"); got.Info.Hostname != "b-new" {
		t.Fatalf("b was not read again after its version changed: %+v", got.Info)
	}
	if c.get("c") != nil {
		t.Fatal("c is still cached after it was deleted")
	}
	if got := c.get("d"); got == nil || got.BrokerID != "b3" {
		t.Fatalf("d: %+v", got)
	}
}

// TestServerCache_LinkMarks: after every change of the cache or of its
// links, each cached server's link mark says what links.local says, and
// serverLinkLocked answers linkUp for each server whose link this broker
// holds, so that DescribeSessions pages, which read the marks, agree with
// the lookups they replace.
func TestServerCache_LinkMarks(t *testing.T) {
	var c serverCache
	if err := c.load(t.Context(), &loadStore{}); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	locked := func(fn func()) func() {
		return func() { c.mu.Lock(); defer c.mu.Unlock(); fn() }
	}
	steps := []struct {
		name string
		do   func()
	}{
		{"servers cached", func() { c.put(&Server{ID: "a", Seq: 1}); c.put(&Server{ID: "b", Seq: 2}) }},
		{"a links", locked(func() { c.linkUpLocked("a") })},
		{"a reports (a new version)", func() { c.put(&Server{ID: "a", Seq: 1, Open: true}) }},
		{"c links before it is cached", locked(func() { c.linkUpLocked("c") })},
		{"c cached", func() { c.put(&Server{ID: "c", Seq: 3}) }},
		{"a's link closes", locked(func() { c.linkDownLocked("a", now) })},
		{"b links", locked(func() { c.linkUpLocked("b") })},
		{"b deleted", func() { c.remove("b") }},
		{"b registered again", func() { c.put(&Server{ID: "b", Seq: 4}) }},
		{"a links again", locked(func() { c.linkUpLocked("a") })},
		{"reload from the store", func() {
			st := &loadStore{rows: []*Server{{ID: "a", Seq: 1}, {ID: "b", Seq: 4}, {ID: "c", Seq: 3}, {ID: "d", Seq: 5}}}
			if err := c.load(t.Context(), st); err != nil {
				t.Fatal(err)
			}
		}},
		{"c forgotten", locked(func() { c.forgetLinkLocked("c") })},
		{"d links", locked(func() { c.linkUpLocked("d") })},
	}
	for _, st := range steps {
		st.do()
		c.mu.RLock()
		for id, s := range c.byID {
			_, local := c.links.local[id]
			if s.link == nil || s.link.up != local {
				t.Errorf("after %q: server %s: mark %+v, local %v", st.name, id, s.link, local)
			}
			if got, _ := c.serverLinkLocked(s, time.Minute, time.Minute, now); local && got != linkUp {
				t.Errorf("after %q: server %s linked here, link status %v", st.name, id, got)
			}
		}
		c.mu.RUnlock()
	}
}
