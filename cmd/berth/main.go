// Command berth is the berth Session Manager CLI. It is command-compatible with
// Amazon's dcvsm: berth [global options] <command> [options], with the same
// commands, options and dcvsmcli.conf file, and prints the broker's JSON
// answers (or, with --output table, a readable table). It uses only the public
// api package.
package main

import (
	"context"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.Environ())
	stop()
	os.Exit(code)
}

// run is main without the process: env is the environment as os.Environ gives
// it, and the result is the exit code.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, env []string) int {
	c := newCLI(stdin, stdout, stderr, env)
	return c.exitCode(ctx, c.main(ctx, args))
}

// newCLI returns a cli for one run.
func newCLI(stdin io.Reader, stdout, stderr io.Writer, env []string) *cli {
	c := &cli{
		stdin: stdin, stdout: stdout, stderr: stderr,
		env:        map[string]string{},
		flagValues: map[string]string{},
		sleep:      sleepCtx,
	}
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok {
			c.env[k] = v
		}
	}
	if exe, err := os.Executable(); err == nil {
		c.exe = exe
	}
	if f, ok := stderr.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			c.stderrTTY = true
		}
	}
	return c
}
