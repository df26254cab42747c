// Package wslink is the server end of a WebSocket (RFC 6455) made for many
// long-lived, mostly idle links: the broker's ten thousand agent links.
//
// A general WebSocket library (coder/websocket, which berth's agents and
// gateway use) keeps a buffered reader and writer per connection and leaves
// an idle reader blocked at the bottom of its read path (WebSocket frame,
// TLS record, socket), where the goroutine's stack has grown past the size
// the runtime would shrink it to. Here a link holds no buffer while it
// waits: when the connection under TLS can read without blocking
// (tlsaccept's connections can, see Parker), an idle reader parks on the
// socket's readiness in a shallow frame, and reads, one pooled buffer at a
// time, only once bytes arrived.
//
// It speaks the subset a broker needs: no extensions (permessage-deflate is
// never negotiated), no subprotocols, masked client frames, fragmented
// messages, ping, pong and the close handshake.
package wslink

import (
	"crypto/sha1"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/berth-dev/berth/internal/tlsidle"
)

// MessageType is the type of a data message; the values are RFC 6455's
// opcodes, as in coder/websocket.
type MessageType int

// Message types.
const (
	MessageText   MessageType = 1
	MessageBinary MessageType = 2
)

// StatusCode is a close frame's status code (RFC 6455 7.4).
type StatusCode int

// Status codes.
const (
	StatusNormalClosure   StatusCode = 1000
	StatusGoingAway       StatusCode = 1001
	StatusProtocolError   StatusCode = 1002
	StatusUnsupportedData StatusCode = 1003
	StatusNoStatusRcvd    StatusCode = 1005 // never sent: a close frame without a code
	StatusInvalidPayload  StatusCode = 1007
	StatusPolicyViolation StatusCode = 1008
	StatusMessageTooBig   StatusCode = 1009
	StatusInternalError   StatusCode = 1011
)

// CloseError is a close frame: one the peer sent (ReadMessage returns it),
// or the one sent because the peer broke the protocol.
type CloseError struct {
	Code   StatusCode
	Reason string
}

// Error says the status and reason.
func (e *CloseError) Error() string {
	return fmt.Sprintf("websocket closed: status %d: %s", e.Code, e.Reason)
}

// Parker is what the connection under TLS offers so that an idle reader
// parks without a buffer: reads that return at once, with an error wrapping
// syscall.EAGAIN when there is nothing to read, and a wait for readability
// that honours the read deadline. tlsaccept's connections implement it.
type Parker interface {
	// SetNonblocking switches reads to return at once; it reports whether
	// the connection can.
	SetNonblocking(on bool) bool
	// WaitReadable returns once the connection has bytes to read, an end
	// or an error, or its read deadline passed.
	WaitReadable() error
}

// Notifier is what a Parker may offer too: a notification, without a
// waiting goroutine, once the connection has bytes to read, an end or an
// error, or its read deadline passed, or it closed. tlsaccept's connections
// implement it.
type Notifier interface {
	// NotifyReadable runs fn once, on a new goroutine, with nil when the
	// connection is readable, else the error; it reports false, and fn
	// will not run, when it cannot.
	NotifyReadable(fn func(error)) bool
}

// Options configure a Conn. The zero value is usable.
type Options struct {
	// ReadLimit bounds a message's size in bytes; 0 means DefaultReadLimit.
	ReadLimit int64
	// WriteTimeout bounds one write; 0 means DefaultWriteTimeout.
	WriteTimeout time.Duration
}

// Defaults of Options, and the time a closing connection waits for the
// peer's close frame.
const (
	DefaultReadLimit    = 32 << 10
	DefaultWriteTimeout = 15 * time.Second
	CloseTimeout        = 2 * time.Second
)

