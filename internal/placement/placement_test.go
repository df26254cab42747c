package placement_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/placement"
	"github.com/berth-dev/berth/internal/requirements"
)

func MustParse(tb testing.TB, src string) *requirements.Expr {
	tb.Helper()
	e, err := requirements.Parse(src)
	if err != nil {
		tb.Fatalf("Parse(%q): %v", src, err)
	}
	return e
}

// linux returns an idle linux host with no limits.
func linux(id string) placement.Host {
	return placement.Host{ID: id, OSFamily: "linux"}
}

// with applies changes to a copy of h.
// propsLookup answers property lookups as a placement.Properties.
type propsLookup map[string]string

func (p propsLookup) Property(path string) (string, bool) {
	v, ok := p[path]
	return v, ok
}

func with(h placement.Host, f func(*placement.Host)) placement.Host {
	f(&h)
	return h
}

func virtual(owner string) placement.Request {
	return placement.Request{Owner: owner, Type: placement.TypeVirtual}
}

func console(owner string) placement.Request {
	return placement.Request{Owner: owner, Type: placement.TypeConsole}
}

// hostIDs returns the HostID of each decision, "-" for errors.
func hostIDs(ds []placement.Decision) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		switch {
		case d.HostID != "" && d.Err == nil:
			out[i] = d.HostID
		case d.HostID == "" && d.Err != nil:
			out[i] = "-"
		default:
			out[i] = fmt.Sprintf("invalid decision %+v", d)
		}
	}
	return out
}

