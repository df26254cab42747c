//go:build !cgo || !linux

package login

import "errors"

// errNoCgo: PAM is reached through cgo; a build without it has no PAM.
var errNoCgo = errors.New("this build of berth has no PAM support (built without cgo)")

const (
	pamTTY      = 3
	pamXDisplay = 11
)

func loadPAM() error { return errNoCgo }

type pamTx struct{}

func pamStart(service, user string) (*pamTx, error) { return nil, errNoCgo }

func (tx *pamTx) setItem(item int, v string) error { return errNoCgo }
func (tx *pamTx) acctMgmt() (bool, error)          { return false, errNoCgo }
func (tx *pamTx) setCred() error                   { return errNoCgo }
func (tx *pamTx) openSession() error               { return errNoCgo }
func (tx *pamTx) envList() []string                { return nil }
func (tx *pamTx) end(status int)                   {}
