package gateway_test

import (
	"context"
	"encoding/binary"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/jezek/xgb/xproto"

	"github.com/berth-dev/berth/internal/agent"
	"github.com/berth-dev/berth/internal/gateway"
)

// noVNCPixelFormat is the format noVNC 1.3 sets: 32 bits, depth 24, true
// colour, little-endian, red at 16, green at 8, blue at 0.
var noVNCPixelFormat = []byte{32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0}

// recordEncodings is what the gateway forwards of noVNC 1.3's SetEncodings,
// less Fence and ContinuousUpdates (the recorder does not answer fences).
var recordEncodings = []int32{1, 7, 5, 2, 0, -26, -254, -223, -224, -258, -308, -309, -307, -0x3f5e1a32, 0x574d5664, -239}

// TestRecordXvncStream records what a real Xvnc sends a client that asks as
// noVNC does, while the session scrolls text in an xterm and shows a
// changing photo-like picture, into the file BERTH_RECORD_RFB names, cut at
// a message boundary. testdata/xvnc-novnc.rfb is such a recording
// (BenchmarkServerStream); the test is skipped unless the variable is set.
func TestRecordXvncStream(t *testing.T) {
	path := os.Getenv("BERTH_RECORD_RFB")
	if path == "" {
		t.Skip("set BERTH_RECORD_RFB=FILE to record a session's server stream")
	}
	const limit = 1 << 20
	d, _, _ := realSessionEnv(t)
	ctx := context.Background()
	id := "gw-record-" + time.Now().Format("150405.000")[7:]
	if err := d.Create(ctx, agent.CreateRequest{ID: id, Owner: "berthtest1", Name: "recording"}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Delete(ctx, id) })
	sess, _ := d.Session(id)
	x := openDisplay(t, sess.PID)

	conn, err := net.Dial("unix", sess.Socket)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var (
		mu  sync.Mutex
		rec []byte
	)
	readN := func(n int) []byte {
		b := make([]byte, n)
		if _, err := io.ReadFull(conn, b); err != nil {
			t.Fatal(err)
		}
		rec = append(rec, b...)
		return b
	}
	readN(12)
	conn.Write([]byte("RFB 003.008\n"))
	readN(int(readN(1)[0]))
	conn.Write([]byte{1})
	readN(4)
	conn.Write([]byte{1})
	init := readN(24)
	readN(int(binary.BigEndian.Uint32(init[20:])))
	w, h := binary.BigEndian.Uint16(init), binary.BigEndian.Uint16(init[2:])
	msg := append([]byte{0, 0, 0, 0}, noVNCPixelFormat...)
	msg = append(msg, 2, 0, 0, byte(len(recordEncodings)))
	for _, e := range recordEncodings {
		msg = binary.BigEndian.AppendUint32(msg, uint32(e))
	}
	fbur := func(incremental byte) []byte {
		b := []byte{3, incremental, 0, 0, 0, 0}
		b = binary.BigEndian.AppendUint16(b, w)
		return binary.BigEndian.AppendUint16(b, h)
	}
	conn.Write(append(msg, fbur(0)...))

	done := make(chan struct{})
	go func() { // the server's stream, up to limit
		defer close(done)
		buf := make([]byte, 64<<10)
		for {
			n, err := conn.Read(buf)
			mu.Lock()
			rec = append(rec, buf[:n]...)
			full := len(rec) >= limit
			mu.Unlock()
			if err != nil || full {
				return
			}
		}
	}()
	go func() { // noVNC asks again after each update; close enough
		for {
			select {
			case <-done:
				return
			case <-time.After(20 * time.Millisecond):
				conn.Write(fbur(1))
			}
		}
	}()

	// Scrolling text.
	xterm := exec.Command("xterm", "-geometry", "100x45+700+10", "-e", "sh", "-c", "ls -lR /usr/share/doc | head -20000; sleep 2")
	xterm.Env = append(os.Environ(), "DISPLAY="+x.display, "XAUTHORITY="+x.auth)
	if err := xterm.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { xterm.Process.Kill(); xterm.Wait() }()
	// A photo-like picture (smooth colours and noise: JPEG), repainted.
	photo(t, x, done)

	select {
	case <-done:
	case <-time.After(20 * time.Second):
	}
	conn.Close()
	<-done
	mu.Lock()
	defer mu.Unlock()
	ends, err := gateway.ServerMessageEnds(rec, noVNCPixelFormat)
	if len(ends) < 2 {
		t.Fatalf("recorded %d bytes: %d messages, %v", len(rec), len(ends), err)
	}
	cut := ends[len(ends)-1]
	if err := os.WriteFile(path, rec[:cut], 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("recorded %d bytes, %d messages, into %s", cut, len(ends)-1, path)
}

// photo paints a 600×400 window with a photo-like picture, changing it
// until done or 40 frames.
func photo(t *testing.T, x *xDisplay, done chan struct{}) {
	t.Helper()
	const pw, ph = 600, 400
	win, _ := xproto.NewWindowId(x.c)
	screen := xproto.Setup(x.c).DefaultScreen(x.c)
	if err := xproto.CreateWindowChecked(x.c, screen.RootDepth, win, x.root, 40, 40, pw, ph, 0, xproto.WindowClassInputOutput, screen.RootVisual, xproto.CwBackPixel, []uint32{0}).Check(); err != nil {
		t.Fatal(err)
	}
	xproto.MapWindow(x.c, win)
	gc, _ := xproto.NewGcontextId(x.c)
	xproto.CreateGC(x.c, gc, xproto.Drawable(win), 0, nil)
	rnd := rand.New(rand.NewPCG(1, 2))
	img := make([]byte, pw*ph*4)
	for frame := range 40 {
		for y := range ph {
			for xx := range pw {
				i := (y*pw + xx) * 4
				n := byte(rnd.IntN(24))
				img[i] = byte(xx*255/pw+frame*6) + n             // blue
				img[i+1] = byte(y*255/ph) + n                    // green
				img[i+2] = byte((xx+y+frame*10)*255/(pw+ph)) + n // red
			}
		}
		const strip = 100
		for y := 0; y < ph; y += strip {
			xproto.PutImage(x.c, xproto.ImageFormatZPixmap, xproto.Drawable(win), gc, pw, strip, 0, int16(y), 0, screen.RootDepth, img[y*pw*4:(y+strip)*pw*4])
		}
		if frame%10 == 9 { // moved: CopyRect
			xproto.ConfigureWindow(x.c, win, xproto.ConfigWindowX|xproto.ConfigWindowY, []uint32{uint32(40 + frame*3), uint32(40 + frame*2)})
		}
		xproto.GetInputFocus(x.c).Reply() // a round trip: the frame is drawn
		select {
		case <-done:
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}