func TestPlace_Filters(t *testing.T) {
	gpuReq := MustParse(t, "tag:pool = 'gpu'")
	tests := []struct {
		name    string
		hosts   []placement.Host
		req     placement.Request
		want    string // host ID, or "" for an error
		wantErr placement.NoHostError
	}{
		{
			name:    "no hosts",
			req:     virtual("bob"),
			wantErr: placement.NoHostError{Total: 0},
		},
		{
			name:  "any host",
			hosts: []placement.Host{linux("a")},
			req:   virtual("bob"),
			want:  "a",
		},
		{
			name:    "excluded",
			hosts:   []placement.Host{linux("a"), linux("b")},
			req:     placement.Request{Owner: "bob", Type: "VIRTUAL", Exclude: []string{"a", "b", "zz"}},
			wantErr: placement.NoHostError{Total: 2, Excluded: 2},
		},
		{
			name:  "excluded host skipped",
			hosts: []placement.Host{linux("a"), with(linux("b"), func(h *placement.Host) { h.Virtual = 5 })},
			req:   placement.Request{Owner: "bob", Type: "VIRTUAL", Exclude: []string{"a"}},
			want:  "b",
		},
		{
			name: "requirements",
			hosts: []placement.Host{
				with(linux("a"), func(h *placement.Host) { h.Tags = map[string]string{"pool": "cpu"} }),
				with(linux("b"), func(h *placement.Host) { h.Tags = map[string]string{"pool": "gpu"}; h.Virtual = 3 }),
			},
			req:  placement.Request{Owner: "bob", Type: "VIRTUAL", Requirements: gpuReq},
			want: "b",
		},
		{
			name:    "requirements match none",
			hosts:   []placement.Host{linux("a"), linux("b")},
			req:     placement.Request{Owner: "bob", Type: "VIRTUAL", Requirements: gpuReq},
			wantErr: placement.NoHostError{Total: 2, Requirements: 2},
		},
		{
			name:  "requirements on server properties and defaults",
			hosts: []placement.Host{linux("a"), linux("b")},
			req:   placement.Request{Owner: "bob", Type: "VIRTUAL", Requirements: MustParse(t, "server:Id = 'b' and server:Host.Os.Family = 'linux'")},
			want:  "b",
		},
		{
			name: "requirements on props",
			hosts: []placement.Host{
				with(linux("a"), func(h *placement.Host) { h.Props = map[string]string{"Host.Aws.Ec2InstanceType": "m5.large"} }),
				with(linux("b"), func(h *placement.Host) { h.Props = map[string]string{"Host.Aws.Ec2InstanceType": "g4dn.xlarge"} }),
			},
			req:  placement.Request{Owner: "bob", Type: "VIRTUAL", Requirements: MustParse(t, "server:Host.Aws.EC2InstanceType := 'g4dn'")},
			want: "b",
		},
		{
			name: "requirements on properties looked up",
			hosts: []placement.Host{
				with(linux("a"), func(h *placement.Host) { h.Properties = propsLookup{"Host.CpuInfo.NumberOfCpus": "4"} }),
				with(linux("b"), func(h *placement.Host) { h.Properties = propsLookup{"Host.CpuInfo.NumberOfCpus": "16"} }),
			},
			req:  placement.Request{Owner: "bob", Type: "VIRTUAL", Requirements: MustParse(t, "server:Host.CpuInfo.NumberOfCpus >= 8")},
			want: "b",
		},
		{
			name:    "virtual needs linux",
			hosts:   []placement.Host{{ID: "w", OSFamily: "windows"}},
			req:     virtual("bob"),
			wantErr: placement.NoHostError{Total: 1, OS: 1},
		},
		{
			name:  "console on windows",
			hosts: []placement.Host{{ID: "w", OSFamily: "windows"}},
			req:   console("bob"),
			want:  "w",
		},
		{
			name:  "type and OS are case-insensitive",
			hosts: []placement.Host{{ID: "l", OSFamily: "Linux"}},
			req:   placement.Request{Owner: "bob", Type: "virtual"},
			want:  "l",
		},
		{
			name:    "GL",
			hosts:   []placement.Host{linux("a")},
			req:     placement.Request{Owner: "bob", Type: "VIRTUAL", GL: true},
			wantErr: placement.NoHostError{Total: 1, GL: 1},
		},
		{
			name:  "GL capable",
			hosts: []placement.Host{linux("a"), with(linux("b"), func(h *placement.Host) { h.GLCapable = true; h.Virtual = 9 })},
			req:   placement.Request{Owner: "bob", Type: "VIRTUAL", GL: true},
			want:  "b",
		},
		{
			name:    "full",
			hosts:   []placement.Host{with(linux("a"), func(h *placement.Host) { h.MaxVirtualSessions = 2; h.Virtual = 2 })},
			req:     virtual("bob"),
			wantErr: placement.NoHostError{Total: 1, Full: 1},
		},
		{
			name:  "full does not apply to console",
			hosts: []placement.Host{with(linux("a"), func(h *placement.Host) { h.MaxVirtualSessions = 2; h.Virtual = 2 })},
			req:   console("bob"),
			want:  "a",
		},
		{
			name:  "unlimited",
			hosts: []placement.Host{with(linux("a"), func(h *placement.Host) { h.Virtual = 1000 })},
			req:   virtual("bob"),
			want:  "a",
		},
		{
			name: "per user",
			hosts: []placement.Host{with(linux("a"), func(h *placement.Host) {
				h.MaxSessionsPerUser = 2
				h.Virtual, h.Console = 1, 1
				h.ByOwner = map[string]int{"bob": 2}
			})},
			req:     virtual("bob"),
			wantErr: placement.NoHostError{Total: 1, PerUser: 1, Owner: "bob"},
		},
		{
			name: "per user other owner",
			hosts: []placement.Host{with(linux("a"), func(h *placement.Host) {
				h.MaxSessionsPerUser = 2
				h.Virtual = 2
				h.ByOwner = map[string]int{"bob": 2}
			})},
			req:  virtual("alice"),
			want: "a",
		},
		{
			name:    "console busy",
			hosts:   []placement.Host{{ID: "w", OSFamily: "windows", Console: 1}},
			req:     console("bob"),
			wantErr: placement.NoHostError{Total: 1, Console: 1, Owner: "bob"},
		},
		{
			name: "console with virtual sessions running",
			hosts: []placement.Host{
				{ID: "w", OSFamily: "windows", Console: 1},
				with(linux("l"), func(h *placement.Host) { h.Virtual = 4 }),
			},
			req:  console("bob"),
			want: "l",
		},
		{
			name: "each filter once, first failing filter counts",
			hosts: []placement.Host{
				with(linux("ex"), func(h *placement.Host) { h.Tags = map[string]string{"pool": "cpu"} }), // excluded wins over requirements
				with(linux("req"), func(h *placement.Host) { h.Tags = map[string]string{"pool": "cpu"} }),
				{ID: "win", OSFamily: "windows", Tags: map[string]string{"pool": "gpu"}},
				with(linux("nogl"), func(h *placement.Host) { h.Tags = map[string]string{"pool": "gpu"} }),
				with(linux("full"), func(h *placement.Host) {
					h.Tags = map[string]string{"pool": "gpu"}
					h.GLCapable = true
					h.MaxVirtualSessions, h.Virtual = 1, 1
					h.MaxSessionsPerUser, h.ByOwner = 1, map[string]int{"bob": 1} // full wins over per user
				}),
				with(linux("user"), func(h *placement.Host) {
					h.Tags = map[string]string{"pool": "gpu"}
					h.GLCapable = true
					h.MaxSessionsPerUser, h.Console, h.ByOwner = 1, 1, map[string]int{"bob": 1}
				}),
			},
			req:     placement.Request{Owner: "bob", Type: "VIRTUAL", GL: true, Requirements: gpuReq, Exclude: []string{"ex"}},
			wantErr: placement.NoHostError{Total: 6, Excluded: 1, Requirements: 1, OS: 1, GL: 1, Full: 1, PerUser: 1, Owner: "bob"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ds := placement.Place(tt.hosts, []placement.Request{tt.req})
			if len(ds) != 1 {
				t.Fatalf("got %d decisions, want 1", len(ds))
			}
			d := ds[0]
			if tt.want != "" {
				if d.HostID != tt.want || d.Err != nil {
					t.Fatalf("got %q, %v; want %q", d.HostID, d.Err, tt.want)
				}
				return
			}
			if d.HostID != "" || d.Err == nil {
				t.Fatalf("got %q, %v; want an error", d.HostID, d.Err)
			}
			want := tt.wantErr
			want.Owner = tt.req.Owner
			if *d.Err != want {
				t.Errorf("error = %+v, want %+v", *d.Err, want)
			}
			e := d.Err
			if sum := e.Excluded + e.Requirements + e.OS + e.GL + e.Full + e.PerUser + e.Console; sum != e.Total {
				t.Errorf("counts add up to %d, want Total %d", sum, e.Total)
			}
		})
	}
}