// Conn is an accepted WebSocket. One goroutine may read (ReadMessage) while
// others write (WriteMessage) and close (Close).
type Conn struct {
	nc    net.Conn
	park  Parker    // nil: the reader blocks in the TLS read, holding a buffer
	tls   *tls.Conn // the TLS connection under nc, if any: its idle buffers are released (tlsidle)
	limit int64
	wtime time.Duration

	// Owned by the reader (reading held).
	rbuf      []byte // bytes read; rbuf[roff:] are not parsed yet. With park, nil while idle
	roff      int
	msg       []byte // the fragments of the message in progress
	msgOp     opcode // its opcode; 0 when none is
	peerClose bool   // the peer's close frame arrived

	reading   atomic.Bool // a reader is in ReadMessage, or the connection is finished
	closeSent atomic.Bool

	wmu       sync.Mutex
	wclosed   bool // a close frame was written, or a write failed
	closeOnce sync.Once
}

// keyGUID is RFC 6455's key suffix.
const keyGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// Accept upgrades r to a WebSocket: it checks the handshake, hijacks the
// connection and answers 101. A request that is not a WebSocket handshake
// gets a 4xx naming the header at fault, and an error.
func Accept(w http.ResponseWriter, r *http.Request, opts Options) (*Conn, error) {
	p, err := Hijack(w, r)
	if err != nil {
		return nil, err
	}
	return p.Accept(opts)
}

// Pending is a WebSocket handshake whose connection is taken over but not
// yet answered: Accept answers 101, Refuse an HTTP error. A server that
// makes a client wait before it takes the WebSocket (an admission queue)
// waits on a Pending rather than in a handler that still holds the
// connection: net/http then keeps neither its background read goroutine nor
// its buffers for it.
type Pending struct {
	nc    net.Conn
	key   string
	early []byte // bytes the client sent ahead of the answer
}

// Hijack checks r's WebSocket handshake and takes over its connection
// without answering. A request that is not a WebSocket handshake gets a 4xx
// naming the header at fault, and an error.
func Hijack(w http.ResponseWriter, r *http.Request) (*Pending, error) {
	key, status, err := checkHandshake(r)
	if err != nil {
		switch status {
		case http.StatusMethodNotAllowed:
			w.Header().Set("Allow", http.MethodGet)
		case http.StatusUpgradeRequired:
			w.Header().Set("Connection", "Upgrade")
			w.Header().Set("Upgrade", "websocket")
			w.Header().Set("Sec-WebSocket-Version", "13")
		}
		http.Error(w, err.Error(), status)
		return nil, err
	}
	nc, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		http.Error(w, "websocket: cannot take over the connection", http.StatusInternalServerError)
		return nil, fmt.Errorf("websocket: hijack: %w", err)
	}
	p := &Pending{nc: nc, key: key}
	if n := brw.Reader.Buffered(); n > 0 {
		// The client wrote ahead of the answer: those bytes come first.
		b, _ := brw.Reader.Peek(n)
		p.early = append(getBuf(n), b...)
	}
	return p, nil
}

// Accept answers 101 and returns the WebSocket. On an error the connection
// is closed.
func (p *Pending) Accept(opts Options) (*Conn, error) {
	c := &Conn{nc: p.nc, limit: opts.ReadLimit, wtime: opts.WriteTimeout, rbuf: p.early}
	if c.limit <= 0 {
		c.limit = DefaultReadLimit
	}
	if c.wtime <= 0 {
		c.wtime = DefaultWriteTimeout
	}
	sum := sha1.Sum([]byte(p.key + keyGUID))
	resp := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " +
		base64.StdEncoding.EncodeToString(sum[:]) + "\r\n\r\n"
	_ = p.nc.SetWriteDeadline(time.Now().Add(c.wtime))
	if _, err := p.nc.Write([]byte(resp)); err != nil {
		p.nc.Close()
		return nil, fmt.Errorf("websocket: write handshake response: %w", err)
	}
	c.park, c.tls = parkerOf(p.nc)
	return c, nil
}

