package wslink_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/pki"
	"github.com/berth-dev/berth/internal/tlsaccept"
	"github.com/berth-dev/berth/internal/wslink"
	"github.com/coder/websocket"
)

// server is a TLS http.Server on loopback whose handler accepts WebSockets
// with wslink and hands each to serve on the handler's goroutine.
type server struct {
	url    string
	client *http.Client
	conns  chan *wslink.Conn
}

// newServer starts a server behind tlsaccept's listener (parked reads) or,
// with plain, crypto/tls's (reads block in TLS).
func newServer(t *testing.T, plain bool, opts wslink.Options, serve func(*wslink.Conn)) *server {
	t.Helper()
	return newWrappedServer(t, plain, false, opts, serve)
}

// newWrappedServer is newServer; with wrap, the handler hands wslink a
// connection wrapped as berth-broker's link tracking does (a net.Conn that
// names the one under it with NetConn).
func newWrappedServer(t *testing.T, plain, wrap bool, opts wslink.Options, serve func(*wslink.Conn)) *server {
	t.Helper()
	cert, pool := selfSigned(t)
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}}
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var ln net.Listener
	if plain {
		ln = tls.NewListener(tcp, cfg)
	} else {
		ln = tlsaccept.New(tcp, cfg, tlsaccept.Options{Name: "test"})
	}
	s := &server{url: "wss://" + tcp.Addr().String() + "/ws", conns: make(chan *wslink.Conn, 16)}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if wrap {
			w = &wrappingWriter{w}
		}
		c, err := wslink.Accept(w, r, opts)
		if err != nil {
			return
		}
		serve(c)
	}), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close(); _ = ln.Close() })
	s.client = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	return s
}

func (s *server) dial(t *testing.T) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, s.url, &websocket.DialOptions{HTTPClient: s.client})
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadLimit(1 << 20)
	t.Cleanup(func() { c.CloseNow() })
	return c
}

// echo answers every message with the same, until the read fails.
func echo(c *wslink.Conn) {
	for {
		typ, data, err := c.ReadMessage()
		if err != nil {
			return
		}
		if err := c.WriteMessage(typ, data); err != nil {
			return
		}
	}
}

func TestEcho(t *testing.T) {
	for _, plain := range []bool{false, true} {
		name := "parked"
		if plain {
			name = "blocking"
		}
		t.Run(name, func(t *testing.T) {
			s := newServer(t, plain, wslink.Options{ReadLimit: 1 << 20}, echo)
			c := s.dial(t)
			ctx := t.Context()
			tests := []struct {
				name string
				typ  websocket.MessageType
				data []byte
				// chunks > 0: sent as that many fragments
				chunks int
			}{
				{"empty", websocket.MessageText, []byte{}, 0},
				{"short text", websocket.MessageText, []byte(`{"type":"update"}`), 0},
				{"binary", websocket.MessageBinary, []byte{0, 1, 2, 0xff}, 0},
				{"16-bit length", websocket.MessageText, bytes.Repeat([]byte("a"), 300), 0},
				{"past one TLS record", websocket.MessageText, bytes.Repeat([]byte("b"), 70000), 0},
				{"fragmented", websocket.MessageText, bytes.Repeat([]byte("c"), 30000), 7},
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					if tt.chunks > 0 {
						w, err := c.Writer(ctx, tt.typ)
						if err != nil {
							t.Fatal(err)
						}
						step := len(tt.data)/tt.chunks + 1
						for p := tt.data; len(p) > 0; p = p[min(step, len(p)):] {
							if _, err := w.Write(p[:min(step, len(p))]); err != nil {
								t.Fatal(err)
							}
						}
						if err := w.Close(); err != nil {
							t.Fatal(err)
						}
					} else if err := c.Write(ctx, tt.typ, tt.data); err != nil {
						t.Fatal(err)
					}
					typ, got, err := c.Read(ctx)
					if err != nil {
						t.Fatal(err)
					}
					if typ != tt.typ || !bytes.Equal(got, tt.data) {
						t.Fatalf("echo: type %v, %d bytes; want %v, %d bytes", typ, len(got), tt.typ, len(tt.data))
					}
				})
			}
		})
	}
}

