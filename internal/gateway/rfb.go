package gateway

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// RFB client-to-server message types the filter knows (RFC 6143 and the
// extensions noVNC and TigerVNC use).
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
	securityTypeNone      = 1
	protocolVersionLength = 12
)

// input is a class of client messages the permissions decide on.
type input int

const (
	inputNone      input = iota // always forwarded
	inputKeyboard               // KeyEvent, QEMU extended key event
	inputMouse                  // PointerEvent
	inputClipboard              // ClientCutText (pasting into the session)
	inputControl                // SetDesktopSize, XVP: need keyboard or mouse
)

// classify says which permission a message type needs.
func classify(t, sub byte) input {
	switch t {
	case msgKeyEvent:
		return inputKeyboard
	case msgQEMU:
		if sub == qemuExtendedKeyEvent {
			return inputKeyboard
		}
	case msgPointerEvent:
		return inputMouse
	case msgClientCutText:
		return inputClipboard
	case msgSetDesktopSize, msgXVP:
		return inputControl
	}
	return inputNone
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
// stream stays well-formed. It is fed arbitrary chunks; any byte it cannot
// parse is an error and the connection must be closed.
type clientFilter struct {
	// allow says whether a message of the class may pass; nil allows all.
	allow func(input) bool

	stage int
	hdr   []byte // the header of the current item, as far as read
	need  int    // header length needed (0: the type byte is not read yet)
	// remain is the number of payload bytes of the current message still to
	// come; pass says whether they are forwarded.
	remain int64
	pass   bool
}

// errRFB wraps protocol errors of the client.
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
			if f.pass {
				out = append(out, p[:n]...)
			}
			p = p[n:]
			f.remain -= n
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
			var major, minor int
			if _, err := fmt.Sscanf(string(f.hdr), "RFB %03d.%03d\n", &major, &minor); err != nil || major != 3 || f.hdr[11] != '\n' {
				return out, protoErr("bad protocol version")
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

// message reads (part of) a message header from p; once the header is
// complete it decides whether the message passes and sets up its payload.
func (f *clientFilter) message(out, p []byte) ([]byte, []byte, error) {
	if f.need == 0 {
		f.hdr = append(f.hdr[:0], p[0])
		p = p[1:]
		switch t := f.hdr[0]; t {
		case msgSetPixelFormat:
			f.need = 20
		case msgSetEncodings:
			f.need = 4
		case msgFBUpdateRequest, msgEnableContinuous:
			f.need = 10
		case msgKeyEvent:
			f.need = 8
		case msgPointerEvent:
			f.need = 6
		case msgClientCutText, msgSetDesktopSize:
			f.need = 8
		case msgClientFence:
			f.need = 9
		case msgXVP:
			f.need = 4
		case msgQEMU:
			f.need = 2
		default:
			return p, out, protoErr("unknown message type %d", t)
		}
	}
	for len(f.hdr) < f.need {
		if len(p) == 0 {
			return p, out, nil
		}
		n := min(f.need-len(f.hdr), len(p))
		f.hdr = append(f.hdr, p[:n]...)
		p = p[n:]
		if f.hdr[0] == msgQEMU && f.need == 2 && len(f.hdr) == 2 {
			if f.hdr[1] != qemuExtendedKeyEvent {
				return p, out, protoErr("unknown QEMU message %d", f.hdr[1])
			}
			f.need = 12
		}
	}
	h := f.hdr
	var payload int64
	switch h[0] {
	case msgSetEncodings:
		payload = 4 * int64(binary.BigEndian.Uint16(h[2:]))
	case msgClientCutText:
		n := int64(int32(binary.BigEndian.Uint32(h[4:])))
		if n < 0 {
			n = -n // extended clipboard
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
		payload = 16 * int64(h[6])
	}
	var sub byte
	if len(h) > 1 {
		sub = h[1]
	}
	f.pass = f.allow == nil || f.allow(classify(h[0], sub))
	if f.pass {
		out = append(out, h...)
	}
	f.remain = payload
	f.hdr = f.hdr[:0]
	f.need = 0
	return p, out, nil
}
