package wslink

import (
	"encoding/binary"
	"fmt"
)

// opcode is a frame's opcode (RFC 6455 5.2).
type opcode byte

const (
	opContinuation opcode = 0x0
	opText         opcode = 0x1
	opBinary       opcode = 0x2
	opClose        opcode = 0x8
	opPing         opcode = 0x9
	opPong         opcode = 0xa
)

func (op opcode) control() bool { return op&0x8 != 0 }

// maxControlPayload bounds a control frame's payload (RFC 6455 5.5).
const maxControlPayload = 125

// header is a parsed frame header.
type header struct {
	fin    bool
	op     opcode
	key    [4]byte // the masking key; client frames are always masked
	length int64   // of the payload
	size   int     // of the header in bytes
}

// parseHeader parses the header of a frame a client sent, at the start of
// b. It returns ok false when b holds only part of the header. limit bounds
// the payload length of a data frame; one past it fails with
// StatusMessageTooBig. Any other violation fails with StatusProtocolError:
// reserved bits set (no extension is ever negotiated), an unknown opcode, an
// unmasked frame, a fragmented or oversized control frame, or a length not in
// its shortest form or with the top bit set.
func parseHeader(b []byte, limit int64) (h header, ok bool, err error) {
	if len(b) < 2 {
		return h, false, nil
	}
	h.fin = b[0]&0x80 != 0
	if rsv := b[0] & 0x70; rsv != 0 {
		return h, false, protocolError("reserved bits 0x%02x set without an extension", rsv)
	}
	h.op = opcode(b[0] & 0x0f)
	switch h.op {
	case opContinuation, opText, opBinary, opClose, opPing, opPong:
	default:
		return h, false, protocolError("unknown opcode 0x%x", byte(h.op))
	}
	if b[1]&0x80 == 0 {
		return h, false, protocolError("client frame not masked")
	}
	n := int64(b[1] & 0x7f)
	h.size = 2
	switch n {
	case 126:
		h.size += 2
	case 127:
		h.size += 8
	}
	h.size += 4 // the masking key
	if len(b) < h.size {
		return h, false, nil
	}
	switch n {
	case 126:
		n = int64(binary.BigEndian.Uint16(b[2:4]))
		if n < 126 {
			return h, false, protocolError("length %d not in its shortest form", n)
		}
	case 127:
		u := binary.BigEndian.Uint64(b[2:10])
		if u>>63 != 0 {
			return h, false, protocolError("length has its top bit set")
		}
		n = int64(u)
		if n <= 0xffff {
			return h, false, protocolError("length %d not in its shortest form", n)
		}
	}
	h.length = n
	copy(h.key[:], b[h.size-4:h.size])
	if h.op.control() {
		if !h.fin {
			return h, false, protocolError("fragmented control frame")
		}
		if n > maxControlPayload {
			return h, false, protocolError("control frame payload of %d bytes (at most %d)", n, maxControlPayload)
		}
	} else if n > limit {
		return h, false, &CloseError{Code: StatusMessageTooBig, Reason: fmt.Sprintf("frame of %d bytes exceeds the %d-byte limit", n, limit)}
	}
	return h, true, nil
}

// unmask unmasks p in place; pos is the offset of p[0] in the payload.
func unmask(p []byte, key [4]byte, pos int) {
	for i := range p {
		p[i] ^= key[(pos+i)&3]
	}
}

// appendHeader appends the header of an unmasked, final server frame of
// opcode op with a payload of n bytes.
func appendHeader(b []byte, op opcode, n int) []byte {
	b = append(b, 0x80|byte(op))
	switch {
	case n < 126:
		return append(b, byte(n))
	case n <= 0xffff:
		return binary.BigEndian.AppendUint16(append(b, 126), uint16(n))
	default:
		return binary.BigEndian.AppendUint64(append(b, 127), uint64(n))
	}
}

func protocolError(format string, args ...any) error {
	return &CloseError{Code: StatusProtocolError, Reason: fmt.Sprintf(format, args...)}
}
