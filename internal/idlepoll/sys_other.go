//go:build !linux

package idlepoll

import "errors"

func newSysPoller() (sysPoller, error) {
	return nil, errors.ErrUnsupported
}
