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
		// The canonical form must mean the same, and matching must not
		// panic: try subjects that lack everything, that echo the key
		// (string comparisons) and that answer a number.
		for _, s := range []echo{{}, {present: true}, {present: true, value: "5"}} {
			if got, want := again.Match(s), e.Match(s); got != want {
				t.Fatalf("%q matches %+v: %v, but its String %q: %v", src, s, want, canon, got)
			}
		}
	})
}

// echo is a Subject with every tag and property (when present), valued
// value, or the key itself when value is empty.
type echo struct {
	present bool
	value   string
}

func (s echo) Tag(key string) (string, bool) { return s.get(key) }

func (s echo) Property(path string) (string, bool) { return s.get(path) }

func (s echo) get(key string) (string, bool) {
	if s.value != "" {
		return s.value, s.present
	}
	return key, s.present
}
