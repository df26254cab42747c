package tlsaccept

import (
	"crypto/tls"
	"net"
	"slices"
	"sync"
	"testing"
	"time"
)

// BenchmarkStorm has 1,000 clients connect at once and handshake (full
// handshakes, X25519MLKEM768 and ECDSA P-256), against tls.NewListener with
// a goroutine per connection (as http.Server does) and against Listener.
// It reports the median and 99th percentile of a client's connect to
// handshake done, and the whole storm's time.
func BenchmarkStorm(b *testing.B) {
	const clients = 1000
	for _, mode := range []string{"tls.NewListener", "tlsaccept"} {
		b.Run(mode, func(b *testing.B) {
			cert, pool := testCert(b)
			cfg := &tls.Config{Certificates: []tls.Certificate{cert}, SessionTicketsDisabled: true}
			for range b.N {
				tcp, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					b.Fatal(err)
				}
				var ln net.Listener
				if mode == "tlsaccept" {
					ln = New(tcp, cfg, Options{Name: "bench", MaxWait: time.Minute, HandshakeTimeout: time.Minute})
				} else {
					ln = tls.NewListener(tcp, cfg)
				}
				go func() {
					for {
						c, err := ln.Accept()
						if err != nil {
							return
						}
						go func() {
							c.(*tls.Conn).Handshake()
							c.Write([]byte{1})
							c.Close()
						}()
					}
				}()
				lat := make([]time.Duration, clients)
				var wg sync.WaitGroup
				start := time.Now()
				for i := range clients {
					wg.Add(1)
					go func() {
						defer wg.Done()
						t0 := time.Now()
						c, err := tls.Dial("tcp", tcp.Addr().String(), &tls.Config{RootCAs: pool, ServerName: "localhost"})
						if err != nil {
							lat[i] = time.Hour
							return
						}
						c.Read(make([]byte, 1))
						lat[i] = time.Since(t0)
						c.Close()
					}()
				}
				wg.Wait()
				total := time.Since(start)
				ln.Close()
				slices.Sort(lat)
				b.ReportMetric(float64(lat[clients/2].Milliseconds()), "p50-ms")
				b.ReportMetric(float64(lat[clients*99/100].Milliseconds()), "p99-ms")
				b.ReportMetric(float64(total.Milliseconds()), "storm-ms")
			}
		})
	}
}
