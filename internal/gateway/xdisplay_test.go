package gateway_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jezek/xgb"
	"github.com/jezek/xgb/xproto"
)

// xDisplay is a test's own X client of a session's Xvnc: it watches the
// pointer and the keyboard, owns and reads selections (it answers
// conversion requests itself, as xclip would).
type xDisplay struct {
	t    testing.TB
	c    *xgb.Conn
	root xproto.Window
	win  xproto.Window // the test's window: selection owner and requestor
	// display (":N") and auth (the Xauthority file) let a test start X
	// programs on the display.
	display, auth string

	atoms    map[string]xproto.Atom
	mu       sync.Mutex
	owned    map[xproto.Atom]string // selection → text the test serves
	notified chan xproto.SelectionNotifyEvent
}

// xAtoms are the atoms the tests use, interned once.
var xAtoms = []string{"TARGETS", "UTF8_STRING", "STRING", "TEXT", "CLIPBOARD", "PRIMARY", "BERTH_TEST_SELECTION"}

// openDisplay connects to the X display of the Xvnc with process ID pid,
// with the cookie of its -auth file.
func openDisplay(t testing.TB, pid int) *xDisplay {
	t.Helper()
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	args := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
	display, auth := "", ""
	for i, a := range args {
		if strings.HasPrefix(a, ":") && display == "" {
			display = a[1:]
		}
		if a == "-auth" && i+1 < len(args) {
			auth = args[i+1]
		}
	}
	if display == "" || auth == "" {
		t.Fatalf("no display or -auth in Xvnc's command line %q", args)
	}
	cookie := readCookie(t, auth)
	conn, err := net.DialTimeout("unix", "/tmp/.X11-unix/X"+display, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c, err := xgb.NewConnNet(&cookieConn{Conn: conn, cookie: cookie})
	if err != nil {
		conn.Close()
		t.Fatalf("connect to display :%s: %v", display, err)
	}
	d := &xDisplay{t: t, c: c, display: ":" + display, auth: auth, root: xproto.Setup(c).DefaultScreen(c).Root, atoms: map[string]xproto.Atom{}, owned: map[xproto.Atom]string{}, notified: make(chan xproto.SelectionNotifyEvent, 16)}
	t.Cleanup(c.Close)
	for _, name := range xAtoms {
		r, err := xproto.InternAtom(c, false, uint16(len(name)), name).Reply()
		if err != nil {
			t.Fatal(err)
		}
		d.atoms[name] = r.Atom
	}
	d.win, err = xproto.NewWindowId(c)
	if err != nil {
		t.Fatal(err)
	}
	if err := xproto.CreateWindowChecked(c, 0, d.win, d.root, 0, 0, 1, 1, 0, xproto.WindowClassInputOnly, 0, 0, nil).Check(); err != nil {
		t.Fatal(err)
	}
	go d.events()
	return d
}

// readCookie returns the first MIT-MAGIC-COOKIE-1 of an Xauthority file.
func readCookie(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	r := bytes.NewReader(b)
	field := func() []byte {
		var n uint16
		if binary.Read(r, binary.BigEndian, &n) != nil {
			return nil
		}
		v := make([]byte, n)
		io.ReadFull(r, v)
		return v
	}
	for r.Len() > 0 {
		r.Seek(2, io.SeekCurrent) // family
		field()                   // address
		field()                   // display number
		name, data := field(), field()
		if string(name) == "MIT-MAGIC-COOKIE-1" {
			return data
		}
	}
	t.Fatalf("no cookie in %s", path)
	return nil
}

// cookieConn replaces xgb's connection setup (which would authenticate with
// the test process's XAUTHORITY) with one carrying cookie.
type cookieConn struct {
	net.Conn
	cookie []byte
	sent   bool
}

func (c *cookieConn) Write(b []byte) (int, error) {
	if c.sent {
		return c.Conn.Write(b)
	}
	c.sent = true
	const name = "MIT-MAGIC-COOKIE-1"
	pad := func(n int) int { return (n + 3) &^ 3 }
	req := make([]byte, 12+pad(len(name))+pad(len(c.cookie)))
	req[0] = 'l'
	binary.LittleEndian.PutUint16(req[2:], 11)
	binary.LittleEndian.PutUint16(req[6:], uint16(len(name)))
	binary.LittleEndian.PutUint16(req[8:], uint16(len(c.cookie)))
	copy(req[12:], name)
	copy(req[12+pad(len(name)):], c.cookie)
	if _, err := c.Conn.Write(req); err != nil {
		return 0, err
	}
	return len(b), nil
}

// atom returns an atom of xAtoms.
func (d *xDisplay) atom(name string) xproto.Atom {
	a, ok := d.atoms[name]
	if !ok {
		panic("atom " + name + " is not in xAtoms")
	}
	return a
}

// events answers selection requests for what the test owns and passes on
// selection notifications.
func (d *xDisplay) events() {
	for {
		ev, err := d.c.WaitForEvent()
		if ev == nil && err == nil {
			return // closed
		}
		switch e := ev.(type) {
		case xproto.SelectionRequestEvent:
			d.answer(e)
		case xproto.SelectionNotifyEvent:
			d.notified <- e
		}
	}
}

// answer converts a selection the test owns: TARGETS, UTF8_STRING, STRING
// and TEXT.
func (d *xDisplay) answer(e xproto.SelectionRequestEvent) {
	d.mu.Lock()
	text, ok := d.owned[e.Selection]
	d.mu.Unlock()
	prop := e.Property
	if prop == xproto.AtomNone {
		prop = e.Target
	}
	names := d.atoms
	switch {
	case !ok:
		prop = xproto.AtomNone
	case e.Target == names["TARGETS"]:
		var data []byte
		for _, a := range []xproto.Atom{names["TARGETS"], names["UTF8_STRING"], names["STRING"], names["TEXT"]} {
			data = binary.LittleEndian.AppendUint32(data, uint32(a))
		}
		xproto.ChangeProperty(d.c, xproto.PropModeReplace, e.Requestor, prop, xproto.AtomAtom, 32, 4, data)
	case e.Target == names["UTF8_STRING"], e.Target == names["STRING"], e.Target == names["TEXT"]:
		typ := e.Target
		if typ == names["TEXT"] {
			typ = names["STRING"]
		}
		xproto.ChangeProperty(d.c, xproto.PropModeReplace, e.Requestor, prop, typ, 8, uint32(len(text)), []byte(text))
	default:
		prop = xproto.AtomNone
	}
	ev := xproto.SelectionNotifyEvent{Time: e.Time, Requestor: e.Requestor, Selection: e.Selection, Target: e.Target, Property: prop}
	xproto.SendEvent(d.c, false, e.Requestor, 0, string(ev.Bytes()))
}

// own makes the test's window the owner of selection, serving text.
func (d *xDisplay) own(selection, text string) {
	d.t.Helper()
	sel := d.atom(selection)
	d.mu.Lock()
	d.owned[sel] = text
	d.mu.Unlock()
	if err := xproto.SetSelectionOwnerChecked(d.c, d.win, sel, xproto.TimeCurrentTime).Check(); err != nil {
		d.t.Fatal(err)
	}
	if d.owner(selection) != d.win {
		d.t.Fatalf("the test's window does not own %s", selection)
	}
}

// owner returns the window that owns selection.
func (d *xDisplay) owner(selection string) xproto.Window {
	d.t.Helper()
	r, err := xproto.GetSelectionOwner(d.c, d.atom(selection)).Reply()
	if err != nil {
		d.t.Fatal(err)
	}
	return r.Owner
}

// read converts selection to UTF8_STRING, as a pasting program does.
func (d *xDisplay) read(selection string) (string, error) {
	d.t.Helper()
	sel, target, prop := d.atom(selection), d.atom("UTF8_STRING"), d.atom("BERTH_TEST_SELECTION")
	for len(d.notified) > 0 {
		<-d.notified
	}
	xproto.ConvertSelection(d.c, d.win, sel, target, prop, xproto.TimeCurrentTime)
	select {
	case e := <-d.notified:
		if e.Property == xproto.AtomNone {
			return "", errors.New("conversion refused")
		}
	case <-time.After(10 * time.Second):
		return "", errors.New("no SelectionNotify within 10 s")
	}
	r, err := xproto.GetProperty(d.c, true, d.win, prop, xproto.GetPropertyTypeAny, 0, 1<<20).Reply()
	if err != nil {
		return "", err
	}
	return string(r.Value), nil
}

// pointer returns the pointer's position and button mask.
func (d *xDisplay) pointer() (x, y int, mask uint16) {
	d.t.Helper()
	r, err := xproto.QueryPointer(d.c, d.root).Reply()
	if err != nil {
		d.t.Fatal(err)
	}
	return int(r.RootX), int(r.RootY), r.Mask
}

// warp moves the pointer.
func (d *xDisplay) warp(x, y int) {
	d.t.Helper()
	if err := xproto.WarpPointerChecked(d.c, 0, d.root, 0, 0, 0, 0, int16(x), int16(y)).Check(); err != nil {
		d.t.Fatal(err)
	}
}

// keymap returns the bitmap of the keys down.
func (d *xDisplay) keymap() []byte {
	d.t.Helper()
	r, err := xproto.QueryKeymap(d.c).Reply()
	if err != nil {
		d.t.Fatal(err)
	}
	return r.Keys
}

// size returns the root window's size.
func (d *xDisplay) size() (int, int) {
	d.t.Helper()
	r, err := xproto.GetGeometry(d.c, xproto.Drawable(d.root)).Reply()
	if err != nil {
		d.t.Fatal(err)
	}
	return int(r.Width), int(r.Height)
}
