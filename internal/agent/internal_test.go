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

func TestLinkTiming(t *testing.T) {
	const s = time.Second
	for _, tc := range []struct {
		name                   string
		own, interval, timeout time.Duration
		wantInterval, wantRead time.Duration
	}{
		{"own interval, broker asks less often: own wins", 30 * s, 50 * s, 150 * s, 30 * s, 180 * s},
		{"own interval, broker asks more often: broker wins", 30 * s, 10 * s, 30 * s, 10 * s, 40 * s},
		{"no own interval: the broker's, longer", 0, 50 * s, 150 * s, 50 * s, 200 * s},
		{"no own interval: the broker's, shorter", 0, 10 * s, 30 * s, 10 * s, 40 * s},
		{"broker says nothing: own", 20 * s, 0, 0, 20 * s, 80 * s},
		{"neither says: the default", 0, 0, 0, DefaultUpdateInterval, 4 * DefaultUpdateInterval},
		{"absurd broker values are capped at a day", 0, 1000 * time.Hour, 3000 * time.Hour, 24 * time.Hour, 48 * time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			interval, read := linkTiming(tc.own, tc.interval, tc.timeout)
			if interval != tc.wantInterval || read != tc.wantRead {
				t.Errorf("linkTiming(%s, %s, %s) = %s, %s; want %s, %s", tc.own, tc.interval, tc.timeout, interval, read, tc.wantInterval, tc.wantRead)
			}
		})
	}
}
