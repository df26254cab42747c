//go:build !cgo || !linux

package account

// lookupPasswd reads /etc/passwd: without cgo the name service's other
// sources are out of reach (as they are for os/user).
func lookupPasswd(name string) (passwdEntry, error) {
	pw, ok, err := findPasswd("/etc/passwd", name)
	if err != nil {
		return passwdEntry{}, err
	}
	if !ok {
		return passwdEntry{}, unknownUser(name)
	}
	return pw, nil
}
