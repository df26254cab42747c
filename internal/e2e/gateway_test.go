package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// rfbVersion is the first thing Xvnc sends.
const rfbVersion = "RFB 003.008\n"

// DialGateway opens the web gateway's WebSocket for a session with a
// connection token, as the session page does:
// wss://127.0.0.1:PORT/websockify?authToken=…&sessionId=…, trusting the
// web gateway CA (gateway-ca.pem). On a refusal it returns a nil Conn, the
// HTTP status and the gateway's reason. The connection is closed at
// cleanup.
func (e *Env) DialGateway(tb testing.TB, sessionID, token string) (c *websocket.Conn, status int, reason string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	q := url.Values{"authToken": {token}, "sessionId": {sessionID}}
	u := "wss://127.0.0.1:" + strconv.Itoa(e.WebPort) + "/websockify?" + q.Encode()
	hc := *e.GatewayHTTP
	hc.Timeout = 0 // the context bounds the handshake; the connection lives on
	c, resp, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPClient: &hc, Subprotocols: []string{"binary"}})
	if err != nil {
		if resp == nil {
			tb.Fatalf("WebSocket to the gateway failed without an HTTP answer: %v", err)
		}
		var body []byte
		if resp.Body != nil {
			body, _ = io.ReadAll(resp.Body)
		}
		return nil, resp.StatusCode, string(bytes.TrimSpace(body))
	}
	c.SetReadLimit(-1)
	tb.Cleanup(func() { c.CloseNow() })
	return c, resp.StatusCode, ""
}

// MustReadRFB reads the server's protocol version through a bridged
// WebSocket and fails unless it is "RFB 003.008".
func MustReadRFB(tb testing.TB, c *websocket.Conn) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var got []byte
	for len(got) < len(rfbVersion) {
		typ, b, err := c.Read(ctx)
		if err != nil {
			tb.Fatalf("read the RFB handshake through the gateway: %v (got %q so far)", err, got)
		}
		if typ != websocket.MessageBinary {
			tb.Fatalf("the gateway sent a %v message, want binary", typ)
		}
		got = append(got, b...)
	}
	if string(got[:len(rfbVersion)]) != rfbVersion {
		tb.Fatalf("the session's VNC server said %q, want %q", got, rfbVersion)
	}
}

// MustConnect dials the gateway and reads the RFB handshake; it fails when
// the gateway refuses.
func (e *Env) MustConnect(tb testing.TB, sessionID, token, who string) *websocket.Conn {
	tb.Helper()
	c, status, reason := e.DialGateway(tb, sessionID, token)
	if c == nil {
		tb.Fatalf("%s: the gateway refused the WebSocket with %d %q, want it bridged to the session", who, status, reason)
	}
	MustReadRFB(tb, c)
	return c
}

// MustRefuse dials the gateway and fails unless it refuses with status.
func (e *Env) MustRefuse(tb testing.TB, sessionID, token, who string, status int) string {
	tb.Helper()
	c, got, reason := e.DialGateway(tb, sessionID, token)
	if c != nil {
		c.CloseNow()
		tb.Fatalf("%s: the gateway accepted the WebSocket, want a refusal with %d", who, status)
	}
	if got != status {
		tb.Fatalf("%s: the gateway refused with %d %q, want %d", who, got, reason, status)
	}
	return reason
}

// waitClosed reads from a bridged connection until it ends and returns its
// close status (-1 when it ended without a close frame).
func waitClosed(c *websocket.Conn, timeout time.Duration) (websocket.StatusCode, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		_, _, err := c.Read(ctx)
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				return -1, fmt.Errorf("still open after %s", timeout)
			}
			return websocket.CloseStatus(err), err
		}
	}
}
