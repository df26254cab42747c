package gateway

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"slices"
	"sync"
)

// RFB client-to-server message types the filter knows (RFC 6143 and the
// extensions noVNC and TigerVNC use). Any other type, TightVNC's file
// transfer messages included, closes the connection.
const (
	msgSetPixelFormat     = 0
	msgSetEncodings       = 2
	msgFBUpdateRequest    = 3
	msgKeyEvent           = 4
	msgPointerEvent       = 5
	msgClientCutText      = 6
	msgEnableContinuous   = 150
	msgClientFence        = 248
	msgXVP                = 250
	msgSetDesktopSize     = 251
	msgQEMU               = 255
	qemuExtendedKeyEvent  = 0
	maxCutText            = 16 << 20
	maxFencePayload       = 64
	maxEncodings          = 1024
	securityTypeNone      = 1
	protocolVersionLength = 12
)

// Extended clipboard (the pseudo-encoding 0xC0A1E5CE; a cut text message
// with a negative length): the first four payload bytes are flags, one bit
// per action in the top byte and one per format in the low 16 bits.
const (
	clipCaps    = 1 << 24 // sizes per format; takes precedence, as in TigerVNC and noVNC
	clipRequest = 1 << 25 // asks the other side to provide
	clipPeek    = 1 << 26 // asks the other side to notify
	clipNotify  = 1 << 27 // announces formats that can be provided
	clipProvide = 1 << 28 // the data, zlib-compressed
	clipActions = 0xff000000
)

// input is a class of client messages the permissions decide on.
type input int

const (
	inputNone             input = iota // always forwarded
	inputKeyboard                      // KeyEvent, QEMU extended key event
	inputMouse                         // PointerEvent
	inputClipboard                     // ClientCutText, extended notify and provide (pasting into the session)
	inputControl                       // SetDesktopSize, XVP: need keyboard or mouse
	inputClipboardRequest              // extended request and peek: asking for the session's clipboard (copy)
)

// classify says which permission a client message needs, from its complete
// header (for ClientCutText in the extended form, the header includes the
// flags).
func classify(h []byte) input {
	switch h[0] {
	case msgKeyEvent:
		return inputKeyboard
	case msgQEMU:
		if len(h) > 1 && h[1] == qemuExtendedKeyEvent {
			return inputKeyboard
		}
	case msgPointerEvent:
		return inputMouse
	case msgClientCutText:
		if len(h) < 12 {
			return inputClipboard // classic: text for the session's clipboard
		}
		switch a := binary.BigEndian.Uint32(h[8:]) & clipActions; {
		case a&clipCaps != 0:
			return inputNone // read as capabilities only, whatever else is set
		case a == clipRequest, a == clipPeek:
			return inputClipboardRequest
		}
		return inputClipboard
	case msgSetDesktopSize, msgXVP:
		return inputControl
	}
	return inputNone
}

// extClipboardLength checks the length n of an extended clipboard message
// with flags against what its readers consume: TigerVNC (either side) and
// noVNC read the flags and, for capabilities, one size per format, and
// nothing more, so any byte beyond would be read as the next message, which
// the gateway would not have filtered. Provide is read to its length.
func extClipboardLength(n int64, flags uint32) error {
	want := int64(4)
	switch a := flags & clipActions; {
	case a&clipCaps != 0:
		want += 4 * int64(bits.OnesCount32(flags&0xffff))
	case a == clipProvide:
		return nil
	}
	if n != want {
		return protoErr("extended clipboard message of %d bytes with flags %#x, whose readers take %d", n, flags, want)
	}
	return nil
}

// filter stages.
const (
	stageVersion = iota
	stageSecurity
	stageInit
	stageMessages
)

// clientFilter follows the client-to-server half of an RFB 3.x connection
// (the handshake with security type None, then the messages) and drops the
// messages the connection's permissions do not allow, whole, so that the
// stream stays well-formed. It rewrites SetEncodings to list only the
// encodings the server parser can frame, and tells the server parser (link)
// the protocol version and pixel format the client asked for. It is fed
// arbitrary chunks; any byte it cannot parse is an error and the connection
// must be closed.
type clientFilter struct {
	// allow says whether a message of the class may pass; nil allows all.
	allow func(input) bool
	// link receives what the server parser needs; nil: nobody listens.
	link *rfbLink

	stage int
	hdr   []byte // the header of the current item, as far as read
	need  int    // header length needed (0: the type byte is not read yet)
	// remain is the number of payload bytes of the current message still to
	// come; pass says whether they are forwarded, collect that they are
	// gathered in body (SetEncodings, rewritten once complete).
	remain  int64
	pass    bool
	collect bool
	body    []byte
	// resizable says the client's last SetEncodings listed
	// ExtendedDesktopSize, which SetDesktopSize requires.
	resizable bool
}

