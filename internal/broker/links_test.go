package broker

import (
	"context"
	"testing"
	"testing/synctest"
	"time"
)

// loadStore serves ListServers for serverCache.load.
type loadStore struct {
	Store // not called
	rows  []*Server
}

func (f *loadStore) ListServers(context.Context, ServerFilter) ([]*Server, error) {
	out := make([]*Server, len(f.rows))
	for i, s := range f.rows {
		cp := *s
		out[i] = &cp
	}
	return out, nil
}

// TestLinkStatus_AfterRestart: after a restart no server counts as linked
// until its agent relinks; those whose agents were in contact until the
// broker stopped are awaited (UNKNOWN) for the grace period, then lost; one
// already silent then is lost at once; a relinked one is up, and down when
// its link closes.
func TestLinkStatus_AfterRestart(t *testing.T) {
	const timeout = 30 * time.Second
	stopped := time.Now().Add(-2 * time.Minute) // the broker was down 2 minutes
	st := &loadStore{rows: []*Server{
		{ID: "fresh", Seq: 1, BrokerID: "b1", LastSeen: stopped},
		{ID: "recent", Seq: 2, BrokerID: "b1", LastSeen: stopped.Add(-20 * time.Second)},
		{ID: "silent", Seq: 3, BrokerID: "b1", LastSeen: stopped.Add(-time.Hour)},
		{ID: "never", Seq: 4, BrokerID: "b1", CreatedAt: stopped.Add(-time.Hour)},
	}}
	var c serverCache
	if err := c.load(t.Context(), st); err != nil {
		t.Fatal(err)
	}
	start := c.links.started
	check := func(when string, now time.Time, want map[string]linkStatus) {
		t.Helper()
		for id, w := range want {
			if got, _ := c.linkStatus(id, timeout, timeout, now); got != w {
				t.Errorf("%s: %s is %v, want %v", when, id, got, w)
			}
		}
	}
	check("just started", start.Add(time.Second), map[string]linkStatus{
		"fresh": linkAwaited, "recent": linkAwaited, "silent": linkLost, "never": linkLost,
	})
	if got := c.unreachableSince("fresh", timeout, start.Add(time.Second)); !got.IsZero() {
		t.Errorf("an awaited server is unreachable since %v (its sessions would turn UNKNOWN)", got)
	}
	c.seen("fresh", start.Add(2*time.Second))
	check("fresh relinked", start.Add(3*time.Second), map[string]linkStatus{"fresh": linkUp, "recent": linkAwaited})
	check("grace over", start.Add(timeout), map[string]linkStatus{"fresh": linkUp, "recent": linkLost})
	if got := c.unreachableSince("recent", timeout, start.Add(timeout)); !got.Equal(stopped.Add(-20 * time.Second)) {
		t.Errorf("recent unreachable since %v, want its last contact", got)
	}
	c.down("fresh", start.Add(40*time.Second))
	check("fresh's link closed", start.Add(41*time.Second), map[string]linkStatus{"fresh": linkLost})
}