// Refuse answers the handshake with status, the headers of h and msg as a
// plain-text body (as http.Error does), and closes the connection.
func (p *Pending) Refuse(status int, h http.Header, msg string) error {
	defer p.nc.Close()
	if p.early != nil {
		putBuf(p.early)
		p.early = nil
	}
	hdr := h.Clone()
	if hdr == nil {
		hdr = make(http.Header)
	}
	hdr.Set("Content-Type", "text/plain; charset=utf-8")
	hdr.Set("X-Content-Type-Options", "nosniff")
	body := msg + "\n"
	resp := &http.Response{
		StatusCode: status, ProtoMajor: 1, ProtoMinor: 1, Header: hdr, Close: true,
		ContentLength: int64(len(body)), Body: io.NopCloser(strings.NewReader(body)),
	}
	_ = p.nc.SetWriteDeadline(time.Now().Add(DefaultWriteTimeout))
	if err := resp.Write(p.nc); err != nil {
		return fmt.Errorf("websocket: write refusal: %w", err)
	}
	return nil
}

// parkerOf finds the Parker under nc, unwrapping connections that name the
// one under them with NetConn (*tls.Conn does), and switches it to reads
// that return at once; nil when there is none or it cannot. It returns the
// *tls.Conn it passed on the way too, if any.
func parkerOf(nc net.Conn) (Parker, *tls.Conn) {
	var tc *tls.Conn
	for range 8 {
		if t, ok := nc.(*tls.Conn); ok && tc == nil {
			tc = t
		}
		if p, ok := nc.(Parker); ok {
			if p.SetNonblocking(true) {
				return p, tc
			}
			return nil, tc
		}
		u, ok := nc.(interface{ NetConn() net.Conn })
		if !ok {
			return nil, tc
		}
		nc = u.NetConn()
	}
	return nil, tc
}

// checkHandshake checks an opening handshake (RFC 6455 4.2.1) and returns
// its key, or the status and error to answer with.
func checkHandshake(r *http.Request) (key string, status int, err error) {
	switch {
	case r.Method != http.MethodGet:
		return "", http.StatusMethodNotAllowed, fmt.Errorf("websocket: method %s: a WebSocket handshake is a GET", r.Method)
	case r.ProtoMajor != 1 || r.ProtoMinor < 1:
		return "", http.StatusHTTPVersionNotSupported, fmt.Errorf("websocket: %s: a WebSocket handshake needs HTTP/1.1", r.Proto)
	case !hasToken(r.Header, "Connection", "upgrade"):
		return "", http.StatusUpgradeRequired, errors.New(`websocket: header Connection: want the token "Upgrade"`)
	case !hasToken(r.Header, "Upgrade", "websocket"):
		return "", http.StatusUpgradeRequired, errors.New(`websocket: header Upgrade: want "websocket"`)
	case r.Header.Get("Sec-WebSocket-Version") != "13":
		return "", http.StatusUpgradeRequired, fmt.Errorf("websocket: header Sec-WebSocket-Version: %.20q is not supported; want 13", r.Header.Get("Sec-WebSocket-Version"))
	}
	key = strings.TrimSpace(r.Header.Get("Sec-WebSocket-Key"))
	if b, err := base64.StdEncoding.DecodeString(key); err != nil || len(b) != 16 {
		return "", http.StatusBadRequest, errors.New("websocket: header Sec-WebSocket-Key: want the base64 of 16 bytes")
	}
	return key, 0, nil
}

// hasToken reports whether a comma-separated header holds token, case
// insensitively.
func hasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for f := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(f), token) {
				return true
			}
		}
	}
	return false
}

// SetReadDeadline sets the deadline of reads, including the wait of an idle
// reader. Once the connection is closing it is ignored: the close handshake
// keeps its own.
func (c *Conn) SetReadDeadline(t time.Time) error {
	if c.closeSent.Load() {
		return nil
	}
	return c.nc.SetReadDeadline(t)
}

// RemoteAddr is the client's address.
func (c *Conn) RemoteAddr() net.Addr { return c.nc.RemoteAddr() }

// errReadDone is ReadMessage's error once the connection is finished, or
// when another goroutine is reading.
var errReadDone = errors.New("websocket: connection closed or read in progress")

