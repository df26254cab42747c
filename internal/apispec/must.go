package apispec

import (
	"errors"
	"io/fs"
	"testing"
)

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

// MustReference returns Amazon's reference document for a test. When the file is
// not in the checkout at all, the test is skipped with a loud message, since the
// compatibility checks then did not run; any other failure fails the test.
func MustReference(tb testing.TB) *Doc {
	tb.Helper()
	d, err := Reference()
	if errors.Is(err, fs.ErrNotExist) {
		tb.Skipf("SKIPPING WIRE-COMPATIBILITY CHECK: Amazon's reference API document is not in this checkout (%v); "+
			"put the shared/ folder beside or inside the repository so that %s is found from the working directory", err, ReferenceFile)
	}
	if err != nil {
		tb.Fatalf("load reference openapi document: %v", err)
	}
	return d
}
