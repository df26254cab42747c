package pki

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
)

// Constraints are the RFC 5280 name constraints of a name-constrained CA:
// the DNS domains and IP ranges that the certificates it issues may name.
// A DNS domain "corp.example" permits corp.example and every name below it;
// ".corp.example" permits only the names below it. The zero value permits
// nothing: a CA made with it can sign no DNS name and no address.
type Constraints struct {
	DNSDomains []string
	IPRanges   []netip.Prefix
}

// Placeholders that keep a name type constrained when a list is empty: RFC
// 5280 leaves a name type with no permitted subtree unconstrained, so an
// empty list is written as a subtree that matches nothing real (the
// reserved top-level domain "invalid", RFC 2606, and the unspecified
// address).
const noDNSDomain = "invalid"

var noIPRanges = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/32"), netip.MustParsePrefix("::/128")}

// privateRanges are the address ranges a fleet's hosts use without being
// on the public internet: RFC 1918, RFC 6598 shared address space (carrier
// NAT, some cloud VPCs) and IPv6 unique local addresses (RFC 4193).
var privateRanges = []netip.Prefix{
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("fc00::/7"),
}

// ParseConstraints reads a list of permitted subtrees: DNS domains
// ("corp.example", ".corp.example"), address ranges in CIDR notation
// ("10.20.0.0/16", "fd00::/8") and single addresses ("192.0.2.7", taken as
// /32 or /128). Entries are trimmed; empty ones are skipped. It returns an
// error naming the first entry that is none of these.
func ParseConstraints(list []string) (Constraints, error) {
	var c Constraints
	for _, raw := range list {
		s := strings.TrimSpace(raw)
		if s == "" {
			continue
		}
		if p, err := netip.ParsePrefix(s); err == nil {
			c.IPRanges = append(c.IPRanges, p.Masked())
			continue
		}
		if a, err := netip.ParseAddr(s); err == nil {
			a = a.WithZone("").Unmap()
			c.IPRanges = append(c.IPRanges, netip.PrefixFrom(a, a.BitLen()))
			continue
		}
		d := strings.ToLower(strings.TrimSuffix(s, "."))
		if err := validDomain(strings.TrimPrefix(d, ".")); err != nil {
			return Constraints{}, fmt.Errorf("%q: %w", raw, err)
		}
		c.DNSDomains = append(c.DNSDomains, d)
	}
	c.normalize()
	return c, nil
}

// validDomain checks a DNS domain's syntax: labels of letters, digits and
// hyphens (not at either end), 63 bytes each, 253 in all.
func validDomain(d string) error {
	if d == "" || len(d) > 253 {
		return errors.New("not a DNS domain, CIDR range or IP address")
	}
	for l := range strings.SplitSeq(d, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return errors.New("not a DNS domain, CIDR range or IP address")
		}
		for _, r := range l {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
				return errors.New("not a DNS domain, CIDR range or IP address")
			}
		}
	}
	return nil
}

// DefaultConstraints are the permitted subtrees of a web gateway CA when
// none are configured: the private address ranges (RFC 1918, RFC 6598, RFC
// 4193), the networks of the broker host's own interfaces (up, not loopback,
// not link-local), and the broker host's DNS domain when its host name has
// one. Loopback addresses and "localhost" are not permitted: a browser that
// trusts the CA must not trust a desktop host for the browser's own machine.
func DefaultConstraints() Constraints {
	c := Constraints{IPRanges: slices.Clone(privateRanges)}
	if ifaces, err := net.Interfaces(); err == nil {
		for _, ifc := range ifaces {
			if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 {
				continue
			}
			addrs, err := ifc.Addrs()
			if err != nil {
				continue
			}
			for _, a := range addrs {
				n, ok := a.(*net.IPNet)
				if !ok {
					continue
				}
				addr, ok := netip.AddrFromSlice(n.IP)
				if !ok {
					continue
				}
				addr = addr.Unmap()
				if addr.IsLoopback() || addr.IsLinkLocalUnicast() || addr.IsMulticast() || addr.IsUnspecified() {
					continue
				}
				ones, _ := n.Mask.Size()
				if addr.Is4() && ones > 32 {
					ones -= 96
				}
				if p, err := addr.Prefix(ones); err == nil {
					c.IPRanges = append(c.IPRanges, p)
				}
			}
		}
	}
	if h, err := os.Hostname(); err == nil {
		if _, domain, ok := strings.Cut(strings.ToLower(strings.TrimSuffix(h, ".")), "."); ok && validDomain(domain) == nil && strings.Contains(domain, ".") {
			c.DNSDomains = append(c.DNSDomains, domain)
		}
	}
	c.normalize()
	return c
}