// rawDial opens a TLS connection, sends the opening handshake and reads
// the 101: the client side of the tests that break the protocol.
func (s *server) rawDial(t *testing.T) *tls.Conn {
	t.Helper()
	addr := strings.TrimSuffix(strings.TrimPrefix(s.url, "wss://"), "/ws")
	tc, err := tls.Dial("tcp", addr, s.client.Transport.(*http.Transport).TLSClientConfig)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tc.Close() })
	_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
	req := "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
	if _, err := tc.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	var resp []byte
	b := make([]byte, 1)
	for !bytes.HasSuffix(resp, []byte("\r\n\r\n")) {
		if _, err := tc.Read(b); err != nil {
			t.Fatalf("read handshake response: %v (%q)", err, resp)
		}
		resp = append(resp, b[0])
	}
	// RFC 6455 1.3's example key and accept value.
	if !strings.HasPrefix(string(resp), "HTTP/1.1 101 ") || !strings.Contains(string(resp), "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n") {
		t.Fatalf("handshake response %q", resp)
	}
	return tc
}

// clientFrame is a masked frame: b0 is the first byte (FIN, RSV, opcode).
func clientFrame(b0 byte, payload []byte) []byte {
	key := [4]byte{1, 2, 3, 4}
	f := []byte{b0}
	switch n := len(payload); {
	case n < 126:
		f = append(f, 0x80|byte(n))
	case n <= 0xffff:
		f = binary.BigEndian.AppendUint16(append(f, 0x80|126), uint16(n))
	default:
		f = binary.BigEndian.AppendUint64(append(f, 0x80|127), uint64(n))
	}
	f = append(f, key[:]...)
	for i, c := range payload {
		f = append(f, c^key[i&3])
	}
	return f
}

// readServerFrame reads one unmasked server frame.
func readServerFrame(t *testing.T, r io.Reader) (op byte, payload []byte) {
	t.Helper()
	var h [2]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		t.Fatalf("read server frame: %v", err)
	}
	if h[1]&0x80 != 0 {
		t.Fatal("server frame masked")
	}
	n := int(h[1] & 0x7f)
	switch n {
	case 126:
		var l [2]byte
		_, _ = io.ReadFull(r, l[:])
		n = int(binary.BigEndian.Uint16(l[:]))
	case 127:
		var l [8]byte
		_, _ = io.ReadFull(r, l[:])
		n = int(binary.BigEndian.Uint64(l[:]))
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		t.Fatalf("read server frame payload: %v", err)
	}
	return h[0], payload
}