// ErrWouldPark is ReadMessageNow's error when no whole message has arrived.
var ErrWouldPark = errors.New("websocket: no message ready")

// ReadMessage returns the next data message, answering pings and the
// peer's close frame on the way. Any error ends the connection: the reader
// finishes the close handshake, if one is under way, and closes it. A peer's
// close frame is returned as *CloseError; one sent because the peer broke
// the protocol, or sent a message over the limit, too.
func (c *Conn) ReadMessage() (MessageType, []byte, error) { return c.readMessage(false) }

// ReadMessageNow is ReadMessage, except that where ReadMessage would park
// (a connection that Parks has nothing more to read) it returns
// ErrWouldPark, which does not end the connection. Wait with WaitReadable
// and call it again. On a connection that does not park it is ReadMessage.
//
// A reader that parks between these calls rather than inside ReadMessage
// can do the reading on a goroutine of its own each time and park on one
// whose stack never grew.
func (c *Conn) ReadMessageNow() (MessageType, []byte, error) { return c.readMessage(true) }

// Parks reports whether an idle reader parks on the socket without a
// buffer (the connection under TLS is a Parker).
func (c *Conn) Parks() bool { return c.park != nil }

// WaitReadable returns once bytes arrived after ReadMessageNow returned
// ErrWouldPark, or the read deadline passed (os.ErrDeadlineExceeded), or the
// connection closed. On a connection that does not park it returns nil.
func (c *Conn) WaitReadable() error {
	if c.park == nil {
		return nil
	}
	return c.park.WaitReadable()
}

// NotifyReadable is WaitReadable without a waiting goroutine: once bytes
// arrived after ReadMessageNow returned ErrWouldPark, fn runs on a new
// goroutine with nil; once the read deadline passed, with
// os.ErrDeadlineExceeded; once the connection closed, with net.ErrClosed.
// It reports false, and fn will not run, where the connection cannot notify
// (it does not park, or its Parker is not a Notifier); wait with
// WaitReadable then.
func (c *Conn) NotifyReadable(fn func(error)) bool {
	n, ok := c.park.(Notifier)
	return ok && n.NotifyReadable(fn)
}

func (c *Conn) readMessage(now bool) (MessageType, []byte, error) {
	if !c.reading.CompareAndSwap(false, true) {
		return 0, nil, errReadDone
	}
	typ, data, err := c.read(now)
	if (err == nil || err == ErrWouldPark) && !c.closeSent.Load() {
		c.reading.Store(false)
		// A Close that came in between saw the reader busy and left the
		// connection to it: take it back unless a new reader has.
		if !c.closeSent.Load() || !c.reading.CompareAndSwap(false, true) {
			return typ, data, err
		}
	}
	if err == nil || err == ErrWouldPark {
		err = errReadDone // closing: no message after the close frame
	}
	c.finish()
	return 0, nil, err // reading stays held: later reads fail
}

// finish ends the connection: when a close frame was sent and the peer's
// has not come, it reads (and drops) until it comes or CloseTimeout passes.
// Hold reading.
func (c *Conn) finish() {
	for c.closeSent.Load() && !c.peerClose {
		if _, _, err := c.read(false); err != nil {
			break
		}
	}
	c.release()
	c.msg = nil
	c.nc.Close()
}

// read reads frames until a whole data message arrived; with now, until
// there is nothing more to read (ErrWouldPark).
func (c *Conn) read(now bool) (MessageType, []byte, error) {
	for {
		h, ok, err := parseHeader(c.rbuf[c.roff:], c.limit)
		if err != nil {
			return 0, nil, c.fail(err)
		}
		need := 2 + 8 + 4 // the longest header
		if ok {
			if int64(len(c.rbuf)-c.roff-h.size) >= h.length {
				start := c.roff + h.size
				payload := c.rbuf[start : start+int(h.length)]
				c.roff = start + int(h.length)
				unmask(payload, h.key, 0)
				typ, data, err := c.frame(h, payload)
				if err != nil {
					return 0, nil, err
				}
				if data != nil {
					c.release()
					return typ, data, nil
				}
				continue
			}
			need = h.size + int(h.length)
		}
		if err := c.fill(need, now); err != nil {
			return 0, nil, err
		}
	}
}

