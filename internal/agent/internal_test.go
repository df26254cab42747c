package agent

import (
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	var b backoff
	prevMax := time.Duration(0)
	for i := range 40 {
		d := b.next()
		want := min(backoffMin<<min(i, 16), backoffMax)
		if d < want/2 || d >= want {
			t.Fatalf("step %d: %v not in [%v, %v)", i, d, want/2, want)
		}
		prevMax = max(prevMax, d)
	}
	if prevMax >= backoffMax {
		t.Errorf("backoff reached %v, cap is %v", prevMax, backoffMax)
	}
	b.reset()
	if d := b.next(); d >= backoffMin {
		t.Errorf("after reset: %v", d)
	}
}

func TestParseBrokerURL(t *testing.T) {
	tests := []struct {
		in, connect, register string
	}{
		{"wss://b:8445", "wss://b:8445/agent/connect", "https://b:8445/agent/register"},
		{"wss://b:8445/", "wss://b:8445/agent/connect", "https://b:8445/agent/register"},
		{"https://b:8445/prefix/", "wss://b:8445/prefix/agent/connect", "https://b:8445/prefix/agent/register"},
		{"ws://127.0.0.1:1", "ws://127.0.0.1:1/agent/connect", "http://127.0.0.1:1/agent/register"},
	}
	for _, tt := range tests {
		ep, err := parseBrokerURL(tt.in)
		if err != nil {
			t.Fatalf("%s: %v", tt.in, err)
		}
		if ep.connect != tt.connect || ep.register != tt.register {
			t.Errorf("%s: got %s %s", tt.in, ep.connect, ep.register)
		}
	}
	for _, bad := range []string{"", "b:8445", "ftp://b", "wss://", "wss://u:p@b:1", "wss://b:1?x=1", "%zz"} {
		if _, err := parseBrokerURL(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