func TestProtocolViolations(t *testing.T) {
	long := func(n int) []byte { return bytes.Repeat([]byte("x"), n) }
	tests := []struct {
		name   string
		frames [][]byte
		code   wslink.StatusCode
		reason string
	}{
		{"unmasked frame", [][]byte{{0x81, 0x02, 'h', 'i'}}, wslink.StatusProtocolError, "not masked"},
		{"reserved bit", [][]byte{clientFrame(0xc1, []byte("hi"))}, wslink.StatusProtocolError, "reserved bits"},
		{"unknown opcode", [][]byte{clientFrame(0x83, nil)}, wslink.StatusProtocolError, "unknown opcode"},
		{"fragmented ping", [][]byte{clientFrame(0x09, nil)}, wslink.StatusProtocolError, "fragmented control"},
		{"long ping", [][]byte{clientFrame(0x89, long(126))}, wslink.StatusProtocolError, "control frame payload"},
		{"continuation first", [][]byte{clientFrame(0x80, []byte("x"))}, wslink.StatusProtocolError, "continuation"},
		{"message inside a message", [][]byte{clientFrame(0x01, []byte("a")), clientFrame(0x81, []byte("b"))}, wslink.StatusProtocolError, "final fragment"},
		{"frame over the limit", [][]byte{clientFrame(0x81, long(2000))}, wslink.StatusMessageTooBig, "limit"},
		{"fragments over the limit", [][]byte{clientFrame(0x01, long(600)), clientFrame(0x80, long(600))}, wslink.StatusMessageTooBig, "limit"},
		{"long length for a short frame", [][]byte{{0x81, 0x80 | 126, 0, 5, 1, 2, 3, 4, 'a', 'b', 'c', 'd', 'e'}}, wslink.StatusProtocolError, "shortest form"},
		{"close with 1 byte", [][]byte{clientFrame(0x88, []byte{3})}, wslink.StatusProtocolError, "1 byte"},
		{"close with a reserved code", [][]byte{clientFrame(0x88, []byte{0x03, 0xed})}, wslink.StatusProtocolError, "1005"},
		{"close reason not UTF-8", [][]byte{clientFrame(0x88, []byte{0x03, 0xe8, 0xff})}, wslink.StatusInvalidPayload, "UTF-8"},
	}
	for _, plain := range []bool{false, true} {
		for _, tt := range tests {
			t.Run(fmt.Sprintf("plain=%v/%s", plain, tt.name), func(t *testing.T) {
				errs := make(chan error, 1)
				s := newServer(t, plain, wslink.Options{ReadLimit: 1000}, func(c *wslink.Conn) {
					for {
						if _, _, err := c.ReadMessage(); err != nil {
							errs <- err
							return
						}
					}
				})
				tc := s.rawDial(t)
				for _, f := range tt.frames {
					if _, err := tc.Write(f); err != nil {
						t.Fatal(err)
					}
				}
				op, p := readServerFrame(t, tc)
				if op != 0x88 || len(p) < 2 {
					t.Fatalf("server sent opcode 0x%x %q, want a close frame", op, p)
				}
				code, reason := wslink.StatusCode(binary.BigEndian.Uint16(p)), string(p[2:])
				if code != tt.code || !strings.Contains(reason, tt.reason) {
					t.Errorf("close %d %q, want %d containing %q", code, reason, tt.code, tt.reason)
				}
				// The server waits for our close frame, then closes.
				if _, err := tc.Write(clientFrame(0x88, p[:2])); err != nil {
					t.Fatal(err)
				}
				if _, err := tc.Read(make([]byte, 1)); err == nil {
					t.Error("connection still open after the close handshake")
				}
				var ce *wslink.CloseError
				if err := <-errs; !errors.As(err, &ce) || ce.Code != tt.code {
					t.Errorf("ReadMessage: %v, want a close error with %d", err, tt.code)
				}
			})
		}
	}
}

func TestCloseHandshake(t *testing.T) {
	t.Run("server closes", func(t *testing.T) {
		done := make(chan struct{})
		s := newServer(t, false, wslink.Options{}, func(c *wslink.Conn) {
			defer close(done)
			go func() { _ = c.Close(wslink.StatusPolicyViolation, "replaced by a newer link") }()
			_, _, err := c.ReadMessage() // parked when Close comes; finishes the handshake
			var ce *wslink.CloseError
			if !errors.As(err, &ce) || ce.Code != wslink.StatusPolicyViolation {
				t.Errorf("ReadMessage after Close: %v, want the echo of the close", err)
			}
		})
		c := s.dial(t)
		_, _, err := c.Read(t.Context())
		if st := websocket.CloseStatus(err); st != websocket.StatusPolicyViolation {
			t.Fatalf("client read: %v, want status 1008", err)
		}
		<-done
	})
	t.Run("server closes without a reader", func(t *testing.T) {
		closed := make(chan error, 1)
		s := newServer(t, false, wslink.Options{}, func(c *wslink.Conn) {
			closed <- c.Close(wslink.StatusGoingAway, "")
		})
		c := s.dial(t)
		_, _, err := c.Read(t.Context())
		if st := websocket.CloseStatus(err); st != websocket.StatusGoingAway {
			t.Fatalf("client read: %v, want status 1001", err)
		}
		if err := <-closed; err != nil {
			t.Fatal(err)
		}
	})
	t.Run("client closes", func(t *testing.T) {
		errs := make(chan error, 1)
		s := newServer(t, false, wslink.Options{}, func(c *wslink.Conn) {
			_, _, err := c.ReadMessage()
			errs <- err
		})
		c := s.dial(t)
		if err := c.Close(websocket.StatusNormalClosure, "agent stopping"); err != nil {
			t.Fatalf("client close: %v", err) // fails unless the server echoed
		}
		var ce *wslink.CloseError
		if err := <-errs; !errors.As(err, &ce) || ce.Code != wslink.StatusNormalClosure || ce.Reason != "agent stopping" {
			t.Fatalf("ReadMessage: %v", err)
		}
	})
	t.Run("ping", func(t *testing.T) {
		s := newServer(t, false, wslink.Options{}, echo)
		c := s.dial(t)
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		read := c.CloseRead(ctx) // a reader, to receive the pong
		_ = read
		if err := c.Ping(ctx); err != nil {
			t.Fatalf("ping: %v", err)
		}
	})
}

