package gateway_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/agent"
	"github.com/berth-dev/berth/internal/poll"
)

// TestGateway_RealXvncPermissions runs each DCV permission the vnc driver
// enforces against a real Xvnc session of berthtest1, through the real
// gateway, with an RFB client of berthtest2 that has every right but the
// one under test and tries to use it anyway: the attack must fail, while
// the owner, doing the same, succeeds (so that the test can see the effect
// it checks for). The effects are read on the session's X display.
func TestGateway_RealXvncPermissions(t *testing.T) {
	d, b, srv := realSessionEnv(t)
	ctx := context.Background()
	id := "gw-perm-" + time.Now().Format("150405.000")[7:]
	const owner, user = "berthtest1", "berthtest2"
	cctx, cancel := context.WithTimeout(ctx, 40*time.Second)
	defer cancel()
	if err := d.Create(cctx, agent.CreateRequest{ID: id, Owner: owner, Name: "permissions", MaxConcurrentClients: 20, PermissionsFile: "[permissions]\n%owner% allow builtin\n"}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Delete(ctx, id) })
	sess, ok := d.Session(id)
	if !ok {
		t.Fatal("session not ready")
	}
	x := openDisplay(t, sess.PID)
	// allow gives berthtest2 display and features.
	allow := func(t *testing.T, features string) {
		t.Helper()
		if err := d.SetPermissions(ctx, id, "[permissions]\n%owner% allow builtin\n"+user+" allow display "+features+"\n"); err != nil {
			t.Fatal(err)
		}
	}
	connect := func(t *testing.T, who string, encs ...int32) *rfbPeer {
		t.Helper()
		p := connectPeer(t, b, srv, id, owner, who, encs...)
		p.pending = p.sync() // the server has its encodings
		return p
	}
	secret := func(what string) string {
		r := make([]byte, 6)
		rand.Read(r)
		return "berth-" + what + "-" + hex.EncodeToString(r)
	}

	t.Run("clipboard-copy", func(t *testing.T) {
		allow(t, "keyboard mouse clipboard-paste")
		o, u := connect(t, owner), connect(t, user)
		// The owner copies in the session: Xvnc sends the text to every
		// client (classic clients all ask for it when told of a change).
		text := secret("copy")
		x.own("CLIPBOARD", text)
		waitCutText(t, o, text)
		// berthtest2's stream had it before the owner's; after a fence,
		// nothing came.
		for _, m := range u.sync() {
			if m.typ == 3 {
				t.Fatalf("a user without clipboard-copy received the session's clipboard: %q", m.data)
			}
		}
		// Granted while connected, the next copy reaches berthtest2.
		allow(t, "keyboard mouse clipboard-paste clipboard-copy")
		text = secret("copy-granted")
		x.own("CLIPBOARD", text)
		waitCutText(t, u, text)
	})

	t.Run("clipboard-copy extended", func(t *testing.T) {
		allow(t, "keyboard mouse clipboard-paste")
		o, u := connect(t, owner, encExtendedClipboard), connect(t, user, encExtendedClipboard)
		// The owner answers the server's capabilities as noVNC does (no
		// unsolicited transfers); berthtest2 asks for unsolicited
		// transfers, and asks for the clipboard and a notification.
		caps := func(p *rfbPeer, size uint32) {
			m := p.next(10*time.Second, "the server's clipboard capabilities")
			if !m.ext || m.flags&clipCaps == 0 {
				t.Fatalf("%s: first message %+v, want clipboard capabilities", p.name, m)
			}
			p.extClipboard(clipCaps|clipRequest|clipPeek|clipNotify|clipProvide|clipText, binary.BigEndian.AppendUint32(nil, size))
		}
		caps(o, 0)
		caps(u, 1<<20)
		// Xvnc must have read both answers before the copy: a change it
		// announces before reading a client's capabilities goes to that
		// client as a classic ServerCutText, not as a notification. A
		// fence's answer comes after every message sent before it.
		o.sync()
		u.sync()
		text := secret("copy-ext")
		x.own("CLIPBOARD", text)
		// The owner is notified, asks, and gets the text.
		for {
			m := o.next(15*time.Second, "a clipboard notification")
			if m.ext && m.flags&clipNotify != 0 && m.flags&clipText != 0 {
				break
			}
		}
		o.extClipboard(clipRequest|clipText, nil)
		for {
			m := o.next(15*time.Second, "the clipboard's text")
			if m.ext && m.flags&clipProvide != 0 {
				if string(m.data) != text {
					t.Fatalf("owner got %q, want %q", m.data, text)
				}
				break
			}
		}
		u.extClipboard(clipRequest|clipText, nil)
		u.extClipboard(clipPeek, nil)
		for _, m := range u.sync() {
			if m.typ == 3 && (!m.ext || m.flags&(clipNotify|clipProvide) != 0) {
				t.Fatalf("a user without clipboard-copy received %+v", m)
			}
		}
	})

	t.Run("clipboard-paste", func(t *testing.T) {
		allow(t, "keyboard mouse clipboard-copy")
		o, u := connect(t, owner), connect(t, user, encExtendedClipboard)
		u.next(10*time.Second, "the server's clipboard capabilities")
		u.extClipboard(clipCaps|clipRequest|clipPeek|clipNotify|clipProvide|clipText, binary.BigEndian.AppendUint32(nil, 0))
		before, beforePrimary := secret("clipboard"), secret("primary")
		x.own("CLIPBOARD", before)
		x.own("PRIMARY", beforePrimary)
		// berthtest2 pastes, classic and extended (notify, then provide).
		u.cutText(secret("paste"))
		u.extClipboard(clipNotify|clipText, nil)
		u.provide(secret("paste-ext"))
		u.sync()
		for sel, want := range map[string]string{"CLIPBOARD": before, "PRIMARY": beforePrimary} {
			if w := x.owner(sel); w != x.win {
				t.Errorf("a user without clipboard-paste took the %s selection (owner %d)", sel, w)
			}
			if got, err := x.read(sel); err != nil || got != want {
				t.Errorf("%s holds %q (%v) after a paste by a user without clipboard-paste, want %q", sel, got, err, want)
			}
		}
		// The owner's paste lands.
		pasted := secret("owner-paste")
		o.cutText(pasted)
		o.sync()
		poll.Until(t, 10*time.Second, "the owner's paste in CLIPBOARD", func() bool {
			got, err := x.read("CLIPBOARD")
			return err == nil && got == pasted
		})
	})

	t.Run("keyboard", func(t *testing.T) {
		allow(t, "mouse clipboard-copy clipboard-paste")
		o, u := connect(t, owner), connect(t, user)
		idle := x.keymap()
		// Keys pressed and left down: KeyEvent and QEMU's extended event.
		u.key(true, 'a')
		u.qemuKey(true, 'b', 0x30)
		u.sync()
		if got := x.keymap(); !bytes.Equal(got, idle) {
			t.Fatalf("a user without keyboard pressed keys: keymap %x, was %x", got, idle)
		}
		o.key(true, 'a')
		poll.Until(t, 10*time.Second, "the owner's key down", func() bool { return !bytes.Equal(x.keymap(), idle) })
		o.key(false, 'a')
		poll.Until(t, 10*time.Second, "the owner's key up", func() bool { return bytes.Equal(x.keymap(), idle) })
	})

	t.Run("mouse", func(t *testing.T) {
		allow(t, "keyboard clipboard-copy clipboard-paste")
		o, u := connect(t, owner), connect(t, user)
		x.warp(11, 12)
		u.pointer(1, 300, 200) // button 1 down, moved
		u.pointer(0, 301, 201)
		u.sync()
		if px, py, mask := x.pointer(); px != 11 || py != 12 || mask&0x1f00 != 0 {
			t.Fatalf("a user without mouse moved the pointer to %d,%d (buttons %#x)", px, py, mask)
		}
		o.pointer(0, 300, 200)
		poll.Until(t, 10*time.Second, "the owner's pointer at 300,200", func() bool {
			px, py, _ := x.pointer()
			return px == 300 && py == 200
		})
	})

	t.Run("view-only", func(t *testing.T) {
		allow(t, "")
		o, u := connect(t, owner, encExtendedDesktop), connect(t, user, encExtendedDesktop)
		w, h := x.size()
		idle := x.keymap()
		x.warp(21, 22)
		u.setDesktopSize(1024, 768)
		u.key(true, 'c')
		u.pointer(0, 500, 400)
		u.cutText(secret("view-only"))
		u.sync()
		if gw, gh := x.size(); gw != w || gh != h {
			t.Errorf("a view-only user resized the desktop to %dx%d", gw, gh)
		}
		if px, py, _ := x.pointer(); px != 21 || py != 22 || !bytes.Equal(x.keymap(), idle) {
			t.Errorf("a view-only user moved the pointer (%d,%d) or pressed keys", px, py)
		}
		o.setDesktopSize(1024, 768)
		poll.Until(t, 10*time.Second, "the owner's desktop size", func() bool {
			gw, gh := x.size()
			return gw == 1024 && gh == 768
		})
	})

	t.Run("input hidden in the extended clipboard", func(t *testing.T) {
		// TigerVNC reads the flags of an extended clipboard message (and a
		// caps message's sizes) and nothing more: bytes beyond are read as
		// the next message. A user without keyboard and mouse hides a key
		// press in capabilities (which everyone may send) and a pointer
		// motion in a notify (which clipboard-paste allows); the gateway
		// closes each connection and nothing reaches the session.
		allow(t, "clipboard-copy clipboard-paste")
		idle := x.keymap()
		x.warp(31, 32)
		key := binary.BigEndian.AppendUint32([]byte{4, 1, 0, 0}, 'k')
		ptr := []byte{5, 0, 1, 144, 0, 200} // to 400,200
		for _, c := range []struct {
			name  string
			flags uint32
			body  []byte
		}{
			{"caps", clipCaps | clipText, append(binary.BigEndian.AppendUint32(nil, 0), key...)},
			{"notify", clipNotify | clipText, ptr},
		} {
			u := connect(t, user, encExtendedClipboard)
			u.extClipboard(c.flags, c.body)
			// A fence: its answer says the server handled the message;
			// the end of the connection that the gateway refused it.
			msg := binary.BigEndian.AppendUint32([]byte{248, 0, 0, 0}, fenceRequest|fenceBlockBefore)
			u.write(append(msg, 0))
			closed := false
			select {
			case <-u.msgs:
			case <-u.errc:
				closed = true
			case <-time.After(10 * time.Second):
				t.Fatalf("%s: no fence answer and no end of the connection", c.name)
			}
			if px, py, _ := x.pointer(); px != 31 || py != 32 || !bytes.Equal(x.keymap(), idle) {
				t.Errorf("input hidden in a clipboard %s message reached the session: pointer %d,%d, keymap %x (was %x)", c.name, px, py, x.keymap(), idle)
			}
			if !closed {
				t.Errorf("%s: the gateway forwarded a clipboard message with hidden input and the connection goes on", c.name)
			}
		}
	})

	t.Run("file transfer", func(t *testing.T) {
		// TigerVNC has no file transfer and the driver claims none: a
		// TightVNC FileListRequest, even from the owner (whose builtin
		// includes file-download and file-upload), ends the connection.
		o := connect(t, owner)
		o.send([]byte{132, 0, 0, 0, 0, 0, 0, 1, '/'})
		select {
		case m := <-o.msgs:
			t.Fatalf("the connection goes on after a file transfer request: %+v", m)
		case <-o.errc:
		case <-time.After(10 * time.Second):
			t.Fatal("the connection goes on after a file transfer request")
		}
	})
}

