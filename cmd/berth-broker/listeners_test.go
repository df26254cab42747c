package main

import (
	"crypto/tls"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/netlimit"
	"github.com/berth-dev/berth/internal/poll"
)

// TestBroker_ListenerLimits fills each listener's per-address limit from one
// loopback address and expects the next connection from it to be closed at
// once, while another address still gets in and completes TLS. A listener
// left without limits keeps the extra connection open and fails.
func TestBroker_ListenerLimits(t *testing.T) {
	const perAddr = 3
	b := MustRunMain(t, t.TempDir(), func(c *Config) {
		c.ClientMaxConnsPerAddr, c.AgentMaxConnsPerAddr, c.ConnectionGatewayMaxConnsPerAddr = perAddr, perAddr, perAddr
		c.EnableConnectionGateway, c.ConnectionGatewayBindHost, c.ConnectionGatewayPort = true, "127.0.0.1", 0
		c.MetricsPort = 0 // a port of its own: metrics on
		// Far beyond the test's waits: only a limit closes a connection.
		c.RequestHeaderTimeout, c.RequestReadTimeout = time.Minute, time.Minute
	})
	for _, tc := range []struct {
		name, addr string
		limit      int
	}{
		{"client", b.ClientAddr(), perAddr},
		{"agent", b.AgentAddr(), perAddr},
		{"gateway", b.ResolverAddr(), perAddr},
		{"metrics", b.MetricsAddr(), metricsLimits.MaxPerAddr},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln := b.limited[tc.name]
			for range tc.limit {
				dialFrom(t, tc.addr, "127.0.0.2")
			}
			key := netlimit.Key(netip.MustParseAddr("127.0.0.2"))
			poll.Until(t, 10*time.Second, "the connections to be held", func() bool { return ln.OpenFrom(key) == tc.limit })
			over := dialFrom(t, tc.addr, "127.0.0.2")
			over.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, err := over.Read(make([]byte, 1))
			var ne net.Error
			if err == nil || errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("a connection over the per-address limit of %d was left open (read: %v)", tc.limit, err)
			}
			// Another address is served: a TLS handshake completes.
			tc2 := tls.Client(dialFrom(t, tc.addr, "127.0.0.3"), &tls.Config{InsecureSkipVerify: true})
			tc2.SetDeadline(time.Now().Add(10 * time.Second))
			if err := tc2.Handshake(); err != nil {
				t.Fatalf("another address: %v", err)
			}
			if _, perAddrRefused := ln.Refused(); perAddrRefused != 1 {
				t.Fatalf("%d refusals counted, want 1", perAddrRefused)
			}
			if v := b.MustScrape(t).must(t, "berth_broker_connections_refused_total", "listener", tc.name, "reason", "per_address"); v != 1 {
				t.Errorf("berth_broker_connections_refused_total{listener=%q,reason=\"per_address\"} = %v, want 1", tc.name, v)
			}
		})
	}
}

// dialFrom connects to addr from the loopback address from (127.0.0.x).
func dialFrom(t *testing.T, addr, from string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 10 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
