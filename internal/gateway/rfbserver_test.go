package gateway

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"github.com/coder/websocket"
)

// clipText is the extended clipboard's text format.
const clipText = 1

// Pixel formats: noVNC's (depth 24 in 32 bits, the one Xvnc -depth 24 has
// too), 32 bits with depth 32 (not 888: Tight pixels are 4 bytes), 16 and 8
// bits.
var (
	pf888 = pixelFormat{bpp: 32, depth: 24, trueColour: true, redMax: 255, greenMax: 255, blueMax: 255, redShift: 16, greenShift: 8, blueShift: 0}
	pf32  = pixelFormat{bpp: 32, depth: 32, trueColour: true, redMax: 1023, greenMax: 1023, blueMax: 1023, redShift: 20, greenShift: 10, blueShift: 0}
	pf16  = pixelFormat{bpp: 16, depth: 16, trueColour: true, redMax: 31, greenMax: 63, blueMax: 31, redShift: 11, greenShift: 5, blueShift: 0}
	pf8   = pixelFormat{bpp: 8, depth: 8, trueColour: false}
)

func (pf pixelFormat) bytes() []byte {
	b := []byte{pf.bpp, pf.depth, 0, 0, 0, 0, 0, 0, 0, 0, pf.redShift, pf.greenShift, pf.blueShift, 0, 0, 0}
	if pf.bigEndian {
		b[2] = 1
	}
	if pf.trueColour {
		b[3] = 1
	}
	binary.BigEndian.PutUint16(b[4:], pf.redMax)
	binary.BigEndian.PutUint16(b[6:], pf.greenMax)
	binary.BigEndian.PutUint16(b[8:], pf.blueMax)
	return b
}

func u16(v int) []byte   { return binary.BigEndian.AppendUint16(nil, uint16(v)) }
func u32(v int64) []byte { return binary.BigEndian.AppendUint32(nil, uint32(v)) }
func fill(n int64, b byte) []byte {
	return bytes.Repeat([]byte{b}, int(n))
}

// serverHello is Xvnc's side of a 3.8 handshake with security None, and a
// ServerInit in pf.
func serverHello(pf pixelFormat, name string) []byte {
	return cat([]byte("RFB 003.008\n"), []byte{1, 1}, u32(0), u16(1280), u16(800), pf.bytes(), u32(int64(len(name))), []byte(name))
}

// update is a FramebufferUpdate of rects (each a rectangle header and
// data); n < 0 counts them.
func update(n int, rects ...[]byte) []byte {
	if n < 0 {
		n = len(rects)
	}
	return cat(append([][]byte{{0, 0}, u16(n)}, rects...)...)
}

// rect is a rectangle header and its data.
func rect(w, h int, enc int32, data ...[]byte) []byte {
	return cat(append([][]byte{u16(3), u16(4), u16(w), u16(h), u32(int64(uint32(enc)))}, data...)...)
}

// compact is a Tight compact length.
func compact(n int) []byte {
	b := []byte{byte(n & 0x7f)}
	if n > 0x7f {
		b[0] |= 0x80
		b = append(b, byte(n>>7&0x7f))
		if n > 0x3fff {
			b[1] |= 0x80
			b = append(b, byte(n>>14))
		}
	}
	return b
}

// Server messages other than updates.
var (
	bell        = []byte{msgBell}
	endOfCU     = []byte{msgEndOfContinuousUpdate}
	serverXVP   = []byte{msgServerXVP, 0, 1, 0}
	serverFence = cat([]byte{msgServerFence, 0, 0, 0}, u32(1<<31|1), []byte{3}, []byte("abc"))
	colourMap   = cat([]byte{msgSetColourMapEntries, 0}, u16(0), u16(2), fill(12, 7))
)

func serverCut(text string) []byte {
	return cat([]byte{msgServerCutText, 0, 0, 0}, u32(int64(len(text))), []byte(text))
}

func extCut(flags uint32, payload []byte) []byte {
	return cat([]byte{msgServerCutText, 0, 0, 0}, u32(-int64(4+len(payload))), u32(int64(flags)), payload)
}

