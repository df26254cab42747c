package gateway_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"net/http/httptest"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/jezek/xgb/xproto"

	"github.com/berth-dev/berth/internal/agent"
	"github.com/berth-dev/berth/internal/driver/vnc"
	"github.com/berth-dev/berth/internal/gateway"
	"github.com/berth-dev/berth/internal/localuser"
	"github.com/berth-dev/berth/internal/poll"
)

// The benchmarks in this file measure what the gateway costs a real Xvnc
// session's stream against a direct connection to the session's unix
// socket (docs/performance.md, "The desktop in the browser"): the same RFB
// client (benchClient) reads the same updates either way, the gateway's
// through a WebSocket over TLS on loopback, as a browser's. Each benchmark
// alternates direct and gateway windows of a fixed length, so that both
// see the same load from the rest of the machine, and reports both, and
// their ratio, from one run.

// benchGeometry is the session's screen: the vnc driver's default.
const benchGeometry = "1920x1080"

// benchWindow is the length of one measured window.
const benchWindow = 500 * time.Millisecond

// RFB encoding numbers of the benchmark client (RFC 6143, TigerVNC).
const (
	benchRaw          = 0
	benchCopyRect     = 1
	benchRRE          = 2
	benchHextile      = 5
	benchTight        = 7
	benchZRLE         = 16
	benchLastRect     = -224
	benchQuality0     = -32
	benchCompression0 = -256
)

// encSetting is a list of encodings a client asks for.
type encSetting struct {
	name string
	encs []int32
}

// noVNCEncodings is what noVNC 1.3 lists (rfb.js _sendEncodings) with
// JPEG quality q and compression level c, less the pseudo-encodings the
// benchmark client does not read (cursor, desktop size, fence, ...).
func noVNCEncodings(q, c int32) []int32 {
	return []int32{benchCopyRect, benchTight, benchHextile, benchRRE, benchRaw, benchQuality0 + q, benchCompression0 + c, benchLastRect}
}

// defaultSetting is what the session page asks for: noVNC's defaults
// (quality 6, compression 2).
var defaultSetting = encSetting{"tight-q6-c2", noVNCEncodings(6, 2)}

// encSettings are the settings BenchmarkEncoding compares.
var encSettings = []encSetting{
	{"tight-q2-c2", noVNCEncodings(2, 2)},
	defaultSetting,
	{"tight-q9-c2", noVNCEncodings(9, 2)},
	{"tight-q6-c0", noVNCEncodings(6, 0)},
	{"tight-q6-c6", noVNCEncodings(6, 6)},
	{"tight-q6-c9", noVNCEncodings(6, 9)},
	{"tight-lossless-c2", []int32{benchCopyRect, benchTight, benchRaw, benchCompression0 + 2, benchLastRect}},
	{"zrle", []int32{benchCopyRect, benchZRLE, benchRaw}},
	{"copyrect-hextile", []int32{benchCopyRect, benchHextile, benchRaw}},
	{"raw", []int32{benchRaw}},
}

// benchEnv is a real Xvnc session of a real user behind a gateway on an
// httptest TLS server, with an X client of the test on its display.
type benchEnv struct {
	b    *broker
	srv  *httptest.Server
	sess gateway.Session
	x    *xDisplay
	w, h int
}

