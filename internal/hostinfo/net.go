package hostinfo

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/berth-dev/berth/internal/agentproto"
)

// NetInterface is a network interface as the net probe sees it.
type NetInterface struct {
	// Name is the interface name ("eth0").
	Name string
	// Flags are its flags (net.FlagUp, net.FlagLoopback, ...).
	Flags net.Flags
	// Addrs are its addresses, as net.Interface.Addrs returns them.
	Addrs []net.Addr
}

// SystemInterfaces lists the host's network interfaces with their
// addresses. An interface whose addresses cannot be read is listed without
// any.
func SystemInterfaces() ([]NetInterface, error) {
	ifaces, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	out := make([]NetInterface, 0, len(ifaces))
	for _, ifi := range ifaces {
		ni := NetInterface{Name: ifi.Name, Flags: ifi.Flags}
		ni.Addrs, _ = ifi.Addrs()
		out = append(out, ni)
	}
	return out, nil
}

// probeNet fills Hostname (the kernel's host name) and IP, the address the
// broker shows as the server's and puts in its endpoints, chosen in this
// order:
//
//  1. PreferredInterface, when set: its first IPv4 address, else its first
//     IPv6 address that is not link-local. When the interface is missing,
//     down or has no such address, a warning is logged (once per condition)
//     and the next rule applies.
//  2. The interface of the default route (IPv4 in /proc/net/route, else IPv6
//     in /proc/net/ipv6_route): its first global unicast address, IPv4
//     preferred.
//  3. The first global unicast address of the interfaces that are up and not
//     loopback, IPv4 preferred.
//
// Interface addresses come from the running kernel (or Prober.Interfaces),
// so IP is only filled when Root is "/" or Interfaces is set.
func probeNet(_ context.Context, p *Prober, r *agentproto.HostReport) error {
	var errs []error
	if h, err := p.readFile("/proc/sys/kernel/hostname"); err == nil {
		r.Hostname = strings.TrimSpace(string(h))
	} else if p.realRoot() {
		if r.Hostname, err = os.Hostname(); err != nil {
			errs = append(errs, fmt.Errorf("hostname: %w", err))
		}
	}
	if !p.realRoot() && p.Interfaces == nil {
		return errors.Join(errs...)
	}
	list := p.Interfaces
	if list == nil {
		list = SystemInterfaces
	}
	ifaces, err := list()
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("network interfaces: %w", err))...)
	}
	if name := p.PreferredInterface; name != "" {
		ip, problem := preferredAddr(ifaces, name)
		p.notePreferred(name, problem)
		if ip != "" {
			r.IP = ip
			return errors.Join(errs...)
		}
	}
	if name := p.defaultRouteInterface(); name != "" {
		if ifi := findInterface(ifaces, name); ifi != nil && ifi.Flags&net.FlagUp != 0 {
			r.IP = pickAddr(ifi.Addrs)
		}
	}
	if r.IP == "" {
		var all []net.Addr
		for _, ifi := range ifaces {
			if ifi.Flags&net.FlagUp == 0 || ifi.Flags&net.FlagLoopback != 0 {
				continue
			}
			all = append(all, ifi.Addrs...)
		}
		r.IP = pickAddr(all)
	}
	return errors.Join(errs...)
}

// preferredAddr returns the address of the preferred interface, or why it
// has none.
func preferredAddr(ifaces []NetInterface, name string) (ip, problem string) {
	ifi := findInterface(ifaces, name)
	switch {
	case ifi == nil:
		return "", "no such interface"
	case ifi.Flags&net.FlagUp == 0:
		return "", "the interface is down"
	}
	if ip := firstAddr(ifi.Addrs); ip != "" {
		return ip, ""
	}
	return "", "the interface has no IPv4 address and no IPv6 address that is not link-local"
}

