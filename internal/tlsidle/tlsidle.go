// Package tlsidle gives back the read buffers that an idle *tls.Conn keeps.
//
// crypto/tls reads records into a buffer that grows to the largest read it
// has needed and keeps it for the connection's life; the hybrid
// X25519+ML-KEM ClientHello grows it, and the handshake buffer beside it, to
// about 3.5 KB a connection together. A broker holding 10,000 idle agent
// links kept 33 MB of them, and the spans they pin. crypto/tls offers no way to drop
// them, so Release reaches them through their layout, which it checks by
// reflection once (field names and types); where the layout is not the one
// it knows, Release does nothing and Supported reports false.
//
// Release only drops buffers that hold nothing, under the connection's read
// lock, so the next Read starts from empty buffers exactly as after a
// handshake's last message; it costs that Read one small allocation.
package tlsidle

import (
	"bytes"
	"crypto/tls"
	"reflect"
	"sync"
	"unsafe"
)

// offsets are the byte offsets in tls.Conn of the read lock (the embedded
// sync.Mutex of its field in), rawInput, input and hand.
type offsets struct {
	ok                       bool
	inLock, raw, input, hand uintptr
}

var layout = findLayout(reflect.TypeFor[tls.Conn]())

// findLayout checks t is the tls.Conn Release knows and returns its offsets.
func findLayout(t reflect.Type) offsets {
	field := func(name string, want reflect.Type) (uintptr, bool) {
		f, ok := t.FieldByName(name)
		if !ok || len(f.Index) != 1 || f.Type != want {
			return 0, false
		}
		return f.Offset, true
	}
	var o offsets
	var ok [3]bool
	o.raw, ok[0] = field("rawInput", reflect.TypeFor[bytes.Buffer]())
	o.input, ok[1] = field("input", reflect.TypeFor[bytes.Reader]())
	o.hand, ok[2] = field("hand", reflect.TypeFor[bytes.Buffer]())
	in, found := t.FieldByName("in")
	if !found || len(in.Index) != 1 || in.Type.Kind() != reflect.Struct || in.Type.NumField() == 0 {
		return offsets{}
	}
	mu := in.Type.Field(0)
	if !mu.Anonymous || mu.Type != reflect.TypeFor[sync.Mutex]() {
		return offsets{}
	}
	o.inLock = in.Offset + mu.Offset
	o.ok = ok[0] && ok[1] && ok[2]
	return o
}

// Supported reports whether Release can work with this Go release's
// crypto/tls.
func Supported() bool { return layout.ok }

// Release drops c's record and handshake buffers when they hold nothing
// (no partial record, no unread plaintext, no partial handshake message)
// and no Read is under way, and reports whether it did. Call it on a
// connection whose reader has parked.
func Release(c *tls.Conn) bool {
	b, mu := lock(c)
	if mu == nil {
		return false
	}
	defer mu.Unlock()
	if b.raw.Len() != 0 || b.input.Len() != 0 || b.hand.Len() != 0 {
		return false
	}
	if b.raw.Cap() == 0 && b.hand.Cap() == 0 {
		return false
	}
	*b.raw, *b.hand = bytes.Buffer{}, bytes.Buffer{}
	b.input.Reset(nil) // it pointed into raw's old buffer
	return true
}

// Held is the capacity, in bytes, of c's record and handshake buffers; -1
// where Supported is false or a Read is under way.
func Held(c *tls.Conn) int {
	b, mu := lock(c)
	if mu == nil {
		return -1
	}
	defer mu.Unlock()
	return b.raw.Cap() + b.hand.Cap()
}

// buffers are c's record buffer, the plaintext reader over it, and the
// handshake buffer.
type buffers struct {
	raw   *bytes.Buffer
	input *bytes.Reader
	hand  *bytes.Buffer
}

// lock takes c's read lock and returns its buffers and the lock to
// release; a nil lock where Supported is false, c is nil, or a Read or the
// handshake holds it.
func lock(c *tls.Conn) (buffers, *sync.Mutex) {
	if !layout.ok || c == nil {
		return buffers{}, nil
	}
	p := unsafe.Pointer(c)
	mu := (*sync.Mutex)(unsafe.Add(p, layout.inLock))
	if !mu.TryLock() {
		return buffers{}, nil
	}
	return buffers{
		raw:   (*bytes.Buffer)(unsafe.Add(p, layout.raw)),
		input: (*bytes.Reader)(unsafe.Add(p, layout.input)),
		hand:  (*bytes.Buffer)(unsafe.Add(p, layout.hand)),
	}, mu
}
