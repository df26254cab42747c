package gateway

import (
	"bufio"
	"encoding/binary"
	"io"
)

// RFB server-to-client message types the parser knows. Any other type
// closes the connection.
const (
	msgFramebufferUpdate     = 0
	msgSetColourMapEntries   = 1
	msgBell                  = 2
	msgServerCutText         = 3
	msgEndOfContinuousUpdate = 150
	msgServerFence           = 248
	msgServerXVP             = 250
)

// Security results and Tight compression control values.
const (
	securityInvalid   = 0
	tightFill         = 0x8
	tightJPEG         = 0x9
	tightExplicitFilt = 0x4
	tightFilterCopy   = 0
	tightFilterPal    = 1
	tightFilterGrad   = 2
	tightMinCompress  = 12
	hextileRaw        = 1
	hextileBg         = 2
	hextileFg         = 4
	hextileSubrects   = 8
	hextileColoured   = 16
)

// serverParser follows the server-to-client half of an RFB 3.x connection
// and copies it to the client message by message, leaving out the clipboard
// a client without "clipboard-copy" must not see: ServerCutText, and the
// extended clipboard's notify and provide (capabilities, request and peek
// carry no clipboard data and pass). To find where each message ends it
// frames every rectangle of every encoding the client filter lets a client
// ask for; a message it cannot frame ends the connection, and nothing is
// forwarded that was not parsed. Payloads are copied through, never held:
// memory stays at the two buffers whatever the lengths say.
type serverParser struct {
	r    *bufio.Reader
	w    *bufio.Writer
	link *rfbLink
	// allowCopy says whether clipboard data may reach the client now; nil
	// allows it.
	allowCopy func() bool
	// pf is the pixel format of the update being parsed.
	pf pixelFormat
}

// serverBufferSize is the size of the parser's read and write buffers.
const serverBufferSize = 64 << 10

// newServerParser returns a parser reading the server's stream from src and
// writing the client's to dst. Whatever it has written is flushed to dst
// before it waits for more from src, so that nothing lingers in its buffer.
func newServerParser(dst io.Writer, src io.Reader, link *rfbLink, allowCopy func() bool) *serverParser {
	w := bufio.NewWriterSize(dst, serverBufferSize)
	return &serverParser{
		r:         bufio.NewReaderSize(flushReader{src, w}, serverBufferSize),
		w:         w,
		link:      link,
		allowCopy: allowCopy,
	}
}

// flushReader flushes w before each read from r.
type flushReader struct {
	r io.Reader
	w *bufio.Writer
}

func (f flushReader) Read(p []byte) (int, error) {
	if err := f.w.Flush(); err != nil {
		return 0, err
	}
	return f.r.Read(p)
}

// run parses and forwards until the server's stream ends (io.EOF, between
// messages), a write fails, or a message cannot be framed (errRFB); what it
// parsed before the end is flushed.
func (p *serverParser) run() error {
	err := p.handshake()
	for err == nil {
		err = p.message()
	}
	p.w.Flush() // what was parsed, up to an error
	return err
}

// peek returns the next n bytes, which belong to the current message: the
// stream must not end before them.
func (p *serverParser) peek(n int) ([]byte, error) {
	b, err := p.r.Peek(n)
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return b, err
}

// emit forwards the next n bytes, which are buffered (peeked).
func (p *serverParser) emit(n int) error {
	b, _ := p.r.Peek(n)
	if _, err := p.w.Write(b); err != nil {
		return err
	}
	_, err := p.r.Discard(n)
	return err
}

// header peeks n bytes and forwards them.
func (p *serverParser) header(n int) ([]byte, error) {
	b, err := p.peek(n)
	if err != nil {
		return nil, err
	}
	// b stays valid until the next read from the buffer: emit writes it
	// out and only then discards it, and callers use it before reading on.
	return b, p.emit(n)
}

// fwd forwards the next n bytes of the current message.
func (p *serverParser) fwd(n int64) error {
	for n > 0 {
		k := p.r.Buffered()
		if k == 0 {
			if _, err := p.peek(1); err != nil {
				return err
			}
			k = p.r.Buffered()
		}
		if int64(k) > n {
			k = int(n)
		}
		if err := p.emit(k); err != nil {
			return err
		}
		n -= int64(k)
	}
	return nil
}

