//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package sqlite

import "os"

// tryLock does not lock on this platform: nothing keeps two brokers from
// opening one database file with their session mirrors, so run only one.
func tryLock(f *os.File, exclusive bool) (bool, error) { return true, nil }

// unlock does nothing on this platform.
func unlock(f *os.File) error { return nil }