// TestLinkStatus_Cluster: a server linked to another live broker is up; when
// that broker clears the link (its agent left) it is lost at once; when that
// broker stops or dies it is awaited for the grace period, then lost; a live
// broker's server silent past the timeout is lost. A link that closes here is
// cleared in the store, unless this broker is stopping.
func TestLinkStatus_Cluster(t *testing.T) {
	const timeout = 30 * time.Second
	now := time.Now()
	st := &syncStore{rows: map[string]*Server{
		"a": {ID: "a", Seq: 1, Version: 1, BrokerID: "b2", LastSeen: now},
		"b": {ID: "b", Seq: 2, Version: 1, BrokerID: "b3", LastSeen: now},
		"c": {ID: "c", Seq: 3, Version: 1, BrokerID: "b2", LastSeen: now.Add(-time.Minute)},
		"d": {ID: "d", Seq: 4, Version: 1, BrokerID: "b1", LastSeen: now},
		"e": {ID: "e", Seq: 5, Version: 1, BrokerID: "b1", LastSeen: now},
	}}
	var c serverCache
	if err := c.load(t.Context(), &syncStore{}); err != nil {
		t.Fatal(err)
	}
	sync := func() {
		t.Helper()
		if err := c.sync(t.Context(), st, st, "b1"); err != nil {
			t.Fatal(err)
		}
	}
	sync()
	status := func(id string, at time.Time) linkStatus {
		s, _ := c.linkStatus(id, timeout, timeout, at)
		return s
	}
	if s := status("a", now); s != linkUp {
		t.Errorf("a, linked to live b2: %v, want up", s)
	}
	if s := status("c", now); s != linkLost {
		t.Errorf("c, on live b2 but silent for a minute: %v, want lost", s)
	}

	// a's agent left b2 (b2 cleared the link); b3 died.
	st.rows["a"].BrokerID = ""
	st.dead = map[string]bool{"b3": true}
	sync()
	if s := status("a", now); s != linkLost {
		t.Errorf("a, cleared by b2: %v, want lost", s)
	}
	if s := status("b", now.Add(time.Second)); s != linkAwaited {
		t.Errorf("b, on dead b3: %v, want awaited", s)
	}
	if s := status("b", now.Add(timeout+time.Second)); s != linkLost {
		t.Errorf("b, on dead b3 past the grace: %v, want lost", s)
	}

	// d and e link here; d's link closes and is cleared in the store; then
	// this broker stops and e's link closes: not cleared.
	c.seen("d", now)
	c.seen("e", now)
	if s := status("d", now); s != linkUp {
		t.Errorf("d, linked here: %v, want up", s)
	}
	c.down("d", now.Add(time.Second))
	sync()
	if st.rows["d"].BrokerID != "" {
		t.Errorf("d's closed link was not cleared in the store: %+v", st.rows["d"])
	}
	c.stop()
	c.down("e", now.Add(time.Second))
	n := len(st.cleared)
	sync()
	if len(st.cleared) != n || st.rows["e"].BrokerID != "b1" {
		t.Errorf("a link closed by this broker's stop was cleared: %v", st.cleared[n:])
	}
}

// TestAwaitLinks: a create that finds no linked server while some are
// awaited waits until one links, or relinkWait passes, or ctx ends; with
// nothing awaited it does not wait.
func TestAwaitLinks(t *testing.T) {
	newService := func(t *testing.T, rows ...*Server) *Service {
		s := &Service{cfg: Config{HeartbeatTimeout: time.Minute}, Now: time.Now}
		if err := s.servers.load(t.Context(), &loadStore{rows: rows}); err != nil {
			t.Fatal(err)
		}
		return s
	}
	wait := func(s *Service, ctx context.Context) chan struct{} {
		done := make(chan struct{})
		go func() {
			defer close(done)
			s.awaitLinks(ctx)
		}()
		return done
	}
	closed := func(c chan struct{}) bool {
		select {
		case <-c:
			return true
		default:
			return false
		}
	}
	t.Run("until a link", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			s := newService(t, &Server{ID: "a", Seq: 1, BrokerID: "b1", LastSeen: time.Now()})
			done := wait(s, t.Context())
			synctest.Wait()
			if closed(done) {
				t.Fatal("awaitLinks returned with no server linked")
			}
			s.servers.seen("a", time.Now())
			synctest.Wait()
			if !closed(done) {
				t.Fatal("awaitLinks still waits after a link came up")
			}
		})
	})
	t.Run("at most relinkWait", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			s := newService(t, &Server{ID: "a", Seq: 1, BrokerID: "b1", LastSeen: time.Now()})
			start := time.Now()
			s.awaitLinks(t.Context())
			if d := time.Since(start); d != relinkWait {
				t.Fatalf("waited %v, want %v", d, relinkWait)
			}
		})
	})
	t.Run("ctx ends", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			s := newService(t, &Server{ID: "a", Seq: 1, BrokerID: "b1", LastSeen: time.Now()})
			ctx, cancel := context.WithCancel(t.Context())
			done := wait(s, ctx)
			cancel()
			synctest.Wait()
			if !closed(done) {
				t.Fatal("awaitLinks still waits after ctx ended")
			}
		})
	})
	t.Run("nothing awaited", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			s := newService(t, &Server{ID: "never", Seq: 1, BrokerID: "b1", CreatedAt: time.Now().Add(-time.Hour)})
			start := time.Now()
			s.awaitLinks(t.Context())
			if d := time.Since(start); d != 0 {
				t.Fatalf("waited %v with no server awaited", d)
			}
		})
	})
}