func TestNoHostError_Error(t *testing.T) {
	const prefix = "no DCV server found for the given criteria: "
	tests := []struct {
		err  placement.NoHostError
		want string
	}{
		{placement.NoHostError{}, "0 servers available"},
		{placement.NoHostError{Total: 12, Requirements: 3, Full: 9}, "of 12 servers, 3 do not match the requirements, 9 are full (max_virtual_sessions reached)"},
		{placement.NoHostError{Total: 1, Requirements: 1}, "of 1 server, 1 does not match the requirements"},
		{placement.NoHostError{Total: 2, Excluded: 2}, "of 2 servers, 2 are excluded after failed attempts"},
		{placement.NoHostError{Total: 1, Excluded: 1}, "of 1 server, 1 is excluded after failed attempts"},
		{placement.NoHostError{Total: 3, OS: 3}, "of 3 servers, 3 cannot run VIRTUAL sessions (not linux)"},
		{placement.NoHostError{Total: 2, GL: 1, Full: 1}, "of 2 servers, 1 does not support DCV GL, 1 is full (max_virtual_sessions reached)"},
		{placement.NoHostError{Total: 2, PerUser: 2, Owner: "bob"}, `of 2 servers, 2 are at the per-user limit (max_concurrent_sessions_per_user reached for owner "bob")`},
		{placement.NoHostError{Total: 1, PerUser: 1, Owner: "bob"}, `of 1 server, 1 is at the per-user limit (max_concurrent_sessions_per_user reached for owner "bob")`},
		{placement.NoHostError{Total: 2, Console: 2}, "of 2 servers, 2 already run a console session"},
		{placement.NoHostError{Total: 1, Console: 1}, "of 1 server, 1 already runs a console session"},
		{
			placement.NoHostError{Total: 7, Excluded: 1, Requirements: 1, OS: 1, GL: 1, Full: 1, PerUser: 1, Console: 1, Owner: "o"},
			`of 7 servers, 1 is excluded after failed attempts, 1 does not match the requirements, 1 cannot run VIRTUAL sessions (not linux), ` +
				`1 does not support DCV GL, 1 is full (max_virtual_sessions reached), ` +
				`1 is at the per-user limit (max_concurrent_sessions_per_user reached for owner "o"), 1 already runs a console session`,
		},
		{placement.NoHostError{Total: 4}, "of 4 servers, none is eligible"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != prefix+tt.want {
			t.Errorf("Error() = %q\nwant        %q", got, prefix+tt.want)
		}
	}
}

func TestPlace_Batch(t *testing.T) {
	full2 := with(linux("a"), func(h *placement.Host) { h.MaxVirtualSessions = 2 })
	tests := []struct {
		name  string
		hosts []placement.Host
		reqs  []placement.Request
		want  []string
	}{
		{
			name:  "batch never overfills a host",
			hosts: []placement.Host{full2},
			reqs:  []placement.Request{virtual("u1"), virtual("u2"), virtual("u3")},
			want:  []string{"a", "a", "-"},
		},
		{
			name:  "console then virtual on a full host",
			hosts: []placement.Host{with(full2, func(h *placement.Host) { h.Virtual = 2 })},
			reqs:  []placement.Request{console("u1"), console("u2"), virtual("u3")},
			want:  []string{"a", "-", "-"},
		},
		{
			name: "per-user limit counts the batch",
			hosts: []placement.Host{with(linux("a"), func(h *placement.Host) {
				h.MaxSessionsPerUser = 2
				h.Virtual, h.ByOwner = 1, map[string]int{"bob": 1}
			})},
			reqs: []placement.Request{virtual("bob"), virtual("bob"), virtual("alice"), console("bob")},
			want: []string{"a", "-", "a", "-"},
		},
		{
			name:  "spreads over equal hosts",
			hosts: []placement.Host{linux("a"), linux("b"), linux("c")},
			reqs:  []placement.Request{virtual("u"), virtual("u"), virtual("u")},
			want:  nil, // checked below: all different
		},
		{
			name: "fewest sessions first",
			hosts: []placement.Host{
				with(linux("a"), func(h *placement.Host) { h.Virtual = 3 }),
				with(linux("b"), func(h *placement.Host) { h.Virtual = 1; h.Console = 1 }),
				with(linux("c"), func(h *placement.Host) { h.Load = 1 }),
			},
			reqs: []placement.Request{virtual("u"), virtual("u"), virtual("u"), virtual("u"), virtual("u")},
			want: []string{"c", "c", "b", "c", "?"}, // last: a or b by hash
		},
		{
			name: "load breaks ties",
			hosts: []placement.Host{
				with(linux("a"), func(h *placement.Host) { h.Load = 2.5 }),
				with(linux("b"), func(h *placement.Host) { h.Load = 0.5 }),
				with(linux("c"), func(h *placement.Host) { h.Load = 1.5 }),
			},
			reqs: []placement.Request{virtual("u"), virtual("u"), virtual("u"), virtual("u")},
			want: []string{"b", "c", "a", "b"},
		},
		{
			name:  "decisions in request order with mixed outcomes",
			hosts: []placement.Host{with(full2, func(h *placement.Host) { h.Load = 1 }), {ID: "w", OSFamily: "windows"}},
			reqs:  []placement.Request{console("u1"), virtual("u1"), console("u2"), virtual("u2"), virtual("u3")},
			want:  []string{"w", "a", "a", "a", "-"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := hostIDs(placement.Place(tt.hosts, tt.reqs))
			if tt.want == nil {
				seen := map[string]bool{}
				for _, id := range got {
					seen[id] = true
				}
				if len(seen) != len(got) {
					t.Errorf("got %q, want distinct hosts", got)
				}
				return
			}
			for i := range tt.want {
				if tt.want[i] != "?" && got[i] != tt.want[i] {
					t.Errorf("got %q, want %q", got, tt.want)
					break
				}
			}
		})
	}
}

// TestPlace_TieBreak checks that equal hosts are not always taken in ID
// order: different owners land on different hosts, and the choice is stable.
func TestPlace_TieBreak(t *testing.T) {
	var hosts []placement.Host
	for i := range 10 {
		hosts = append(hosts, linux(fmt.Sprintf("h%02d", i)))
	}
	first := map[string]int{}
	for i := range 50 {
		r := []placement.Request{virtual(fmt.Sprintf("user%d", i))}
		a := placement.Place(hosts, r)[0].HostID
		b := placement.Place(hosts, r)[0].HostID
		if a != b {
			t.Fatalf("owner %d: %q then %q, want a stable choice", i, a, b)
		}
		first[a]++
	}
	if len(first) < 4 {
		t.Errorf("50 owners picked only %d distinct hosts out of 10: %v", len(first), first)
	}
}

func TestPlace_Exclusions(t *testing.T) {
	hosts := []placement.Host{
		linux("a"),
		with(linux("b"), func(h *placement.Host) { h.Virtual = 1 }),
		with(linux("c"), func(h *placement.Host) { h.Virtual = 2 }),
		with(linux("a"), func(h *placement.Host) { h.Virtual = 3 }), // duplicate ID
	}
	reqs := []placement.Request{
		{Owner: "u", Type: "VIRTUAL", Exclude: []string{"a"}},
		{Owner: "u", Type: "VIRTUAL"},
		{Owner: "u", Type: "VIRTUAL", Exclude: []string{"b", "c", "b"}},
		{Owner: "u", Type: "VIRTUAL", Exclude: []string{"a", "b", "c"}},
	}
	ds := placement.Place(hosts, reqs)
	if got, want := hostIDs(ds), []string{"b", "a", "a", "-"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	if e := ds[3].Err; *e != (placement.NoHostError{Total: 4, Excluded: 4, Owner: "u"}) {
		t.Errorf("error = %+v", *e)
	}
}

func TestPlace_Pure(t *testing.T) {
	hosts := []placement.Host{
		with(linux("a"), func(h *placement.Host) {
			h.MaxVirtualSessions, h.MaxSessionsPerUser = 3, 2
			h.ByOwner = map[string]int{"bob": 1}
			h.Tags = map[string]string{"pool": "gpu"}
			h.Props = map[string]string{"Hostname": "a.example"}
		}),
		{ID: "w", OSFamily: "windows", ByOwner: map[string]int{}},
	}
	before := fmt.Sprintf("%#v", hosts)
	reqs := []placement.Request{
		virtual("bob"), virtual("bob"), console("bob"), console("alice"),
		{Owner: "carol", Type: "VIRTUAL", Requirements: MustParse(t, "tag:pool = 'gpu'"), Exclude: []string{"w"}},
	}
	placement.Place(hosts, reqs)
	if after := fmt.Sprintf("%#v", hosts); after != before {
		t.Errorf("Place mutated hosts:\nbefore %s\nafter  %s", before, after)
	}
	// The same snapshot gives the same decisions every time.
	a := hostIDs(placement.Place(hosts, reqs))
	b := hostIDs(placement.Place(hosts, reqs))
	if !reflect.DeepEqual(a, b) {
		t.Errorf("decisions differ: %q vs %q", a, b)
	}
}

// fleetShape tunes fleet.
type fleetShape struct {
	hosts, reqs int
	loadLevels  int // 0: continuous loads; otherwise loads take this many values, so hosts tie
	maxVirtual  int // MaxVirtualSessions is maxVirtual..2*maxVirtual-1
	seed        uint64
}

// fleet builds n hosts with varied tags, properties, limits and load, and m
// requests spread over 10 expressions.
func fleet(tb testing.TB, shape fleetShape) ([]placement.Host, []placement.Request) {
	n, m := shape.hosts, shape.reqs
	rng := rand.New(rand.NewPCG(shape.seed, 2))
	pools := []string{"p0", "p1", "p2", "p3", "p4"}
	types := []string{"m5.large", "m5.2xlarge", "g4dn.xlarge", "g5.2xlarge", "c6i.4xlarge"}
	cpus := []string{"4", "8", "16", "32"}
	hosts := make([]placement.Host, n)
	for i := range hosts {
		id := fmt.Sprintf("srv-%05d", i)
		os := "linux"
		if i%10 == 9 {
			os = "windows"
		}
		gpu := rng.IntN(4) == 0
		max := shape.maxVirtual + rng.IntN(shape.maxVirtual)
		v := rng.IntN(max)
		byOwner := map[string]int{}
		for j := range v {
			byOwner[fmt.Sprintf("user%03d", (i+j*7)%300)]++
		}
		hosts[i] = placement.Host{
			ID: id,
			Tags: map[string]string{
				"pool":          pools[rng.IntN(len(pools))],
				"gpu":           fmt.Sprint(gpu),
				"dcv:os-family": os,
			},
			Props: map[string]string{
				"Id":                        id,
				"Hostname":                  id + ".example.internal",
				"Host.Os.Family":            os,
				"Host.CpuInfo.NumberOfCpus": cpus[rng.IntN(len(cpus))],
				"Host.Memory.TotalBytes":    fmt.Sprint((8 << 30) * (1 + rng.IntN(16))),
				"Host.Aws.Ec2InstanceType":  types[rng.IntN(len(types))],
			},
			OSFamily:           os,
			MaxVirtualSessions: max,
			MaxSessionsPerUser: rng.IntN(2) * 3,
			GLCapable:          gpu,
			Virtual:            v,
			ByOwner:            byOwner,
			Load:               rng.Float64() * 8,
		}
		if shape.loadLevels > 0 {
			hosts[i].Load = float64(rng.IntN(shape.loadLevels))
		}
	}
	srcs := []string{
		"tag:pool = 'p0'",
		"tag:pool = 'p1' or tag:pool = 'p2'",
		"server:Host.CpuInfo.NumberOfCpus >= 16",
		"server:Host.Memory.TotalBytes >= 32E9 and tag:gpu = 'true'",
		"server:Host.Aws.EC2InstanceType := 'g4dn'",
		"not tag:pool = 'p4'",
		"tag:dcv:os-family = 'linux' and server:Host.CpuInfo.NumberOfCpus > 4",
		"tag:team = 'render' or tag:pool = 'p3'",
		"server:Host.Os.Family = 'linux' and (tag:pool = 'p0' or tag:pool = 'p3')",
		"tag:gpu != 'true'",
	}
	exprs := make([]*requirements.Expr, len(srcs))
	for i, s := range srcs {
		exprs[i] = MustParse(tb, s)
	}
	reqs := make([]placement.Request, m)
	for i := range reqs {
		r := placement.Request{
			Owner:        fmt.Sprintf("user%03d", rng.IntN(300)),
			Type:         placement.TypeVirtual,
			Requirements: exprs[i%len(exprs)],
		}
		if rng.IntN(10) == 0 {
			r.Type = placement.TypeConsole
		}
		if r.Type == placement.TypeVirtual && rng.IntN(10) == 0 {
			r.GL = true
		}
		if rng.IntN(20) == 0 {
			r.Exclude = []string{hosts[rng.IntN(n)].ID}
		}
		reqs[i] = r
	}
	return hosts, reqs
}

// TestPlace_Fleet checks fleets of several shapes against a straightforward
// reference implementation of the same rules.
func TestPlace_Fleet(t *testing.T) {
	for _, shape := range []fleetShape{
		{hosts: 1000, reqs: 1500, maxVirtual: 10, seed: 1},
		{hosts: 1000, reqs: 1500, maxVirtual: 10, loadLevels: 3, seed: 2},
		{hosts: 500, reqs: 3000, maxVirtual: 2, loadLevels: 1, seed: 3},
		{hosts: 50, reqs: 2000, maxVirtual: 30, loadLevels: 2, seed: 4},
		{hosts: 300, reqs: 300, maxVirtual: 1, loadLevels: 1, seed: 5},
	} {
		t.Run(fmt.Sprintf("%+v", shape), func(t *testing.T) {
			hosts, reqs := fleet(t, shape)
			got := placement.Place(hosts, reqs)
			want := reference(hosts, reqs)
			placed := 0
			for i := range reqs {
				if got[i].HostID != want[i].HostID {
					t.Fatalf("request %d %+v: got %q, want %q", i, reqs[i], got[i].HostID, want[i].HostID)
				}
				if (got[i].Err == nil) != (want[i].Err == nil) || got[i].Err != nil && *got[i].Err != *want[i].Err {
					t.Fatalf("request %d: got error %v, want %v", i, got[i].Err, want[i].Err)
				}
				if got[i].Err == nil {
					placed++
				}
			}
			if placed == 0 || placed == len(reqs) {
				t.Errorf("placed %d of %d: the fleet should exercise both outcomes", placed, len(reqs))
			}
		})
	}
}

// TestPlace_Random compares many small random fleets, where ties, full
// hosts and per-user limits are common, with the reference.
func TestPlace_Random(t *testing.T) {
	for seed := range uint64(300) {
		rng := rand.New(rand.NewPCG(seed, 7))
		shape := fleetShape{
			hosts:      1 + rng.IntN(40),
			reqs:       1 + rng.IntN(120),
			loadLevels: 1 + rng.IntN(3),
			maxVirtual: 1 + rng.IntN(4),
			seed:       seed,
		}
		hosts, reqs := fleet(t, shape)
		got := placement.Place(hosts, reqs)
		want := reference(hosts, reqs)
		for i := range reqs {
			if got[i].HostID != want[i].HostID ||
				(got[i].Err == nil) != (want[i].Err == nil) || got[i].Err != nil && *got[i].Err != *want[i].Err {
				t.Fatalf("%+v request %d %+v: got %q %v, want %q %v",
					shape, i, reqs[i], got[i].HostID, got[i].Err, want[i].HostID, want[i].Err)
			}
		}
	}
}

// reference is a slow, obviously correct Place: it copies the hosts and
// re-evaluates every filter for every request. Capacity is Fits, which
// TestFits checks case by case.
func reference(in []placement.Host, reqs []placement.Request) []placement.Decision {
	type state struct {
		virtual, console int
		byOwner          map[string]int
	}
	st := make([]state, len(in))
	for i, h := range in {
		st[i] = state{h.Virtual, h.Console, map[string]int{}}
		for k, v := range h.ByOwner {
			st[i].byOwner[k] = v
		}
	}
	out := make([]placement.Decision, len(reqs))
	for ri, r := range reqs {
		con := strings.EqualFold(r.Type, "CONSOLE")
		e := &placement.NoHostError{Total: len(in), Owner: r.Owner}
		best := -1
		for i, h := range in {
			s := st[i]
			switch {
			case contains(r.Exclude, h.ID):
				e.Excluded++
			case r.Requirements != nil && !r.Requirements.Match(refSubject{h}):
				e.Requirements++
			case !con && !strings.EqualFold(h.OSFamily, "linux"):
				e.OS++
			case r.GL && !h.GLCapable:
				e.GL++
			case refused(h, s.virtual, s.console, s.byOwner[r.Owner], r, e):
			default:
				if best < 0 || less(in, st[i].virtual+st[i].console, st[best].virtual+st[best].console, i, best, r.Owner) {
					best = i
				}
			}
		}
		if best < 0 {
			out[ri] = placement.Decision{Err: e}
			continue
		}
		if con {
			st[best].console++
		} else {
			st[best].virtual++
		}
		st[best].byOwner[r.Owner]++
		out[ri] = placement.Decision{HostID: in[best].ID}
	}
	return out
}

// refused applies the capacity rule to host h with those counts and, if it
// refuses r, counts the reason in e.
func refused(h placement.Host, virtual, console, owned int, r placement.Request, e *placement.NoHostError) bool {
	err := placement.Fits(placement.Limits{MaxVirtual: h.MaxVirtualSessions, MaxPerUser: h.MaxSessionsPerUser},
		placement.Counts{Virtual: virtual, Console: console, Owned: owned}, placement.AskOf(r.Owner, r.Type))
	if err == nil {
		return false
	}
	var ref *placement.Refusal
	if !errors.As(err, &ref) {
		panic(fmt.Sprintf("Fits returned %T, want *placement.Refusal", err))
	}
	switch ref.Reason {
	case placement.ReasonFull:
		e.Full++
	case placement.ReasonPerUser:
		e.PerUser++
	case placement.ReasonConsole:
		e.Console++
	default:
		panic(fmt.Sprintf("unknown reason %v", ref.Reason))
	}
	return true
}

func less(hosts []placement.Host, ti, tj, i, j int, owner string) bool {
	if ti != tj {
		return ti < tj
	}
	if hosts[i].Load != hosts[j].Load {
		return hosts[i].Load < hosts[j].Load
	}
	if ki, kj := ringKey(hosts[i].ID, owner), ringKey(hosts[j].ID, owner); ki != kj {
		return ki < kj
	}
	return i < j
}

// ringKey restates the documented tie-breaker: the distance on the ring from
// the owner's position to the host's, both splitmix64(FNV-1a(name)).
func ringKey(id, owner string) uint64 {
	pos := func(s string) uint64 {
		h := uint64(14695981039346656037)
		for i := 0; i < len(s); i++ {
			h ^= uint64(s[i])
			h *= 1099511628211
		}
		h ^= h >> 30
		h *= 0xbf58476d1ce4e5b9
		h ^= h >> 27
		h *= 0x94d049bb133111eb
		h ^= h >> 31
		return h
	}
	return pos(id) - pos(owner)
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

type refSubject struct{ h placement.Host }

func (s refSubject) Tag(k string) (string, bool) { v, ok := s.h.Tags[k]; return v, ok }
func (s refSubject) Property(p string) (string, bool) {
	if v, ok := s.h.Props[p]; ok {
		return v, true
	}
	if p == "Id" {
		return s.h.ID, true
	}
	if p == "Host.Os.Family" {
		return s.h.OSFamily, true
	}
	return "", false
}

func BenchmarkPlace(b *testing.B) {
	hosts, reqs := fleet(b, fleetShape{hosts: 10000, reqs: 1000, maxVirtual: 10, seed: 1})
	b.ReportAllocs()
	for b.Loop() {
		placement.Place(hosts, reqs)
	}
}

// BenchmarkPlace_Uniform is the worst case for tie-breaking: 10,000 idle,
// identical hosts, so every host ties on sessions and load.
func BenchmarkPlace_Uniform(b *testing.B) {
	hosts := make([]placement.Host, 10000)
	for i := range hosts {
		hosts[i] = placement.Host{ID: fmt.Sprintf("srv-%05d", i), OSFamily: "linux", MaxVirtualSessions: 10}
	}
	reqs := make([]placement.Request, 1000)
	for i := range reqs {
		reqs[i] = virtual(fmt.Sprintf("user%03d", i%300))
	}
	b.ReportAllocs()
	for b.Loop() {
		placement.Place(hosts, reqs)
	}
}

// BenchmarkPlace_Full is the refusal path, as when a full fleet holds a
// queue: 10,000 hosts, each full or with its console taken and the three
// requesting owners at its per-user limit, so that no request is placed
// and each checks and explains every host.
func BenchmarkPlace_Full(b *testing.B) {
	hosts := make([]placement.Host, 10000)
	for i := range hosts {
		h := placement.Host{ID: fmt.Sprintf("srv-%05d", i), OSFamily: "linux", MaxVirtualSessions: 4, Virtual: 4}
		if i%2 == 1 {
			h.Virtual, h.Console, h.MaxSessionsPerUser = 2, 1, 1
			h.ByOwner = map[string]int{"u0": 1, "u1": 1, "u2": 1}
		}
		hosts[i] = h
	}
	reqs := make([]placement.Request, 200)
	for i := range reqs {
		reqs[i] = virtual(fmt.Sprintf("u%d", i%3))
		if i%10 == 9 {
			reqs[i].Type = placement.TypeConsole
		}
	}
	if ds := placement.Place(hosts, reqs); ds[0].Err == nil {
		b.Fatalf("placed on %s, want no host", ds[0].HostID)
	}
	b.ReportAllocs()
	for b.Loop() {
		placement.Place(hosts, reqs)
	}
}
