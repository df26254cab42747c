package broker

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/poll"
)

func TestBacklog(t *testing.T) {
	tests := []struct {
		name     string
		max      int
		push     int // items pushed, 0, 1, 2, ...
		pops     int // then taken
		accepted int // pushes that succeeded
		left     int
	}{
		{"empty", 4, 0, 0, 0, 0},
		{"within bound", 4, 3, 2, 3, 1},
		{"full refuses", 4, 6, 0, 4, 4},
		{"drained", 4, 4, 4, 4, 0},
		{"a storm", backlogMax, 20000, 20000, 20000, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newBacklog[int](tt.max)
			accepted := 0
			for i := range tt.push {
				if b.push(i) {
					accepted++
				}
			}
			if accepted != tt.accepted {
				t.Errorf("%d pushes accepted, want %d", accepted, tt.accepted)
			}
			for i := range tt.pops {
				v, ok := b.tryPop()
				if !ok || v != i {
					t.Fatalf("pop %d: %d, %v; want %d (first in, first out)", i, v, ok, i)
				}
			}
			if n := b.len(); n != tt.left {
				t.Errorf("%d left, want %d", n, tt.left)
			}
			if tt.left == 0 && cap(b.items) > 256 {
				t.Errorf("an empty backlog holds an array of %d", cap(b.items))
			}
		})
	}
}

// Items pushed while others are taken keep their order, and the array does
// not grow past what waits.
func TestBacklog_Steady(t *testing.T) {
	b := newBacklog[int](backlogMax)
	next, want := 0, 0
	for range 1000 {
		for range 3 {
			b.push(next)
			next++
		}
		for range 3 {
			v, ok := b.tryPop()
			if !ok || v != want {
				t.Fatalf("got %d, %v; want %d", v, ok, want)
			}
			want++
		}
		if c := cap(b.items); c > 16 {
			t.Fatalf("array of %d for at most 3 waiting", c)
		}
	}
}

// Every item reaches exactly one of several waiting consumers, and pop
// returns once its context is done.
func TestBacklog_Consumers(t *testing.T) {
	b := newBacklog[int](backlogMax)
	ctx, cancel := context.WithCancel(context.Background())
	const n, consumers = 5000, 4
	var mu sync.Mutex
	seen := make(map[int]int)
	var wg sync.WaitGroup
	for range consumers {
		wg.Go(func() {
			for {
				v, ok := b.pop(ctx)
				if !ok {
					return
				}
				mu.Lock()
				seen[v]++
				mu.Unlock()
			}
		})
	}
	for i := range n {
		if !b.push(i) {
			t.Fatal("push refused")
		}
	}
	poll.Until(t, 10*time.Second, "every item taken", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(seen) == n
	})
	cancel()
	wg.Wait()
	for v, k := range seen {
		if k != 1 {
			t.Errorf("item %d taken %d times", v, k)
		}
	}
}

// len returns the number of items waiting.
func (b *backlog[T]) len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.items) - b.head
}
