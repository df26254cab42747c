package poll_test

import (
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/berth-dev/berth/internal/poll"
)

// recordingTB records a Fatalf and ends the goroutine as testing.T does.
type recordingTB struct {
	testing.TB
	failed string
}

func (r *recordingTB) Helper() {}

func (r *recordingTB) Fatalf(format string, args ...any) {
	r.failed = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// until runs poll.Until on its own goroutine (its Fatalf ends that
// goroutine) and returns what it failed with, "" if it returned.
func until(timeout time.Duration, what string, cond func() bool) string {
	tb := &recordingTB{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		poll.Until(tb, timeout, what, cond)
	}()
	<-done
	return tb.failed
}

// TestUntil runs on the synctest clock: Until returns as soon as the
// condition holds, and fails at the deadline, not before, naming what it
// waited for.
func TestUntil(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		var calls atomic.Int32
		if msg := until(time.Second, "three calls", func() bool { return calls.Add(1) == 3 }); msg != "" {
			t.Fatalf("Until failed: %s", msg)
		}
		if got := time.Since(start); got != 3*time.Millisecond {
			t.Errorf("the third check came after %s, want 3ms (1ms, then 2ms)", got)
		}

		start = time.Now()
		calls.Store(0)
		msg := until(2*time.Second, "the impossible", func() bool { calls.Add(1); return false })
		if want := "timed out after 2s waiting for the impossible"; msg != want {
			t.Errorf("Until failed with %q, want %q", msg, want)
		}
		if got := time.Since(start); got < 2*time.Second || got > 2*time.Second+50*time.Millisecond {
			t.Errorf("Until gave up after %s, want 2s and at most one interval more", got)
		}
		if n := calls.Load(); n > 2000/50+10 {
			t.Errorf("%d checks in 2s: the interval does not grow to 50ms", n)
		}
	})
}

// TestUntil_ConditionAlreadyTrue: no wait at all.
func TestUntil_ConditionAlreadyTrue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		poll.Until(t, time.Second, "true", func() bool { return true })
		if d := time.Since(start); d != 0 {
			t.Errorf("waited %s for a condition that held", d)
		}
	})
}