// skip drops the next n bytes of the current message.
func (p *serverParser) skip(n int64) error {
	for n > 0 {
		k := int(min(n, 1<<30))
		d, err := p.r.Discard(k)
		n -= int64(d)
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
	}
	return nil
}

// handshake forwards the server's part of the handshake: version, security
// (None; the client filter lets a client choose nothing else) and
// ServerInit, whose pixel format it records.
func (p *serverParser) handshake() error {
	b, err := p.peek(protocolVersionLength)
	if err != nil {
		return err
	}
	major, serverMinor, ok := parseVersion(b)
	if !ok || major != 3 {
		return protoErr("server: bad protocol version")
	}
	if err := p.emit(protocolVersionLength); err != nil {
		return err
	}
	// The server answers the client's version; wait for its answer before
	// asking what the client said.
	if _, err := p.peek(1); err != nil {
		return err
	}
	minor := p.link.clientMinor()
	switch {
	case minor < 0:
		return protoErr("server: security message before the client's version")
	case minor >= 8:
		minor = 8
	case minor != 7:
		minor = 3
	}
	if serverMinor < minor {
		return protoErr("server: version 3.%d older than the client's 3.%d", serverMinor, minor)
	}
	if minor == 3 {
		b, err := p.peek(4)
		if err != nil {
			return err
		}
		t := binary.BigEndian.Uint32(b)
		if t != securityInvalid && t != securityTypeNone {
			return protoErr("server: security type %d is not None", t)
		}
		if err := p.emit(4); err != nil {
			return err
		}
		if t == securityInvalid {
			return p.failure()
		}
	} else {
		b, err := p.header(1)
		if err != nil {
			return err
		}
		n := b[0]
		if n == 0 {
			return p.failure()
		}
		if err := p.fwd(int64(n)); err != nil {
			return err
		}
		if minor == 8 { // 3.7 has no SecurityResult for None
			b, err := p.header(4)
			if err != nil {
				return err
			}
			if binary.BigEndian.Uint32(b) != 0 {
				return p.failure()
			}
		}
	}
	b, err = p.peek(24)
	if err != nil {
		return err
	}
	pf := parsePixelFormat(b[4:20])
	if err := pf.check(); err != nil {
		return err
	}
	p.link.setServerFormat(pf)
	name := int64(binary.BigEndian.Uint32(b[20:]))
	if err := p.emit(24); err != nil {
		return err
	}
	return p.fwd(name)
}

// failure forwards the reason string of a refused handshake, after which
// the server closes the connection.
func (p *serverParser) failure() error {
	b, err := p.header(4)
	if err != nil {
		return err
	}
	if err := p.fwd(int64(binary.BigEndian.Uint32(b))); err != nil {
		return err
	}
	p.w.Flush()
	if _, err := p.r.Peek(1); err != io.EOF {
		return protoErr("server: data after a refused handshake")
	}
	return io.EOF
}

// message forwards (or drops) one server message.
func (p *serverParser) message() error {
	b, err := p.r.Peek(1)
	if err != nil {
		return err // io.EOF here is a clean end
	}
	switch t := b[0]; t {
	case msgFramebufferUpdate:
		return p.update()
	case msgSetColourMapEntries:
		b, err := p.header(6)
		if err != nil {
			return err
		}
		return p.fwd(6 * int64(binary.BigEndian.Uint16(b[4:])))
	case msgBell, msgEndOfContinuousUpdate:
		return p.emit(1)
	case msgServerCutText:
		return p.cutText()
	case msgServerFence:
		b, err := p.peek(9)
		if err != nil {
			return err
		}
		n := b[8]
		if n > maxFencePayload {
			// noVNC would read only 64 bytes of it: never forward.
			return protoErr("server: fence payload too large")
		}
		if err := p.emit(9); err != nil {
			return err
		}
		return p.fwd(int64(n))
	case msgServerXVP:
		if _, err := p.peek(4); err != nil {
			return err
		}
		return p.emit(4)
	default:
		return protoErr("server: unknown message type %d", t)
	}
}

