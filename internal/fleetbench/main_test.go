package fleetbench

import (
	"context"
	"os"
	"testing"
)

// TestMain runs the API-client process when a test's benchmark starts this
// test binary as its probe (berth-bench's main does the same).
func TestMain(m *testing.M) {
	if IsProbe() {
		os.Exit(RunProbe(context.Background(), os.Stdin, os.Stdout))
	}
	os.Exit(m.Run())
}
