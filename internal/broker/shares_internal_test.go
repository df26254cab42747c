package broker

import (
	"testing"

	"github.com/berth-dev/berth/internal/permfile"
)

// TestWithShare checks the edit of a permissions file: the user's rules
// replaced by one, in the [permissions] section wherever it is, the rest kept.
func TestWithShare(t *testing.T) {
	tests := []struct {
		name  string
		text  string
		level ShareLevel
		want  string
	}{
		{"no file: DCV's default plus the share", "", ShareView,
			"[permissions]\n%owner% allow builtin\nuser:bob allow display\n"},
		{"replaces bob and user:bob, keeps bobby", "[permissions]\n%owner% allow builtin\nbob deny display\nbobby allow display\nuser:bob allow builtin\n", ShareFull,
			"[permissions]\n%owner% allow builtin\nbobby allow display\nuser:bob allow display keyboard mouse clipboard-copy clipboard-paste\n"},
		{"none removes", "[permissions]\n%owner% allow builtin\nbob allow display\n", ShareNone,
			"[permissions]\n%owner% allow builtin\n"},
		{"section before another", "[permissions]\n%owner% allow builtin\n\n[aliases]\nv = display\n", ShareView,
			"[permissions]\n%owner% allow builtin\nuser:bob allow display\n\n[aliases]\nv = display\n"},
		{"no permissions section", "[groups]\ng = carol\n", ShareView,
			"[groups]\ng = carol\n\n[permissions]\nuser:bob allow display\n"},
		{"groups and %any% are not bob", "[permissions]\n%any% allow audio-out\ngroup:g allow mouse\n[groups]\ng = bob\n", ShareView,
			"[permissions]\n%any% allow audio-out\ngroup:g allow mouse\nuser:bob allow display\n[groups]\ng = bob\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := withShare(tc.text, "bob", tc.level)
			if got != tc.want {
				t.Errorf("withShare =\n%s\nwant\n%s", got, tc.want)
			}
			if _, err := permfile.Parse(got); err != nil {
				t.Errorf("the result does not parse: %v", err)
			}
		})
	}
}

// TestSharesIn checks the shares derived from a file: named users other than
// the owner who may see the display; full with keyboard or mouse.
func TestSharesIn(t *testing.T) {
	text := "[permissions]\n%owner% allow builtin\nalice allow display\nbob allow display keyboard\ncarol allow display mouse\n" +
		"dave allow keyboard\nerin allow display\nerin deny display\n%any% allow audio-out\n"
	got, err := sharesIn("s", "alice", text)
	if err != nil {
		t.Fatal(err)
	}
	want := []Share{{"s", "bob", ShareFull}, {"s", "carol", ShareFull}}
	if len(got) != len(want) {
		t.Fatalf("sharesIn = %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("sharesIn[%d] = %v, want %v", i, got[i], want[i])
		}
	}
	if _, err := sharesIn("s", "alice", "[permissions]\nbob grant display\n"); err == nil {
		t.Error("sharesIn of a bad file: no error")
	}
}
