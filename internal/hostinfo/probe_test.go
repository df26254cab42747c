package hostinfo

import (
	"bytes"
	"context"
	"encoding/binary"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/agentproto"
	"github.com/google/go-cmp/cmp"
)

func mustRead(tb testing.TB, name string) []byte {
	tb.Helper()
	data, err := os.ReadFile(name)
	if err != nil {
		tb.Fatal(err)
	}
	return data
}

// mustWriteFile writes name (creating its directory) under dir.
func mustWriteFile(tb testing.TB, dir, name string, data []byte) {
	tb.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		tb.Fatal(err)
	}
}

func TestParseOSRelease(t *testing.T) {
	tests := []struct {
		file                string
		name, version, pret string
	}{
		{"ubuntu-22.04", "Ubuntu", "22.04", "Ubuntu 22.04.4 LTS"},
		{"amzn-2", "Amazon Linux", "2", "Amazon Linux 2"},
		{"pretty-only", "", "", `Example "Quoted" OS $HOME`},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			m := parseOSRelease(mustRead(t, filepath.Join("testdata/os-release", tt.file)))
			if m["NAME"] != tt.name || m["VERSION_ID"] != tt.version || m["PRETTY_NAME"] != tt.pret {
				t.Errorf("got NAME %q VERSION_ID %q PRETTY_NAME %q", m["NAME"], m["VERSION_ID"], m["PRETTY_NAME"])
			}
		})
	}
}

func TestProbeOS(t *testing.T) {
	for _, tt := range []struct {
		file string
		want agentproto.OS
	}{
		{"ubuntu-22.04", agentproto.OS{Family: "linux", Name: "Ubuntu", Version: "22.04", Kernel: "6.1.0-test"}},
		{"pretty-only", agentproto.OS{Family: "linux", Name: `Example "Quoted" OS $HOME`, Kernel: "6.1.0-test"}},
	} {
		t.Run(tt.file, func(t *testing.T) {
			root := t.TempDir()
			// Only /usr/lib/os-release: the fallback location.
			mustWriteFile(t, root, "usr/lib/os-release", mustRead(t, filepath.Join("testdata/os-release", tt.file)))
			mustWriteFile(t, root, "proc/sys/kernel/osrelease", []byte("6.1.0-test\n"))
			var r agentproto.HostReport
			if err := probeOS(context.Background(), &Prober{Root: root}, &r); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, r.OS); diff != "" {
				t.Errorf("OS (-want +got):\n%s", diff)
			}
		})
	}
	t.Run("missing", func(t *testing.T) {
		var r agentproto.HostReport
		if err := probeOS(context.Background(), &Prober{Root: t.TempDir()}, &r); err == nil {
			t.Error("no error for a root without os-release")
		}
		if r.OS.Family != "linux" || r.OS.Name != "" {
			t.Errorf("OS = %+v", r.OS)
		}
	})
}

func TestProbeMemory(t *testing.T) {
	const k = 1024
	for _, tt := range []struct {
		file string
		want agentproto.Memory
	}{
		{"modern", agentproto.Memory{
			TotalBytes: 32791716 * k, UsedBytes: (32791716 - 20971520) * k,
			SwapTotalBytes: 8388604 * k, SwapUsedBytes: (8388604 - 7340028) * k,
		}},
		{"old-kernel", agentproto.Memory{TotalBytes: 4046848 * k, UsedBytes: (4046848 - 1048576 - 262144 - 524288) * k}},
	} {
		t.Run(tt.file, func(t *testing.T) {
			root := t.TempDir()
			mustWriteFile(t, root, "proc/meminfo", mustRead(t, filepath.Join("testdata/meminfo", tt.file)))
			var r agentproto.HostReport
			if err := probeMemory(context.Background(), &Prober{Root: root}, &r); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, r.Memory); diff != "" {
				t.Errorf("Memory (-want +got):\n%s", diff)
			}
		})
	}
	t.Run("no MemTotal", func(t *testing.T) {
		root := t.TempDir()
		mustWriteFile(t, root, "proc/meminfo", []byte("MemFree: 12 kB\n"))
		var r agentproto.HostReport
		if err := probeMemory(context.Background(), &Prober{Root: root}, &r); err == nil {
			t.Error("no error")
		}
	})
}

