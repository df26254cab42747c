package placement_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/berth-dev/berth/internal/placement"
)

// TestFits is the capacity rule, case by case: each limit below, at and
// above its boundary, unlimited, and which limit wins when several are
// reached.
func TestFits(t *testing.T) {
	type (
		L = placement.Limits
		C = placement.Counts
	)
	virtual := placement.Ask{Owner: "bob"}
	console := placement.Ask{Owner: "bob", Console: true}
	tests := []struct {
		name    string
		l       L
		c       C
		a       placement.Ask
		want    placement.Reason // 0: fits
		wantMsg string
	}{
		{name: "empty host, no limits", a: virtual},
		{name: "empty host, no limits, console", a: console},
		{name: "unlimited virtual", c: C{Virtual: 1 << 20}, a: virtual},
		{name: "negative limits are unlimited", l: L{MaxVirtual: -1, MaxPerUser: -1}, c: C{Virtual: 5, Owned: 5}, a: virtual},
		{name: "virtual below the limit", l: L{MaxVirtual: 10}, c: C{Virtual: 9}, a: virtual},
		{name: "virtual at the limit", l: L{MaxVirtual: 10}, c: C{Virtual: 10}, a: virtual,
			want: placement.ReasonFull, wantMsg: "has 10 of 10 virtual sessions"},
		{name: "virtual over the limit", l: L{MaxVirtual: 2}, c: C{Virtual: 3}, a: virtual,
			want: placement.ReasonFull, wantMsg: "has 3 of 2 virtual sessions"},
		{name: "limit of one", l: L{MaxVirtual: 1}, c: C{Virtual: 1}, a: virtual,
			want: placement.ReasonFull, wantMsg: "has 1 of 1 virtual sessions"},
		{name: "console sessions do not count against the virtual limit", l: L{MaxVirtual: 2}, c: C{Virtual: 1, Console: 1}, a: virtual},
		{name: "the virtual limit does not apply to console", l: L{MaxVirtual: 2}, c: C{Virtual: 2}, a: console},
		{name: "per user below the limit", l: L{MaxPerUser: 2}, c: C{Virtual: 5, Owned: 1}, a: virtual},
		{name: "per user at the limit", l: L{MaxPerUser: 2}, c: C{Virtual: 2, Owned: 2}, a: virtual,
			want: placement.ReasonPerUser, wantMsg: `has 2 of 2 sessions of "bob"`},
		{name: "per user over the limit", l: L{MaxPerUser: 1}, c: C{Virtual: 3, Owned: 3}, a: virtual,
			want: placement.ReasonPerUser, wantMsg: `has 3 of 1 sessions of "bob"`},
		{name: "per user applies to console", l: L{MaxPerUser: 1}, c: C{Virtual: 1, Owned: 1}, a: console,
			want: placement.ReasonPerUser, wantMsg: `has 1 of 1 sessions of "bob"`},
		{name: "per user unlimited", c: C{Virtual: 9, Owned: 9}, a: virtual},
		{name: "an owner with no session is never at the per-user limit", l: L{MaxPerUser: 1}, c: C{Virtual: 9}, a: virtual},
		{name: "console free", c: C{Virtual: 4}, a: console},
		{name: "console busy", c: C{Console: 1}, a: console,
			want: placement.ReasonConsole, wantMsg: "has a console session"},
		{name: "console busy, more than one", c: C{Console: 2}, a: console,
			want: placement.ReasonConsole, wantMsg: "has a console session"},
		{name: "a running console does not block virtual", l: L{MaxVirtual: 2}, c: C{Virtual: 1, Console: 1}, a: virtual},
		{name: "full wins over per user", l: L{MaxVirtual: 1, MaxPerUser: 1}, c: C{Virtual: 1, Owned: 1}, a: virtual,
			want: placement.ReasonFull, wantMsg: "has 1 of 1 virtual sessions"},
		{name: "per user wins over console", l: L{MaxPerUser: 1}, c: C{Console: 1, Owned: 1}, a: console,
			want: placement.ReasonPerUser, wantMsg: `has 1 of 1 sessions of "bob"`},
		{name: "console on a full host is refused for its console only", l: L{MaxVirtual: 1}, c: C{Virtual: 1, Console: 1}, a: console,
			want: placement.ReasonConsole, wantMsg: "has a console session"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := placement.Fits(tt.l, tt.c, tt.a)
			if tt.want == 0 {
				if err != nil {
					t.Fatalf("Fits(%+v, %+v, %+v) = %v, want nil", tt.l, tt.c, tt.a, err)
				}
				return
			}
			var r *placement.Refusal
			if !errors.As(err, &r) {
				t.Fatalf("Fits(%+v, %+v, %+v) = %v (%T), want a *Refusal", tt.l, tt.c, tt.a, err, err)
			}
			want := placement.Refusal{Reason: tt.want, Limits: tt.l, Counts: tt.c, Ask: tt.a}
			if *r != want {
				t.Errorf("refusal = %+v, want %+v", *r, want)
			}
			if got := err.Error(); got != tt.wantMsg {
				t.Errorf("Error() = %q, want %q", got, tt.wantMsg)
			}
		})
	}
}

