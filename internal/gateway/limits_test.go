package gateway_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/berth-dev/berth/internal/gateway"
	"github.com/berth-dev/berth/internal/netlimit"
	"github.com/berth-dev/berth/internal/poll"
)

// serveGateway runs a gateway with cfg's limits and timeouts through Serve
// on loopback, for env's session, and returns its address.
func serveGateway(t *testing.T, e *env, mod func(*gateway.Config)) string {
	t.Helper()
	// A throwaway certificate: httptest's.
	certSrv := httptest.NewUnstartedServer(http.NotFoundHandler())
	certSrv.StartTLS()
	cert := certSrv.TLS.Certificates[0]
	certSrv.Close()
	cfg := gateway.Config{
		Certificate: cert,
		Verifier:    e.broker.verifier,
		Sessions:    e.sessions,
		Logger:      slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	mod(&cfg)
	gw := gateway.New(cfg)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- gw.Serve(context.Background(), ln) }()
	t.Cleanup(func() {
		gw.Close()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String()
}

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

// closedWithin reports whether the gateway closes c within d.
func closedWithin(c net.Conn, d time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}

// TestServe_ConnectionLimits fills the per-address limit from one address:
// the next connection from it is closed on accept, another address is
// served.
func TestServe_ConnectionLimits(t *testing.T) {
	e := newEnv(t, "", 0)
	addr := serveGateway(t, e, func(c *gateway.Config) {
		c.Limits = netlimit.Limits{Max: 100, MaxPerAddr: 2}
		c.ReadHeaderTimeout = time.Minute // only the limit closes a connection here
	})
	held := []net.Conn{dialFrom(t, addr, "127.0.0.2"), dialFrom(t, addr, "127.0.0.2")}
	over := dialFrom(t, addr, "127.0.0.2")
	if !closedWithin(over, 10*time.Second) {
		t.Fatal("a third connection from 127.0.0.2 (limit 2) was left open")
	}
	tc := tls.Client(dialFrom(t, addr, "127.0.0.3"), &tls.Config{InsecureSkipVerify: true})
	tc.SetDeadline(time.Now().Add(10 * time.Second))
	if err := tc.Handshake(); err != nil {
		t.Fatalf("another address: %v", err)
	}
	for _, c := range held {
		if closedWithin(c, 100*time.Millisecond) {
			t.Fatal("a connection within the limit was closed")
		}
	}
}

// TestServe_SlowClientsAndStreams sends a request body one byte a second and
// opens a desktop stream: the slow request is cut at the read timeout, the
// stream (a hijacked WebSocket) keeps working well past it.
func TestServe_SlowClientsAndStreams(t *testing.T) {
	t.Parallel() // it mostly waits on real time: overlap it with the others that do
	const readTimeout = time.Second
	e := newEnv(t, "", 0)
	addr := serveGateway(t, e, func(c *gateway.Config) {
		c.ReadHeaderTimeout, c.ReadTimeout, c.IdleTimeout = readTimeout, readTimeout, readTimeout
	})
	clientTLS := &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}}

	// The desktop stream.
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: clientTLS}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tok := e.broker.token(t, sessID, owner, owner)
	ws, _, err := websocket.Dial(ctx, "wss://"+addr+"/websockify?authToken="+url.QueryEscape(tok)+"&sessionId="+sessID,
		&websocket.DialOptions{HTTPClient: hc})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	rfb, _, _, _ := handshake(t, ws)
	bridged := time.Now()

	// The slow client: a POST whose body trickles in.
	slow := tls.Client(dialFrom(t, addr, "127.0.0.2"), clientTLS)
	start := time.Now()
	if _, err := io.WriteString(slow, "POST / HTTP/1.1\r\nHost: gw\r\nContent-Length: 1000\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	cut := make(chan struct{})
	go func() {
		defer close(cut)
		slow.SetReadDeadline(time.Now().Add(30 * time.Second))
		_, _ = io.Copy(io.Discard, slow)
	}()
	var lived time.Duration
trickle:
	for {
		select {
		case <-cut:
			lived = time.Since(start)
			break trickle
		case <-time.After(200 * time.Millisecond):
			if time.Since(start) > 10*readTimeout {
				t.Fatalf("a request body trickling in was not cut after %s (read timeout %s)", time.Since(start), readTimeout)
			}
			_, _ = slow.Write([]byte("x"))
		}
	}
	t.Logf("slow body cut after %s", lived.Round(time.Millisecond))

	// The stream lives on, past three read timeouts.
	poll.Until(t, 30*time.Second, "three read timeouts", func() bool { return time.Since(bridged) > 3*readTimeout })
	rfb.write(keyEvent)
	poll.Until(t, 5*time.Second, "the key event through the stream", func() bool {
		got := e.rfb.received(0)
		return len(got) >= len(keyEvent) && string(got[len(got)-len(keyEvent):]) == string(keyEvent)
	})
}