// errRFB wraps protocol errors of either side.
var errRFB = errors.New("rfb")

func protoErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errRFB, fmt.Sprintf(format, args...))
}

// feed processes p and appends what may pass to out.
func (f *clientFilter) feed(out, p []byte) ([]byte, error) {
	for len(p) > 0 {
		// Payload of the current message.
		if f.remain > 0 {
			n := int64(len(p))
			if n > f.remain {
				n = f.remain
			}
			switch {
			case f.collect:
				f.body = append(f.body, p[:n]...)
			case f.pass:
				out = append(out, p[:n]...)
			}
			p = p[n:]
			f.remain -= n
			if f.remain == 0 && f.collect {
				out = f.encodings(out)
			}
			continue
		}
		switch f.stage {
		case stageVersion:
			n := min(protocolVersionLength-len(f.hdr), len(p))
			f.hdr = append(f.hdr, p[:n]...)
			p = p[n:]
			if len(f.hdr) < protocolVersionLength {
				continue
			}
			major, minor, ok := parseVersion(f.hdr)
			if !ok || major != 3 {
				return out, protoErr("bad protocol version")
			}
			if f.link != nil {
				f.link.setMinor(minor)
			}
			out = append(out, f.hdr...)
			f.hdr = f.hdr[:0]
			if minor >= 7 {
				f.stage = stageSecurity
			} else {
				f.stage = stageInit // 3.3: the server chooses the security type
			}
		case stageSecurity:
			if p[0] != securityTypeNone {
				return out, protoErr("unsupported security type %d", p[0])
			}
			out = append(out, p[0])
			p = p[1:]
			f.stage = stageInit
		case stageInit:
			out = append(out, p[0]) // ClientInit: shared flag
			p = p[1:]
			f.stage = stageMessages
		default:
			var err error
			if p, out, err = f.message(out, p); err != nil {
				return out, err
			}
		}
	}
	return out, nil
}

// parseVersion parses a ProtocolVersion message, "RFB xxx.yyy\n".
func parseVersion(b []byte) (major, minor int, ok bool) {
	if len(b) != protocolVersionLength || string(b[:4]) != "RFB " || b[7] != '.' || b[11] != '\n' {
		return 0, 0, false
	}
	for _, c := range b[4:7] {
		if c < '0' || c > '9' {
			return 0, 0, false
		}
		major = major*10 + int(c-'0')
	}
	for _, c := range b[8:11] {
		if c < '0' || c > '9' {
			return 0, 0, false
		}
		minor = minor*10 + int(c-'0')
	}
	return major, minor, true
}

// headerLength returns the length of the header of a client message of
// type t as far as the type alone tells (see moreHeader).
func headerLength(t byte) (int, error) {
	switch t {
	case msgSetPixelFormat:
		return 20, nil
	case msgSetEncodings:
		return 4, nil
	case msgFBUpdateRequest, msgEnableContinuous:
		return 10, nil
	case msgKeyEvent:
		return 8, nil
	case msgPointerEvent:
		return 6, nil
	case msgClientCutText, msgSetDesktopSize:
		return 8, nil
	case msgClientFence:
		return 9, nil
	case msgXVP:
		return 4, nil
	case msgQEMU:
		return 2, nil
	}
	return 0, protoErr("unknown message type %d", t)
}

// moreHeader returns the header length of the message whose first need bytes
// are h: more than need when those bytes say so (the QEMU subtype; the flags
// of an extended clipboard message).
func moreHeader(h []byte, need int) (int, error) {
	switch h[0] {
	case msgQEMU:
		if need == 2 {
			if h[1] != qemuExtendedKeyEvent {
				return 0, protoErr("unknown QEMU message %d", h[1])
			}
			return 12, nil
		}
	case msgClientCutText:
		if need == 8 {
			n := int64(int32(binary.BigEndian.Uint32(h[4:])))
			if n < 0 {
				if -n < 4 {
					return 0, protoErr("extended clipboard message shorter than its flags")
				}
				return 12, nil
			}
		}
	}
	return need, nil
}

