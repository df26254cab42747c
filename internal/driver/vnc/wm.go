package vnc

import (
	"context"
	"time"

	"github.com/jezek/xgb"
	"github.com/jezek/xgb/xproto"
)

// How long the autorun program waits for the window manager: of a window
// manager started alone, and of a desktop session (whose session manager
// starts the window manager among other things); then, in a desktop session,
// how long it waits for the window manager to manage a first window (the
// desktop's panel or background).
const (
	wmWait      = 5 * time.Second
	desktopWait = 20 * time.Second
	clientWait  = 5 * time.Second
)

// waitWindowManager waits until a window manager runs on display n (the root
// window carries _NET_SUPPORTING_WM_CHECK, as openbox, xfwm4 and other EWMH
// window managers set), or wait passes. A window mapped while the window
// manager is still starting stays unmanaged, so the autorun program starts
// only after it. With clients > 0 it then waits, up to clients, until the
// window manager lists a managed window (_NET_CLIENT_LIST): xfwm4 sets its
// check property before it frames new windows.
func waitWindowManager(ctx context.Context, n int, cookie []byte, xvncPID int, wait, clients time.Duration) bool {
	deadline := time.Now().Add(wait)
	c, err := xConnect(ctx, n, cookie, xvncPID, deadline)
	if err != nil {
		return false
	}
	defer c.Close()
	root := xproto.Setup(c).DefaultScreen(c).Root
	if !waitRootProperty(ctx, c, root, "_NET_SUPPORTING_WM_CHECK", xproto.AtomWindow, deadline) {
		return false
	}
	if clients > 0 {
		waitRootProperty(ctx, c, root, "_NET_CLIENT_LIST", xproto.AtomWindow, time.Now().Add(clients))
	}
	return true
}

// waitRootProperty waits until the root window has a non-empty property
// name of type typ, or deadline passes.
func waitRootProperty(ctx context.Context, c *xgb.Conn, root xproto.Window, name string, typ xproto.Atom, deadline time.Time) bool {
	atom, err := xproto.InternAtom(c, true, uint16(len(name)), name).Reply()
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if err == nil && atom.Atom != xproto.AtomNone {
			p, perr := xproto.GetProperty(c, false, root, atom.Atom, typ, 0, 1).Reply()
			if perr == nil && p.ValueLen > 0 {
				return true
			}
		} else {
			// The atom does not exist until a window manager creates it.
			atom, err = xproto.InternAtom(c, true, uint16(len(name)), name).Reply()
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}