// parse runs a server parser on a stream whose client asked for updates in
// format pf (nothing: the server's) with protocol minor version 8; the
// reader is wrapped by wrap when not nil.
func parse(in []byte, pf *pixelFormat, allowCopy func() bool, wrap func(io.Reader) io.Reader) ([]byte, error) {
	link := newLink()
	link.setMinor(8)
	if pf != nil {
		link.setClientFormat(*pf)
	}
	link.updatesRequested()
	var out bytes.Buffer
	var r io.Reader = bytes.NewReader(in)
	if wrap != nil {
		r = wrap(r)
	}
	p := newServerParser(&out, r, link, allowCopy)
	err := p.run()
	p.w.Flush()
	return out.Bytes(), err
}

// readers are the ways the tests deliver a stream: at once, a byte at a
// time, and in halves of reads.
var readers = map[string]func(io.Reader) io.Reader{
	"whole":    nil,
	"one byte": iotest.OneByteReader,
	"half":     iotest.HalfReader,
}

// tightTests are Tight rectangles: each case's data for pf888 and for
// pf32/pf16 (Tight pixels of 3, 4 and 2 bytes).
func tightRects(tp int) [][]byte {
	px := func(n int) []byte { return fill(int64(n*tp), 0x11) }
	return [][]byte{
		rect(20, 10, encTight, []byte{0x80}, px(1)),                                            // fill
		rect(20, 10, encTight, []byte{0x90}, compact(5), fill(5, 0xd8)),                        // JPEG, 1-byte length
		rect(20, 10, encTight, []byte{0x90}, compact(300), fill(300, 0xd8)),                    // JPEG, 2-byte length
		rect(200, 200, encTight, []byte{0x91}, compact(20000), fill(20000, 0xd8)),              // JPEG, 3-byte length, reset stream 0
		rect(2, 1, encTight, []byte{0x00}, px(2)),                                              // basic, copy, under 12 bytes: raw
		rect(20, 10, encTight, []byte{0x10}, compact(40), fill(40, 0x78)),                      // basic, stream 1, compressed
		rect(20, 10, encTight, []byte{0x40, tightFilterCopy}, compact(40), fill(40, 0x78)),     // explicit copy filter
		rect(3, 3, encTight, []byte{0x60, tightFilterPal, 1}, px(2), fill(3, 0xa5)),            // palette of 2: 1 bit a pixel, 3 bytes raw
		rect(100, 3, encTight, []byte{0x60, tightFilterPal, 0}, px(1), compact(9), fill(9, 1)), // palette of 1: bitmask rows, compressed
		rect(4, 2, encTight, []byte{0x70, tightFilterPal, 15}, px(16), fill(8, 3)),             // palette of 16: 1 byte a pixel, 8 raw
		rect(40, 2, encTight, []byte{0x70, tightFilterPal, 255}, px(256), compact(30), fill(30, 3)),
		rect(30, 30, encTight, []byte{0x40, tightFilterGrad}, compact(500), fill(500, 9)), // gradient
	}
}

