package broker

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"time"
)

// The events hub: one reader of the store per broker, shared by every
// subscriber of the stream. It reads the events after the last it has read
// when a local write wakes it and every Config.EventPollInterval (the other
// brokers' events), keeps the most recent ones in a ring and hands each to
// the subscribers whose filter it matches. A subscriber first reads what it
// missed (catch-up: from the ring when it still holds it, else from the
// store), then joins the hub. A subscriber whose buffer is full when the hub
// hands it an event leaves the hub and catches up again at its own pace; one
// that leaves its full buffer unread for Config.EventSubscriberGrace is
// closed (ErrSubscriberSlow) and resumes with its last event ID. A burst
// larger than the buffer thus never closes a reader that keeps reading.
//
// Without subscribers the hub reads nothing (writes cost no read): it goes
// inactive, and when a subscriber comes it starts again after the store's
// last event (LastEventIDer), with an empty ring. Subscribers join only an
// active hub, so none misses the events the inactive hub skipped: they
// catch up from the store.

const (
	// hubRing is how many recent events the hub keeps for subscribers
	// that join after catching up.
	hubRing = 8192
	// hubPage is the page size of the hub's and the catch-up's reads.
	hubPage = 1000
	// SubscriberBuffer is the number of events a subscriber may have
	// undelivered; a reader that leaves it full for
	// Config.EventSubscriberGrace is closed as too slow.
	SubscriberBuffer = 1024
)

// ErrSubscriberSlow closes a subscription whose reader left SubscriberBuffer
// events unread for Config.EventSubscriberGrace; the reader resumes after
// the last event it received.
var ErrSubscriberSlow = errors.New("subscriber too slow: resume after the last event received")

// ErrEventsOff means the broker writes no events (they are disabled or the
// store keeps none).
var ErrEventsOff = errors.New("events are not enabled")

// LastEventIDer is implemented by stores that tell their last event's ID
// (both do); the hub starts reading after it.
type LastEventIDer interface {
	LastEventID(ctx context.Context) (int64, error)
}

// eventHub fans the store's events out to the subscribers. Its zero value
// is ready; run reads the store.
type eventHub struct {
	mu      sync.Mutex
	active  bool  // reading the store; start and last are set
	start   int64 // ring holds every event with start < ID <= last
	last    int64 // the last event ID read
	ring    []*Event
	subs    map[*Subscription]struct{}
	joining int             // subscribers catching up, not joined yet
	waiting []chan struct{} // closed when the hub is active
	wake    chan struct{}
	once    sync.Once
}

func (h *eventHub) init() { h.once.Do(func() { h.wake = make(chan struct{}, 1) }) }