// message reads (part of) a message header from p; once the header is
// complete it decides whether the message passes and sets up its payload.
func (f *clientFilter) message(out, p []byte) ([]byte, []byte, error) {
	if f.need == 0 {
		f.hdr = append(f.hdr[:0], p[0])
		p = p[1:]
		n, err := headerLength(f.hdr[0])
		if err != nil {
			return p, out, err
		}
		f.need = n
	}
	for {
		for len(f.hdr) < f.need {
			if len(p) == 0 {
				return p, out, nil
			}
			n := min(f.need-len(f.hdr), len(p))
			f.hdr = append(f.hdr, p[:n]...)
			p = p[n:]
		}
		more, err := moreHeader(f.hdr, f.need)
		if err != nil {
			return p, out, err
		}
		if more == f.need {
			break
		}
		f.need = more
	}
	h := f.hdr
	var payload int64
	switch h[0] {
	case msgSetPixelFormat:
		pf := parsePixelFormat(h[4:20])
		if err := pf.check(); err != nil {
			return p, out, err
		}
		if f.link != nil {
			if err := f.link.setClientFormat(pf); err != nil {
				return p, out, err
			}
		}
	case msgFBUpdateRequest, msgEnableContinuous:
		if f.link != nil {
			f.link.updatesRequested()
		}
	case msgSetEncodings:
		n := int64(binary.BigEndian.Uint16(h[2:]))
		if n > maxEncodings {
			return p, out, protoErr("SetEncodings lists %d encodings, more than %d", n, maxEncodings)
		}
		payload = 4 * n
	case msgClientCutText:
		n := int64(int32(binary.BigEndian.Uint32(h[4:])))
		if n < 0 {
			if err := extClipboardLength(-n, binary.BigEndian.Uint32(h[8:])); err != nil {
				return p, out, err
			}
			n = -n - 4 // extended clipboard: the flags are in the header
		}
		if n > maxCutText {
			return p, out, protoErr("clipboard message too large")
		}
		payload = n
	case msgClientFence:
		if h[8] > maxFencePayload {
			return p, out, protoErr("fence payload too large")
		}
		payload = int64(h[8])
	case msgSetDesktopSize:
		// RFC 6143 allows it only once the client listed (and the server
		// answered) ExtendedDesktopSize; TigerVNC 1.12's Xvnc crashes on
		// one from a client that listed no desktop size encoding.
		if !f.resizable {
			return p, out, protoErr("SetDesktopSize from a client that did not list ExtendedDesktopSize")
		}
		payload = 16 * int64(h[6])
	}
	f.pass = f.allow == nil || f.allow(classify(h))
	f.remain = payload
	if h[0] == msgSetEncodings {
		// Held back until the list is complete, then rewritten.
		f.collect = true
		f.body = f.body[:0]
		if payload == 0 {
			out = f.encodings(out)
		}
	} else if f.pass {
		out = append(out, h...)
	}
	f.hdr = f.hdr[:0]
	f.need = 0
	return p, out, nil
}

// encodings appends the SetEncodings message collected in body, without the
// encodings the server parser cannot frame, to out.
func (f *clientFilter) encodings(out []byte) []byte {
	f.collect = false
	f.resizable = false
	for i := 0; i+4 <= len(f.body); i += 4 {
		f.resizable = f.resizable || int32(binary.BigEndian.Uint32(f.body[i:])) == encExtendedDesktopSize
	}
	if !f.pass {
		return out
	}
	at := len(out)
	out = append(out, msgSetEncodings, 0, 0, 0)
	kept := 0
	for i := 0; i+4 <= len(f.body); i += 4 {
		if framable(int32(binary.BigEndian.Uint32(f.body[i:]))) {
			out = append(out, f.body[i:i+4]...)
			kept++
		}
	}
	binary.BigEndian.PutUint16(out[at+2:], uint16(kept))
	return out
}

// Encodings and pseudo-encodings (RFC 6143, TigerVNC's rfb/encodings.h).
const (
	encRaw                  = 0
	encCopyRect             = 1
	encRRE                  = 2
	encHextile              = 5
	encTight                = 7
	encZRLE                 = 16
	encDesktopSize          = -223
	encLastRect             = -224
	encCursor               = -239
	encXCursor              = -240
	encQEMUKeyEvent         = -258
	encLEDState             = -261
	encDesktopName          = -307
	encExtendedDesktopSize  = -308
	encXvp                  = -309
	encFence                = -312
	encContinuousUpdates    = -313
	encCursorWithAlpha      = -314
	encVMwareCursor         = 0x574d5664
	encVMwareCursorPosition = 0x574d5666
	encVMwareLEDState       = 0x574d5668
	encExtendedClipboard    = -0x3f5e1a32 // 0xC0A1E5CE
)

// framable says whether the server parser can frame what the server sends
// once a client lists encoding e: the encodings TigerVNC's server has, and
// the pseudo-encodings that only set a level or enable a message the parser
// knows. Everything else (TightPNG, CoRRE, H.264, unknown extensions) is
// removed from SetEncodings, so that the server never uses it.
func framable(e int32) bool {
	switch {
	case e >= -32 && e <= -23: // JPEG quality levels
	case e >= -256 && e <= -247: // compression levels
	case e >= -512 && e <= -412: // fine quality levels
	case e >= -768 && e <= -763: // chroma subsampling
	default:
		return slices.Contains(framableEncodings, e)
	}
	return true
}