func TestServerParser_Frames(t *testing.T) {
	// 52×36 pixels: 4×3 tiles, the last column 4 wide, the last row 4 high.
	hextile := cat(
		[]byte{hextileRaw}, fill(16*16*4, 1), []byte{0}, []byte{hextileBg}, fill(4, 2), []byte{hextileRaw | hextileBg}, fill(4*16*4, 6),
		[]byte{hextileBg | hextileFg | hextileSubrects}, fill(8, 3), []byte{2}, fill(2*2, 4),
		[]byte{hextileSubrects | hextileColoured}, []byte{3}, fill(3*6, 5), []byte{0}, []byte{hextileFg | hextileSubrects}, fill(4, 1), []byte{0},
		[]byte{hextileRaw}, fill(16*4*4, 6), []byte{0}, []byte{0}, []byte{hextileRaw}, fill(4*4*4, 7),
	)
	cases := map[string][]byte{
		"raw":         update(-1, rect(3, 2, encRaw, fill(24, 1))),
		"empty raw":   update(-1, rect(0, 0, encRaw)),
		"copyrect":    update(-1, rect(10, 10, encCopyRect, u16(1), u16(2))),
		"rre":         update(-1, rect(10, 10, encRRE, u32(2), fill(4, 1), fill(2*12, 2))),
		"hextile":     update(-1, rect(52, 36, encHextile, hextile)),
		"zrle":        update(-1, rect(64, 64, encZRLE, u32(100), fill(100, 3))),
		"tight":       update(-1, tightRects(3)...),
		"pseudo":      update(-1, rect(1280, 800, encDesktopSize), rect(0, 0, encQEMUKeyEvent), rect(0, 0, encVMwareCursorPosition), rect(0, 0, encLEDState, []byte{1}), rect(0, 0, encVMwareLEDState, u32(3))),
		"cursor":      update(-1, rect(9, 2, encCursor, fill(9*2*4, 1), fill(2*2, 0xff))),
		"xcursor":     update(-1, rect(9, 2, encXCursor, fill(6, 1), fill(2*2*2, 0xff)), rect(0, 0, encXCursor)),
		"alpha":       update(-1, rect(3, 3, encCursorWithAlpha, u32(encRaw), fill(36, 9))),
		"vmware":      update(-1, rect(3, 3, encVMwareCursor, []byte{1, 0}, fill(36, 9)), rect(2, 2, encVMwareCursor, []byte{0, 0}, fill(2*16, 8))),
		"name":        update(-1, rect(0, 0, encDesktopName, u32(5), []byte("hello"))),
		"ext size":    update(-1, rect(1280, 800, encExtendedDesktopSize, []byte{2, 0, 0, 0}, fill(32, 0))),
		"last rect":   update(0xffff, rect(1, 1, encRaw, fill(4, 1)), rect(0, 0, encLastRect)),
		"no rects":    update(0),
		"colour map":  colourMap,
		"bell":        bell,
		"eocu":        endOfCU,
		"fence":       serverFence,
		"xvp":         serverXVP,
		"cut text":    serverCut("secret"),
		"ext caps":    extCut(clipCaps|clipRequest|clipPeek|clipNotify|clipProvide|1, u32(0)),
		"ext notify":  extCut(clipNotify|1, nil),
		"ext provide": extCut(clipProvide|1, fill(20, 0x78)),
		"ext request": extCut(clipRequest|1, nil),
	}
	for name, msg := range cases {
		// The message, then a bell: a parser that frames it wrong fails or
		// swallows the bell.
		in := cat(serverHello(pf888, "desk"), msg, bell, msg)
		for rname, wrap := range readers {
			out, err := parse(in, nil, nil, wrap)
			if err != io.EOF || !bytes.Equal(out, in) {
				t.Errorf("%s, %s: err %v, output equal %v (%d of %d bytes)", name, rname, err, bytes.Equal(out, in), len(out), len(in))
			}
		}
	}
}

func TestServerParser_PixelFormats(t *testing.T) {
	for _, c := range []struct {
		name string
		pf   pixelFormat
		tp   int
	}{{"888", pf888, 3}, {"32", pf32, 4}, {"16", pf16, 2}, {"8", pf8, 1}} {
		bpp := int64(c.pf.bpp / 8)
		rects := [][]byte{
			rect(3, 2, encRaw, fill(6*bpp, 1)),
			rect(10, 10, encRRE, u32(1), fill(bpp, 1), fill(bpp+8, 2)),
			rect(16, 16, encHextile, []byte{hextileBg | hextileFg | hextileSubrects | hextileColoured}, fill(2*bpp, 1), []byte{1}, fill(bpp+2, 2)),
			rect(16, 1, encHextile, []byte{hextileRaw}, fill(16*bpp, 1)),
			rect(2, 2, encCursor, fill(4*bpp, 1), fill(2, 0xff)),
			rect(2, 2, encVMwareCursor, []byte{0, 0}, fill(8*bpp, 8)),
		}
		rects = append(rects, tightRects(c.tp)[:11]...) // no gradient at 8 bits
		if c.pf.bpp != 8 {
			rects = append(rects, tightRects(c.tp)[11])
		}
		// Given by the server's init, and by the client's SetPixelFormat.
		in := cat(serverHello(c.pf, "d"), update(-1, rects...), bell)
		if out, err := parse(in, nil, nil, nil); err != io.EOF || !bytes.Equal(out, in) {
			t.Errorf("%s from ServerInit: %v", c.name, err)
		}
		in = cat(serverHello(pf888, "d"), update(-1, rects...), bell)
		if out, err := parse(in, &c.pf, nil, iotest.OneByteReader); err != io.EOF || !bytes.Equal(out, in) {
			t.Errorf("%s from SetPixelFormat: %v", c.name, err)
		}
	}
}

