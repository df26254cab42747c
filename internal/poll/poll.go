// Package poll lets a test wait for something another goroutine or process
// does: Until checks a condition at short, growing intervals until it holds
// or a deadline passes. Tests wait with it instead of sleeping a fixed time
// and then asserting, which passes or fails by the machine's speed (the
// pkgdoc guard TestNoSleepThenAssert refuses that pattern).
package poll

import (
	"testing"
	"time"
)

// maxInterval bounds the wait between two checks: the first checks come
// after 1, 2, 4 ... ms, so a condition that holds soon is seen soon, and a
// slow one is not checked more than 20 times a second.
const maxInterval = 50 * time.Millisecond

// Until calls cond until it returns true, and fails tb with "timed out after
// <timeout> waiting for <what>" if it has not by timeout. cond runs on the
// calling goroutine, so it may itself call tb.Fatal. Inside a
// testing/synctest bubble the waits run on the bubble's clock.
func Until(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for wait := time.Millisecond; !cond(); wait = min(2*wait, maxInterval) {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %s waiting for %s", timeout, what)
			return // for a tb whose Fatalf returns
		}
		time.Sleep(wait)
	}
}