// cutText forwards a ServerCutText, classic or extended, or drops it when
// the client may not have the session's clipboard.
func (p *serverParser) cutText() error {
	b, err := p.peek(8)
	if err != nil {
		return err
	}
	n := int64(int32(binary.BigEndian.Uint32(b[4:])))
	data := true // the message may carry the session's clipboard
	if n < 0 {
		n = -n
		if n < 4 {
			return protoErr("server: extended clipboard message shorter than its flags")
		}
		b, err := p.peek(12)
		if err != nil {
			return err
		}
		flags := binary.BigEndian.Uint32(b[8:])
		if err := extClipboardLength(n, flags); err != nil {
			return err
		}
		switch a := flags & clipActions; {
		case a&clipCaps != 0, a == clipRequest, a == clipPeek:
			// Capabilities (read as such whatever else is set), or asking
			// the client for its clipboard: no clipboard data.
			data = false
		}
	}
	if data && p.allowCopy != nil && !p.allowCopy() {
		return p.skip(8 + n)
	}
	if err := p.emit(8); err != nil {
		return err
	}
	return p.fwd(n)
}

// update forwards a FramebufferUpdate, rectangle by rectangle.
func (p *serverParser) update() error {
	b, err := p.peek(4)
	if err != nil {
		return err
	}
	n := int(binary.BigEndian.Uint16(b[2:]))
	if p.pf, err = p.link.updateFormat(); err != nil {
		return err
	}
	if err := p.emit(4); err != nil {
		return err
	}
	for range n {
		b, err := p.peek(12)
		if err != nil {
			return err
		}
		w, h := int64(binary.BigEndian.Uint16(b[4:])), int64(binary.BigEndian.Uint16(b[6:]))
		enc := int32(binary.BigEndian.Uint32(b[8:]))
		if !rectEncoding(enc) {
			return protoErr("server: unknown encoding %d", enc)
		}
		if err := p.emit(12); err != nil {
			return err
		}
		if enc == encLastRect {
			return nil
		}
		if err := p.rect(enc, w, h); err != nil {
			return err
		}
	}
	return nil
}

// rectEncoding says whether the parser frames rectangles in encoding enc.
func rectEncoding(enc int32) bool {
	switch enc {
	case encRaw, encCopyRect, encRRE, encHextile, encTight, encZRLE,
		encDesktopSize, encLastRect, encCursor, encXCursor, encQEMUKeyEvent,
		encLEDState, encDesktopName, encExtendedDesktopSize, encCursorWithAlpha,
		encVMwareCursor, encVMwareCursorPosition, encVMwareLEDState:
		return true
	}
	return false
}

// rect forwards the data of a rectangle of w×h pixels in encoding enc.
func (p *serverParser) rect(enc int32, w, h int64) error {
	bpp := p.pf.size()
	mask := (w + 7) / 8 * h // a bitmask row is padded to a byte
	switch enc {
	case encRaw:
		return p.fwd(w * h * bpp)
	case encCopyRect:
		return p.fwd(4)
	case encRRE:
		b, err := p.header(4 + int(bpp))
		if err != nil {
			return err
		}
		return p.fwd(int64(binary.BigEndian.Uint32(b)) * (bpp + 8))
	case encHextile:
		return p.hextile(w, h)
	case encTight:
		return p.tight(w, h)
	case encZRLE:
		b, err := p.header(4)
		if err != nil {
			return err
		}
		return p.fwd(int64(binary.BigEndian.Uint32(b)))
	case encDesktopSize, encLastRect, encQEMUKeyEvent, encVMwareCursorPosition:
		return nil
	case encCursor:
		return p.fwd(w*h*bpp + mask)
	case encXCursor:
		if w*h == 0 {
			return nil
		}
		return p.fwd(6 + 2*mask)
	case encCursorWithAlpha:
		b, err := p.peek(4)
		if err != nil {
			return err
		}
		if e := int32(binary.BigEndian.Uint32(b)); e != encRaw {
			return protoErr("server: cursor with alpha in encoding %d", e)
		}
		if err := p.emit(4); err != nil {
			return err
		}
		return p.fwd(w * h * 4)
	case encVMwareCursor:
		b, err := p.peek(2)
		if err != nil {
			return err
		}
		var n int64
		switch b[0] {
		case 0: // AND and XOR masks in the client's format
			n = 2 * w * h * bpp
		case 1: // RGBA
			n = w * h * 4
		default:
			return protoErr("server: VMware cursor type %d", b[0])
		}
		if err := p.emit(2); err != nil {
			return err
		}
		return p.fwd(n)
	case encDesktopName:
		b, err := p.header(4)
		if err != nil {
			return err
		}
		return p.fwd(int64(binary.BigEndian.Uint32(b)))
	case encExtendedDesktopSize:
		b, err := p.header(4)
		if err != nil {
			return err
		}
		return p.fwd(16 * int64(b[0]))
	case encLEDState:
		return p.fwd(1)
	case encVMwareLEDState:
		return p.fwd(4)
	}
	return protoErr("server: unknown encoding %d", enc) // rectEncoding is out of step
}

