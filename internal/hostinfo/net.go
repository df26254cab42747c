package hostinfo

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/berth-dev/berth/internal/agentproto"
)

// probeNet fills Hostname (the kernel's host name) and IP: an address of the
// interface that holds the IPv4 default route, else of the first interface
// that is up, IPv4 preferred. Interface addresses come from the running
// kernel, so IP is only filled when Root is "/".
func probeNet(_ context.Context, p *Prober, r *agentproto.HostReport) error {
	var errs []error
	if h, err := p.readFile("/proc/sys/kernel/hostname"); err == nil {
		r.Hostname = strings.TrimSpace(string(h))
	} else if p.realRoot() {
		if r.Hostname, err = os.Hostname(); err != nil {
			errs = append(errs, fmt.Errorf("hostname: %w", err))
		}
	}
	if !p.realRoot() {
		return errors.Join(errs...)
	}
	var iface string
	if route, err := p.readFile("/proc/net/route"); err == nil {
		iface = defaultRouteInterface(route)
	}
	if iface != "" {
		if ifi, err := net.InterfaceByName(iface); err == nil {
			if addrs, err := ifi.Addrs(); err == nil {
				r.IP = pickAddr(addrs)
			}
		}
	}
	if r.IP == "" {
		ifaces, err := net.Interfaces()
		if err != nil {
			errs = append(errs, fmt.Errorf("network interfaces: %w", err))
		}
		var all []net.Addr
		for _, ifi := range ifaces {
			if ifi.Flags&net.FlagUp == 0 || ifi.Flags&net.FlagLoopback != 0 {
				continue
			}
			if addrs, err := ifi.Addrs(); err == nil {
				all = append(all, addrs...)
			}
		}
		r.IP = pickAddr(all)
	}
	return errors.Join(errs...)
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

// pickAddr returns the first global unicast IPv4 address, else the first
// global unicast IPv6 address, else "".
func pickAddr(addrs []net.Addr) string {
	var v6 string
	for _, a := range addrs {
		var ip net.IP
		switch a := a.(type) {
		case *net.IPNet:
			ip = a.IP
		case *net.IPAddr:
			ip = a.IP
		}
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
