package gateway

import (
	"errors"
	"net"

	"golang.org/x/sys/unix"
)

// checkPeer checks that the process at the other end of a unix socket runs
// as uid and, unless pid is 0, is pid.
func checkPeer(conn net.Conn, uid, pid int) error {
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		return errors.New("not a unix socket")
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return err
	}
	if cerr != nil {
		return cerr
	}
	if int(cred.Uid) != uid || (pid != 0 && int(cred.Pid) != pid) {
		return errors.New("the VNC socket is not served by the session's server")
	}
	return nil
}