// newBenchEnv starts a vnc driver with nothing in the session (no window
// manager, no desktop: only what the benchmark draws), a session of
// berthtest1 and a gateway. It skips where that cannot run.
func newBenchEnv(tb testing.TB) *benchEnv {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root: runs a real Xvnc session as a local user")
	}
	d, err := vnc.New(vnc.Config{StateDir: tb.TempDir(), Geometry: benchGeometry, DefaultInit: "-", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { d.Close() })
	if ok, reason := d.Health(context.Background()); !ok {
		tb.Skip(reason)
	}
	localuser.Ensure(tb, "berthtest1")
	id := "gw-bench-" + strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	if err := d.Create(ctx, agent.CreateRequest{ID: id, Owner: "berthtest1", Name: "bench", PermissionsFile: "[permissions]\n%owner% allow builtin\n"}); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { d.Delete(context.Background(), id) })
	sess, ok := d.Session(id)
	if !ok {
		tb.Fatal("session not ready")
	}
	b := newBroker(tb)
	gw := gateway.New(gateway.Config{Verifier: b.verifier, Sessions: d, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	srv := httptest.NewUnstartedServer(gw.Handler())
	srv.StartTLS()
	tb.Cleanup(func() {
		gw.Close()
		srv.Close()
	})
	e := &benchEnv{b: b, srv: srv, sess: sess, x: openDisplay(tb, sess.PID)}
	e.w, e.h = e.x.size()
	return e
}

// benchPath is one way to the session's VNC server.
type benchPath string

const (
	pathDirect  benchPath = "direct"
	pathGateway benchPath = "gateway"
)

// countReader counts the bytes read through it.
type countReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// benchClient is a minimal RFB 3.8 client that frames the server's
// messages without decoding them (the benchmarks measure the way to the
// client, not a decoder), in noVNC's pixel format.
type benchClient struct {
	tb  testing.TB
	nc  net.Conn
	cr  *countReader
	r   *bufio.Reader
	wmu sync.Mutex
	w   int
	h   int
}

// open connects a client by path and runs the handshake, then asks for
// noVNC's pixel format and encs.
func (e *benchEnv) open(tb testing.TB, path benchPath, encs []int32) *benchClient {
	tb.Helper()
	var nc net.Conn
	switch path {
	case pathDirect:
		c, err := net.Dial("unix", e.sess.Socket)
		if err != nil {
			tb.Fatal(err)
		}
		nc = c
	case pathGateway:
		c, status, body := dialWS(tb, e.srv, e.b.token(tb, e.sess.ID, e.sess.Owner, e.sess.Owner), e.sess.ID)
		if c == nil {
			tb.Fatalf("gateway: %d %s", status, body)
		}
		c.SetReadLimit(-1) // as a browser: no bound on a message
		nc = websocket.NetConn(context.Background(), c, websocket.MessageBinary)
	}
	tb.Cleanup(func() { nc.Close() })
	cr := &countReader{r: nc}
	c := &benchClient{tb: tb, nc: nc, cr: cr, r: bufio.NewReaderSize(cr, 256<<10)}
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	if v := c.read(12); string(v) != "RFB 003.008\n" {
		tb.Fatalf("%s: server version %q", path, v)
	}
	c.write([]byte("RFB 003.008\n"))
	if types := c.read(int(c.read(1)[0])); !slices.Contains(types, 1) {
		tb.Fatalf("%s: security types %v", path, types)
	}
	c.write([]byte{1})
	if res := c.read(4); binary.BigEndian.Uint32(res) != 0 {
		tb.Fatalf("%s: security result %v", path, res)
	}
	c.write([]byte{1}) // shared
	init := c.read(24)
	c.w, c.h = int(binary.BigEndian.Uint16(init)), int(binary.BigEndian.Uint16(init[2:]))
	c.read(int(binary.BigEndian.Uint32(init[20:])))
	nc.SetDeadline(time.Time{})
	// noVNC's pixel format: 32 bits, depth 24, little endian, true colour,
	// red at bit 0.
	c.write([]byte{0, 0, 0, 0, 32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 0, 8, 16, 0, 0, 0})
	msg := binary.BigEndian.AppendUint16([]byte{2, 0}, uint16(len(encs)))
	for _, enc := range encs {
		msg = binary.BigEndian.AppendUint32(msg, uint32(enc))
	}
	c.write(msg)
	return c
}

func (c *benchClient) read(n int) []byte {
	c.tb.Helper()
	b := make([]byte, n)
	if _, err := io.ReadFull(c.r, b); err != nil {
		c.tb.Fatalf("read: %v", err)
	}
	return b
}

func (c *benchClient) write(b []byte) {
	c.tb.Helper()
	if err := c.send(b); err != nil {
		c.tb.Fatalf("write: %v", err)
	}
}

// send writes b whole; safe for concurrent use.
func (c *benchClient) send(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, err := c.nc.Write(b)
	return err
}

// request sends a FramebufferUpdateRequest for the whole screen.
func (c *benchClient) request(incremental bool) {
	c.tb.Helper()
	if err := c.sendRequest(incremental); err != nil {
		c.tb.Fatalf("write: %v", err)
	}
}

func (c *benchClient) sendRequest(incremental bool) error {
	inc := byte(0)
	if incremental {
		inc = 1
	}
	msg := append([]byte{3, inc, 0, 0, 0, 0}, binary.BigEndian.AppendUint16(nil, uint16(c.w))...)
	return c.send(binary.BigEndian.AppendUint16(msg, uint16(c.h)))
}

// received is the number of payload bytes the client has parsed.
func (c *benchClient) received() int64 { return c.cr.n.Load() - int64(c.r.Buffered()) }

// key presses and releases keysym.
func (c *benchClient) key(keysym uint32) {
	down := binary.BigEndian.AppendUint32([]byte{4, 1, 0, 0}, keysym)
	c.write(binary.BigEndian.AppendUint32(append(down, 4, 0, 0, 0), keysym))
}

// errNotUpdate is next's answer for a server message other than a
// FramebufferUpdate.
var errNotUpdate = errors.New("not a framebuffer update")

// next reads one server message; for a FramebufferUpdate it returns the
// area its rectangles cover (CopyRect included).
func (c *benchClient) next() (area int, err error) {
	h, err := c.r.Peek(1)
	if err != nil {
		return 0, err
	}
	switch h[0] {
	case 0:
	case 2: // Bell
		_, err := c.r.Discard(1)
		return 0, errors.Join(errNotUpdate, err)
	case 3: // ServerCutText (classic: the client lists no extended clipboard)
		b, err := c.peekDiscard(8)
		if err != nil {
			return 0, err
		}
		return 0, errors.Join(errNotUpdate, c.skip(int(binary.BigEndian.Uint32(b[4:]))))
	default:
		return 0, fmt.Errorf("unexpected server message %d", h[0])
	}
	b, err := c.peekDiscard(4)
	if err != nil {
		return 0, err
	}
	n := int(binary.BigEndian.Uint16(b[2:]))
	for i := 0; i < n; i++ {
		r, err := c.peekDiscard(12)
		if err != nil {
			return 0, err
		}
		w, h := int(binary.BigEndian.Uint16(r[4:])), int(binary.BigEndian.Uint16(r[6:]))
		enc := int32(binary.BigEndian.Uint32(r[8:]))
		if enc == benchLastRect {
			break
		}
		if err := c.rect(enc, w, h); err != nil {
			return 0, fmt.Errorf("rectangle %d of %d (encoding %d, %dx%d): %w", i, n, enc, w, h, err)
		}
		area += w * h
	}
	return area, nil
}

// peekDiscard returns the next n bytes (valid until the next read) and
// consumes them.
func (c *benchClient) peekDiscard(n int) ([]byte, error) {
	b, err := c.r.Peek(n)
	if err != nil {
		return nil, err
	}
	b = slices.Clone(b)
	_, err = c.r.Discard(n)
	return b, err
}

func (c *benchClient) skip(n int) error {
	_, err := c.r.Discard(n)
	return err
}

func (c *benchClient) u8() (int, error) {
	b, err := c.r.ReadByte()
	return int(b), err
}

// rect skips the data of a rectangle (32-bit pixels; Tight's TPIXEL is 3
// bytes at depth 24).
func (c *benchClient) rect(enc int32, w, h int) error {
	const bpp, tpixel = 4, 3
	switch enc {
	case benchRaw:
		return c.skip(w * h * bpp)
	case benchCopyRect:
		return c.skip(4)
	case benchRRE:
		b, err := c.peekDiscard(4)
		if err != nil {
			return err
		}
		return c.skip(bpp + int(binary.BigEndian.Uint32(b))*(bpp+8))
	case benchZRLE:
		b, err := c.peekDiscard(4)
		if err != nil {
			return err
		}
		return c.skip(int(binary.BigEndian.Uint32(b)))
	case benchHextile:
		for ty := 0; ty < h; ty += 16 {
			for tx := 0; tx < w; tx += 16 {
				tw, th := min(16, w-tx), min(16, h-ty)
				sub, err := c.u8()
				if err != nil {
					return err
				}
				if sub&1 != 0 {
					if err := c.skip(tw * th * bpp); err != nil {
						return err
					}
					continue
				}
				n := 0
				if sub&2 != 0 {
					n += bpp
				}
				if sub&4 != 0 {
					n += bpp
				}
				if err := c.skip(n); err != nil {
					return err
				}
				if sub&8 != 0 {
					k, err := c.u8()
					if err != nil {
						return err
					}
					per := 2
					if sub&16 != 0 {
						per += bpp
					}
					if err := c.skip(k * per); err != nil {
						return err
					}
				}
			}
		}
		return nil
	case benchTight:
		ctl, err := c.u8()
		if err != nil {
			return err
		}
		switch comp := ctl >> 4; {
		case comp == 8: // fill
			return c.skip(tpixel)
		case comp == 9: // JPEG
			return c.compactSkip()
		case comp > 9:
			return fmt.Errorf("tight control %#x", ctl)
		default:
			size := w * h * tpixel
			if comp&4 != 0 {
				filter, err := c.u8()
				if err != nil {
					return err
				}
				switch filter {
				case 0:
				case 1: // palette
					k, err := c.u8()
					if err != nil {
						return err
					}
					if err := c.skip((k + 1) * tpixel); err != nil {
						return err
					}
					size = w * h
					if k == 1 {
						size = (w + 7) / 8 * h
					}
				case 2: // gradient
				default:
					return fmt.Errorf("tight filter %d", filter)
				}
			}
			if size < 12 {
				return c.skip(size)
			}
			return c.compactSkip()
		}
	}
	return fmt.Errorf("encoding %d not asked for", enc)
}

// compactSkip skips Tight's compact length and the data it counts.
func (c *benchClient) compactSkip() error {
	n := 0
	for i := 0; i < 3; i++ {
		b, err := c.u8()
		if err != nil {
			return err
		}
		if i == 2 {
			n |= b << 14
			break
		}
		n |= (b & 0x7f) << (7 * i)
		if b&0x80 == 0 {
			break
		}
	}
	return c.skip(n)
}

// update reads server messages until a FramebufferUpdate and returns its
// area.
func (c *benchClient) update() int {
	c.tb.Helper()
	for {
		area, err := c.next()
		if errors.Is(err, errNotUpdate) {
			continue
		}
		if err != nil {
			c.tb.Fatalf("read: %v", err)
		}
		return area
	}
}

// cpuTicks returns a process's utime+stime in clock ticks (USER_HZ, 100).
func cpuTicks(tb testing.TB, pid int) int64 {
	tb.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		tb.Fatal(err)
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return u + s
}

// cpuPercent is ticks over d in % of one core.
func cpuPercent(ticks int64, d time.Duration) float64 {
	return float64(ticks) * 10 / float64(d.Milliseconds()) * 100
}

// painter redraws the whole screen with a full-screen override-redirect
// window of its own, alternating photo-like images (smooth colour fields
// with noise, for JPEG) and flat colour blocks (for palette and fill
// encodings), each frame different from the one before.
type painter struct {
	e      *benchEnv
	win    xproto.Window
	gc     xproto.Gcontext
	photos [][]byte // BGRX rows, w×h
	n      int
}

func newPainter(tb testing.TB, e *benchEnv) *painter {
	tb.Helper()
	c := e.x.c
	p := &painter{e: e}
	var err error
	if p.win, err = xproto.NewWindowId(c); err != nil {
		tb.Fatal(err)
	}
	screen := xproto.Setup(c).DefaultScreen(c)
	if err := xproto.CreateWindowChecked(c, screen.RootDepth, p.win, e.x.root, 0, 0, uint16(e.w), uint16(e.h), 0,
		xproto.WindowClassInputOutput, screen.RootVisual, xproto.CwBackPixel|xproto.CwOverrideRedirect, []uint32{0, 1}).Check(); err != nil {
		tb.Fatal(err)
	}
	if p.gc, err = xproto.NewGcontextId(c); err != nil {
		tb.Fatal(err)
	}
	if err := xproto.CreateGCChecked(c, p.gc, xproto.Drawable(p.win), 0, nil).Check(); err != nil {
		tb.Fatal(err)
	}
	if err := xproto.MapWindowChecked(c, p.win).Check(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { xproto.DestroyWindow(c, p.win) })
	rng := rand.New(rand.NewPCG(1, 2))
	for k := range 2 {
		img := make([]byte, e.w*e.h*4)
		fx, fy := 90+float64(k)*37, 60+float64(k)*23
		for y := range e.h {
			for x := range e.w {
				i := (y*e.w + x) * 4
				v := func(ph float64) byte {
					s := 128 + 90*math.Sin(float64(x)/fx+ph)*math.Cos(float64(y)/fy-ph) + float64(rng.IntN(24)) - 12
					return byte(max(0, min(255, s)))
				}
				img[i], img[i+1], img[i+2] = v(float64(k)), v(1.3+float64(k)), v(2.6+float64(k))
			}
		}
		p.photos = append(p.photos, img)
	}
	return p
}

// paint draws the next frame and waits until the X server has it.
func (p *painter) paint(tb testing.TB) {
	tb.Helper()
	c, w, h := p.e.x.c, p.e.w, p.e.h
	p.n++
	if p.n%2 == 0 {
		img := p.photos[(p.n/2)%len(p.photos)]
		const rows = 32 // a request stays under the core protocol's 256 KiB
		for y := 0; y < h; y += rows {
			n := min(rows, h-y)
			xproto.PutImage(c, xproto.ImageFormatZPixmap, xproto.Drawable(p.win), p.gc, uint16(w), uint16(n), 0, int16(y), 0, 24, img[y*w*4:(y+n)*w*4])
		}
	} else {
		// Flat blocks: a 4×3 grid of colours that change every frame.
		bw, bh := (w+3)/4, (h+2)/3
		for i := range 12 {
			col := uint32(p.n*0x1f3d5b+i*0x3a7c11) & 0xffffff
			xproto.ChangeGC(c, p.gc, xproto.GcForeground, []uint32{col})
			xproto.PolyFillRectangle(c, xproto.Drawable(p.win), p.gc, []xproto.Rectangle{{X: int16(i % 4 * bw), Y: int16(i / 4 * bh), Width: uint16(bw), Height: uint16(bh)}})
		}
	}
	if _, err := xproto.GetInputFocus(c).Reply(); err != nil { // a round trip: all drawn
		tb.Fatal(err)
	}
}

// redrawResult is what one redraw window measured.
type redrawResult struct {
	frames  int           // full-screen frames delivered
	updates int           // FramebufferUpdates (a frame may take several)
	bytes   int64         // server-to-client bytes, RFB payload
	took    time.Duration // wall time of the window
	deliver time.Duration // of which from "drawn" to "last rectangle read"
	xvnc    int64         // Xvnc's CPU ticks
	self    int64         // this process's CPU ticks (client, painter and, through the gateway, the gateway)
}

// frame has the painter draw a frame, then asks for incremental updates
// until they have covered the screen, and returns the updates it took.
func (c *benchClient) frame(tb testing.TB, p *painter) int {
	tb.Helper()
	p.paint(tb)
	n := 0
	for area := 0; area < c.w*c.h; n++ {
		c.request(true)
		area += c.update()
	}
	return n
}

// redraw measures full-screen redraws on c for benchWindow: the painter
// draws a frame, the client asks for incremental updates and reads them
// until they have covered the screen, and again. The first frame, which
// also carries what changed while c was idle, is not measured.
func (e *benchEnv) redraw(tb testing.TB, p *painter, c *benchClient) redrawResult {
	tb.Helper()
	c.nc.SetReadDeadline(time.Now().Add(benchWindow + 30*time.Second))
	c.frame(tb, p)
	var r redrawResult
	x0, s0, b0 := cpuTicks(tb, e.sess.PID), cpuTicks(tb, os.Getpid()), c.received()
	t0 := time.Now()
	for time.Since(t0) < benchWindow {
		p.paint(tb)
		td := time.Now()
		for area := 0; area < c.w*c.h; r.updates++ {
			c.request(true)
			area += c.update()
		}
		r.deliver += time.Since(td)
		r.frames++
	}
	r.took = time.Since(t0)
	r.bytes = c.received() - b0
	r.xvnc, r.self = cpuTicks(tb, e.sess.PID)-x0, cpuTicks(tb, os.Getpid())-s0
	return r
}

// pathTotals sums a path's windows.
type pathTotals struct {
	frames, updates int
	bytes           int64
	took, deliver   time.Duration
	xvnc, self      int64
}

func (t *pathTotals) add(r redrawResult) {
	t.frames += r.frames
	t.updates += r.updates
	t.bytes += r.bytes
	t.took += r.took
	t.deliver += r.deliver
	t.xvnc += r.xvnc
	t.self += r.self
}

func (t *pathTotals) fps() float64 { return float64(t.frames) / t.took.Seconds() }

// redrawWindows is the number of windows per path and iteration: short
// windows, alternating, so that both paths see the same load from the
// rest of the (shared) machine.
const redrawWindows = 6

// runRedraw connects a client directly and one through the gateway with
// setting s, alternates their windows and reports both paths and their
// ratio (of the totals, and the median of the ratios of neighbouring
// windows).
func runRedraw(b *testing.B, e *benchEnv, p *painter, s encSetting) {
	direct, gw := e.open(b, pathDirect, s.encs), e.open(b, pathGateway, s.encs)
	defer direct.nc.Close()
	defer gw.nc.Close()
	var tot [2]pathTotals
	var pairs []float64
	for b.Loop() {
		for range redrawWindows {
			d, g := e.redraw(b, p, direct), e.redraw(b, p, gw)
			tot[0].add(d)
			tot[1].add(g)
			pairs = append(pairs, (float64(g.frames)/g.took.Seconds())/(float64(d.frames)/d.took.Seconds()))
		}
	}
	d, g := &tot[0], &tot[1]
	slices.Sort(pairs)
	mb := func(t *pathTotals) float64 { return float64(t.bytes) / t.took.Seconds() / 1e6 }
	dms := func(t *pathTotals) float64 { return float64(t.deliver.Microseconds()) / 1e3 / float64(t.frames) }
	b.ReportMetric(d.fps(), "direct-frames/s")
	b.ReportMetric(g.fps(), "gw-frames/s")
	b.ReportMetric(g.fps()/d.fps(), "ratio")
	b.ReportMetric(pairs[len(pairs)/2], "ratio-median")
	b.ReportMetric(dms(d), "direct-ms/frame")
	b.ReportMetric(dms(g), "gw-ms/frame")
	b.ReportMetric(mb(d), "direct-MB/s")
	b.ReportMetric(mb(g), "gw-MB/s")
	b.ReportMetric(float64(g.bytes)/float64(g.frames)/1e3, "KB/frame")
	b.ReportMetric(cpuPercent(d.xvnc+g.xvnc, d.took+g.took), "xvnc-cpu-%")
	b.ReportMetric(cpuPercent(g.self, g.took)-cpuPercent(d.self, d.took), "gw-cpu-%")
	b.Logf("%s: direct %d frames (%d updates) in %s, %.1f frames/s, %.1f MB/s; gateway %d frames (%d updates) in %s, %.1f frames/s, %.1f MB/s; ratio %.3f (windows %.3f–%.3f); delivery %.1f / %.1f ms a frame; client+painter CPU direct %.0f %%, with the gateway %.0f %%",
		s.name, d.frames, d.updates, d.took.Round(time.Millisecond), d.fps(), mb(d), g.frames, g.updates, g.took.Round(time.Millisecond), g.fps(), mb(g), g.fps()/d.fps(), pairs[0], pairs[len(pairs)-1], dms(d), dms(g), cpuPercent(d.self, d.took), cpuPercent(g.self, g.took))
}

// BenchmarkThroughput measures full-screen redraws with the session page's
// encodings (noVNC's defaults: Tight, JPEG quality 6, compression 2), direct
// on Xvnc's unix socket and through the gateway's WebSocket over TLS:
// frames/s and MB/s of each path, milliseconds from "drawn" to "on the
// client", and the gateway/direct ratio of frames/s (issue 15's target:
// at least 0.90).
func BenchmarkThroughput(b *testing.B) {
	e := newBenchEnv(b)
	runRedraw(b, e, newPainter(b, e), defaultSetting)
}

// BenchmarkEncoding runs BenchmarkThroughput's redraw for each encoding
// setting noVNC can ask for (and ZRLE and lossless Tight, for comparison):
// frames/s, KB a frame, and the CPU of Xvnc and of the gateway (this
// process's CPU through the gateway less its CPU direct), to choose the
// page's settings.
func BenchmarkEncoding(b *testing.B) {
	e := newBenchEnv(b)
	p := newPainter(b, e)
	for _, s := range encSettings {
		b.Run(s.name, func(b *testing.B) { runRedraw(b, e, p, s) })
	}
}

// typingResult is what one typing window measured.
type typingResult struct {
	lat   []time.Duration // key event sent to the first update after it
	bytes int64
	keys  int
}

// typeKeys types keys into the session's xterm at keyRate, with an
// incremental update request always outstanding, and measures for each key
// the time to the first FramebufferUpdate after it.
func (e *benchEnv) typeKeys(tb testing.TB, path benchPath, keys int) typingResult {
	tb.Helper()
	const keyInterval = 50 * time.Millisecond // 20 keys a second: a fast typist
	c := e.open(tb, path, defaultSetting.encs)
	defer c.nc.Close()
	c.request(false)
	c.update()
	// Settle: nothing changes on screen for 300 ms.
	updates := make(chan time.Time, 256)
	errc := make(chan error, 1)
	go func() {
		for {
			if err := c.sendRequest(true); err != nil {
				errc <- err
				return
			}
			area, err := c.next()
			if errors.Is(err, errNotUpdate) {
				continue
			}
			if err != nil {
				errc <- err
				return
			}
			if area > 0 {
				updates <- time.Now()
			}
		}
	}()
	for quiet := false; !quiet; {
		select {
		case <-updates:
		case err := <-errc:
			tb.Fatal(err)
		case <-time.After(300 * time.Millisecond):
			quiet = true
		}
	}
	r := typingResult{keys: keys}
	b0 := c.cr.n.Load()
	next := time.Now()
	for i := range keys {
		time.Sleep(time.Until(next)) //sleep-ok: the steady key rate being measured
		next = next.Add(keyInterval)
		ks := uint32('a' + i%26)
		if i%40 == 39 {
			ks = 0xff0d // Return
		}
		t0 := time.Now()
		c.key(ks)
		for got := false; !got; {
			select {
			case t := <-updates:
				if t.After(t0) {
					r.lat = append(r.lat, t.Sub(t0))
					got = true
				}
			case err := <-errc:
				tb.Fatal(err)
			case <-time.After(2 * time.Second):
				tb.Fatalf("%s: no update within 2 s of key %d", path, i)
			}
		}
	}
	// Let the last key's updates arrive before counting bytes.
	time.Sleep(keyInterval) //sleep-ok: the last key's trailing updates
	r.bytes = c.cr.n.Load() - b0
	return r
}

// startXterm starts an xterm running cat at the top left of the session's
// screen, as root with the session's cookie, waits until it is mapped and
// moves the pointer over it.
func startXterm(tb testing.TB, e *benchEnv) {
	tb.Helper()
	cmd := exec.Command("xterm", "-geometry", "100x30+0+0", "-e", "cat")
	cmd.Env = append(os.Environ(), "DISPLAY="+e.x.display, "XAUTHORITY="+e.x.auth)
	if err := cmd.Start(); err != nil {
		tb.Skipf("cannot start xterm: %v", err)
	}
	tb.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	poll.Until(tb, 10*time.Second, "xterm's window mapped", func() bool {
		tree, err := xproto.QueryTree(e.x.c, e.x.root).Reply()
		if err != nil {
			return false
		}
		for _, w := range tree.Children {
			if a, err := xproto.GetWindowAttributes(e.x.c, w).Reply(); err == nil && a.MapState == xproto.MapStateViewable {
				return true
			}
		}
		return false
	})
	// No window manager: the keyboard follows the pointer (PointerRoot).
	e.x.warp(20, 20)
}

// BenchmarkTyping types into an xterm in the session at 20 keys a second,
// direct and through the gateway (two windows of 40 keys each per path
// and iteration), and reports the median and 95th percentile of the time
// from the KeyEvent to the first FramebufferUpdate after it, and the bytes
// a keystroke costs.
func BenchmarkTyping(b *testing.B) {
	e := newBenchEnv(b)
	startXterm(b, e)
	var res [2]typingResult
	for b.Loop() {
		for range 2 {
			for i, path := range []benchPath{pathDirect, pathGateway} {
				r := e.typeKeys(b, path, 40)
				res[i].lat = append(res[i].lat, r.lat...)
				res[i].bytes += r.bytes
				res[i].keys += r.keys
			}
		}
	}
	q := func(l []time.Duration, p float64) float64 {
		s := slices.Clone(l)
		slices.Sort(s)
		return float64(s[min(len(s)-1, int(p*float64(len(s))))].Microseconds()) / 1e3
	}
	d, g := res[0], res[1]
	b.ReportMetric(q(d.lat, 0.5), "direct-ms/key")
	b.ReportMetric(q(g.lat, 0.5), "gw-ms/key")
	b.ReportMetric(q(d.lat, 0.95), "direct-p95-ms")
	b.ReportMetric(q(g.lat, 0.95), "gw-p95-ms")
	b.ReportMetric(q(g.lat, 0.5)-q(d.lat, 0.5), "gw-added-ms")
	b.ReportMetric(float64(d.bytes)/float64(d.keys), "direct-B/key")
	b.ReportMetric(float64(g.bytes)/float64(g.keys), "gw-B/key")
	b.Logf("typing: direct median %.2f ms p95 %.2f ms, gateway median %.2f ms p95 %.2f ms over %d keys each",
		q(d.lat, 0.5), q(d.lat, 0.95), q(g.lat, 0.5), q(g.lat, 0.95), d.keys)
}