func TestServerParser_Handshakes(t *testing.T) {
	init := cat(u16(640), u16(480), pf888.bytes(), u32(2), []byte("ab"))
	cases := []struct {
		name  string
		minor int
		in    []byte
	}{
		{"3.8", 8, cat([]byte("RFB 003.008\n"), []byte{2, 1, 2}, u32(0), init, bell)},
		{"3.7", 7, cat([]byte("RFB 003.008\n"), []byte{1, 1}, init, bell)},
		{"3.3", 3, cat([]byte("RFB 003.008\n"), u32(1), init, bell)},
		{"3.5 is 3.3", 5, cat([]byte("RFB 003.008\n"), u32(1), init, bell)},
		{"3.889 is 3.8", 889, cat([]byte("RFB 003.889\n"), []byte{1, 1}, u32(0), init, bell)},
		{"3.8 refused", 8, cat([]byte("RFB 003.008\n"), []byte{1, 1}, u32(1), u32(6), []byte("denied"))},
		{"3.8 no types", 8, cat([]byte("RFB 003.008\n"), []byte{0}, u32(6), []byte("denied"))},
		{"3.3 refused", 3, cat([]byte("RFB 003.003\n"), u32(0), u32(6), []byte("denied"))},
	}
	for _, c := range cases {
		link := newLink()
		link.setMinor(c.minor)
		var out bytes.Buffer
		err := newServerParser(&out, iotest.OneByteReader(bytes.NewReader(c.in)), link, nil).run()
		if err != io.EOF || !bytes.Equal(out.Bytes(), c.in) {
			t.Errorf("%s: err %v, output %q", c.name, err, out.Bytes())
		}
	}
}

func TestServerParser_Clipboard(t *testing.T) {
	caps := extCut(clipCaps|clipRequest|clipPeek|clipNotify|clipProvide|1, u32(1<<20))
	request := extCut(clipRequest|1, nil)
	peek := extCut(clipPeek, nil)
	notify := extCut(clipNotify|1, nil)
	provide := extCut(clipProvide|1, fill(30, 0x78))
	hello := serverHello(pf888, "desk")
	in := cat(hello, serverCut("secret"), bell, caps, notify, request, provide, peek, serverCut(""), update(0))
	var mu sync.Mutex
	allowed := false
	allow := func() bool {
		mu.Lock()
		defer mu.Unlock()
		return allowed
	}
	want := cat(hello, bell, caps, request, peek, update(0))
	for rname, wrap := range readers {
		out, err := parse(in, nil, allow, wrap)
		if err != io.EOF || !bytes.Equal(out, want) {
			t.Errorf("without clipboard-copy, %s: err %v\n got %q\nwant %q", rname, err, out, want)
		}
	}
	allowed = true
	if out, err := parse(in, nil, allow, nil); err != io.EOF || !bytes.Equal(out, in) {
		t.Errorf("with clipboard-copy: err %v, output differs", err)
	}

	// The right is read for each message: granting it mid-stream lets the
	// next one through.
	allowed = false
	link := newLink()
	link.setMinor(8)
	pr, pw := io.Pipe()
	out := &syncBuffer{}
	done := make(chan error, 1)
	go func() { done <- newServerParser(out, pr, link, allow).run() }()
	pw.Write(cat(hello, serverCut("one"), bell))
	waitOutput(t, out, cat(hello, bell))
	mu.Lock()
	allowed = true
	mu.Unlock()
	pw.Write(serverCut("two"))
	waitOutput(t, out, cat(hello, bell, serverCut("two")))
	pw.Close()
	if err := <-done; err != io.EOF {
		t.Errorf("end: %v", err)
	}
}

// syncBuffer is a bytes.Buffer for one writer and one reader goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.b.Bytes())
}

