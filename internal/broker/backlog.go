package broker

import (
	"context"
	"sync"
)

// backlogMax bounds the create and delete backlogs (Service.creates,
// Service.deletes).
const backlogMax = 65536

// backlog is a first-in first-out queue of at most max items for any number
// of producers and consumers that holds memory only for the items it
// holds. The create and delete pipelines queue through backlogs: a storm
// fills them with tens of thousands of items and an idle broker leaves them
// empty, and as buffered channels of 65,536 they held 3.7 MB for good.
type backlog[T any] struct {
	mu    sync.Mutex
	items []T // items[head:] wait
	head  int
	max   int
	// ready holds a token while items may wait: push leaves one, and a
	// consumer that takes an item and sees more leaves one for the next.
	ready chan struct{}
}

func newBacklog[T any](max int) *backlog[T] {
	return &backlog[T]{max: max, ready: make(chan struct{}, 1)}
}

// push queues v; it reports false, queueing nothing, when max items wait.
func (b *backlog[T]) push(v T) bool {
	b.mu.Lock()
	n := len(b.items) - b.head
	if n >= b.max {
		b.mu.Unlock()
		return false
	}
	if b.head > 0 && len(b.items) == cap(b.items) {
		// Slide the waiting items down rather than grow past what waits.
		copy(b.items, b.items[b.head:])
		clear(b.items[n:])
		b.items, b.head = b.items[:n], 0
	}
	b.items = append(b.items, v)
	b.mu.Unlock()
	b.signal()
	return true
}

func (b *backlog[T]) signal() {
	select {
	case b.ready <- struct{}{}:
	default:
	}
}

// tryPop takes the oldest item, if any, without waiting.
func (b *backlog[T]) tryPop() (v T, ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.head == len(b.items) {
		return v, false
	}
	v = b.items[b.head]
	var zero T
	b.items[b.head] = zero
	b.head++
	if b.head == len(b.items) {
		b.items, b.head = b.items[:0], 0
		if cap(b.items) > 256 {
			b.items = nil // give a storm's array back
		}
	} else {
		b.signal() // more wait: wake another consumer
	}
	return v, true
}

// pop takes the oldest item, waiting for one until ctx is done (ok false).
func (b *backlog[T]) pop(ctx context.Context) (v T, ok bool) {
	for {
		if v, ok = b.tryPop(); ok {
			return v, true
		}
		select {
		case <-ctx.Done():
			return v, false
		case <-b.ready:
		}
	}
}
