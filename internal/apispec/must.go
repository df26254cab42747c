package apispec

import "testing"

// MustBerth returns berth's document for a test, failing the test if it does not
// load.
func MustBerth(tb testing.TB) *Doc {
	tb.Helper()
	d, err := Berth()
	if err != nil {
		tb.Fatalf("load berth's openapi document: %v", err)
	}
	return d
}

// MustReference returns Amazon's reference document for a test, failing the
// test if it does not load.
func MustReference(tb testing.TB) *Doc {
	tb.Helper()
	d, err := Reference()
	if err != nil {
		tb.Fatalf("load reference openapi document: %v", err)
	}
	return d
}