// normalize sorts both lists and drops duplicates and ranges inside others.
func (c *Constraints) normalize() {
	slices.Sort(c.DNSDomains)
	c.DNSDomains = slices.Compact(c.DNSDomains)
	slices.SortFunc(c.IPRanges, func(a, b netip.Prefix) int {
		if n := a.Addr().Compare(b.Addr()); n != 0 {
			return n
		}
		return a.Bits() - b.Bits()
	})
	out := c.IPRanges[:0]
	for _, p := range c.IPRanges {
		covered := false
		for _, q := range out {
			if q.Bits() <= p.Bits() && q.Contains(p.Addr()) {
				covered = true
				break
			}
		}
		if !covered {
			out = append(out, p)
		}
	}
	c.IPRanges = out
}

// Permits reports whether a certificate naming name (a DNS name or an IP
// address) satisfies c, with the matching rules of Go's and OpenSSL's
// verifiers.
func (c Constraints) Permits(name string) bool {
	n := normalizeName(name)
	if a, err := netip.ParseAddr(n); err == nil {
		for _, p := range c.IPRanges {
			if p.Contains(a) {
				return true
			}
		}
		return false
	}
	for _, d := range c.DNSDomains {
		if strings.HasPrefix(d, ".") {
			if strings.HasSuffix(n, d) && len(n) > len(d) {
				return true
			}
			continue
		}
		if n == d || strings.HasSuffix(n, "."+d) {
			return true
		}
	}
	return false
}

// Equal reports whether c and o permit the same subtrees.
func (c Constraints) Equal(o Constraints) bool {
	return slices.Equal(c.DNSDomains, o.DNSDomains) && slices.Equal(c.IPRanges, o.IPRanges)
}

// String lists the subtrees, DNS domains first, comma separated.
func (c Constraints) String() string {
	parts := slices.Clone(c.DNSDomains)
	for _, p := range c.IPRanges {
		parts = append(parts, p.String())
	}
	if len(parts) == 0 {
		return "(nothing)"
	}
	return strings.Join(parts, ", ")
}

// ConstraintsOf returns the permitted subtrees of a CA certificate, without
// the placeholders that stand for an empty list. ok is false when the
// certificate has no name constraints.
func ConstraintsOf(cert *x509.Certificate) (c Constraints, ok bool) {
	if len(cert.PermittedDNSDomains) == 0 && len(cert.PermittedIPRanges) == 0 {
		return Constraints{}, false
	}
	for _, d := range cert.PermittedDNSDomains {
		if d != noDNSDomain {
			c.DNSDomains = append(c.DNSDomains, d)
		}
	}
	for _, n := range cert.PermittedIPRanges {
		a, ok := netip.AddrFromSlice(n.IP)
		if !ok {
			continue
		}
		ones, _ := n.Mask.Size()
		p := netip.PrefixFrom(a.Unmap(), ones)
		if !slices.Contains(noIPRanges, p) {
			c.IPRanges = append(c.IPRanges, p)
		}
	}
	c.normalize()
	return c, true
}

// apply writes c into a CA template, critical, with the placeholders for an
// empty list, and refuses e-mail addresses and URIs altogether.
func (c Constraints) apply(tmpl *x509.Certificate) {
	tmpl.PermittedDNSDomainsCritical = true
	tmpl.PermittedDNSDomains = slices.Clone(c.DNSDomains)
	if len(tmpl.PermittedDNSDomains) == 0 {
		tmpl.PermittedDNSDomains = []string{noDNSDomain}
	}
	ranges := c.IPRanges
	if len(ranges) == 0 {
		ranges = noIPRanges
	}
	for _, p := range ranges {
		tmpl.PermittedIPRanges = append(tmpl.PermittedIPRanges, &net.IPNet{
			IP:   net.IP(p.Addr().AsSlice()),
			Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen()),
		})
	}
	tmpl.PermittedEmailAddresses = []string{noDNSDomain}
	tmpl.PermittedURIDomains = []string{noDNSDomain}
}
