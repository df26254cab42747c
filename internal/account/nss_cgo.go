//go:build cgo && linux

package account

/*
#include <errno.h>
#include <pwd.h>
#include <stdlib.h>
#include <sys/types.h>
*/
import "C"

import (
	"fmt"
	"syscall"
	"unsafe"
)

// lookupPasswd asks the name service (getpwnam_r) for a user: /etc/passwd
// or any other source nsswitch.conf names (SSSD, winbind, LDAP), with the
// login shell, which os/user does not give.
func lookupPasswd(name string) (passwdEntry, error) {
	cname := C.CString(name)
	defer C.free(unsafe.Pointer(cname))
	var pwd C.struct_passwd
	var result *C.struct_passwd
	for size := C.size_t(4096); size <= 1<<20; size *= 4 {
		buf := C.malloc(size)
		rc := C.getpwnam_r(cname, &pwd, (*C.char)(buf), size, &result)
		if rc == C.ERANGE {
			C.free(buf)
			continue
		}
		if rc != 0 {
			C.free(buf)
			return passwdEntry{}, fmt.Errorf("account policy: cannot look up %q: %v", name, syscall.Errno(rc))
		}
		if result == nil {
			C.free(buf)
			return passwdEntry{}, unknownUser(name)
		}
		pw := passwdEntry{
			name:  C.GoString(pwd.pw_name),
			uid:   int(pwd.pw_uid),
			gid:   int(pwd.pw_gid),
			shell: C.GoString(pwd.pw_shell),
		}
		C.free(buf)
		return pw, nil
	}
	return passwdEntry{}, fmt.Errorf("account policy: cannot look up %q: entry too large", name)
}
