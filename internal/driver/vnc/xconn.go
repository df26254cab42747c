package vnc

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"syscall"
	"time"

	"github.com/jezek/xgb"
	"golang.org/x/sys/unix"
)

const (
	cookieName = "MIT-MAGIC-COOKIE-1"
	familyWild = 0xffff
)

// xauthEntry encodes one Xauthority entry: FamilyWild, any display, so that
// it matches however a client names the display. (Xvnc accepts every cookie
// of its -auth file.)
func xauthEntry(cookie []byte) []byte {
	var b bytes.Buffer
	put := func(v []byte) {
		binary.Write(&b, binary.BigEndian, uint16(len(v)))
		b.Write(v)
	}
	binary.Write(&b, binary.BigEndian, uint16(familyWild))
	put(nil) // address
	put(nil) // display number
	put([]byte(cookieName))
	put(cookie)
	return b.Bytes()
}

// writeCookie creates the Xauthority file name inside root (which must not
// exist), owned by o with mode 0600.
func writeCookie(root *os.Root, name string, cookie []byte, o *owner) error {
	f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("write X cookie: %w", err)
	}
	_, err = f.Write(xauthEntry(cookie))
	if err == nil {
		err = f.Chown(o.uid, o.gid)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write X cookie: %w", err)
	}
	return nil
}

// xauth is one entry of an Xauthority file.
type xauth struct {
	family uint16
	addr   string
	number string
	name   string
	data   []byte
}

// readXauth reads an Xauthority file (at most 64 KiB of it) that is a
// regular file owned by uid.
func readXauth(path string, uid int) ([]xauth, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, errors.New("cannot open the X authority file")
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() || int(fi.Sys().(*syscall.Stat_t).Uid) != uid {
		return nil, errors.New("the X authority file is not a regular file of the owner")
	}
	r := io.LimitReader(f, 64<<10)
	get := func() ([]byte, error) {
		var n uint16
		if err := binary.Read(r, binary.BigEndian, &n); err != nil {
			return nil, err
		}
		b := make([]byte, n)
		_, err := io.ReadFull(r, b)
		return b, err
	}
	var out []xauth
	for {
		var e xauth
		if err := binary.Read(r, binary.BigEndian, &e.family); err != nil {
			if len(out) == 0 {
				return nil, errors.New("empty X authority file")
			}
			return out, nil
		}
		var fields [4][]byte
		for i := range fields {
			if fields[i], err = get(); err != nil {
				return nil, errors.New("malformed X authority file")
			}
		}
		e.addr, e.number, e.name, e.data = string(fields[0]), string(fields[1]), string(fields[2]), fields[3]
		out = append(out, e)
	}
}

// setupRequest is an X connection setup request (little-endian, protocol
// 11.0) carrying an MIT-MAGIC-COOKIE-1.
func setupRequest(cookie []byte) []byte {
	pad := func(n int) int { return (n + 3) &^ 3 }
	b := make([]byte, 12+pad(len(cookieName))+pad(len(cookie)))
	b[0] = 'l'
	binary.LittleEndian.PutUint16(b[2:], 11)
	binary.LittleEndian.PutUint16(b[4:], 0)
	binary.LittleEndian.PutUint16(b[6:], uint16(len(cookieName)))
	binary.LittleEndian.PutUint16(b[8:], uint16(len(cookie)))
	copy(b[12:], cookieName)
	copy(b[12+pad(len(cookieName)):], cookie)
	return b
}

// authConn replaces xgb's connection setup request (built from the agent's
// own XAUTHORITY, if any) with one that carries the session's cookie, so
// that no process-wide environment has to change.
type authConn struct {
	net.Conn
	cookie []byte
	sent   bool // only touched by the first Write, before xgb starts its goroutines
}

// Write implements net.Conn.
func (c *authConn) Write(b []byte) (int, error) {
	if c.sent {
		return c.Conn.Write(b)
	}
	c.sent = true
	if len(b) < 12 || b[0] != 'l' {
		return 0, errors.New("unexpected X setup request")
	}
	if _, err := c.Conn.Write(setupRequest(c.cookie)); err != nil {
		return 0, err
	}
	return len(b), nil
}

// xConnect connects to display n as a client with cookie. When pid is not 0
// the server must be that process (checked with SO_PEERCRED), so that a
// socket planted by someone else is never trusted. The connection fails
// once deadline passes.
func xConnect(ctx context.Context, n int, cookie []byte, pid int, deadline time.Time) (*xgb.Conn, error) {
	var dialer net.Dialer
	dialer.Deadline = deadline
	conn, err := dialer.DialContext(ctx, "unix", "/tmp/.X11-unix/X"+strconv.Itoa(n))
	if err != nil {
		return nil, fmt.Errorf("connect to display :%d: %w", n, err)
	}
	if pid != 0 {
		cred, err := peerCred(conn.(*net.UnixConn))
		if err != nil || int(cred.Pid) != pid {
			conn.Close()
			return nil, fmt.Errorf("display :%d is not served by the session's X server", n)
		}
	}
	conn.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	c, err := xgb.NewConnNet(&authConn{Conn: conn, cookie: cookie})
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("connect to display :%d: %w", n, err)
	}
	return c, nil
}

// peerCred returns the credentials of a unix socket's peer.
func peerCred(c *net.UnixConn) (*unix.Ucred, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *unix.Ucred
	var cerr error
	err = raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	})
	if err == nil {
		err = cerr
	}
	return cred, err
}