// notePreferred logs a warning when the preferred interface cannot give the
// address, once per distinct problem, and a line when it can again.
func (p *Prober) notePreferred(name, problem string) {
	p.mu.Lock()
	last := p.preferredProblem
	p.preferredProblem = problem
	p.mu.Unlock()
	if problem == last || p.Logger == nil {
		return
	}
	if problem == "" {
		p.Logger.Info("preferred network interface gives the host's address again", "interface", name)
		return
	}
	p.Logger.Warn("preferred network interface unusable; using the default route's interface instead",
		"interface", name, "problem", problem)
}

func findInterface(ifaces []NetInterface, name string) *NetInterface {
	for i := range ifaces {
		if ifaces[i].Name == name {
			return &ifaces[i]
		}
	}
	return nil
}

// defaultRouteInterface returns the interface of the IPv4 default route, else
// of the IPv6 one, else "".
func (p *Prober) defaultRouteInterface() string {
	if route, err := p.readFile("/proc/net/route"); err == nil {
		if name := defaultRouteInterface(route); name != "" {
			return name
		}
	}
	if route, err := p.readFile("/proc/net/ipv6_route"); err == nil {
		return defaultRoute6Interface(route)
	}
	return ""
}

// defaultRouteInterface returns the interface of the first IPv4 default route
// (destination and mask 0) in /proc/net/route, or "".
func defaultRouteInterface(route []byte) string {
	sc := bufio.NewScanner(bytes.NewReader(route))
	for sc.Scan() {
		// Iface Destination Gateway Flags RefCnt Use Metric Mask MTU Window IRTT
		f := strings.Fields(sc.Text())
		if len(f) >= 8 && f[1] == "00000000" && f[7] == "00000000" {
			return f[0]
		}
	}
	return ""
}

// Route flags of /proc/net/ipv6_route (linux/route.h).
const (
	rtfUp     = 0x0001
	rtfReject = 0x0200
)

// defaultRoute6Interface returns the interface of the first usable IPv6
// default route (::/0, up, not a reject route) in /proc/net/ipv6_route, or "".
// The kernel keeps a reject route ::/0 on lo when there is no real one.
func defaultRoute6Interface(route []byte) string {
	const zero = "00000000000000000000000000000000"
	sc := bufio.NewScanner(bytes.NewReader(route))
	for sc.Scan() {
		// dest dest_len src src_len next_hop metric refcnt use flags iface
		f := strings.Fields(sc.Text())
		if len(f) < 10 || f[0] != zero || f[1] != "00" {
			continue
		}
		flags, err := strconv.ParseUint(f[8], 16, 32)
		if err != nil || flags&rtfUp == 0 || flags&rtfReject != 0 || f[9] == "lo" {
			continue
		}
		return f[9]
	}
	return ""
}

// addrIP returns the IP of an interface address.
func addrIP(a net.Addr) net.IP {
	switch a := a.(type) {
	case *net.IPNet:
		return a.IP
	case *net.IPAddr:
		return a.IP
	}
	return nil
}

// firstAddr returns the first IPv4 address, else the first IPv6 address that
// is neither link-local nor unspecified, else "". Loopback addresses count:
// an interface named on purpose may be lo.
func firstAddr(addrs []net.Addr) string {
	var v6 string
	for _, a := range addrs {
		ip := addrIP(a)
		if ip == nil || ip.IsUnspecified() {
			continue
		}
		if ip.To4() != nil {
			return ip.String()
		}
		if v6 == "" && !ip.IsLinkLocalUnicast() && !ip.IsLinkLocalMulticast() {
			v6 = ip.String()
		}
	}
	return v6
}

// pickAddr returns the first global unicast IPv4 address, else the first
// global unicast IPv6 address, else "".
func pickAddr(addrs []net.Addr) string {
	var v6 string
	for _, a := range addrs {
		ip := addrIP(a)
		if ip == nil || !ip.IsGlobalUnicast() {
			continue
		}
		if ip.To4() != nil {
			return ip.String()
		}
		if v6 == "" {
			v6 = ip.String()
		}
	}
	return v6
}