// frame handles one whole frame and returns the message it completes, if
// any (data nil: none).
func (c *Conn) frame(h header, payload []byte) (MessageType, []byte, error) {
	switch h.op {
	case opPing:
		if err := c.writeFrame(opPong, payload); err != nil {
			return 0, nil, err
		}
		return 0, nil, nil
	case opPong:
		return 0, nil, nil
	case opClose:
		c.peerClose = true
		ce, err := parseClose(payload)
		if err != nil {
			return 0, nil, c.fail(err)
		}
		code := ce.Code
		if code == StatusNoStatusRcvd {
			code = StatusNormalClosure
		}
		_ = c.sendClose(code, "") // the echo; the reader closes the connection
		return 0, nil, ce
	case opText, opBinary:
		if c.msgOp != 0 {
			return 0, nil, c.fail(protocolError("new message before the last one's final fragment"))
		}
		if h.fin {
			return MessageType(h.op), append(make([]byte, 0, len(payload)), payload...), nil
		}
		c.msgOp, c.msg = h.op, append(c.msg[:0], payload...)
		return 0, nil, nil
	default: // opContinuation
		if c.msgOp == 0 {
			return 0, nil, c.fail(protocolError("continuation frame without a message to continue"))
		}
		if int64(len(c.msg))+h.length > c.limit {
			return 0, nil, c.fail(&CloseError{Code: StatusMessageTooBig,
				Reason: fmt.Sprintf("message exceeds the %d-byte limit", c.limit)})
		}
		c.msg = append(c.msg, payload...)
		if !h.fin {
			return 0, nil, nil
		}
		typ, data := MessageType(c.msgOp), c.msg
		if data == nil {
			data = []byte{} // empty fragments: still a message
		}
		c.msgOp, c.msg = 0, nil
		return typ, data, nil
	}
}

// parseClose parses a close frame's payload.
func parseClose(p []byte) (*CloseError, error) {
	switch {
	case len(p) == 0:
		return &CloseError{Code: StatusNoStatusRcvd}, nil
	case len(p) == 1:
		return nil, protocolError("close frame payload of 1 byte")
	}
	code := StatusCode(binary.BigEndian.Uint16(p))
	if !validCode(code) {
		return nil, protocolError("close status %d is not one a peer may send", code)
	}
	if !utf8.Valid(p[2:]) {
		return nil, &CloseError{Code: StatusInvalidPayload, Reason: "close reason is not UTF-8"}
	}
	return &CloseError{Code: code, Reason: string(p[2:])}, nil
}

// validCode reports whether a peer may send code in a close frame.
func validCode(code StatusCode) bool {
	switch {
	case code >= 1000 && code <= 1003, code >= 1007 && code <= 1014:
		return true
	case code >= 3000 && code <= 4999:
		return true
	}
	return false
}

// fail sends the close frame of a protocol violation err (a *CloseError)
// and returns err.
func (c *Conn) fail(err error) error {
	if ce, ok := err.(*CloseError); ok {
		_ = c.sendClose(ce.Code, ce.Reason)
	}
	return err
}