// waitOutput waits until out holds want (the parser must forward each
// message whole without waiting for the next one).
func waitOutput(t *testing.T, out *syncBuffer, want []byte) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !bytes.Equal(out.Bytes(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("output after 5 s:\n%q\nwant\n%q", out.Bytes(), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestServerParser_NoReadAhead feeds a stream message by message through a
// pipe: each must reach the client before the next is sent, since the
// server sends nothing more until the client asks (a parser that reads past
// a message's end would hang the session).
func TestServerParser_NoReadAhead(t *testing.T) {
	msgs := [][]byte{
		[]byte("RFB 003.008\n"), {1, 1}, u32(0), cat(u16(10), u16(10), pf888.bytes(), u32(1), []byte("x")),
		serverCut("x"), extCut(clipNotify|1, nil), bell, colourMap, serverFence, serverXVP, endOfCU,
		update(0), update(-1, rect(1, 1, encRaw, fill(4, 1))),
		update(-1, rect(1, 1, encTight, []byte{0x90}, compact(1), []byte{0xff})),
		update(-1, rect(2, 1, encTight, []byte{0}, fill(6, 1))),
		update(-1, rect(1, 1, encTight, []byte{0x80}, fill(3, 1))),
		update(-1, rect(1, 1, encTight, []byte{0x60, 1, 0}, fill(3, 1), []byte{1})),
		update(-1, rect(16, 16, encHextile, []byte{0})),
		update(-1, rect(16, 16, encHextile, []byte{hextileSubrects}, []byte{0})),
		update(0xffff, rect(0, 0, encLastRect)),
		update(-1, rect(0, 0, encXCursor)),
		update(-1, rect(0, 0, encDesktopName, u32(0))),
	}
	link := newLink()
	link.setMinor(8)
	link.updatesRequested()
	pr, pw := io.Pipe()
	out := &syncBuffer{}
	done := make(chan error, 1)
	go func() { done <- newServerParser(out, pr, link, nil).run() }()
	var sent []byte
	for _, m := range msgs {
		if _, err := pw.Write(m); err != nil {
			t.Fatal(err)
		}
		sent = append(sent, m...)
		waitOutput(t, out, sent)
	}
	pw.Close()
	if err := <-done; err != io.EOF {
		t.Errorf("end: %v", err)
	}
}

func TestServerParser_Errors(t *testing.T) {
	hello := serverHello(pf888, "desk")
	cases := map[string][]byte{
		"version":              []byte("HTTP/1.1 200\n"),
		"major":                []byte("RFB 004.000\n"),
		"message type":         cat(hello, []byte{7}),
		"file transfer":        cat(hello, []byte{132, 0, 0, 0}),
		"encoding":             cat(hello, update(-1, rect(1, 1, 8, fill(100, 0)))),
		"tightpng":             cat(hello, update(-1, rect(1, 1, -260, []byte{0xa0}))),
		"tight png in tight":   cat(hello, update(-1, rect(1, 1, encTight, []byte{0xa0}))),
		"tight control":        cat(hello, update(-1, rect(1, 1, encTight, []byte{0xf0}))),
		"tight filter":         cat(hello, update(-1, rect(1, 1, encTight, []byte{0x40, 3}))),
		"vmware cursor type":   cat(hello, update(-1, rect(1, 1, encVMwareCursor, []byte{2, 0}))),
		"alpha cursor in zrle": cat(hello, update(-1, rect(1, 1, encCursorWithAlpha, u32(encZRLE)))),
		"fence too large":      cat(hello, []byte{msgServerFence, 0, 0, 0}, u32(0), []byte{65}, fill(65, 0)),
		"short extended":       cat(hello, []byte{msgServerCutText, 0, 0, 0}, u32(-2), []byte{0, 0}),
		// Bytes beyond what a client reads of an extended clipboard message
		// would be read as messages: here a ServerCutText in a caps, in a
		// request and in a message of two actions.
		"long caps":    cat(hello, extCut(clipCaps|clipText, cat(u32(0), serverCut("hidden")))),
		"long request": cat(hello, extCut(clipRequest|clipText, serverCut("hidden"))),
		"two actions":  cat(hello, extCut(clipNotify|clipProvide|clipText, serverCut("hidden"))),
		"pixel format": cat([]byte("RFB 003.008\n"), []byte{1, 1}, u32(0), u16(1), u16(1), pixelFormat{bpp: 24, depth: 24, trueColour: true}.bytes(), u32(0)),
	}
	for name, in := range cases {
		for rname, wrap := range readers {
			out, err := parse(in, nil, nil, wrap)
			if !errors.Is(err, errRFB) {
				t.Errorf("%s, %s: err %v", name, rname, err)
			}
			// What was forwarded is a prefix, and not all of it.
			if !bytes.HasPrefix(in, out) || len(out) >= len(in) {
				t.Errorf("%s, %s: forwarded %d of %d bytes", name, rname, len(out), len(in))
			}
		}
	}

	// Security other than None (the client filter lets a client choose
	// nothing else; in 3.3 the server chooses).
	link := newLink()
	link.setMinor(3)
	var out bytes.Buffer
	in := cat([]byte("RFB 003.003\n"), u32(2), fill(16, 1))
	if err := newServerParser(&out, bytes.NewReader(in), link, nil).run(); !errors.Is(err, errRFB) || out.Len() != 12 {
		t.Errorf("3.3 VNC authentication: err %v, %d bytes forwarded", err, out.Len())
	}

	// The server must not send an update before the client asked for one.
	link = newLink()
	link.setMinor(8)
	out.Reset()
	in = cat(hello, update(0))
	if err := newServerParser(&out, bytes.NewReader(in), link, nil).run(); !errors.Is(err, errRFB) || !bytes.Equal(out.Bytes(), hello) {
		t.Errorf("unrequested update: err %v, %d bytes forwarded", err, out.Len())
	}
	// A truncated message is an unexpected EOF.
	if _, err := parse(cat(hello, serverCut("secret")[:10]), nil, nil, nil); err != io.ErrUnexpectedEOF {
		t.Errorf("truncated: %v", err)
	}
}

// TestServerParser_BoundedMemory sends messages whose lengths say gigabytes:
// the parser streams them and allocates nothing in proportion.
func TestServerParser_BoundedMemory(t *testing.T) {
	hello := serverHello(pf888, "desk")
	for name, in := range map[string][]byte{
		"cut text": cat(hello, []byte{msgServerCutText, 0, 0, 0}, u32(0x7fffffff), fill(1<<20, 'a')),
		"zrle":     cat(hello, update(-1, rect(1, 1, encZRLE, u32(0xffffffff), fill(1<<20, 'a')))),
		"raw":      cat(hello, update(-1, rect(65535, 65535, encRaw, fill(1<<20, 'a')))),
		"name":     cat(hello, update(-1, rect(0, 0, encDesktopName, u32(0xffffffff), fill(1<<20, 'a')))),
	} {
		link := newLink()
		link.setMinor(8)
		link.updatesRequested()
		var n int64
		r := bytes.NewReader(in)
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		err := newServerParser(sink{&n}, r, link, func() bool { return false }).run()
		runtime.ReadMemStats(&after)
		if err != io.ErrUnexpectedEOF {
			t.Errorf("%s: %v", name, err)
		}
		// The parser keeps 128 KiB of buffers, whatever the lengths say.
		if got := after.TotalAlloc - before.TotalAlloc; got > 1<<20 {
			t.Errorf("%s: %d bytes allocated", name, got)
		}
	}
}

func TestLink_PixelFormatChanges(t *testing.T) {
	l := newLink()
	l.setServerFormat(pf888)
	if err := l.setClientFormat(pf16); err != nil {
		t.Fatal(err)
	}
	if pf, _ := l.updateFormat(); pf != (pixelFormat{}) {
		t.Error("an update format before any request")
	}
	l.updatesRequested()
	if pf, err := l.updateFormat(); err != nil || pf != pf16 {
		t.Errorf("format %v %v", pf, err)
	}
	// Same lengths: accepted. Other lengths: refused, the format stays.
	other16 := pf16
	other16.redShift, other16.blueShift = 0, 11
	if err := l.setClientFormat(other16); err != nil {
		t.Error(err)
	}
	for _, pf := range []pixelFormat{pf888, pf8, pf32} {
		if err := l.setClientFormat(pf); !errors.Is(err, errRFB) {
			t.Errorf("%v after a request: %v", pf, err)
		}
	}
	if pf, _ := l.updateFormat(); pf != other16 {
		t.Errorf("format %v", pf)
	}
	// 888 and 32-bit depth 32 differ in Tight pixels only.
	l = newLink()
	l.setServerFormat(pf888)
	l.updatesRequested()
	if err := l.setClientFormat(pf32); !errors.Is(err, errRFB) {
		t.Errorf("888 to depth 32: %v", err)
	}
}

// chunkReader reads at most n bytes at a time.
type chunkReader struct {
	r io.Reader
	n int
}

func (c chunkReader) Read(p []byte) (int, error) {
	if len(p) > c.n {
		p = p[:c.n]
	}
	return c.r.Read(p)
}

// fuzzFormats are the client pixel formats FuzzServerMessages picks from
// (none: the server's).
var fuzzFormats = []*pixelFormat{nil, &pf888, &pf32, &pf16, &pf8}

// FuzzServerMessages feeds arbitrary server streams to the parser, whole and
// in chunks: it must not panic or hang, must end with io.EOF, an unexpected
// EOF or a protocol error, must give the same result however the stream is
// split, must pass a stream unchanged up to where it ends or fails when the
// client may have the clipboard, and otherwise must leave nothing that
// carries clipboard data (the output, parsed again, never asks).
func FuzzServerMessages(f *testing.F) {
	hello := serverHello(pf888, "desk")
	f.Add(cat(hello, update(-1, tightRects(3)...), bell), uint8(8), uint8(0), uint8(7))
	f.Add(cat(hello, serverCut("secret"), extCut(clipCaps|1, u32(0)), extCut(clipProvide|1, fill(9, 1)), extCut(clipNotify|1, nil)), uint8(8), uint8(1), uint8(3))
	f.Add(cat(serverHello(pf16, "x"), update(-1, rect(20, 20, encHextile, []byte{hextileBg | hextileSubrects}, fill(2, 1), []byte{1}, fill(2, 2), []byte{0})), colourMap, serverFence, serverXVP, endOfCU), uint8(8), uint8(0), uint8(1))
	f.Add(cat([]byte("RFB 003.003\n"), u32(1), cat(u16(8), u16(8), pf8.bytes(), u32(0)), update(0xffff, rect(2, 2, encCursor, fill(4, 1), fill(2, 1)), rect(0, 0, encLastRect))), uint8(3), uint8(4), uint8(2))
	f.Add(cat([]byte("RFB 003.008\n"), []byte{1, 1}, u32(0), cat(u16(8), u16(8), pf888.bytes(), u32(0)), update(-1, rect(4, 4, encVMwareCursor, []byte{1, 0}, fill(64, 1)), rect(0, 0, encExtendedDesktopSize, []byte{1, 0, 0, 0}, fill(16, 0)))), uint8(7), uint8(2), uint8(5))
	f.Fuzz(func(t *testing.T, in []byte, minor, format, chunk uint8) {
		run := func(allowCopy func() bool, r io.Reader) ([]byte, error) {
			link := newLink()
			link.setMinor(int(minor))
			if pf := fuzzFormats[int(format)%len(fuzzFormats)]; pf != nil {
				link.setClientFormat(*pf)
			}
			if format < 128 {
				link.updatesRequested()
			}
			var out bytes.Buffer
			err := newServerParser(&out, r, link, allowCopy).run()
			return out.Bytes(), err
		}
		all, errAll := run(nil, bytes.NewReader(in))
		if errAll != io.EOF && errAll != io.ErrUnexpectedEOF && !errors.Is(errAll, errRFB) {
			t.Fatalf("error %v", errAll)
		}
		if !bytes.HasPrefix(in, all) {
			t.Fatal("the stream changed")
		}
		split, errSplit := run(nil, chunkReader{bytes.NewReader(in), int(chunk)%16 + 1})
		if !bytes.Equal(all, split) || errAll.Error() != errSplit.Error() {
			t.Fatalf("chunking changes the result: %d bytes, %v vs %d bytes, %v", len(all), errAll, len(split), errSplit)
		}
		denied, _ := run(func() bool { return false }, chunkReader{bytes.NewReader(in), int(chunk) + 1})
		if len(denied) > len(all) {
			t.Fatal("filtering grew the stream")
		}
		run(func() bool { t.Fatal("clipboard data passed a client without clipboard-copy"); return false }, bytes.NewReader(denied))
	})
}

// recording is a real Xvnc's stream to a client that asked as noVNC does
// (TestRecordXvncStream): Tight fill, palette and JPEG rectangles, CopyRect,
// the VMware cursor, ExtendedDesktopSize and QEMU key event acknowledgements.
func recording(tb testing.TB) []byte {
	tb.Helper()
	b, err := os.ReadFile("testdata/xvnc-novnc.rfb")
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// TestServerParser_Recording parses a real Xvnc stream: it passes unchanged,
// however it is read, and ends at a message boundary.
func TestServerParser_Recording(t *testing.T) {
	in := recording(t)
	for rname, wrap := range readers {
		out, err := parse(in, &pf888, func() bool { return false }, wrap)
		if err != io.EOF || !bytes.Equal(out, in) {
			t.Errorf("%s: err %v, %d of %d bytes", rname, err, len(out), len(in))
		}
	}
}

// sink counts what is written to it; like the WebSocket connection, it is
// no io.ReaderFrom.
type sink struct{ n *int64 }

func (s sink) Write(p []byte) (int, error) {
	*s.n += int64(len(p))
	return len(p), nil
}

// BenchmarkServerStream compares the server-to-client direction on a real
// Xvnc stream: "copy" is what the bridge did before (io.Copy), "parse" the
// parser; the reader returns at most 64 KiB a read, as a unix socket does.
func BenchmarkServerStream(b *testing.B) {
	in := recording(b)
	for _, c := range []struct {
		name string
		run  func(io.Writer, io.Reader) error
	}{
		{"copy", func(w io.Writer, r io.Reader) error {
			_, err := io.Copy(w, r)
			return err
		}},
		{"parse", func(w io.Writer, r io.Reader) error {
			link := newLink()
			link.setMinor(8)
			link.setClientFormat(pf888)
			link.updatesRequested()
			if err := newServerParser(w, r, link, func() bool { return true }).run(); err != io.EOF {
				return err
			}
			return nil
		}},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(in)))
			b.ReportAllocs()
			for b.Loop() {
				var n int64
				if err := c.run(sink{&n}, chunkReader{bytes.NewReader(in), 64 << 10}); err != nil || n != int64(len(in)) {
					b.Fatalf("%d of %d bytes: %v", n, len(in), err)
				}
			}
		})
	}
}

