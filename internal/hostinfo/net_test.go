package hostinfo

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/agentproto"
)

// Route tables in the kernel's format.
const (
	routeV4Eth0 = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n" +
		"eth0\t00000000\t0100A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n" +
		"eth0\t0000A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n"
	routeV4None = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n" +
		"eth0\t0000A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n"
	// A default route through eth2, and the reject route on lo that the
	// kernel keeps besides.
	routeV6Eth2 = "20010db8000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth2\n" +
		"00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000003 00000000 00000003     eth2\n" +
		"00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo\n"
	routeV6RejectOnly = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo\n"
)

func cidr(tb testing.TB, s string) net.Addr {
	tb.Helper()
	ip, n, err := net.ParseCIDR(s)
	if err != nil {
		tb.Fatal(err)
	}
	n.IP = ip
	return n
}

// fakeInterfaces is a host with a loopback, a default-route interface
// (eth0), a second interface (eth1), an IPv6-only one (eth2), one that is
// down (eth3) and one with only a link-local address (eth4).
func fakeInterfaces(tb testing.TB) []NetInterface {
	up := net.FlagUp | net.FlagBroadcast | net.FlagMulticast
	return []NetInterface{
		{Name: "lo", Flags: net.FlagUp | net.FlagLoopback, Addrs: []net.Addr{cidr(tb, "127.0.0.1/8"), cidr(tb, "::1/128")}},
		{Name: "eth0", Flags: up, Addrs: []net.Addr{cidr(tb, "fe80::1/64"), cidr(tb, "192.168.0.10/24")}},
		{Name: "eth1", Flags: up, Addrs: []net.Addr{cidr(tb, "fe80::2/64"), cidr(tb, "2001:db8:1::7/64"), cidr(tb, "10.1.2.3/16"), cidr(tb, "10.1.2.4/16")}},
		{Name: "eth2", Flags: up, Addrs: []net.Addr{cidr(tb, "fe80::3/64"), cidr(tb, "2001:db8::9/64")}},
		{Name: "eth3", Flags: net.FlagBroadcast, Addrs: []net.Addr{cidr(tb, "172.16.0.5/16")}},
		{Name: "eth4", Flags: up, Addrs: []net.Addr{cidr(tb, "fe80::4/64")}},
	}
}

func TestProbeNet_PreferredInterface(t *testing.T) {
	tests := []struct {
		name      string
		preferred string
		route     string // /proc/net/route; "" for none
		route6    string // /proc/net/ipv6_route; "" for none
		ifaces    func(testing.TB) []NetInterface
		want      string
		warn      string // part of the warning logged; "" for none
	}{
		{"unset: default route", "", routeV4Eth0, routeV6Eth2, fakeInterfaces, "192.168.0.10", ""},
		{"preferred IPv4", "eth1", routeV4Eth0, "", fakeInterfaces, "10.1.2.3", ""},
		{"preferred IPv6 only", "eth2", routeV4Eth0, "", fakeInterfaces, "2001:db8::9", ""},
		{"preferred loopback", "lo", routeV4Eth0, "", fakeInterfaces, "127.0.0.1", ""},
		{"preferred is the default", "eth0", routeV4Eth0, "", fakeInterfaces, "192.168.0.10", ""},
		{"preferred missing", "wlan9", routeV4Eth0, "", fakeInterfaces, "192.168.0.10", "no such interface"},
		{"preferred down", "eth3", routeV4Eth0, "", fakeInterfaces, "192.168.0.10", "the interface is down"},
		{"preferred without addresses", "eth4", routeV4Eth0, "", fakeInterfaces, "192.168.0.10", "no IPv4 address"},
		{"missing, IPv6 default route", "wlan9", routeV4None, routeV6Eth2, fakeInterfaces, "2001:db8::9", "no such interface"},
		{"IPv6 default route", "", "", routeV6Eth2, fakeInterfaces, "2001:db8::9", ""},
		{"only a reject route: first interface up", "", routeV4None, routeV6RejectOnly, fakeInterfaces, "192.168.0.10", ""},
		{"no route files: first interface up", "", "", "", func(tb testing.TB) []NetInterface { return fakeInterfaces(tb)[2:] }, "10.1.2.3", ""},
		{"default route interface down: first interface up", "", routeV4Eth0, "", func(tb testing.TB) []NetInterface {
			l := fakeInterfaces(tb)
			l[1].Flags &^= net.FlagUp
			return l
		}, "10.1.2.3", ""},
		{"nothing usable", "eth4", "", "", func(tb testing.TB) []NetInterface { return fakeInterfaces(tb)[4:] }, "", "no IPv4 address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			mustWriteFile(t, root, "proc/sys/kernel/hostname", []byte("desk01\n"))
			if tt.route != "" {
				mustWriteFile(t, root, "proc/net/route", []byte(tt.route))
			}
			if tt.route6 != "" {
				mustWriteFile(t, root, "proc/net/ipv6_route", []byte(tt.route6))
			}
			var logs bytes.Buffer
			p := &Prober{
				Root:               root,
				Skip:               []string{"aws", "cpu", "gpu", "load", "mem", "os", "users"},
				PreferredInterface: tt.preferred,
				Interfaces:         func() ([]NetInterface, error) { return tt.ifaces(t), nil },
				Logger:             slog.New(slog.NewTextHandler(&logs, nil)),
			}
			for range 3 { // the warning is logged once, not at every report
				r := p.Report(context.Background())
				if r.IP != tt.want || r.Hostname != "desk01" {
					t.Fatalf("IP %q hostname %q, want %q desk01", r.IP, r.Hostname, tt.want)
				}
			}
			warnings := strings.Count(logs.String(), "level=WARN")
			switch {
			case tt.warn == "" && warnings != 0:
				t.Errorf("unexpected warning:\n%s", logs.String())
			case tt.warn != "" && (warnings != 1 || !strings.Contains(logs.String(), tt.warn) || !strings.Contains(logs.String(), "interface="+tt.preferred)):
				t.Errorf("want one warning naming %s and %q, got:\n%s", tt.preferred, tt.warn, logs.String())
			}
		})
	}
}

