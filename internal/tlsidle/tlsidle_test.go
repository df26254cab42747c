package tlsidle

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/pki"
)

// TestSupported fails when a Go release changes the crypto/tls fields
// Release works with: it would then silently keep the buffers.
func TestSupported(t *testing.T) {
	if !Supported() {
		t.Fatal("crypto/tls.Conn's layout is not the one tlsidle knows (fields in, rawInput, input, hand): update findLayout")
	}
}

// TestFindLayout: a type that is not crypto/tls's Conn is refused.
func TestFindLayout(t *testing.T) {
	type half struct{ sync.Mutex }
	tests := []struct {
		name string
		typ  reflect.Type
		ok   bool
	}{
		{"tls.Conn", reflect.TypeFor[tls.Conn](), true},
		{"no fields", reflect.TypeFor[struct{ a int }](), false},
		{"rawInput of another type", reflect.TypeFor[struct {
			in       half
			rawInput []byte
			input    bytes.Reader
			hand     bytes.Buffer
		}](), false},
		{"in without its lock first", reflect.TypeFor[struct {
			in       struct{ err error }
			rawInput bytes.Buffer
			input    bytes.Reader
			hand     bytes.Buffer
		}](), false},
		{"the same shape", reflect.TypeFor[struct {
			in       half
			rawInput bytes.Buffer
			input    bytes.Reader
			hand     bytes.Buffer
		}](), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := findLayout(tt.typ).ok; got != tt.ok {
				t.Errorf("ok = %v, want %v", got, tt.ok)
			}
		})
	}
}

// pair is a TLS connection over loopback TCP: the server's end and the
// client's, after the handshake (X25519MLKEM768, Go's default).
func pair(t *testing.T) (server, client *tls.Conn, clientRaw net.Conn) {
	t.Helper()
	ca, err := pki.LoadOrCreateCA(t.TempDir()) // berth's own CA, as berth-broker's
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
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			t.Error(err)
		}
		accepted <- c
	}()
	tcp, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	clientRaw = &splitter{Conn: tcp}
	server = tls.Server(<-accepted, &tls.Config{Certificates: []tls.Certificate{cert}})
	client = tls.Client(clientRaw, &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"})
	t.Cleanup(func() { server.Close(); client.Close() })
	errc := make(chan error, 1)
	go func() { errc <- client.Handshake() }()
	if err := server.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	return server, client, clientRaw
}

// readN reads exactly n bytes from c.
func readN(t *testing.T, c *tls.Conn, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestRelease: after the handshake and after each message, a connection with
// nothing pending gives its buffers back and goes on reading and writing
// correctly; one with something pending keeps them, and loses nothing.
func TestRelease(t *testing.T) {
	tests := []struct {
		name string
		run  func(t *testing.T, s, c *tls.Conn, raw net.Conn)
	}{
		{"after the handshake, then messages of every size", func(t *testing.T, s, c *tls.Conn, _ net.Conn) {
			// The handshake's last message (the client's Finished) was read.
			if Held(s) == 0 {
				t.Fatal("the handshake left no buffer: nothing to test")
			}
			if !Release(s) || Held(s) != 0 {
				t.Fatalf("after the handshake: released none, %d bytes held", Held(s))
			}
			for _, n := range []int{1, 300, 16 << 10, 40 << 10} {
				msg := bytes.Repeat([]byte{byte(n)}, n)
				go c.Write(msg) //nolint:errcheck // readN checks what arrives
				if got := readN(t, s, n); !bytes.Equal(got, msg) {
					t.Fatalf("%d bytes: read back different bytes", n)
				}
				if !Release(s) || Held(s) != 0 {
					t.Fatalf("after %d bytes: released none, %d bytes held", n, Held(s))
				}
				if _, err := s.Write(msg[:min(n, 100)]); err != nil {
					t.Fatal(err)
				}
				readN(t, c, min(n, 100))
			}
		}},
		{"unread plaintext", func(t *testing.T, s, c *tls.Conn, _ net.Conn) {
			if _, err := c.Write([]byte("0123456789")); err != nil {
				t.Fatal(err)
			}
			if got := readN(t, s, 4); string(got) != "0123" {
				t.Fatalf("read %q", got)
			}
			if Release(s) {
				t.Fatal("released with 6 bytes of plaintext unread")
			}
			if got := readN(t, s, 6); string(got) != "456789" {
				t.Fatalf("then read %q, want 456789", got)
			}
		}},
		{"a partial record", func(t *testing.T, s, c *tls.Conn, raw net.Conn) {
			g := raw.(*splitter)
			g.split.Store(true)
			if _, err := c.Write([]byte("whole")); err != nil {
				t.Fatal(err)
			}
			s.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			if _, err := s.Read(make([]byte, 8)); !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("read of half a record: %v, want a timeout", err)
			}
			if Release(s) {
				t.Fatal("released with half a record read")
			}
			s.SetReadDeadline(time.Time{})
			if err := g.flush(); err != nil {
				t.Fatal(err)
			}
			if got := readN(t, s, 5); string(got) != "whole" {
				t.Fatalf("read %q", got)
			}
		}},
		{"a read under way", func(t *testing.T, s, c *tls.Conn, _ net.Conn) {
			got := make(chan []byte)
			go func() {
				b := make([]byte, 5)
				n, _ := io.ReadFull(s, b)
				got <- b[:n]
			}()
			deadline := time.Now().Add(5 * time.Second)
			for Held(s) != -1 { // the reader holds the lock
				if time.Now().After(deadline) {
					t.Fatal("the reader never started")
				}
				time.Sleep(time.Millisecond) //sleep-ok: polls for the reader to take the lock
			}
			if Release(s) {
				t.Fatal("released under a Read")
			}
			if _, err := c.Write([]byte("hello")); err != nil {
				t.Fatal(err)
			}
			if b := <-got; string(b) != "hello" {
				t.Fatalf("read %q", b)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, c, raw := pair(t)
			tt.run(t, s, c, raw)
		})
	}
	if Release(nil) || Held(nil) != -1 {
		t.Error("nil connection")
	}
}

// splitter is a client's connection that, once split is set, sends only
// the first 3 bytes of its next write until flush.
type splitter struct {
	net.Conn
	split atomic.Bool
	rest  []byte
}

func (g *splitter) Write(p []byte) (int, error) {
	if g.split.CompareAndSwap(true, false) && len(p) > 3 {
		g.rest = append([]byte(nil), p[3:]...)
		if _, err := g.Conn.Write(p[:3]); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	return g.Conn.Write(p)
}

// flush sends what the split write held back.
func (g *splitter) flush() error {
	_, err := g.Conn.Write(g.rest)
	return err
}