// BenchmarkServerStreamWebSocket is BenchmarkServerStream end to end: the
// recording goes from a unix socket, through io.Copy ("copy") or the parser
// ("parse"), into a TLS WebSocket, and is read by a WebSocket client, as a
// session's stream goes to a browser.
func BenchmarkServerStreamWebSocket(b *testing.B) {
	in := recording(b)
	ends, err := ServerMessageEnds(in, pf888.bytes())
	if err != io.EOF {
		b.Fatal(err)
	}
	hello, body := in[:ends[0]], in[ends[0]:]
	for _, mode := range []string{"copy", "parse"} {
		b.Run(mode, func(b *testing.B) {
			ln, err := net.Listen("unix", filepath.Join(b.TempDir(), "vnc"))
			if err != nil {
				b.Fatal(err)
			}
			defer ln.Close()
			srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				c, err := websocket.Accept(w, r, nil)
				if err != nil {
					return
				}
				defer c.CloseNow()
				nc := websocket.NetConn(context.Background(), c, websocket.MessageBinary)
				vnc, err := ln.Accept()
				if err != nil {
					return
				}
				defer vnc.Close()
				if mode == "copy" {
					io.Copy(nc, vnc)
					return
				}
				link := newLink()
				link.setMinor(8)
				link.setClientFormat(pf888)
				link.updatesRequested()
				newServerParser(nc, vnc, link, func() bool { return true }).run()
			}))
			defer srv.Close()
			c, _, err := websocket.Dial(context.Background(), "wss"+srv.URL[len("https"):], &websocket.DialOptions{HTTPClient: srv.Client()})
			if err != nil {
				b.Fatal(err)
			}
			defer c.CloseNow()
			c.SetReadLimit(1 << 20)
			client := websocket.NetConn(context.Background(), c, websocket.MessageBinary)
			vnc, err := net.Dial("unix", ln.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			defer vnc.Close()
			buf := make([]byte, len(body))
			vnc.Write(hello)
			if _, err := io.ReadFull(client, buf[:len(hello)]); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				go vnc.Write(body)
				if _, err := io.ReadFull(client, buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