// TestGateway_RealXvncResizeCrash sends SetDesktopSize from a client that
// did not list ExtendedDesktopSize: TigerVNC 1.12's Xvnc crashes on it (the
// session and its programs die), so the gateway refuses it and closes that
// connection; the session lives on.
func TestGateway_RealXvncResizeCrash(t *testing.T) {
	d, b, srv := realSessionEnv(t)
	ctx := context.Background()
	id := "gw-resize-" + time.Now().Format("150405.000")[7:]
	const owner = "berthtest1"
	cctx, cancel := context.WithTimeout(ctx, 40*time.Second)
	defer cancel()
	if err := d.Create(cctx, agent.CreateRequest{ID: id, Owner: owner, Name: "resize", MaxConcurrentClients: 5}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Delete(ctx, id) })
	sess, _ := d.Session(id)
	x := openDisplay(t, sess.PID)
	w, h := x.size()

	p := connectPeer(t, b, srv, id, owner, owner) // Fence only
	p.sync()
	p.setDesktopSize(1024, 768)
	select {
	case m := <-p.msgs:
		t.Fatalf("the connection goes on after SetDesktopSize without ExtendedDesktopSize: %+v", m)
	case <-p.errc:
	case <-time.After(10 * time.Second):
		t.Fatal("the connection goes on after SetDesktopSize without ExtendedDesktopSize")
	}
	// The session is alive and unchanged: a new client is answered, the
	// X server too.
	q := connectPeer(t, b, srv, id, owner, owner, encExtendedDesktop)
	q.sync()
	if gw, gh := x.size(); gw != w || gh != h {
		t.Errorf("desktop is %dx%d, was %dx%d", gw, gh, w, h)
	}
	if _, err := os.Stat("/proc/" + strconv.Itoa(sess.PID)); err != nil {
		t.Errorf("Xvnc is gone: %v", err)
	}
	if s, ok := d.Session(id); !ok || s.PID != sess.PID {
		t.Error("the session is no longer READY with the same Xvnc")
	}
}

// waitCutText waits for a classic ServerCutText of text.
func waitCutText(t *testing.T, p *rfbPeer, text string) {
	t.Helper()
	for {
		m := p.next(15*time.Second, "the session's clipboard "+text)
		if m.typ == 3 && !m.ext && string(m.data) == text {
			return
		}
	}
}