// TestProbeNet_PreferredInterface_Recovers: an interface that comes back is
// used again, and said so once.
func TestProbeNet_PreferredInterface_Recovers(t *testing.T) {
	root := t.TempDir()
	mustWriteFile(t, root, "proc/net/route", []byte(routeV4Eth0))
	ifaces := fakeInterfaces(t)
	ifaces[2].Flags &^= net.FlagUp // eth1 down
	var logs bytes.Buffer
	p := &Prober{Root: root, PreferredInterface: "eth1", Skip: []string{"aws", "cpu", "gpu", "load", "mem", "os", "users"},
		Interfaces: func() ([]NetInterface, error) { return ifaces, nil },
		Logger:     slog.New(slog.NewTextHandler(&logs, nil))}
	if r := p.Report(context.Background()); r.IP != "192.168.0.10" {
		t.Fatalf("while down: %q", r.IP)
	}
	ifaces[2].Flags |= net.FlagUp
	for range 2 {
		if r := p.Report(context.Background()); r.IP != "10.1.2.3" {
			t.Fatalf("once up: %q", r.IP)
		}
	}
	if n := strings.Count(logs.String(), "gives the host's address again"); n != 1 {
		t.Errorf("%d recovery lines:\n%s", n, logs.String())
	}
}

func TestProbeNet_InterfacesFail(t *testing.T) {
	p := &Prober{Root: t.TempDir(), Interfaces: func() ([]NetInterface, error) { return nil, errors.New("netlink: boom") }}
	var r agentproto.HostReport
	if err := probeNet(context.Background(), p, &r); err == nil || !strings.Contains(err.Error(), "netlink: boom") {
		t.Errorf("err %v", err)
	}
}

func TestDefaultRoute6Interface(t *testing.T) {
	for _, tt := range []struct{ table, want string }{
		{routeV6Eth2, "eth2"},
		{routeV6RejectOnly, ""},
		{"", ""},
		{"garbage line\n", ""},
	} {
		if got := defaultRoute6Interface([]byte(tt.table)); got != tt.want {
			t.Errorf("defaultRoute6Interface(%q) = %q, want %q", tt.table, got, tt.want)
		}
	}
}

// TestProbeNet_RealInterfaces runs the probe on this machine: lo by name
// gives 127.0.0.1, and the default route's interface (when the machine has
// one) gives the same address whether it is named, left unset, or replaced
// by a missing interface.
func TestProbeNet_RealInterfaces(t *testing.T) {
	others := []string{"aws", "cpu", "gpu", "load", "mem", "os", "users"}
	report := func(preferred string) (string, string) {
		var logs bytes.Buffer
		p := &Prober{PreferredInterface: preferred, Skip: others, Logger: slog.New(slog.NewTextHandler(&logs, nil))}
		return p.Report(context.Background()).IP, logs.String()
	}
	if ip, logs := report("lo"); ip != "127.0.0.1" {
		t.Errorf("preferred lo: IP %q\n%s", ip, logs)
	}

	route, err := os.ReadFile("/proc/net/route")
	if err != nil {
		t.Skip("no /proc/net/route:", err)
	}
	iface := defaultRouteInterface(route)
	if iface == "" {
		if r6, err := os.ReadFile("/proc/net/ipv6_route"); err == nil {
			iface = defaultRoute6Interface(r6)
		}
	}
	if iface == "" {
		t.Skip("this machine has no default route")
	}
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		t.Fatal(err)
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		t.Fatal(err)
	}
	want := pickAddr(addrs)
	if want == "" {
		t.Skipf("default route interface %s has no global address", iface)
	}
	t.Logf("default route interface %s: %s", iface, want)
	for _, preferred := range []string{"", iface, "berth-none0"} {
		ip, logs := report(preferred)
		if ip != want {
			t.Errorf("preferred %q: IP %q, want %q", preferred, ip, want)
		}
		if warned := strings.Contains(logs, "level=WARN"); warned != (preferred == "berth-none0") {
			t.Errorf("preferred %q: logs\n%s", preferred, logs)
		}
	}
	// An interface that is down on this machine, if any, is passed over too.
	sys, _ := SystemInterfaces()
	for _, ni := range sys {
		if ni.Flags&net.FlagUp == 0 {
			ip, logs := report(ni.Name)
			if ip != want || !strings.Contains(logs, "the interface is down") {
				t.Errorf("preferred %s (down): IP %q, want %q\n%s", ni.Name, ip, want, logs)
			}
			break
		}
	}
}
