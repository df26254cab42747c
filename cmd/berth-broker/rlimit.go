package main

import (
	"log/slog"
	"syscall"
)

// raiseOpenFileLimit raises the soft limit of open files to the hard limit
// (each agent link and client connection holds one: 10,000 agents need
// more than the usual soft limit of 1024) and logs the limit, with a warning
// when it is below what the connector limits allow. The Go runtime already
// raises it at start on Linux; this makes it explicit, logged and checked.
// It returns the soft limit in force.
func raiseOpenFileLimit(log *slog.Logger, want int) uint64 {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		log.Warn("cannot read the open file limit", "err", err)
		return 0
	}
	if lim.Cur < lim.Max {
		raised := lim
		raised.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised); err != nil {
			log.Warn("cannot raise the open file limit", "soft", lim.Cur, "hard", lim.Max, "err", err)
		} else {
			lim = raised
		}
	}
	if want > 0 && lim.Cur < uint64(want) {
		log.Warn("open file limit below the connector limits: raise LimitNOFILE (systemd) or ulimit -n",
			"limit", lim.Cur, "connector_limits", want)
	} else {
		log.Info("open file limit", "limit", lim.Cur)
	}
	return lim.Cur
}
