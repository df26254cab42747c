package broker

import (
	"strings"
	"testing"
)

func TestValidateUserName(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"alice", true},
		{"first.last", true},
		{"user@corp.example", true},
		{`CORP\alice`, true},
		{"svc_build-01", true},
		{"machine$", true},
		{"", false},
		{"..", false},
		{"../etc/passwd", false},
		{"a/b", false},
		{"-rf", false},
		{".hidden", false},
		{"a..b", false},
		{"a b", false},
		{"a;b", false},
		{"$(id)", false},
		{"a$b", false},
		{`\\server\share`, false},
		{`a\b\c`, false},
		{`DOMAIN\`, false},
		{"a\x00b", false},
		{"a\nb", false},
		{"ünïcode", false},
		{strings.Repeat("a", 257), false},
	} {
		err := ValidateUserName("Owner", tc.name)
		if (err == nil) != tc.ok {
			t.Errorf("ValidateUserName(%q) = %v, want ok=%v", tc.name, err, tc.ok)
		}
		if err != nil && !strings.HasPrefix(err.Error(), "Owner: ") {
			t.Errorf("ValidateUserName(%q) = %q, want it to name the field", tc.name, err)
		}
	}
}

func TestValidateRelPath(t *testing.T) {
	for _, tc := range []struct {
		path string
		ok   bool
	}{
		{"init.sh", true},
		{"team/start desktop.sh", true},
		{"a/./b.sh", true},
		{"../x", false},
		{"a/../../x", false},
		{`a\..\x`, false},
		{"/bin/sh", false},
		{`C:\x`, false},
		{".", false},
		{"a\x00", false},
		{strings.Repeat("a", 1025), false},
	} {
		err := validateRelPath("InitFile", tc.path)
		if (err == nil) != tc.ok {
			t.Errorf("validateRelPath(%q) = %v, want ok=%v", tc.path, err, tc.ok)
		}
	}
}

func TestCursor_RoundTripAndTamper(t *testing.T) {
	s := &Service{cursorKey: []byte("k")}
	fh := filterHash("sessions", []string{"a"}, "owner", map[string]string{"t": "v"})
	tok := s.encodeCursor(42, fh)
	if seq, err := s.decodeCursor(tok, fh); err != nil || seq != 42 {
		t.Fatalf("round trip: %d %v", seq, err)
	}
	for i := range tok {
		b := []byte(tok)
		b[i] ^= 1
		if _, err := s.decodeCursor(string(b), fh); err == nil {
			t.Errorf("tampered byte %d accepted", i)
		}
	}
	if _, err := s.decodeCursor(tok, filterHash("sessions")); err == nil {
		t.Error("cursor accepted for another query")
	}
	if _, err := (&Service{cursorKey: []byte("other")}).decodeCursor(tok, fh); err == nil {
		t.Error("cursor accepted under another key")
	}
	// The MACs are reused: after all of the above, the same answers again.
	for range 3 {
		if seq, err := s.decodeCursor(tok, fh); err != nil || seq != 42 || s.encodeCursor(42, fh) != tok {
			t.Fatalf("round trip after reuse: %d %v", seq, err)
		}
	}
}
