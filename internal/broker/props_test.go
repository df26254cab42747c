package broker

import (
	"maps"
	"reflect"
	"strings"
	"testing"
	"unsafe"
)

func propsServer() *Server {
	return &Server{
		ID: "srv-1", BrokerID: "b1",
		Info: ServerInfo{
			Hostname: "h1.example", Version: "2024.0.1", AgentVersion: "2024.0.9", Driver: "sim", WebURLPath: "/",
			Endpoints: []Endpoint{{Port: 8443, WebURLPath: "/", Protocol: "HTTP"}},
			Host: Host{
				OSName: "Ubuntu", OSVersion: "22.04", KernelVersion: "6.5.0", BuildNumber: "",
				MemTotal: 32 << 30, MemUsed: 1 << 30, SwapTotal: 0, SwapUsed: 0,
				AWSRegion: "eu-west-1", EC2InstanceType: "g4dn.xlarge", EC2InstanceID: "i-1", EC2ImageID: "ami-1",
				CPUVendor: "GenuineIntel", CPUModel: "Xeon", CPUArch: "x86_64", CPUs: 8, CoresPerCPU: 4,
				Load1: 0.5, Load5: 1.25, Load15: 2,
				GPUs: []GPU{{Vendor: "NVIDIA", Model: "T4"}},
			},
			Tags: map[string]string{"pool": "gpu"},
		},
	}
}

// TestServerProperty checks every requirement property path against the
// server's fields, and that empty and unknown ones are absent.
func TestServerProperty(t *testing.T) {
	s := propsServer()
	s.prepare()
	tests := []struct{ path, want string }{
		{"Id", "srv-1"},
		{"Hostname", "h1.example"},
		{"Version", "2024.0.1"},
		{"SessionManagerAgentVersion", "2024.0.9"},
		{"Host.Os.BuildNumber", ""},
		{"Host.Os.Family", "linux"}, // defaulted
		{"Host.Os.KernelVersion", "6.5.0"},
		{"Host.Os.Name", "Ubuntu"},
		{"Host.Os.Version", "22.04"},
		{"Host.Memory.TotalBytes", "34359738368"},
		{"Host.Memory.UsedBytes", "1073741824"},
		{"Host.Swap.TotalBytes", "0"},
		{"Host.Swap.UsedBytes", "0"},
		{"Host.CpuLoadAverage.OneMinute", "0.5"},
		{"Host.CpuLoadAverage.FiveMinutes", "1.25"},
		{"Host.CpuLoadAverage.FifteenMinutes", "2"},
		{"Host.Aws.Ec2InstanceId", "i-1"},
		{"Host.Aws.Ec2InstanceType", "g4dn.xlarge"},
		{"Host.Aws.Region", "eu-west-1"},
		{"Host.Aws.Ec2ImageId", "ami-1"},
		{"Host.CpuInfo.Architecture", "x86_64"},
		{"Host.CpuInfo.ModelName", "Xeon"},
		{"Host.CpuInfo.NumberOfCpus", "8"},
		{"Host.CpuInfo.PhysicalCoresPerCpu", "4"},
		{"Host.CpuInfo.Vendor", "GenuineIntel"},
		{"Host.Nope", ""},
		{"id", ""}, // paths are canonical: the requirements parser canonicalises case
	}
	for _, tt := range tests {
		got, ok := s.Property(tt.path)
		if got != tt.want || ok != (tt.want != "") {
			t.Errorf("Property(%q) = %q, %v; want %q, %v", tt.path, got, ok, tt.want, tt.want != "")
		}
	}
	s.Info.Host.OSFamily = "windows"
	if v, _ := s.Property("Host.Os.Family"); v != "windows" {
		t.Errorf("Host.Os.Family = %q, want windows", v)
	}
}

func sameString(a, b string) bool {
	return a == b && unsafe.StringData(a) == unsafe.StringData(b)
}

func sameMap(a, b map[string]string) bool {
	return reflect.ValueOf(a).UnsafePointer() == reflect.ValueOf(b).UnsafePointer()
}

