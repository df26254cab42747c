package agent

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"
)

// A registering agent registers and then links on one connection: it opens
// a connection of its own (connTransport), registers over it, and hands it
// to the WebSocket upgrade of its link. Over http.Transport the two could
// not share one: the transport keeps upgrade requests apart from the others
// (HTTP/1-only connections). One connection instead of two halves the TLS
// handshakes of a registration storm, on the broker and on every agent, and
// leaves no idle registration connection next to the link.

// errConnUsed means an upgrade took a connTransport's connection over.
var errConnUsed = errors.New("the registration connection became the link")

// connTransport is an http.RoundTripper over one HTTP/1.1 connection, for
// one request at a time, which it opens on the first request. A 101 answer
// hands the connection over as the response's body (an io.ReadWriteCloser,
// as http.Transport does for an upgrade). A request on a kept connection
// that fails before any answer (the broker closed the idle connection) is
// tried once more on a new connection, if it has no body or can make its
// body again (GetBody). Requests must be to the host the transport was made
// for.
type connTransport struct {
	mu       sync.Mutex
	url      *url.URL    // scheme and host of every request
	tc       *tls.Config // for https
	conn     net.Conn    // nil until dialled, and after a failure
	br       *bufio.Reader
	body     *connBody // the last response's body, on conn
	upgraded bool      // conn belongs to the caller now
}

// newConnTransport returns a connTransport to the host of u (https: TLS with
// tc).
func newConnTransport(u *url.URL, tc *tls.Config) *connTransport {
	if tc != nil {
		tc = tc.Clone()     // shares the session cache: the link resumes later
		tc.NextProtos = nil // HTTP/1.1: no ALPN for HTTP/2
	}
	return &connTransport{url: &url.URL{Scheme: u.Scheme, Host: u.Host}, tc: tc}
}

// dial opens the connection within ctx.
func (t *connTransport) dial(ctx context.Context) error {
	addr := canonicalAddr(t.url)
	var (
		c   net.Conn
		err error
	)
	if t.url.Scheme == "https" || t.url.Scheme == "wss" {
		c, err = (&tls.Dialer{Config: t.tc}).DialContext(ctx, "tcp", addr)
	} else {
		c, err = (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	}
	if err != nil {
		return err
	}
	t.conn, t.br = c, bufio.NewReader(c)
	return nil
}

// canonicalAddr is u's host:port, with the scheme's port when it names none.
func canonicalAddr(u *url.URL) string {
	port := u.Port()
	if port == "" {
		port = "443"
		if u.Scheme == "http" || u.Scheme == "ws" {
			port = "80"
		}
	}
	return net.JoinHostPort(u.Hostname(), port)
}

// RoundTrip writes req and reads its response. The request's context bounds
// both; a cancelled or failed exchange closes the connection.
func (t *connTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if req.Body != nil {
		defer req.Body.Close()
	}
	switch {
	case t.upgraded:
		return nil, errConnUsed
	case req.URL.Host != t.url.Host:
		return nil, errors.New("request to another host than the registration connection's")
	case t.body != nil && !t.body.done:
		t.closeLocked() // the last answer's body is still on the wire
	}
	ctx := req.Context()
	kept := t.conn != nil
	if !kept {
		if err := t.dial(ctx); err != nil {
			return nil, err
		}
	}
	resp, answered, stop, err := t.exchange(ctx, req)
	bodiless := req.Body == nil || req.Body == http.NoBody
	if err != nil && kept && !answered && (bodiless || req.GetBody != nil) && ctx.Err() == nil {
		// The broker closed the kept connection: once more on a new one
		// (a copy of req: a RoundTripper leaves the caller's alone).
		req = req.Clone(ctx)
		if !bodiless {
			if req.Body, err = req.GetBody(); err != nil {
				return nil, err
			}
			defer req.Body.Close()
		}
		if err = t.dial(ctx); err != nil {
			return nil, err
		}
		resp, _, stop, err = t.exchange(ctx, req)
	}
	if err != nil {
		return nil, err
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		if !stop() { // ctx ended: the connection's deadline has passed
			t.closeLocked()
			return nil, ctx.Err()
		}
		t.upgraded = true // the caller owns the connection now
		resp.Body = &upgradedConn{br: t.br, conn: t.conn}
		return resp, nil
	}
	t.body = &connBody{t: t, ctx: ctx, conn: t.conn, rc: resp.Body, close: resp.Close, stop: stop}
	resp.Body = t.body
	return resp, nil
}

// exchange writes req on t.conn and reads the response head within ctx;
// answered reports whether any of the answer came. On error it closes the
// connection. Until the returned stop is called, ctx's end also ends reading
// the body.
func (t *connTransport) exchange(ctx context.Context, req *http.Request) (resp *http.Response, answered bool, stop func() bool, err error) {
	c := t.conn
	// Once ctx is done (and so ctx.Err is set), the connection's deadline
	// ends the exchange.
	stop = context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	err = req.Write(c)
	if err == nil {
		_, err = t.br.Peek(1)
		answered = err == nil
	}
	if err == nil {
		resp, err = http.ReadResponse(t.br, req)
	}
	if err != nil {
		stop()
		t.closeLocked()
		if ctx.Err() != nil {
			err = ctx.Err() // not the connection's deadline
		}
		return nil, answered, nil, err
	}
	return resp, true, stop, nil
}

// CloseIdleConnections closes the connection unless an upgrade took it
// over (http.Client.CloseIdleConnections calls it).
func (t *connTransport) CloseIdleConnections() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closeLocked()
}

// closeLocked closes the connection unless an upgrade took it over (t.mu
// held).
func (t *connTransport) closeLocked() {
	if t.conn != nil && !t.upgraded {
		_ = t.conn.Close()
		t.conn, t.br, t.body = nil, nil, nil
	}
}

// connBody is a response body of a connTransport: read to its end, the
// connection can carry the next request (unless the broker said close, or
// the request's context ended meanwhile). Until then the request's context
// bounds reading it.
type connBody struct {
	t     *connTransport
	ctx   context.Context // the request's
	conn  net.Conn        // the connection it came on
	rc    io.ReadCloser
	close bool        // the response asked to close the connection
	stop  func() bool // stops the request's context from ending reads
	done  bool        // read to its end, or closed
}

func (b *connBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if err != nil {
		b.finish(err == io.EOF)
		if err != io.EOF && b.ctx.Err() != nil {
			err = b.ctx.Err() // not the connection's deadline
		}
	}
	return n, err
}

func (b *connBody) Close() error {
	err := b.rc.Close()
	b.finish(false)
	return err
}

// finish ends the body: the connection stays open for the next request when
// the body was read to its end and nothing spoiled it.
func (b *connBody) finish(atEOF bool) {
	b.t.mu.Lock()
	defer b.t.mu.Unlock()
	if b.done {
		return
	}
	b.done = true
	intact := b.stop() // false: the connection's deadline has passed
	if (!atEOF || b.close || !intact) && b.t.conn == b.conn {
		b.t.closeLocked()
	}
}

// upgradedConn is an upgraded connection: what the reader buffered, then
// the connection itself (as http.Transport's upgraded bodies read).
type upgradedConn struct {
	br   *bufio.Reader
	conn net.Conn
}

func (c *upgradedConn) Read(p []byte) (int, error) {
	if c.br != nil {
		if c.br.Buffered() > 0 {
			return c.br.Read(p)
		}
		c.br = nil
	}
	return c.conn.Read(p)
}

func (c *upgradedConn) Write(p []byte) (int, error) { return c.conn.Write(p) }
func (c *upgradedConn) Close() error                { return c.conn.Close() }