func TestParseCPUInfo(t *testing.T) {
	for _, tt := range []struct {
		file string
		want agentproto.CPU
	}{
		{"xeon-2socket.txt", agentproto.CPU{Vendor: "GenuineIntel", Model: "Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz", Count: 2, CoresPerCPU: 4}},
		{"epyc-1socket.txt", agentproto.CPU{Vendor: "AuthenticAMD", Model: "AMD EPYC 7R13 Processor", Count: 1, CoresPerCPU: 2}},
		{"graviton2.txt", agentproto.CPU{Vendor: "ARM", Model: "Neoverse-N1", Count: 1, CoresPerCPU: 4}},
	} {
		t.Run(tt.file, func(t *testing.T) {
			got, err := parseCPUInfo(mustRead(t, filepath.Join("testdata/cpuinfo", tt.file)))
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("CPU (-want +got):\n%s", diff)
			}
		})
	}
	if _, err := parseCPUInfo(nil); err == nil {
		t.Error("no error for an empty cpuinfo")
	}
}

func TestUnameArch(t *testing.T) {
	for goarch, want := range map[string]string{"amd64": "x86_64", "arm64": "aarch64", "386": "i686", "ppc64le": "ppc64le", "s390x": "s390x"} {
		if got := unameArch(goarch); got != want {
			t.Errorf("unameArch(%q) = %q, want %q", goarch, got, want)
		}
	}
}

func TestParseLoadavg(t *testing.T) {
	got, err := parseLoadavg("1.25 0.80 0.50 3/512 12345\n")
	if err != nil {
		t.Fatal(err)
	}
	if want := (agentproto.Load{One: 1.25, Five: 0.8, Fifteen: 0.5}); got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
	for _, bad := range []string{"", "1.0 2.0", "a b c", "-1 0 0"} {
		if _, err := parseLoadavg(bad); err == nil {
			t.Errorf("parseLoadavg(%q): no error", bad)
		}
	}
}

// pciTree builds a fake /sys/bus/pci/devices under root: address → class,
// vendor, device.
func pciTree(tb testing.TB, root string, devs map[string][3]string) {
	tb.Helper()
	for addr, d := range devs {
		dir := filepath.Join("sys/bus/pci/devices", addr)
		mustWriteFile(tb, root, filepath.Join(dir, "class"), []byte(d[0]+"\n"))
		mustWriteFile(tb, root, filepath.Join(dir, "vendor"), []byte(d[1]+"\n"))
		mustWriteFile(tb, root, filepath.Join(dir, "device"), []byte(d[2]+"\n"))
	}
}

var testPCIDevices = map[string][3]string{
	"0000:00:02.0": {"0x030000", "0x8086", "0x3e92"}, // VGA, named in pci.ids
	"0000:00:03.0": {"0x030000", "0x1d0f", "0x1111"}, // VGA, vendor known, device not
	"0000:00:1f.3": {"0x040300", "0x8086", "0xa348"}, // audio: not a GPU
	"0000:00:04.0": {"0x020000", "0x1d0f", "0xec20"}, // network: not a GPU
	"0000:01:00.0": {"0x030200", "0x10de", "0x2330"}, // 3D controller
	"0000:02:00.0": {"0x038000", "0x1234", "0x1111"}, // other display, unknown vendor
}

