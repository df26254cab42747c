package hostinfo

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/agentproto"
	"github.com/google/go-cmp/cmp"
)

func TestProbes(t *testing.T) {
	want := []string{"aws", "cpu", "gpu", "load", "mem", "net", "os", "users"}
	if got := Probes(); !cmp.Equal(want, got) {
		t.Errorf("Probes() = %q, want %q", got, want)
	}
}

// TestProber_Report runs every probe over a fixture tree.
func TestProber_Report(t *testing.T) {
	root := t.TempDir()
	if err := os.CopyFS(root, os.DirFS("testdata/root")); err != nil {
		t.Fatal(err)
	}
	pciTree(t, root, testPCIDevices)
	mustWriteFile(t, root, "var/run/utmp", append(utmpRecord(7, "alice", "pts/0"), utmpRecord(7, "bob", "pts/1")...))
	imds := newFakeIMDS(t, map[string]string{
		"instance-id": "i-0abc", "instance-type": "g5.xlarge", "ami-id": "ami-0def", "placement/region": "us-west-2",
	})
	p := &Prober{Root: root, IMDSURL: imds.URL}
	got := p.Report(context.Background())
	const k = 1024
	want := agentproto.HostReport{
		Hostname: "desk-01",
		OS:       agentproto.OS{Family: "linux", Name: "Ubuntu", Version: "22.04", Kernel: "5.15.0-1051-aws"},
		Memory: agentproto.Memory{
			TotalBytes: 32791716 * k, UsedBytes: (32791716 - 20971520) * k,
			SwapTotalBytes: 8388604 * k, SwapUsedBytes: (8388604 - 7340028) * k,
		},
		AWS: &agentproto.AWS{Region: "us-west-2", InstanceType: "g5.xlarge", InstanceID: "i-0abc", ImageID: "ami-0def"},
		CPU: agentproto.CPU{
			Vendor: "GenuineIntel", Model: "Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz",
			Arch: unameArch(runtime.GOARCH), Count: 2, CoresPerCPU: 4,
		},
		Load: agentproto.Load{One: 1.25, Five: 0.8, Fifteen: 0.5},
		GPUs: []agentproto.GPU{
			{Vendor: "Intel Corporation", Model: "CoffeeLake-S GT2 [UHD Graphics 630]"},
			{Vendor: "Amazon.com, Inc.", Model: "device 0x1111"},
			{Vendor: "NVIDIA Corporation", Model: "GH100 [H100 SXM5 80GB]"},
			{Vendor: "vendor 0x1234", Model: "device 0x1111"},
		},
		LoggedInUsers: []string{"alice", "bob"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("report (-want +got):\n%s", diff)
	}

	// Skip leaves the skipped probes' fields empty.
	p = &Prober{Root: root, Skip: []string{"aws", "gpu", "users"}}
	got = p.Report(context.Background())
	if got.AWS != nil || got.GPUs != nil || got.LoggedInUsers != nil || got.Hostname != "desk-01" {
		t.Errorf("with Skip: %+v", got)
	}
}

// TestProber_Report_LogsOnce checks that a failing probe is logged once and
// that the report still comes.
func TestProber_Report_LogsOnce(t *testing.T) {
	var buf bytes.Buffer
	p := &Prober{Root: t.TempDir(), Skip: []string{"aws"}, Logger: slog.New(slog.NewTextHandler(&buf, nil))}
	for range 3 {
		r := p.Report(context.Background())
		if r.OS.Family != "linux" {
			t.Errorf("OS.Family = %q", r.OS.Family)
		}
	}
	for _, name := range []string{"cpu", "load", "mem", "os"} {
		if n := strings.Count(buf.String(), "probe="+name+" "); n != 1 {
			t.Errorf("probe %s logged %d times, want once:\n%s", name, n, buf.String())
		}
	}
	if n := strings.Count(buf.String(), "level=WARN"); n != 4 {
		t.Errorf("%d warnings, want 4:\n%s", n, buf.String())
	}
}

// TestProber_Report_ThisMachine is the acceptance check: the report of the
// machine the test runs on matches /proc, /etc/os-release and uname, read here
// independently of the probes. It uses the real IMDS address, which must cost
// under a second once off EC2.
func TestProber_Report_ThisMachine(t *testing.T) {
	if _, err := os.Stat("/proc/meminfo"); err != nil {
		t.Skip("no /proc")
	}
	p := &Prober{Logger: slog.New(slog.NewTextHandler(testLogWriter{t}, nil))}
	start := time.Now()
	r := p.Report(context.Background())
	first := time.Since(start)
	start = time.Now()
	r2 := p.Report(context.Background())
	second := time.Since(start)
	t.Logf("report (first %v, second %v): %+v", first, second, r)
	if first > 3*time.Second || second > time.Second {
		t.Errorf("reports took %v and %v; want the IMDS lookup bounded and cached", first, second)
	}
	if r.AWS != nil && r.AWS.InstanceID == "" {
		t.Errorf("AWS section without an instance ID: %+v", r.AWS)
	}
	if (r.AWS == nil) != (r2.AWS == nil) {
		t.Errorf("AWS section changed between reports: %+v, %+v", r.AWS, r2.AWS)
	}

	// Host name and OS.
	if h, _ := os.Hostname(); r.Hostname != h {
		t.Errorf("Hostname = %q, os.Hostname = %q", r.Hostname, h)
	}
	if r.IP != "" && net.ParseIP(r.IP) == nil {
		t.Errorf("IP = %q is no address", r.IP)
	}
	rel := map[string]string{}
	for _, line := range strings.Split(string(mustRead(t, "/etc/os-release")), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			rel[k] = strings.Trim(v, `"'`)
		}
	}
	wantName, wantVersion := rel["NAME"], rel["VERSION_ID"]
	if wantName == "" && wantVersion == "" {
		wantName = rel["PRETTY_NAME"]
	}
	if r.OS.Family != "linux" || r.OS.Name != wantName || r.OS.Version != wantVersion {
		t.Errorf("OS = %+v, /etc/os-release has NAME %q VERSION_ID %q", r.OS, wantName, wantVersion)
	}
	if out, err := exec.Command("uname", "-r").Output(); err == nil {
		if got := strings.TrimSpace(string(out)); r.OS.Kernel != got {
			t.Errorf("Kernel = %q, uname -r = %q", r.OS.Kernel, got)
		}
	}
	if out, err := exec.Command("uname", "-m").Output(); err == nil {
		if got := strings.TrimSpace(string(out)); r.CPU.Arch != got {
			t.Errorf("CPU.Arch = %q, uname -m = %q", r.CPU.Arch, got)
		}
	}

	// Memory: totals are exact, used amounts move a little between reads.
	mem := map[string]int64{}
	sc := bufio.NewScanner(bytes.NewReader(mustRead(t, "/proc/meminfo")))
	for sc.Scan() {
		var key string
		var kb int64
		if _, err := fmt.Sscanf(sc.Text(), "%s %d kB", &key, &kb); err == nil {
			mem[strings.TrimSuffix(key, ":")] = kb * 1024
		}
	}
	if r.Memory.TotalBytes != mem["MemTotal"] || r.Memory.SwapTotalBytes != mem["SwapTotal"] {
		t.Errorf("Memory = %+v, /proc/meminfo MemTotal %d SwapTotal %d", r.Memory, mem["MemTotal"], mem["SwapTotal"])
	}
	slack := mem["MemTotal"] / 20
	if used := mem["MemTotal"] - mem["MemAvailable"]; abs(r.Memory.UsedBytes-used) > slack {
		t.Errorf("Memory.UsedBytes = %d, /proc/meminfo says %d", r.Memory.UsedBytes, used)
	}
	if used := mem["SwapTotal"] - mem["SwapFree"]; abs(r.Memory.SwapUsedBytes-used) > slack {
		t.Errorf("Memory.SwapUsedBytes = %d, /proc/meminfo says %d", r.Memory.SwapUsedBytes, used)
	}

	// CPU.
	var logical int
	var vendor, model string
	sockets := map[string]bool{}
	for _, line := range strings.Split(string(mustRead(t, "/proc/cpuinfo")), "\n") {
		k, v, _ := strings.Cut(line, ":")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		switch {
		case k == "processor":
			logical++
		case k == "physical id":
			sockets[v] = true
		case k == "vendor_id" && vendor == "":
			vendor = v
		case k == "model name" && model == "":
			model = v
		}
	}
	if vendor != "" && r.CPU.Vendor != vendor || model != "" && r.CPU.Model != model {
		t.Errorf("CPU = %+v, /proc/cpuinfo has vendor %q model %q", r.CPU, vendor, model)
	}
	if r.CPU.Count != max(len(sockets), 1) || r.CPU.CoresPerCPU < 1 || r.CPU.Count*r.CPU.CoresPerCPU > logical {
		t.Errorf("CPU = %+v, /proc/cpuinfo has %d sockets and %d logical processors", r.CPU, len(sockets), logical)
	}

	// Load averages move slowly.
	f := strings.Fields(string(mustRead(t, "/proc/loadavg")))
	for i, got := range []float64{r.Load.One, r.Load.Five, r.Load.Fifteen} {
		want, _ := strconv.ParseFloat(f[i], 64)
		if math.Abs(got-want) > 2 {
			t.Errorf("load average %d = %v, /proc/loadavg has %v", i, got, want)
		}
	}

	// Users: this test machine has no utmp; where there is one, compare with who.
	if _, err := os.Stat("/var/run/utmp"); err == nil {
		if out, err := exec.Command("who", "-q").Output(); err == nil {
			first, _, _ := strings.Cut(string(out), "\n")
			names := strings.Fields(first)
			slices.Sort(names)
			names = slices.Compact(names)
			if strings.Join(names, ",") != strings.Join(r.LoggedInUsers, ",") {
				t.Errorf("LoggedInUsers = %q, who -q = %q", r.LoggedInUsers, names)
			}
		}
	}

	// GPUs: one per display-class PCI device.
	var display int
	classes, _ := filepath.Glob("/sys/bus/pci/devices/*/class")
	for _, c := range classes {
		if b, err := os.ReadFile(c); err == nil && strings.HasPrefix(string(b), "0x03") {
			display++
		}
	}
	if len(r.GPUs) != display {
		t.Errorf("%d GPUs, sysfs has %d display devices: %+v", len(r.GPUs), display, r.GPUs)
	}
}

func abs(x int64) int64 {
	if x < 0 {
		return -x
	}
	return x
}

type testLogWriter struct{ tb testing.TB }

func (w testLogWriter) Write(p []byte) (int, error) {
	w.tb.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
