package main

import (
	"flag"
	"os"
	"testing"
)

// TestMain lets the tests marked parallel all run at once unless -parallel
// is given: they mostly wait for the broker's own timeouts (client cache,
// queue max time, unreachable and unlinked TTLs), so the default of
// GOMAXPROCS of them at a time leaves the machine idle.
func TestMain(m *testing.M) {
	flag.Parse()
	given := false
	flag.Visit(func(f *flag.Flag) { given = given || f.Name == "test.parallel" })
	if !given {
		flag.Set("test.parallel", "8")
	}
	os.Exit(m.Run())
}
