package broker

import (
	"testing"
	"time"
)

func TestLinkTiming_At(t *testing.T) {
	base := linkTiming{interval: 10 * time.Second, timeout: 30 * time.Second, rate: 200}
	for _, tc := range []struct {
		name              string
		timing            linkTiming
		n                 int
		interval, timeout time.Duration
	}{
		{"empty fleet", base, 0, 10 * time.Second, 30 * time.Second},
		{"1,000 agents: 100 updates/s", base, 1000, 10 * time.Second, 30 * time.Second},
		{"2,000 agents: just the cap", base, 2000, 10 * time.Second, 30 * time.Second},
		{"one past the cap: the next half step", base, 2001, 15 * time.Second, 45 * time.Second},
		{"5,000 agents", base, 5000, 25 * time.Second, 75 * time.Second},
		{"10,000 agents", base, 10000, 50 * time.Second, 150 * time.Second},
		{"100,000 agents", base, 100000, 500 * time.Second, 1500 * time.Second},
		{"no cap", linkTiming{interval: 10 * time.Second, timeout: 30 * time.Second}, 100000, 10 * time.Second, 30 * time.Second},
		{"no base interval", linkTiming{timeout: 30 * time.Second, rate: 1}, 100, 0, 30 * time.Second},
		{"fractional rate: 2 agents at 0.5/s", linkTiming{interval: time.Second, timeout: 3 * time.Second, rate: 0.5}, 2, 4 * time.Second, 12 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			interval, timeout := tc.timing.at(tc.n)
			if interval != tc.interval || timeout != tc.timeout {
				t.Errorf("at(%d) = %s, %s; want %s, %s", tc.n, interval, timeout, tc.interval, tc.timeout)
			}
		})
	}
}
