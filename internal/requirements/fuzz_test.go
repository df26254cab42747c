package requirements_test

import (
	"testing"

	"github.com/berth-dev/berth/internal/requirements"
)

// FuzzParse checks that Parse never panics and that the canonical form of
// every accepted expression parses back to itself.
func FuzzParse(f *testing.F) {
	f.Add("tag:pool = 'gpu'")
	f.Fuzz(func(t *testing.T, src string) {
		e, err := requirements.Parse(src)
		if err != nil {
			if _, ok := err.(*requirements.SyntaxError); !ok {
				t.Fatalf("Parse(%q) error %T, want *SyntaxError", src, err)
			}
			return
		}
		canon := e.String()
		again, err := requirements.Parse(canon)
		if err != nil {
			t.Fatalf("Parse(%q) ok, but Parse of its String %q: %v", src, canon, err)
		}
		if got := again.String(); got != canon {
			t.Fatalf("String not stable: %q -> %q -> %q", src, canon, got)
		}
		// Matching must not panic either; an empty subject exercises the
		// missing-value paths.
		e.Match(empty{})
	})
}

type empty struct{}

func (empty) Tag(string) (string, bool)      { return "", false }
func (empty) Property(string) (string, bool) { return "", false }