func TestProbeGPU(t *testing.T) {
	root := t.TempDir()
	pciTree(t, root, testPCIDevices)
	withIDs := t.TempDir()
	pciTree(t, withIDs, testPCIDevices)
	mustWriteFile(t, withIDs, "usr/share/hwdata/pci.ids", mustRead(t, "testdata/root/usr/share/misc/pci.ids"))

	t.Run("pci.ids", func(t *testing.T) {
		var r agentproto.HostReport
		if err := probeGPU(context.Background(), &Prober{Root: withIDs}, &r); err != nil {
			t.Fatal(err)
		}
		want := []agentproto.GPU{
			{Vendor: "Intel Corporation", Model: "CoffeeLake-S GT2 [UHD Graphics 630]"},
			{Vendor: "Amazon.com, Inc.", Model: "device 0x1111"},
			{Vendor: "NVIDIA Corporation", Model: "GH100 [H100 SXM5 80GB]"},
			{Vendor: "vendor 0x1234", Model: "device 0x1111"},
		}
		if diff := cmp.Diff(want, r.GPUs); diff != "" {
			t.Errorf("GPUs (-want +got):\n%s", diff)
		}
	})
	t.Run("no pci.ids", func(t *testing.T) {
		var r agentproto.HostReport
		if err := probeGPU(context.Background(), &Prober{Root: root}, &r); err != nil {
			t.Fatal(err)
		}
		want := []agentproto.GPU{
			{Vendor: "Intel Corporation", Model: "device 0x3e92"},
			{Vendor: "Amazon.com, Inc.", Model: "device 0x1111"},
			{Vendor: "NVIDIA Corporation", Model: "device 0x2330"},
			{Vendor: "vendor 0x1234", Model: "device 0x1111"},
		}
		if diff := cmp.Diff(want, r.GPUs); diff != "" {
			t.Errorf("GPUs (-want +got):\n%s", diff)
		}
	})
	t.Run("nvidia-smi", func(t *testing.T) {
		bin := t.TempDir()
		count := filepath.Join(bin, "runs")
		smi := filepath.Join(bin, "nvidia-smi")
		script := "#!/bin/sh\necho run >> " + count + "\n" +
			`[ "$1" = "--query-gpu=pci.bus_id,name" ] && [ "$2" = "--format=csv,noheader" ] || exit 9` + "\n" +
			"echo '00000000:01:00.0, NVIDIA H100 80GB HBM3'\n"
		if err := os.WriteFile(smi, []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
		p := &Prober{Root: withIDs, NvidiaSMI: smi}
		for range 2 {
			var r agentproto.HostReport
			if err := probeGPU(context.Background(), p, &r); err != nil {
				t.Fatal(err)
			}
			if len(r.GPUs) != 4 || r.GPUs[2] != (agentproto.GPU{Vendor: "NVIDIA Corporation", Model: "NVIDIA H100 80GB HBM3"}) {
				t.Fatalf("GPUs = %+v", r.GPUs)
			}
		}
		if runs := bytes.Count(mustRead(t, count), []byte("run")); runs != 1 {
			t.Errorf("nvidia-smi ran %d times for an unchanged bus, want 1", runs)
		}
	})
	t.Run("nvidia-smi fails", func(t *testing.T) {
		var r agentproto.HostReport
		err := probeGPU(context.Background(), &Prober{Root: withIDs, NvidiaSMI: "/bin/false"}, &r)
		if err == nil || !strings.Contains(err.Error(), "nvidia-smi") {
			t.Errorf("err = %v, want an nvidia-smi error", err)
		}
		if len(r.GPUs) != 4 || r.GPUs[2].Model != "GH100 [H100 SXM5 80GB]" {
			t.Errorf("GPUs = %+v, want pci.ids names", r.GPUs)
		}
	})
	t.Run("no pci bus", func(t *testing.T) {
		var r agentproto.HostReport
		if err := probeGPU(context.Background(), &Prober{Root: t.TempDir()}, &r); err != nil || r.GPUs != nil {
			t.Errorf("GPUs %+v, err %v; want none and no error", r.GPUs, err)
		}
	})
}

func TestParseNvidiaSMI(t *testing.T) {
	got := parseNvidiaSMI([]byte("00000000:01:00.0, NVIDIA H100 80GB HBM3\n00000001:C1:00.0, Tesla T4\ngarbage\n, \n"))
	want := map[string]string{"0000:01:00.0": "NVIDIA H100 80GB HBM3", "0001:c1:00.0": "Tesla T4"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// utmpRecord encodes one glibc struct utmp record.
func utmpRecord(typ int16, user, line string) []byte {
	b := make([]byte, utmpRecordSize)
	binary.NativeEndian.PutUint16(b[0:], uint16(typ))
	binary.NativeEndian.PutUint32(b[4:], 4242)
	copy(b[8:40], line)
	copy(b[44:76], user)
	copy(b[76:332], "10.0.0.1")
	return b
}

func TestProbeUsers(t *testing.T) {
	var utmp []byte
	for _, rec := range []struct {
		typ        int16
		user, line string
	}{
		{2, "reboot", "~"},                    // BOOT_TIME
		{1, "runlevel", "~"},                  // RUN_LVL
		{6, "LOGIN", "tty1"},                  // LOGIN_PROCESS
		{7, "alice", "pts/0"},                 // USER_PROCESS
		{7, "bob", "pts/1"},                   //
		{7, "alice", "pts/2"},                 // the same user twice
		{8, "carol", "pts/3"},                 // DEAD_PROCESS: logged out
		{7, strings.Repeat("x", 32), "pts/4"}, // a name filling the field, no NUL
	} {
		utmp = append(utmp, utmpRecord(rec.typ, rec.user, rec.line)...)
	}
	utmp = append(utmp, make([]byte, 100)...) // a partial record being written

	t.Run("utmp", func(t *testing.T) {
		root := t.TempDir()
		mustWriteFile(t, root, "var/run/utmp", utmp)
		// logind sessions are ignored when utmp exists.
		mustWriteFile(t, root, "run/systemd/sessions/5", []byte("USER=zed\nCLASS=user\nSTATE=active\n"))
		var r agentproto.HostReport
		if err := probeUsers(context.Background(), &Prober{Root: root}, &r); err != nil {
			t.Fatal(err)
		}
		if want := []string{"alice", "bob", strings.Repeat("x", 32)}; !cmp.Equal(want, r.LoggedInUsers) {
			t.Errorf("users = %q, want %q", r.LoggedInUsers, want)
		}
	})
	t.Run("logind", func(t *testing.T) {
		root := t.TempDir()
		mustWriteFile(t, root, "run/systemd/sessions/1", []byte("# This is private data.\nUID=1000\nUSER=dave\nACTIVE=1\nSTATE=active\nCLASS=user\n"))
		mustWriteFile(t, root, "run/systemd/sessions/2", []byte("USER=gdm\nCLASS=greeter\nSTATE=online\n"))
		mustWriteFile(t, root, "run/systemd/sessions/3", []byte("USER=erin\nCLASS=user\nSTATE=closing\n"))
		mustWriteFile(t, root, "run/systemd/sessions/4", []byte("USER=dave\nCLASS=user\nSTATE=online\n"))
		mustWriteFile(t, root, "run/systemd/sessions/1.ref", nil)
		var r agentproto.HostReport
		if err := probeUsers(context.Background(), &Prober{Root: root}, &r); err != nil {
			t.Fatal(err)
		}
		if want := []string{"dave"}; !cmp.Equal(want, r.LoggedInUsers) {
			t.Errorf("users = %q, want %q", r.LoggedInUsers, want)
		}
	})
	t.Run("neither", func(t *testing.T) {
		var r agentproto.HostReport
		if err := probeUsers(context.Background(), &Prober{Root: t.TempDir()}, &r); err != nil || len(r.LoggedInUsers) != 0 {
			t.Errorf("users %q, err %v; want none", r.LoggedInUsers, err)
		}
	})
}

// TestParseUtmp_Utmpdump checks the record layout against the system's own
// struct utmp: utmpdump -r writes a binary utmp from its text form.
func TestParseUtmp_Utmpdump(t *testing.T) {
	if _, err := exec.LookPath("utmpdump"); err != nil {
		t.Skip("no utmpdump")
	}
	text := "[7] [01234] [ts/0] [alice   ] [pts/0       ] [10.0.0.1            ] [10.0.0.1       ] [2024-01-01T00:00:00,000000+00:00]\n" +
		"[8] [01235] [ts/1] [carol   ] [pts/1       ] [                    ] [0.0.0.0        ] [2024-01-01T00:00:00,000000+00:00]\n" +
		"[7] [01236] [ts/2] [bob     ] [pts/2       ] [                    ] [0.0.0.0        ] [2024-01-01T00:00:00,000000+00:00]\n"
	cmd := exec.Command("utmpdump", "-r")
	cmd.Stdin = strings.NewReader(text)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("utmpdump -r: %v", err)
	}
	if len(out) != 3*utmpRecordSize {
		t.Fatalf("utmpdump wrote %d bytes, want 3 records of %d", len(out), utmpRecordSize)
	}
	if got, want := parseUtmp(out), []string{"alice", "bob"}; !cmp.Equal(want, got) {
		t.Errorf("users = %q, want %q", got, want)
	}
}

func TestDefaultRouteInterface(t *testing.T) {
	route := "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n" +
		"docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n" +
		"ens5\t00000000\t0100A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n" +
		"ens5\t0000A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n"
	if got := defaultRouteInterface([]byte(route)); got != "ens5" {
		t.Errorf("got %q, want ens5", got)
	}
	if got := defaultRouteInterface([]byte("Iface\tDestination\n")); got != "" {
		t.Errorf("got %q, want none", got)
	}
}

func TestPickAddr(t *testing.T) {
	ipnet := func(s string) net.Addr {
		_, n, err := net.ParseCIDR(s)
		if err != nil {
			t.Fatal(err)
		}
		ip, _, _ := net.ParseCIDR(s)
		n.IP = ip
		return n
	}
	for _, tt := range []struct {
		addrs []net.Addr
		want  string
	}{
		{[]net.Addr{ipnet("fe80::1/64"), ipnet("2001:db8::5/64"), ipnet("192.168.1.7/24")}, "192.168.1.7"},
		{[]net.Addr{ipnet("127.0.0.1/8"), ipnet("fe80::1/64"), ipnet("2001:db8::5/64")}, "2001:db8::5"},
		{[]net.Addr{ipnet("127.0.0.1/8"), &net.IPAddr{IP: net.ParseIP("169.254.1.1")}}, ""},
		{nil, ""},
	} {
		if got := pickAddr(tt.addrs); got != tt.want {
			t.Errorf("pickAddr(%v) = %q, want %q", tt.addrs, got, tt.want)
		}
	}
}
