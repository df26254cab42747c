// Command berth-agent runs the berth Session Manager agent on a desktop host:
// it keeps a link to the broker, reports the host and its sessions, and starts
// and ends sessions with a driver. Run berth-agent --help for the drivers in
// this build; docs/agent-config.md describes the configuration file.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/berth-dev/berth/internal/login"
	"github.com/berth-dev/berth/internal/userfiles"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	// Desktops start through a helper that is this program run again
	// (package login): that run ends here.
	login.Main()
	// The files panel reads and writes as the session's owner through a helper
	// that is this program run again (package userfiles): that run ends here.
	userfiles.Main()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run is main without the process: it returns the exit code (0, 1 for a
// failure, 2 for a usage error).
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	m := NewMain()
	m.Stdout, m.Stderr = stdout, stderr
	if err := m.ParseFlags(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return exitCode(err, stderr)
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	if err := m.Run(ctx); err != nil {
		return exitCode(err, stderr)
	}
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-hup: // logrotate's postrotate, or an operator: start a new agent.log
			if err := m.RotateLog(); err != nil {
				m.Logger.Error("rotate log file", "err", err)
			}
		}
	}
	m.Logger.Info("shutting down")
	if err := m.Close(); err != nil {
		fmt.Fprintf(stderr, "berth-agent: %v\n", err)
		return 1
	}
	return 0
}

// exitError ends the process with a code and no message.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit %d", e.code) }

// usageError is a command-line mistake (exit code 2).
type usageError string

func (e usageError) Error() string { return string(e) }

func exitCode(err error, stderr io.Writer) int {
	var ee exitError
	var ue usageError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.code
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "berth-agent: %v (see --help)\n", err)
		return 2
	default:
		fmt.Fprintf(stderr, "berth-agent: %v\n", err)
		return 1
	}
}