// notify wakes the hub's reader (a local write committed events).
func (h *eventHub) notify() {
	h.init()
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

// Subscription is one reader of the event stream. Read C until it is
// closed; Err then says why.
type Subscription struct {
	// C delivers the events in ID order.
	C <-chan *Event

	ch     chan *Event
	f      EventFilter
	pos    int64         // every matching event with ID <= pos was delivered
	kick   chan struct{} // the hub found the buffer full and let go of sub
	errMu  sync.Mutex
	err    error
	cancel context.CancelFunc
}

// Err returns why C was closed: ErrSubscriberSlow, the context's error, or
// a store error.
func (sub *Subscription) Err() error {
	sub.errMu.Lock()
	defer sub.errMu.Unlock()
	return sub.err
}

// Close ends the subscription.
func (sub *Subscription) Close() { sub.cancel() }

// fail records why the subscription ends.
func (sub *Subscription) fail(err error) {
	sub.errMu.Lock()
	sub.err = err
	sub.errMu.Unlock()
}

// MatchEvent reports whether f's Types and Owner select e (AfterID and Limit
// are not looked at).
func MatchEvent(f *EventFilter, e *Event) bool {
	if f.Owner != "" && e.Owner != f.Owner {
		return false
	}
	if len(f.Types) == 0 {
		return true
	}
	for _, t := range f.Types {
		if p, ok := strings.CutSuffix(t, ".*"); ok {
			if strings.HasPrefix(e.Type, p+".") {
				return true
			}
		} else if t == e.Type {
			return true
		}
	}
	return false
}

// Subscribe starts a subscription to the events that f selects, after
// f.AfterID (0: from the oldest kept), until ctx ends or Close. It returns
// ErrEventsOff when the broker writes no events. The Service must be
// running (Run).
func (s *Service) Subscribe(ctx context.Context, f EventFilter) (*Subscription, error) {
	es := s.eventStore()
	if es == nil {
		return nil, ErrEventsOff
	}
	ctx, cancel := context.WithCancel(ctx)
	ch := make(chan *Event, SubscriberBuffer)
	sub := &Subscription{C: ch, ch: ch, f: f, pos: f.AfterID, kick: make(chan struct{}, 1), cancel: cancel}
	sub.f.Types = slices.Clone(f.Types)
	s.hub.mu.Lock()
	s.hub.joining++
	s.hub.mu.Unlock()
	s.hub.notify() // an inactive hub starts reading
	go func() {
		defer close(ch)
		err := s.hub.serve(ctx, es, sub, s.cfg.EventSubscriberGrace)
		sub.fail(err)
		s.hub.leave(sub)
	}()
	return sub, nil
}

// serve catches sub up, joins the hub and waits for the end; when the hub
// lets go of sub (its buffer was full) it catches up again.
func (h *eventHub) serve(ctx context.Context, es EventStore, sub *Subscription, grace time.Duration) error {
	for {
		evs, upto, ok := h.ringAfter(sub.pos, &sub.f, hubPage)
		if !ok {
			h0, err := h.lastRead(ctx)
			if err != nil {
				return err
			}
			page := EventFilter{AfterID: sub.pos, Types: sub.f.Types, Owner: sub.f.Owner, Limit: hubPage}
			if evs, err = es.ListEvents(ctx, page); err != nil {
				return err
			}
			// A short page means every matching event up to the store's
			// last at the read (at least h0) is in it.
			upto = 0
			if len(evs) < hubPage {
				upto = h0
			}
		}
		for _, e := range evs {
			if err := deliver(ctx, sub, e, grace); err != nil {
				return err
			}
		}
		sub.pos = max(sub.pos, upto)
		if len(evs) == hubPage {
			continue
		}
		if !h.join(sub) {
			continue
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-sub.kick: // the hub counts sub as joining again
		}
	}
}

// deliver sends e to sub, waiting up to grace for room in its buffer.
func deliver(ctx context.Context, sub *Subscription, e *Event, grace time.Duration) error {
	select {
	case sub.ch <- e:
		sub.pos = e.ID
		return nil
	default:
	}
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case sub.ch <- e:
		sub.pos = e.ID
		return nil
	case <-t.C:
		return ErrSubscriberSlow
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ringAfter returns up to limit of the ring's events after pos that f
// selects, and the ID up to which it looked (every event f selects with an
// ID up to it is returned). It returns false when the ring does not hold
// every event after pos (the hub is inactive or pos is older than the
// ring).
func (h *eventHub) ringAfter(pos int64, f *EventFilter, limit int) ([]*Event, int64, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.active || pos < h.start {
		return nil, 0, false
	}
	i, _ := slices.BinarySearchFunc(h.ring, pos+1, func(e *Event, id int64) int { return cmpInt(e.ID, id) })
	var out []*Event
	for _, e := range h.ring[i:] {
		if MatchEvent(f, e) {
			if out = append(out, e); len(out) == limit {
				return out, e.ID, true
			}
		}
	}
	return out, max(pos, h.last), true
}

// lastRead waits for the hub to be active and returns the last ID it read.
func (h *eventHub) lastRead(ctx context.Context) (int64, error) {
	h.mu.Lock()
	if h.active {
		defer h.mu.Unlock()
		return h.last, nil
	}
	w := make(chan struct{})
	h.waiting = append(h.waiting, w)
	h.mu.Unlock()
	select {
	case <-w:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	return h.lastRead(ctx)
}

// join adds sub to the subscribers if the hub is active and sub has had
// every event the hub has read. It returns false when sub must catch up
// again.
func (h *eventHub) join(sub *Subscription) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.active || sub.pos < h.last {
		return false
	}
	h.joining--
	if h.subs == nil {
		h.subs = make(map[*Subscription]struct{})
	}
	h.subs[sub] = struct{}{}
	return true
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// leave removes sub, joined or catching up (every subscription is one of
// the two until it leaves).
func (h *eventHub) leave(sub *Subscription) {
	h.mu.Lock()
	if _, ok := h.subs[sub]; ok {
		delete(h.subs, sub)
	} else {
		h.joining--
	}
	h.mu.Unlock()
}

// sendLocked hands e to sub if it matches. When sub's buffer is full it
// lets go of sub, which catches up again from the ring or the store.
func (h *eventHub) sendLocked(sub *Subscription, e *Event) {
	if e.ID <= sub.pos || !MatchEvent(&sub.f, e) {
		return
	}
	select {
	case sub.ch <- e:
		sub.pos = e.ID
	default:
		delete(h.subs, sub)
		h.joining++
		sub.kick <- struct{}{}
	}
}

// Subscribers returns the number of subscribers joined to the hub.
func (s *Service) Subscribers() int {
	s.hub.mu.Lock()
	defer s.hub.mu.Unlock()
	return len(s.hub.subs)
}

// run reads the store's events until ctx ends.
func (h *eventHub) run(ctx context.Context, es EventStore, every time.Duration, s *Service) {
	h.init()
	t := time.NewTicker(every)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-h.wake:
		case <-t.C:
		}
		if !h.activate(ctx, es, s) {
			continue
		}
		for {
			h.mu.Lock()
			after := h.last
			h.mu.Unlock()
			evs, err := es.ListEvents(ctx, EventFilter{AfterID: after, Limit: hubPage})
			if err != nil {
				if !failing && ctx.Err() == nil {
					s.log.Error("read events", "err", err)
				}
				failing = true
				break
			}
			failing = false
			h.fanOut(evs)
			if len(evs) < hubPage {
				break
			}
		}
	}
}

// activate reports whether the hub should read the store: it has
// subscribers, joined or catching up. Without any it goes inactive; with
// some, an inactive hub starts after the store's last event.
func (h *eventHub) activate(ctx context.Context, es EventStore, s *Service) bool {
	h.mu.Lock()
	if len(h.subs) == 0 && h.joining == 0 {
		h.active = false
		h.mu.Unlock()
		return false
	}
	if h.active {
		h.mu.Unlock()
		return true
	}
	last := h.last
	h.mu.Unlock()
	if l, ok := es.(LastEventIDer); ok {
		id, err := l.LastEventID(ctx)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Error("read the last event ID", "err", err)
			}
			return false
		}
		last = max(last, id)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	// Nobody joined an inactive hub: skipping to last loses no one's events.
	h.active, h.start, h.last, h.ring = true, last, last, nil
	for _, w := range h.waiting {
		close(w)
	}
	h.waiting = nil
	return true
}

// fanOut adds evs (read after h.last, in ID order) to the ring and hands
// them to the subscribers.
func (h *eventHub) fanOut(evs []*Event) {
	if len(evs) == 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, e := range evs {
		if e.ID <= h.last {
			continue
		}
		h.last = e.ID
		h.ring = append(h.ring, e)
		for sub := range h.subs {
			h.sendLocked(sub, e)
		}
	}
	if n := len(h.ring) - hubRing; n > 0 {
		h.start = h.ring[n-1].ID
		h.ring = slices.Delete(h.ring, 0, n)
	}
}
