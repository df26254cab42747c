package agent

import (
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/agentproto"
)

// TestReportableID: the ASCII fast path says what agentproto.ValidID says.
func TestReportableID(t *testing.T) {
	tests := []struct {
		name string
		id   string
		want bool
	}{
		{"empty", "", false},
		{"plain", "sess-0123abcd", true},
		{"longest", strings.Repeat("a", agentproto.MaxIDLength), true},
		{"too long", strings.Repeat("a", agentproto.MaxIDLength+1), false},
		{"NUL", "a\x00b", false},
		{"newline", "a\nb", false},
		{"DEL", "a\x7f", false},
		{"space and punctuation", "a b~!", true},
		{"UTF-8", "séance", true},
		{"C1 control", "a\u0085b", false},
		{"invalid UTF-8", "a\xffb", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := reportableID(tt.id); got != tt.want {
				t.Errorf("reportableID(%q) = %v, want %v", tt.id, got, tt.want)
			}
			if v := agentproto.ValidID(tt.id); v != tt.want {
				t.Errorf("agentproto.ValidID(%q) = %v: the table is wrong", tt.id, v)
			}
		})
	}
}
