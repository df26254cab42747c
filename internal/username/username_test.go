package username_test

import (
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/username"
)

func TestCheck(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"alice", true},
		{"first.last", true},
		{"user@corp.example", true},
		{`CORP\alice`, true},
		{"host$", true},
		{"a_b-c", true},
		{"", false},
		{"-rf", false},
		{".hidden", false},
		{"a..b", false},
		{"../etc", false},
		{"a/b", false},
		{`\\server\x`, false},
		{`a\b\c`, false},
		{`trailing\`, false},
		{"a b", false},
		{"a;b", false},
		{"$(id)", false},
		{"a`b`", false},
		{"a\x00b", false},
		{"a\nb", false},
		{"ho$t", false},
		{"\xff", false},
		{"é", false},
		{strings.Repeat("a", username.MaxLength), true},
		{strings.Repeat("a", username.MaxLength+1), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := username.Check(tt.name); (err == nil) != tt.ok {
				t.Fatalf("Check(%q) = %v, want ok %v", tt.name, err, tt.ok)
			}
		})
	}
}
