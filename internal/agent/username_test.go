package agent_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/agent"
)

func TestCheckUserName(t *testing.T) {
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
		{strings.Repeat("a", 256), true},
		{"", false},
		{"..", false},
		{"../etc/passwd", false},
		{"a/b", false},
		{"/root", false},
		{"-rf", false},
		{"--owner=root", false},
		{".hidden", false},
		{"a..b", false},
		{"a b", false},
		{"a\tb", false},
		{"a;b", false},
		{"a|b", false},
		{"a&b", false},
		{"a>b", false},
		{"a'b", false},
		{`a"b`, false},
		{"`id`", false},
		{"$(id)", false},
		{"a$b", false},
		{"*", false},
		{`\\server\share`, false},
		{`a\b\c`, false},
		{`DOMAIN\`, false},
		{`\user`, false},
		{"a\x00b", false},
		{"a\nb", false},
		{"a\rb", false},
		{"ünïcode", false},
		{"\xff", false},
		{strings.Repeat("a", 257), false},
	} {
		t.Run(fmt.Sprintf("%q", tc.name), func(t *testing.T) {
			err := agent.CheckUserName("Owner", tc.name)
			if (err == nil) != tc.ok {
				t.Fatalf("CheckUserName(%q) = %v, want ok=%v", tc.name, err, tc.ok)
			}
			if err == nil {
				return
			}
			if !strings.HasPrefix(err.Error(), "Owner ") || !errors.Is(err, agent.ErrInvalidRequest) {
				t.Errorf("error %q: want it to name the field and be an invalid request", err)
			}
			if strings.ContainsAny(err.Error(), "\x00\n\r") {
				t.Errorf("error %q carries raw control characters", err)
			}
		})
	}
}

func TestInvalidRequest(t *testing.T) {
	if agent.InvalidRequest(nil) != nil {
		t.Error("InvalidRequest(nil) != nil")
	}
	base := errors.New("InitFile escapes the init folder")
	err := agent.InvalidRequest(base)
	if err.Error() != base.Error() || !errors.Is(err, agent.ErrInvalidRequest) || !errors.Is(err, base) {
		t.Errorf("InvalidRequest: %q", err)
	}
	if again := agent.InvalidRequest(err); again != err {
		t.Error("marking twice wraps twice")
	}
	if errors.Is(base, agent.ErrInvalidRequest) {
		t.Error("an unmarked error is an invalid request")
	}
}