// hextile forwards a Hextile rectangle: 16×16 tiles, left to right, top to
// bottom, each with a subencoding byte.
func (p *serverParser) hextile(w, h int64) error {
	bpp := p.pf.size()
	for y := int64(0); y < h; y += 16 {
		th := min(16, h-y)
		for x := int64(0); x < w; x += 16 {
			tw := min(16, w-x)
			b, err := p.peek(1)
			if err != nil {
				return err
			}
			sub := b[0]
			if sub&hextileRaw != 0 {
				if err := p.emit(1); err != nil {
					return err
				}
				if err := p.fwd(tw * th * bpp); err != nil {
					return err
				}
				continue
			}
			n := 1
			if sub&hextileBg != 0 {
				n += int(bpp)
			}
			if sub&hextileFg != 0 {
				n += int(bpp)
			}
			if sub&hextileSubrects == 0 {
				if _, err := p.header(n); err != nil {
					return err
				}
				continue
			}
			b, err = p.header(n + 1)
			if err != nil {
				return err
			}
			size := int64(2)
			if sub&hextileColoured != 0 {
				size += bpp
			}
			if err := p.fwd(int64(b[n]) * size); err != nil {
				return err
			}
		}
	}
	return nil
}

// tight forwards a Tight rectangle (RFC 6143 and TigerVNC's TightDecoder).
func (p *serverParser) tight(w, h int64) error {
	b, err := p.peek(1)
	if err != nil {
		return err
	}
	ctl := b[0] >> 4
	if ctl > tightJPEG {
		return protoErr("server: Tight compression control %#x", b[0])
	}
	if err := p.emit(1); err != nil {
		return err
	}
	tp := p.pf.tpixel()
	switch ctl {
	case tightFill:
		return p.fwd(tp)
	case tightJPEG:
		return p.compact()
	}
	// Basic compression, with an optional filter.
	palette := int64(0)
	if ctl&tightExplicitFilt != 0 {
		b, err := p.peek(1)
		if err != nil {
			return err
		}
		filter := b[0]
		switch {
		case filter > tightFilterGrad:
			return protoErr("server: Tight filter %d", filter)
		case filter == tightFilterGrad && p.pf.bpp == 8:
			return protoErr("server: Tight gradient filter at 8 bits per pixel")
		}
		if err := p.emit(1); err != nil {
			return err
		}
		if filter == tightFilterPal {
			b, err := p.header(1)
			if err != nil {
				return err
			}
			palette = int64(b[0]) + 1
			if err := p.fwd(palette * tp); err != nil {
				return err
			}
		}
	}
	var row int64
	switch {
	case palette > 2:
		row = w
	case palette > 0:
		row = (w + 7) / 8
	default:
		row = w * tp
	}
	if size := row * h; size < tightMinCompress {
		return p.fwd(size)
	}
	return p.compact()
}

// compact forwards data preceded by a Tight compact length (1 to 3 bytes,
// 7 bits each but the third).
func (p *serverParser) compact() error {
	var n int64
	for i := range 3 {
		b, err := p.header(1)
		if err != nil {
			return err
		}
		if i == 2 {
			n |= int64(b[0]) << 14
			break
		}
		n |= int64(b[0]&0x7f) << (7 * i)
		if b[0]&0x80 == 0 {
			break
		}
	}
	return p.fwd(n)
}