func TestAskOf(t *testing.T) {
	for typ, console := range map[string]bool{
		placement.TypeConsole: true, "console": true, "Console": true,
		placement.TypeVirtual: false, "virtual": false, "": false, "OTHER": false,
	} {
		if got, want := placement.AskOf("bob", typ), (placement.Ask{Owner: "bob", Console: console}); got != want {
			t.Errorf("AskOf(bob, %q) = %+v, want %+v", typ, got, want)
		}
	}
}

func TestReason_String(t *testing.T) {
	for r, want := range map[placement.Reason]string{
		placement.ReasonFull:    "max_virtual_sessions reached",
		placement.ReasonPerUser: "max_concurrent_sessions_per_user reached",
		placement.ReasonConsole: "console session running",
		0:                       "Reason(0)",
		99:                      "Reason(99)",
	} {
		if got := r.String(); got != want {
			t.Errorf("Reason(%d).String() = %q, want %q", uint8(r), got, want)
		}
	}
}

// TestPlace_NeverExceedsFits replays Place's decisions on small random
// fleets, where limits, consoles and the batch's own sessions interact:
// each placed session fits its host as the host was just before it
// (Fits), and a request is refused only when every host was excluded,
// failed a static filter or was refused by Fits.
func TestPlace_NeverExceedsFits(t *testing.T) {
	owners := []string{"ann", "bob", "cy"}
	for seed := range uint64(500) {
		rng := rand.New(rand.NewPCG(seed, 11))
		hosts := make([]placement.Host, 1+rng.IntN(8))
		for i := range hosts {
			h := placement.Host{
				ID:                 fmt.Sprintf("h%d", i),
				OSFamily:           "linux",
				MaxVirtualSessions: rng.IntN(4),
				MaxSessionsPerUser: rng.IntN(3),
				GLCapable:          rng.IntN(2) == 0,
				Console:            rng.IntN(5) / 4,
				ByOwner:            map[string]int{},
				Load:               float64(rng.IntN(2)),
			}
			if rng.IntN(4) == 0 {
				h.OSFamily = "windows"
			}
			for range rng.IntN(4) {
				h.Virtual++
				h.ByOwner[owners[rng.IntN(len(owners))]]++
			}
			if h.Console > 0 {
				h.ByOwner[owners[rng.IntN(len(owners))]]++
			}
			hosts[i] = h
		}
		reqs := make([]placement.Request, 1+rng.IntN(30))
		for i := range reqs {
			r := placement.Request{Owner: owners[rng.IntN(len(owners))], Type: placement.TypeVirtual}
			if rng.IntN(4) == 0 {
				r.Type = placement.TypeConsole
			}
			r.GL = r.Type == placement.TypeVirtual && rng.IntN(8) == 0
			if rng.IntN(8) == 0 {
				r.Exclude = []string{hosts[rng.IntN(len(hosts))].ID}
			}
			reqs[i] = r
		}

		type state struct {
			counts  placement.Counts
			byOwner map[string]int
		}
		st := make([]state, len(hosts))
		for i, h := range hosts {
			st[i] = state{placement.Counts{Virtual: h.Virtual, Console: h.Console}, map[string]int{}}
			for o, n := range h.ByOwner {
				st[i].byOwner[o] = n
			}
		}
		fits := func(i int, r placement.Request) error {
			h := hosts[i]
			c := st[i].counts
			c.Owned = st[i].byOwner[r.Owner]
			return placement.Fits(placement.Limits{MaxVirtual: h.MaxVirtualSessions, MaxPerUser: h.MaxSessionsPerUser}, c, placement.AskOf(r.Owner, r.Type))
		}
		for k, d := range placement.Place(hosts, reqs) {
			r := reqs[k]
			if d.Err != nil {
				for i, h := range hosts {
					console := r.Type == placement.TypeConsole
					eligible := !contains(r.Exclude, h.ID) && (console || h.OSFamily == "linux") && (!r.GL || h.GLCapable)
					if eligible && fits(i, r) == nil {
						t.Fatalf("seed %d request %d %+v: refused (%v), but host %s fits", seed, k, r, d.Err, h.ID)
					}
				}
				continue
			}
			i := 0
			for hosts[i].ID != d.HostID {
				i++
			}
			if err := fits(i, r); err != nil {
				t.Fatalf("seed %d request %d %+v: placed on %s, which %v", seed, k, r, d.HostID, err)
			}
			if r.Type == placement.TypeConsole {
				st[i].counts.Console++
			} else {
				st[i].counts.Virtual++
			}
			st[i].byOwner[r.Owner]++
		}
	}
}