// fill reads until rbuf holds at least one more byte, and room for need
// bytes from roff. With a Parker it parks, without a buffer, while there is
// nothing to read; with now it returns ErrWouldPark instead.
func (c *Conn) fill(need int, now bool) error {
	switch {
	case c.rbuf == nil:
		c.rbuf, c.roff = getBuf(need), 0
	case c.roff > 0:
		n := copy(c.rbuf, c.rbuf[c.roff:])
		c.rbuf, c.roff = c.rbuf[:n], 0
	}
	if need > cap(c.rbuf) {
		// Grow by doubling rather than to the length the header claims, so
		// that a claimed length costs memory only as its bytes arrive.
		nb := make([]byte, len(c.rbuf), min(need, 2*cap(c.rbuf)))
		copy(nb, c.rbuf)
		putBuf(c.rbuf)
		c.rbuf = nb
	}
	for {
		n, err := c.nc.Read(c.rbuf[len(c.rbuf):cap(c.rbuf)])
		if n > 0 {
			c.rbuf = c.rbuf[:len(c.rbuf)+n]
			return nil
		}
		switch {
		case err == nil:
		case c.park != nil && errors.Is(err, syscall.EAGAIN):
			if len(c.rbuf) == 0 {
				c.release()            // parked without a buffer
				tlsidle.Release(c.tls) // and without TLS's (nil: none)
			}
			if now {
				return ErrWouldPark
			}
			if err := c.park.WaitReadable(); err != nil {
				return err
			}
			if c.rbuf == nil {
				c.rbuf = getBuf(need)
			}
		default:
			return err
		}
	}
}

// release gives the read buffer back when it holds nothing unparsed.
func (c *Conn) release() {
	if c.rbuf != nil && c.roff == len(c.rbuf) {
		putBuf(c.rbuf)
		c.rbuf, c.roff = nil, 0
	}
}

// WriteMessage writes one message in one frame.
func (c *Conn) WriteMessage(typ MessageType, data []byte) error {
	if typ != MessageText && typ != MessageBinary {
		return fmt.Errorf("websocket: message type %d", typ)
	}
	return c.writeFrame(opcode(typ), data)
}

var errWriteClosed = errors.New("websocket: connection closing")

// writeFrame writes one final frame, as one write.
func (c *Conn) writeFrame(op opcode, p []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.wclosed {
		return errWriteClosed
	}
	bp := wbufPool.Get().(*[]byte)
	b := append(appendHeader((*bp)[:0], op, len(p)), p...)
	_ = c.nc.SetWriteDeadline(time.Now().Add(c.wtime))
	_, err := c.nc.Write(b)
	if cap(b) <= maxPooledWrite {
		*bp = b[:0]
		wbufPool.Put(bp)
	}
	if err != nil || op == opClose {
		c.wclosed = true
	}
	return err
}

// Close starts the close handshake: it sends a close frame with code and
// reason (cut to fit a control frame) and then, when no goroutine is
// reading, waits up to CloseTimeout for the peer's close frame and closes
// the connection; a reader does that itself. Only the first call sends.
func (c *Conn) Close(code StatusCode, reason string) error {
	err := c.sendClose(code, reason)
	if c.reading.CompareAndSwap(false, true) {
		c.finish()
	}
	return err
}

// sendClose sends the close frame, once, and bounds the wait for the
// peer's with the read deadline.
func (c *Conn) sendClose(code StatusCode, reason string) error {
	var err error
	c.closeOnce.Do(func() {
		var p []byte
		if code != StatusNoStatusRcvd {
			p = binary.BigEndian.AppendUint16(nil, uint16(code))
			p = append(p, cutUTF8(reason, maxControlPayload-2)...)
		}
		err = c.writeFrame(opClose, p)
		_ = c.nc.SetReadDeadline(time.Now().Add(CloseTimeout))
		c.closeSent.Store(true)
		if err != nil {
			c.nc.Close() // a reader wakes and finishes at once
		}
	})
	return err
}

// cutUTF8 returns s cut to at most n bytes, on a rune boundary.
func cutUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// The read buffers: one per reader while it reads, shared while idle.
const (
	bufSize        = 8 << 10
	maxPooledWrite = 16 << 10
)

var (
	rbufPool = sync.Pool{New: func() any { b := make([]byte, 0, bufSize); return &b }}
	wbufPool = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}
)

// getBuf returns an empty buffer, pooled when need fits one.
func getBuf(need int) []byte {
	if need > bufSize {
		return make([]byte, 0, min(need, 2*bufSize))
	}
	return (*rbufPool.Get().(*[]byte))[:0]
}

func putBuf(b []byte) {
	if cap(b) == bufSize {
		b = b[:0]
		rbufPool.Put(&b)
	}
}
