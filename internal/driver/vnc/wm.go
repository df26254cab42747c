package vnc

import (
	"context"
	"time"

	"github.com/jezek/xgb/xproto"
)

// wmWait bounds how long the autorun program waits for the window manager.
const wmWait = 5 * time.Second

// waitWindowManager waits until a window manager runs on display n (the root
// window carries _NET_SUPPORTING_WM_CHECK, as openbox and other EWMH window
// managers set), or wmWait passes. A window mapped while the window manager is
// still starting stays unmanaged, so the autorun program starts only after it.
func waitWindowManager(ctx context.Context, n int, cookie []byte, xvncPID int) bool {
	deadline := time.Now().Add(wmWait)
	c, err := xConnect(ctx, n, cookie, xvncPID, deadline)
	if err != nil {
		return false
	}
	defer c.Close()
	atom, err := xproto.InternAtom(c, true, uint16(len("_NET_SUPPORTING_WM_CHECK")), "_NET_SUPPORTING_WM_CHECK").Reply()
	root := xproto.Setup(c).DefaultScreen(c).Root
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if err == nil && atom.Atom != xproto.AtomNone {
			p, perr := xproto.GetProperty(c, false, root, atom.Atom, xproto.AtomWindow, 0, 1).Reply()
			if perr == nil && p.ValueLen > 0 {
				return true
			}
		} else {
			// The atom does not exist until a window manager creates it.
			atom, err = xproto.InternAtom(c, true, uint16(len("_NET_SUPPORTING_WM_CHECK")), "_NET_SUPPORTING_WM_CHECK").Reply()
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}