var framableEncodings = []int32{
	encRaw, encCopyRect, encRRE, encHextile, encTight, encZRLE,
	encDesktopSize, encLastRect, encCursor, encXCursor, encQEMUKeyEvent,
	encLEDState, encDesktopName, encExtendedDesktopSize, encXvp, encFence,
	encContinuousUpdates, encCursorWithAlpha, encVMwareCursor,
	encVMwareCursorPosition, encVMwareLEDState, encExtendedClipboard,
}

// pixelFormat is an RFB PIXEL_FORMAT.
type pixelFormat struct {
	bpp, depth                      uint8
	bigEndian, trueColour           bool
	redMax, greenMax, blueMax       uint16
	redShift, greenShift, blueShift uint8
}

// parsePixelFormat parses the 16 bytes of a PIXEL_FORMAT.
func parsePixelFormat(b []byte) pixelFormat {
	return pixelFormat{
		bpp: b[0], depth: b[1], bigEndian: b[2] != 0, trueColour: b[3] != 0,
		redMax: binary.BigEndian.Uint16(b[4:]), greenMax: binary.BigEndian.Uint16(b[6:]), blueMax: binary.BigEndian.Uint16(b[8:]),
		redShift: b[10], greenShift: b[11], blueShift: b[12],
	}
}

// check refuses a pixel size the parser cannot frame.
func (pf pixelFormat) check() error {
	switch pf.bpp {
	case 8, 16, 32:
		return nil
	}
	return protoErr("pixel format: bits-per-pixel %d is not 8, 16 or 32", pf.bpp)
}

// size is the number of bytes of a PIXEL.
func (pf pixelFormat) size() int64 { return int64(pf.bpp / 8) }

// tpixel is the number of bytes of a Tight TPIXEL: 3 for 8-bit red, green
// and blue on byte boundaries in 32 bits (TigerVNC's PixelFormat::is888,
// which its encoder and decoder use), else a PIXEL.
func (pf pixelFormat) tpixel() int64 {
	if pf.trueColour && pf.bpp == 32 && pf.depth == 24 &&
		pf.redMax == 255 && pf.greenMax == 255 && pf.blueMax == 255 &&
		pf.redShift%8 == 0 && pf.greenShift%8 == 0 && pf.blueShift%8 == 0 {
		return 3
	}
	return pf.size()
}

// sameFraming says whether updates in formats a and b have the same lengths.
func sameFraming(a, b pixelFormat) bool { return a.size() == b.size() && a.tpixel() == b.tpixel() }

// rfbLink is what the two halves of a bridged connection tell each other:
// the client filter sees the protocol version and the pixel format the
// client asks for, which the server parser needs to frame the server's
// messages. Its methods are safe for both goroutines.
//
// A SetPixelFormat takes effect for the updates the server sends after it
// read it, a point the gateway cannot see in the server's stream. So once
// the client has asked for updates (FramebufferUpdateRequest or
// EnableContinuousUpdates), a SetPixelFormat that would change the length
// of pixels is refused (the connection closes); noVNC sets its format once,
// before its first request. Before any request the server sends no update.
type rfbLink struct {
	mu        sync.Mutex
	minor     int // the client's protocol minor version; -1: not yet read
	server    pixelFormat
	client    pixelFormat
	hasServer bool
	hasClient bool
	requested bool
}

func newLink() *rfbLink { return &rfbLink{minor: -1} }

func (l *rfbLink) setMinor(m int) {
	l.mu.Lock()
	l.minor = m
	l.mu.Unlock()
}

// clientMinor returns the client's protocol minor version, or -1.
func (l *rfbLink) clientMinor() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.minor
}

func (l *rfbLink) setServerFormat(pf pixelFormat) {
	l.mu.Lock()
	l.server, l.hasServer = pf, true
	l.mu.Unlock()
}

// format returns the pixel format in effect; l.mu must be held.
func (l *rfbLink) format() (pixelFormat, bool) {
	if l.hasClient {
		return l.client, true
	}
	return l.server, l.hasServer
}

// setClientFormat records a client's SetPixelFormat.
func (l *rfbLink) setClientFormat(pf pixelFormat) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.requested {
		if cur, ok := l.format(); !ok || !sameFraming(cur, pf) {
			return protoErr("SetPixelFormat changes the pixel size after updates were requested")
		}
	}
	l.client, l.hasClient = pf, true
	return nil
}

func (l *rfbLink) updatesRequested() {
	l.mu.Lock()
	l.requested = true
	l.mu.Unlock()
}

// updateFormat returns the pixel format of a FramebufferUpdate the server
// sends now.
func (l *rfbLink) updateFormat() (pixelFormat, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.requested {
		return pixelFormat{}, protoErr("framebuffer update before the client asked for one")
	}
	pf, ok := l.format()
	if !ok {
		return pixelFormat{}, protoErr("framebuffer update before the server's init message")
	}
	return pf, nil
}
