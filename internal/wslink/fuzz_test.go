package wslink

import (
	"bytes"
	"errors"
	"net"
	"testing"
	"time"
)

// streamConn is a net.Conn that reads a fixed byte stream and drops writes:
// the fuzzed client's side of a connection.
type streamConn struct {
	net.Conn // nil: only the methods below are called
	r        *bytes.Reader
}

func (c *streamConn) Read(p []byte) (int, error)       { return c.r.Read(p) }
func (c *streamConn) Write(p []byte) (int, error)      { return len(p), nil }
func (c *streamConn) Close() error                     { return nil }
func (c *streamConn) SetReadDeadline(time.Time) error  { return nil }
func (c *streamConn) SetWriteDeadline(time.Time) error { return nil }

// frameOf is a masked client frame with first byte b0.
func frameOf(b0 byte, payload string) []byte {
	f := []byte{b0}
	switch n := len(payload); {
	case n < 126:
		f = append(f, 0x80|byte(n))
	default:
		f = append(f, 0x80|126, byte(n>>8), byte(n))
	}
	key := []byte{9, 8, 7, 6}
	f = append(f, key...)
	for i := range len(payload) {
		f = append(f, payload[i]^key[i&3])
	}
	return f
}

// FuzzReadMessage reads an arbitrary client byte stream: ReadMessage never
// panics or loops, returns no message over the limit, and ends in an error.
func FuzzReadMessage(f *testing.F) {
	seeds := [][]byte{
		frameOf(0x81, `{"type":"update"}`),
		append(frameOf(0x01, "ab"), frameOf(0x80, "cd")...),
		append(frameOf(0x89, "ping"), frameOf(0x82, "\x00\x01")...),
		frameOf(0x88, "\x03\xe8bye"),
		frameOf(0x88, ""),
		frameOf(0x81, string(bytes.Repeat([]byte("x"), 300))),
		{0x81, 0xff, 0, 0, 0, 0, 0, 0, 0x01, 0x00, 1, 2, 3, 4},
		{0x81, 0xfe, 0, 1, 1, 2, 3, 4, 'x'},
		{0xf1, 0x80, 0, 0, 0, 0},
		frameOf(0x8a, "pong"),
	}
	for _, s := range seeds {
		f.Add(s)
	}
	const limit = 4096
	f.Fuzz(func(t *testing.T, stream []byte) {
		c := &Conn{nc: &streamConn{r: bytes.NewReader(stream)}, limit: limit, wtime: time.Second}
		for i := 0; ; i++ {
			if i > len(stream) {
				t.Fatalf("%d messages from %d bytes", i, len(stream))
			}
			_, data, err := c.ReadMessage()
			if err != nil {
				if errors.Is(err, errReadDone) && i == 0 && len(stream) > 0 {
					t.Fatalf("first read: %v", err)
				}
				return
			}
			if len(data) > limit {
				t.Fatalf("message of %d bytes past the limit %d", len(data), limit)
			}
		}
	})
}

// TestParkedWithoutBuffer: a reader parked on an idle tlsaccept connection
// holds no read buffer; parseHeader and the buffers are the package's own.
func TestParseHeaderLengths(t *testing.T) {
	tests := []struct {
		name string
		b    []byte
		ok   bool
		n    int64
		size int
	}{
		{"short", []byte{0x81}, false, 0, 0},
		{"7-bit", []byte{0x81, 0x85, 1, 2, 3, 4}, true, 5, 6},
		{"16-bit, header cut", []byte{0x81, 0xfe, 0x01}, false, 0, 0},
		{"16-bit", []byte{0x81, 0xfe, 0x01, 0x00, 1, 2, 3, 4}, true, 256, 8},
		{"64-bit", []byte{0x82, 0xff, 0, 0, 0, 0, 0, 1, 0, 0, 1, 2, 3, 4}, true, 65536, 14},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, ok, err := parseHeader(tt.b, 1<<20)
			if err != nil || ok != tt.ok || (ok && (h.length != tt.n || h.size != tt.size)) {
				t.Fatalf("parseHeader = %+v, %v, %v", h, ok, err)
			}
		})
	}
}
