package broker

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

// TestEmitBatches_GroupCommit: the calls that arrive while a batch is
// written are written together in the next batch, once, after it; every
// event is written once, and each caller's events keep their order.
func TestEmitBatches_GroupCommit(t *testing.T) {
	var b emitBatches
	var mu sync.Mutex
	var writes [][]*Event
	release := make(chan struct{})
	write := func(evs []*Event) {
		mu.Lock()
		first := len(writes) == 0
		writes = append(writes, slices.Clone(evs))
		mu.Unlock()
		if first {
			<-release // the first batch's write takes a while
		}
	}
	firstDone := make(chan struct{})
	go func() {
		b.emit([]*Event{{Type: "first"}}, write)
		close(firstDone)
	}()
	// Wait until the first batch is being written.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) { //sleep-ok: polls a condition
		mu.Lock()
		n := len(writes)
		mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the first batch was never written")
		}
	}
	const callers = 50
	var wg sync.WaitGroup
	returned := make(chan int, callers)
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b.emit([]*Event{{Type: fmt.Sprint("c", i), SessionID: "1"}, {Type: fmt.Sprint("c", i), SessionID: "2"}}, write)
			returned <- i
		}()
	}
	// None of them returns before its batch is written, and that waits for
	// the first.
	time.Sleep(50 * time.Millisecond) //sleep-ok: gives the callers time to (wrongly) return
	if len(returned) != 0 {
		t.Fatalf("%d calls returned before their events were written", len(returned))
	}
	close(release)
	<-firstDone
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(writes) > 3 {
		// Every caller should have joined the second batch; a slow
		// scheduler may leave a few to a third.
		t.Errorf("%d writes for 1 + %d calls, want them grouped (2)", len(writes), callers)
	}
	if len(writes[0]) != 1 || writes[0][0].Type != "first" {
		t.Errorf("first batch = %v, want the first call's event alone", writes[0])
	}
	seen := map[string][]string{}
	total := 0
	for _, w := range writes[1:] {
		for _, e := range w {
			seen[e.Type] = append(seen[e.Type], e.SessionID)
			total++
		}
	}
	if total != 2*callers {
		t.Errorf("%d events written after the first, want %d", total, 2*callers)
	}
	for typ, ids := range seen {
		if !slices.Equal(ids, []string{"1", "2"}) {
			t.Errorf("caller %s's events written as %v, want once each, in order", typ, ids)
		}
	}
}
