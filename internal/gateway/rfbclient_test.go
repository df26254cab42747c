package gateway_test

import (
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// RFB numbers the test client uses.
const (
	encFence             = -312
	encExtendedDesktop   = -308
	encExtendedClipboard = -0x3f5e1a32 // 0xC0A1E5CE
	fenceRequest         = 1 << 31
	fenceBlockBefore     = 1
	clipText             = 1
	clipCaps             = 1 << 24
	clipRequest          = 1 << 25
	clipPeek             = 1 << 26
	clipNotify           = 1 << 27
	clipProvide          = 1 << 28
)

// serverMsg is a server message the test client saw.
type serverMsg struct {
	typ   byte   // RFB message type
	flags uint32 // fence flags; extended clipboard flags
	ext   bool   // an extended clipboard message
	data  []byte // cut text (classic or provided), fence payload
}

// rfbPeer is an RFB client through the gateway, written for these tests: it
// never asks for framebuffer updates, so the server sends it only the other
// messages, which a goroutine reads into msgs (answering the server's fence
// requests as noVNC does).
type rfbPeer struct {
	t    testing.TB
	name string
	nc   net.Conn
	msgs chan serverMsg
	errc chan error
	n    int // fences sent
	wmu  sync.Mutex
	// pending are messages read before the answer of the fence connect
	// waits for, handed out first by next.
	pending []serverMsg
}

// connectPeer connects user's client to session id through the gateway and
// runs the handshake, then lists Fence and encs.
func connectPeer(t *testing.T, b *broker, srv *httptest.Server, id, owner, user string, encs ...int32) *rfbPeer {
	t.Helper()
	c, status, body := dialWS(t, srv, b.token(t, id, owner, user), id)
	if c == nil {
		t.Fatalf("%s: %d %s", user, status, body)
	}
	rc, _, _, _ := handshake(t, c)
	p := &rfbPeer{t: t, name: user, nc: rc.nc, msgs: make(chan serverMsg, 64), errc: make(chan error, 1)}
	encs = append([]int32{encFence}, encs...)
	msg := binary.BigEndian.AppendUint16([]byte{2, 0}, uint16(len(encs)))
	for _, e := range encs {
		msg = binary.BigEndian.AppendUint32(msg, uint32(e))
	}
	p.send(msg)
	go p.read()
	t.Cleanup(func() { c.CloseNow() })
	return p
}

func (p *rfbPeer) send(b []byte) {
	p.t.Helper()
	if err := p.write(b); err != nil {
		p.t.Fatalf("%s: write: %v", p.name, err)
	}
}

// write sends b whole; the test and the reading goroutine both write.
func (p *rfbPeer) write(b []byte) error {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	p.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, err := p.nc.Write(b)
	return err
}

// read parses the server's messages until the connection ends.
func (p *rfbPeer) read() {
	r := p.nc
	full := func(n int) ([]byte, error) {
		b := make([]byte, n)
		_, err := io.ReadFull(r, b)
		return b, err
	}
	err := func() error {
		for {
			h, err := full(1)
			if err != nil {
				return err
			}
			m := serverMsg{typ: h[0]}
			switch h[0] {
			case 2, 150: // Bell, EndOfContinuousUpdates
			case 3: // ServerCutText
				b, err := full(7)
				if err != nil {
					return err
				}
				n := int32(binary.BigEndian.Uint32(b[3:]))
				if n >= 0 {
					if m.data, err = full(int(n)); err != nil {
						return err
					}
					break
				}
				body, err := full(int(-n))
				if err != nil {
					return err
				}
				m.ext, m.flags, m.data = true, binary.BigEndian.Uint32(body), body[4:]
				if m.flags&(clipCaps|clipProvide) == clipProvide {
					zr, err := zlib.NewReader(bytes.NewReader(m.data))
					if err != nil {
						return err
					}
					all, _ := io.ReadAll(zr)
					if len(all) < 4 {
						return errors.New("short provide")
					}
					m.data = bytes.TrimRight(all[4:4+min(int(binary.BigEndian.Uint32(all)), len(all)-4)], "\x00")
				}
			case 248: // ServerFence
				b, err := full(8)
				if err != nil {
					return err
				}
				m.flags = binary.BigEndian.Uint32(b[3:])
				if m.data, err = full(int(b[7])); err != nil {
					return err
				}
				if m.flags&fenceRequest != 0 {
					// Answer as noVNC does; not a message for the test.
					reply := binary.BigEndian.AppendUint32([]byte{248, 0, 0, 0}, m.flags&3)
					reply = append(append(reply, byte(len(m.data))), m.data...)
					if err := p.write(reply); err != nil {
						return err
					}
					continue
				}
			default:
				return fmt.Errorf("unexpected server message %d", h[0])
			}
			p.msgs <- m
		}
	}()
	p.errc <- err
}

// next returns the next server message, failing the test after timeout.
func (p *rfbPeer) next(timeout time.Duration, what string) serverMsg {
	p.t.Helper()
	if len(p.pending) > 0 {
		m := p.pending[0]
		p.pending = p.pending[1:]
		return m
	}
	select {
	case m := <-p.msgs:
		return m
	case err := <-p.errc:
		p.t.Fatalf("%s: connection ended waiting for %s: %v", p.name, what, err)
	case <-time.After(timeout):
		p.t.Fatalf("%s: no %s within %s", p.name, what, timeout)
	}
	return serverMsg{}
}

// sync sends a fence and returns the server's messages before its answer:
// the server has then handled everything the client sent before it, and
// written everything it meant for this client before it.
func (p *rfbPeer) sync() []serverMsg {
	p.t.Helper()
	p.n++
	payload := fmt.Sprintf("sync-%d", p.n)
	msg := binary.BigEndian.AppendUint32([]byte{248, 0, 0, 0}, fenceRequest|fenceBlockBefore)
	p.send(append(append(msg, byte(len(payload))), payload...))
	var before []serverMsg
	for {
		m := p.next(10*time.Second, "the fence's answer")
		if m.typ == 248 && string(m.data) == payload {
			return before
		}
		before = append(before, m)
	}
}

// cutText sends a classic ClientCutText.
func (p *rfbPeer) cutText(text string) {
	p.send(append(binary.BigEndian.AppendUint32([]byte{6, 0, 0, 0}, uint32(len(text))), text...))
}

// extClipboard sends an extended clipboard message.
func (p *rfbPeer) extClipboard(flags uint32, payload []byte) {
	msg := binary.BigEndian.AppendUint32([]byte{6, 0, 0, 0}, uint32(-int32(4+len(payload))))
	msg = binary.BigEndian.AppendUint32(msg, flags)
	p.send(append(msg, payload...))
}

// provide sends text with the extended clipboard's provide action.
func (p *rfbPeer) provide(text string) {
	var z bytes.Buffer
	zw := zlib.NewWriter(&z)
	zw.Write(binary.BigEndian.AppendUint32(nil, uint32(len(text)+1)))
	zw.Write(append([]byte(text), 0))
	zw.Close()
	p.extClipboard(clipProvide|clipText, z.Bytes())
}

// key sends a KeyEvent.
func (p *rfbPeer) key(down bool, keysym uint32) {
	d := byte(0)
	if down {
		d = 1
	}
	p.send(binary.BigEndian.AppendUint32([]byte{4, d, 0, 0}, keysym))
}

// qemuKey sends a QEMU extended key event (keysym and XT scancode).
func (p *rfbPeer) qemuKey(down bool, keysym, scancode uint32) {
	d := byte(0)
	if down {
		d = 1
	}
	msg := binary.BigEndian.AppendUint32([]byte{255, 0, 0, d}, keysym)
	p.send(binary.BigEndian.AppendUint32(msg, scancode))
}

// pointer sends a PointerEvent.
func (p *rfbPeer) pointer(buttons byte, x, y int) {
	msg := binary.BigEndian.AppendUint16([]byte{5, buttons}, uint16(x))
	p.send(binary.BigEndian.AppendUint16(msg, uint16(y)))
}

// setDesktopSize asks for a one-screen desktop of w×h.
func (p *rfbPeer) setDesktopSize(w, h int) {
	msg := binary.BigEndian.AppendUint16([]byte{251, 0}, uint16(w))
	msg = binary.BigEndian.AppendUint16(msg, uint16(h))
	msg = append(msg, 1, 0)
	msg = binary.BigEndian.AppendUint32(msg, 0) // screen ID
	msg = append(msg, 0, 0, 0, 0)               // x, y
	msg = binary.BigEndian.AppendUint16(msg, uint16(w))
	msg = binary.BigEndian.AppendUint16(msg, uint16(h))
	p.send(binary.BigEndian.AppendUint32(msg, 0))
}