// TestIdleHoldsNoBuffer: behind tlsaccept's listener a reader parks on the
// socket, and between messages holds no read buffer; behind crypto/tls's
// own it cannot park.
func TestIdleHoldsNoBuffer(t *testing.T) {
	for _, plain := range []bool{false, true} {
		t.Run(fmt.Sprintf("plain=%v", plain), func(t *testing.T) {
			type state struct{ parks, holds bool }
			states := make(chan state, 3)
			s := newServer(t, plain, wslink.Options{ReadLimit: 1 << 20}, func(c *wslink.Conn) {
				for range 3 {
					if _, _, err := c.ReadMessage(); err != nil {
						t.Error(err)
						return
					}
					p, h := c.IdleState()
					states <- state{p, h}
				}
			})
			c := s.dial(t)
			for _, n := range []int{10, 20000, 100} { // one message spans TLS records
				if err := c.Write(t.Context(), websocket.MessageText, bytes.Repeat([]byte("m"), n)); err != nil {
					t.Fatal(err)
				}
				if got := <-states; got.parks != !plain || (!plain && got.holds) {
					t.Errorf("after a %d-byte message: parks %v, holds a buffer %v", n, got.parks, got.holds)
				}
			}
		})
	}
}

// TestReadDeadline: a parked reader wakes at its read deadline with
// os.ErrDeadlineExceeded.
func TestReadDeadline(t *testing.T) {
	for _, plain := range []bool{false, true} {
		t.Run(fmt.Sprintf("plain=%v", plain), func(t *testing.T) {
			errs := make(chan error, 1)
			s := newServer(t, plain, wslink.Options{}, func(c *wslink.Conn) {
				_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
				_, _, err := c.ReadMessage()
				errs <- err
			})
			s.dial(t)
			select {
			case err := <-errs:
				if !errors.Is(err, os.ErrDeadlineExceeded) {
					t.Fatalf("ReadMessage: %v, want the deadline", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the read deadline did not end the read")
			}
		})
	}
}

func TestAcceptRefuses(t *testing.T) {
	srv := newServer(t, true, wslink.Options{}, func(c *wslink.Conn) { _ = c.Close(wslink.StatusNormalClosure, "") })
	base := strings.Replace(srv.url, "wss://", "https://", 1)
	good := map[string]string{"Connection": "keep-alive, Upgrade", "Upgrade": "websocket",
		"Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
	tests := []struct {
		name   string
		method string
		header map[string]string // replaces good's
		status int
		body   string
	}{
		{"POST", http.MethodPost, nil, http.StatusMethodNotAllowed, "GET"},
		{"no Connection upgrade", "", map[string]string{"Connection": "keep-alive"}, http.StatusUpgradeRequired, "Connection"},
		{"no Upgrade", "", map[string]string{"Upgrade": "h2c"}, http.StatusUpgradeRequired, "Upgrade"},
		{"old version", "", map[string]string{"Sec-WebSocket-Version": "8"}, http.StatusUpgradeRequired, "Sec-WebSocket-Version"},
		{"short key", "", map[string]string{"Sec-WebSocket-Key": "c2hvcnQ="}, http.StatusBadRequest, "Sec-WebSocket-Key"},
		{"key not base64", "", map[string]string{"Sec-WebSocket-Key": "!!!!"}, http.StatusBadRequest, "Sec-WebSocket-Key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(t.Context(), cmpOr(tt.method, http.MethodGet), base, nil)
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range good {
				req.Header.Set(k, v)
			}
			for k, v := range tt.header {
				req.Header.Set(k, v)
			}
			resp, err := srv.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.status || !strings.Contains(string(body), tt.body) {
				t.Errorf("got %d %q, want %d naming %q", resp.StatusCode, body, tt.status, tt.body)
			}
		})
	}
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// selfSigned issues the server's certificate from a CA of berth's own
// (internal/pki, as berth-broker does), trusted by the returned pool.
func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	ca, err := pki.LoadOrCreateCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := ca.Issue([]string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	return cert, pool
}

// notifyEcho echoes like echo, reading with ReadMessageNow and waiting
// with NotifyReadable, so no goroutine waits between messages; it sends
// the error that ended it, or errCannotNotify.
func notifyEcho(c *wslink.Conn, deadline time.Duration, done chan<- error) {
	for {
		if deadline > 0 {
			_ = c.SetReadDeadline(time.Now().Add(deadline))
		}
		typ, data, err := c.ReadMessageNow()
		if errors.Is(err, wslink.ErrWouldPark) {
			if !c.NotifyReadable(func(err error) {
				if err != nil {
					done <- err
					return
				}
				notifyEcho(c, deadline, done)
			}) {
				done <- errCannotNotify
			}
			return
		}
		if err != nil {
			done <- err
			return
		}
		if err := c.WriteMessage(typ, data); err != nil {
			done <- err
			return
		}
	}
}

var errCannotNotify = errors.New("cannot notify")

// TestNotifyReadable: behind tlsaccept's listener a reader can wait for the
// next message without a goroutine, across messages that span TLS records,
// until its read deadline or the peer's close; behind crypto/tls's own
// listener it cannot.
func TestNotifyReadable(t *testing.T) {
	t.Run("echo, then the deadline", func(t *testing.T) {
		done := make(chan error, 1)
		s := newServer(t, false, wslink.Options{ReadLimit: 1 << 20}, func(c *wslink.Conn) { notifyEcho(c, 300*time.Millisecond, done) })
		c := s.dial(t)
		for _, n := range []int{1, 300, 70000, 5} {
			msg := bytes.Repeat([]byte("n"), n)
			if err := c.Write(t.Context(), websocket.MessageBinary, msg); err != nil {
				t.Fatal(err)
			}
			if _, got, err := c.Read(t.Context()); err != nil || !bytes.Equal(got, msg) {
				t.Fatalf("echo of %d bytes: %d bytes, %v", n, len(got), err)
			}
		}
		if err := <-done; !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("idle past the deadline: %v", err)
		}
	})
	t.Run("peer closes", func(t *testing.T) {
		done := make(chan error, 1)
		s := newServer(t, false, wslink.Options{}, func(c *wslink.Conn) { notifyEcho(c, 0, done) })
		c := s.dial(t)
		if err := c.Close(websocket.StatusNormalClosure, "bye"); err != nil {
			t.Fatalf("close handshake: %v", err)
		}
		var ce *wslink.CloseError
		if err := <-done; !errors.As(err, &ce) || ce.Code != wslink.StatusNormalClosure {
			t.Fatalf("after the peer's close: %v", err)
		}
	})
	t.Run("blocking listener", func(t *testing.T) {
		done := make(chan error, 1)
		s := newServer(t, true, wslink.Options{}, func(c *wslink.Conn) {
			if c.NotifyReadable(func(error) {}) {
				done <- errors.New("NotifyReadable on a connection that cannot park")
				return
			}
			done <- errCannotNotify
		})
		s.dial(t)
		if err := <-done; err != errCannotNotify {
			t.Fatal(err)
		}
	})
}

// TestParkedHoldsNoTLSBuffer: behind tlsaccept's listener a reader that
// parks (ReadMessageNow returned ErrWouldPark) leaves crypto/tls holding no
// read buffer, after the handshake grew them and after messages of every
// size; behind crypto/tls's own listener the buffers stay.
func TestParkedHoldsNoTLSBuffer(t *testing.T) {
	for _, tt := range []struct{ plain, wrap bool }{{false, false}, {false, true}, {true, false}} {
		plain := tt.plain
		t.Run(fmt.Sprintf("plain=%v,wrapped=%v", tt.plain, tt.wrap), func(t *testing.T) {
			held := make(chan int, 1)
			s := newWrappedServer(t, plain, tt.wrap, wslink.Options{ReadLimit: 1 << 20}, func(c *wslink.Conn) {
				for {
					_, _, err := c.ReadMessageNow()
					if plain && err == nil { // it does not park: ReadMessage
						held <- c.TLSHeld()
						continue
					}
					if !errors.Is(err, wslink.ErrWouldPark) {
						if err != nil {
							return
						}
						continue
					}
					if _, holds := c.IdleState(); !holds { // not parked inside a message
						held <- c.TLSHeld()
					}
					if c.WaitReadable() != nil {
						return
					}
				}
			})
			c := s.dial(t)
			if plain {
				if err := c.Write(t.Context(), websocket.MessageText, []byte("x")); err != nil {
					t.Fatal(err)
				}
				if n := <-held; n <= 0 {
					t.Fatalf("crypto/tls's listener: %d bytes held, want its buffers", n)
				}
				return
			}
			if n := <-held; n != 0 {
				t.Fatalf("after the handshake: %d bytes held", n)
			}
			for _, n := range []int{10, 20000, 100} {
				if err := c.Write(t.Context(), websocket.MessageText, bytes.Repeat([]byte("m"), n)); err != nil {
					t.Fatal(err)
				}
				if got := <-held; got != 0 {
					t.Fatalf("after a %d-byte message: %d bytes held", n, got)
				}
			}
		})
	}
}

// wrappingWriter hijacks a wrappedConn.
type wrappingWriter struct{ http.ResponseWriter }

func (w *wrappingWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := w.ResponseWriter.(http.Hijacker).Hijack()
	return &wrappedConn{c}, brw, err
}

// wrappedConn is a net.Conn over another that it names with NetConn.
type wrappedConn struct{ net.Conn }

func (c *wrappedConn) NetConn() net.Conn { return c.Conn }

// TestPendingRefuse: a handshake taken over with Hijack and refused gets a
// whole HTTP answer (status, headers, plain-text body) and the connection
// closes; one accepted later still upgrades.
func TestPendingRefuse(t *testing.T) {
	tests := []struct {
		name   string
		status int
		header http.Header
		accept bool
	}{
		{"busy", http.StatusServiceUnavailable, http.Header{"Retry-After": {"3"}}, false},
		{"no headers", http.StatusTooManyRequests, nil, false},
		{"accepted after a wait", 0, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				p, err := wslink.Hijack(w, r)
				if err != nil {
					return
				}
				if !tt.accept {
					_ = p.Refuse(tt.status, tt.header, "broker busy")
					return
				}
				c, err := p.Accept(wslink.Options{})
				if err != nil {
					return
				}
				echo(c)
			}))
			defer srv.Close()
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			c, resp, err := websocket.Dial(ctx, "wss"+strings.TrimPrefix(srv.URL, "https"), &websocket.DialOptions{HTTPClient: srv.Client()})
			if tt.accept {
				if err != nil {
					t.Fatal(err)
				}
				defer c.CloseNow()
				if err := c.Write(ctx, websocket.MessageText, []byte("hi")); err != nil {
					t.Fatal(err)
				}
				if _, got, err := c.Read(ctx); err != nil || string(got) != "hi" {
					t.Fatalf("echo: %q, %v", got, err)
				}
				return
			}
			if err == nil {
				c.CloseNow()
				t.Fatal("upgraded, want a refusal")
			}
			if resp == nil || resp.StatusCode != tt.status {
				t.Fatalf("answer %v, want %d", resp, tt.status)
			}
			for k := range tt.header {
				if got := resp.Header.Get(k); got != tt.header.Get(k) {
					t.Errorf("%s: %q, want %q", k, got, tt.header.Get(k))
				}
			}
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
				t.Errorf("Content-Type %q, want text/plain", ct)
			}
			if !resp.Close {
				t.Error("the refusal keeps the connection open, want it closed")
			}
		})
	}
}