// TestInternTable checks that interning returns equal values, one copy for
// equal strings and one map for equal tag sets, and keeps distinct sets
// apart.
func TestInternTable(t *testing.T) {
	var tab internTable
	a := tab.str(strings.Repeat("x", 10))
	b := tab.str(strings.Repeat("x", 10))
	if !sameString(a, b) {
		t.Error("equal strings were not interned to one copy")
	}
	if c := tab.str("y"); c != "y" || sameString(a, c) {
		t.Errorf("str(y) = %q", c)
	}
	long := strings.Repeat("z", maxInternedLen+1)
	if got := tab.str(long); !sameString(got, long) {
		t.Error("a long string was interned")
	}
	if got := tab.str(""); got != "" {
		t.Errorf("str(\"\") = %q", got)
	}

	m1 := map[string]string{"pool": "gpu", "zone": "a"}
	m2 := map[string]string{"zone": "a", "pool": "gpu"}
	s1, s2 := tab.tags(m1), tab.tags(m2)
	if !maps.Equal(s1, m1) || !sameMap(s1, s2) {
		t.Errorf("equal tag sets: %v and %v, shared %v", s1, s2, sameMap(s1, s2))
	}
	for k, v := range s1 {
		if !sameString(k, tab.str(k)) || !sameString(v, tab.str(v)) {
			t.Errorf("tag %q=%q is not canonical", k, v)
		}
	}
	// Sets that a careless key would confuse stay apart.
	for _, pair := range [][2]map[string]string{
		{{"a": "bc"}, {"ab": "c"}},
		{{"a": "b", "c": "d"}, {"a": "b\x00c\x00d"}},
		{{"a": "1:b"}, {"a:1": "b"}},
		{{}, {"": ""}},
	} {
		x, y := tab.tags(pair[0]), tab.tags(pair[1])
		if !maps.Equal(x, pair[0]) || !maps.Equal(y, pair[1]) || sameMap(x, y) {
			t.Errorf("tags(%q) = %q, tags(%q) = %q", pair[0], x, pair[1], y)
		}
	}

	// A full table starts afresh and still returns equal values.
	for i := range 2 * maxInterned {
		v := "v" + strings.Repeat("-", i%7) + string(rune('a'+i%26)) + strings.Repeat("+", i/26)
		if got := tab.str(v); got != v {
			t.Fatalf("str(%q) = %q", v, got)
		}
	}
	if n := len(tab.strs) + len(tab.tagSets); n > maxInterned+maxInternTags*2 {
		t.Errorf("table holds %d entries, limit %d", n, maxInterned)
	}
	if got := tab.tags(m1); !maps.Equal(got, m1) {
		t.Errorf("tags after a reset = %v", got)
	}
}

// TestPrepare_SharesValues checks that two servers reporting the same host
// share their strings and tag maps once cached, keep their own values, and
// that preparing a copy leaves the original's slices alone.
func TestPrepare_SharesValues(t *testing.T) {
	a, b := propsServer(), propsServer()
	b.ID, b.Info.Hostname = "srv-2", "h2.example"
	// b's strings are separate copies, as decoding two reports gives.
	b.Info.Host.CPUModel = strings.Clone(a.Info.Host.CPUModel)
	b.Info.Endpoints[0].Protocol = strings.Clone("HTTP")
	b.Info.Host.GPUs[0].Model = strings.Clone("T4")
	b.Info.Tags = map[string]string{"pool": strings.Clone("gpu")}
	a.prepare()
	b.prepare()
	if !sameString(a.Info.Host.CPUModel, b.Info.Host.CPUModel) ||
		!sameString(a.Info.Endpoints[0].Protocol, b.Info.Endpoints[0].Protocol) ||
		!sameString(a.Info.Host.GPUs[0].Model, b.Info.Host.GPUs[0].Model) {
		t.Error("shared host values were not interned")
	}
	if !sameMap(a.Info.Tags, b.Info.Tags) || !sameMap(a.tags, b.tags) {
		t.Error("equal tag sets were not shared")
	}
	want := map[string]string{
		"pool": "gpu", "dcv:os-family": "linux",
		"dcv:max-virtual-sessions": "unlimited", "dcv:max-concurrent-sessions-per-user": "unlimited",
	}
	if !maps.Equal(a.tags, want) {
		t.Errorf("tags = %v, want %v", a.tags, want)
	}
	if a.Info.Hostname != "h1.example" || b.Info.Hostname != "h2.example" || b.ID != "srv-2" {
		t.Errorf("own values changed: %q %q %q", a.Info.Hostname, b.Info.Hostname, b.ID)
	}
	// An agent tag never overrides a system tag.
	c := propsServer()
	c.Info.Tags = map[string]string{"dcv:os-family": "windows"}
	c.prepare()
	if c.tags["dcv:os-family"] != "linux" {
		t.Errorf("dcv:os-family = %q", c.tags["dcv:os-family"])
	}
	// A copy of a cached server (as setOpen and host reports make) shares
	// its slices; preparing it must not write them.
	cp := *a
	cp.prepare()
	if &cp.Info.Endpoints[0] == &a.Info.Endpoints[0] || &cp.Info.Host.GPUs[0] == &a.Info.Host.GPUs[0] {
		t.Error("prepare wrote the slices it shares with the server it was copied from")
	}
}
