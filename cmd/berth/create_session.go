package main

import (
	"context"
	"encoding/base64"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/berth-dev/berth/api"
)

// maxPermissionsFile caps a permissions file; the broker takes 1 MiB bodies.
const maxPermissionsFile = 512 << 10

func createSessionCommand() *command {
	return &command{
		name: "create-session",
		synopsis: "--name NAME --owner USER --type Console|Virtual [--init-file-path PATH] [--autorun-file PATH]\n" +
			"       [--autorun-file-arguments A,B] [--max-concurrent-clients N] [--dcv-gl-enabled] [--permissions-file FILE]\n" +
			"       [--requirements EXPR] [--storage-root PATH] [--enqueue-request BOOL] [--disable-retry-on-failure] [--wait]",
		short:   "create a session (--wait until READY)",
		summary: "Create a session. The broker answers at once with the session CREATING; --wait polls until it is READY.",
		example: "berth create-session --name dev --owner alice --type Virtual --requirements \"tag:gpu = 'yes'\" --wait",
		setup: func(c *cli, fs *flag.FlagSet) action {
			name := fs.String("name", "", "session `NAME` (required)")
			owner := fs.String("owner", "", "`USER` who owns the session; must exist on the server (required)")
			typ := &choiceValue{choices: []string{"Console", "Virtual"}}
			fs.Var(typ, "type", "session `TYPE`: Console or Virtual, in any case (required)")
			initFile := fs.String("init-file-path", "", "init script `PATH`, relative to the agent's init folder (Linux virtual sessions)")
			autorun := fs.String("autorun-file", "", "`PATH` of a file to run in the session, relative to the agent's autorun folder")
			var autorunArgs listValue
			fs.Var(&autorunArgs, "autorun-file-arguments", "comma-separated `ARGS` for --autorun-file (Linux virtual sessions)")
			maxClients := &intValue{min: 1, max: 100}
			fs.Var(maxClients, "max-concurrent-clients", "most clients connected at once, `N` from 1 to 100")
			alias(fs, "max-concurrents-clients", "max-concurrent-clients")
			alias(fs, "max_concurrent-clients", "max-concurrent-clients")
			gl := fs.Bool("dcv-gl-enabled", false, "enable DCV GL (virtual sessions)")
			perms := fs.String("permissions-file", "", "DCV permissions `FILE` to apply, - for stdin (sent base64-encoded)")
			reqs := fs.String("requirements", "", "placement `EXPR` a server must meet, e.g. \"server:Host.Os.Family = 'linux'\"")
			storage := fs.String("storage-root", "", "`PATH` of the session's storage folder")
			enqueue := &boolValue{}
			fs.Var(enqueue, "enqueue-request", "true (a `BOOL`) queues the request while no server can take it (default false)")
			noRetry := fs.Bool("disable-retry-on-failure", false, "do not retry on another server when creation fails")
			wait := fs.Bool("wait", false, "poll until the session is READY and print it; exit 1 if it is deleted instead")
			waitTimeout := fs.Duration("wait-timeout", 15*time.Minute, "give up --wait after `DURATION`")
			return func(ctx context.Context, _ []string) error {
				example := "e.g. berth create-session --name dev --owner alice --type Virtual"
				for _, r := range []struct{ opt, val, what string }{
					{"name", *name, "--name NAME"}, {"owner", *owner, "--owner USER"}, {"type", typ.v, "--type Console or --type Virtual"},
				} {
					if r.val == "" {
						return usagef("--%s is required; pass %s (%s)", r.opt, r.what, example)
					}
				}
				if *waitTimeout <= 0 {
					return usagef("--wait-timeout %s: must be positive; e.g. --wait-timeout 10m", *waitTimeout)
				}
				req := api.CreateSessionRequest{
					Name: *name, Owner: *owner, Type: strings.ToUpper(typ.v),
					DcvGlEnabled: *gl, MaxConcurrentClients: maxClients.ptr(),
					InitFile: *initFile, AutorunFile: *autorun, AutorunFileArguments: autorunArgs.items,
					Requirements: *reqs, EnqueueRequest: enqueue.b, DisableRetryOnFailure: *noRetry, StorageRoot: *storage,
				}
				if *perms != "" {
					b, err := c.readInput("permissions-file", *perms, "a readable DCV permissions file")
					if err != nil {
						return err
					}
					req.PermissionsFile = base64.StdEncoding.EncodeToString(b)
				}
				cl, err := c.connect(ctx)
				if err != nil {
					return err
				}
				resp, err := cl.CreateSessions(ctx, []api.CreateSessionRequest{req})
				if err != nil {
					return err
				}
				raw := c.rt.lastBody()
				var failed []string
				for _, f := range resp.UnsuccessfulList {
					failed = append(failed, failureLine(f.CreateSessionRequestData.Name, "", f.FailureReason))
				}
				if len(failed) > 0 || !*wait || len(resp.SuccessfulList) == 0 {
					if err := c.printSessions(raw, resp, resp.SuccessfulList, failed, resp.UnsuccessfulList); err != nil {
						return err
					}
					if len(failed) > 0 {
						return &itemsError{lines: failed}
					}
					return nil
				}
				wctx, cancel := context.WithTimeout(ctx, *waitTimeout)
				defer cancel()
				return c.waitReady(wctx, ctx, cl, resp.SuccessfulList[0].Id, *waitTimeout)
			}
		},
	}
}

// printSessions prints a CreateSessions answer.
func (c *cli) printSessions(raw []byte, resp any, ok []api.Session, failed []string, bad []api.UnsuccessfulCreateSession) error {
	if !c.table() {
		return c.printJSON(raw, resp)
	}
	if err := sessionsTable(c.stdout, ok, ""); err != nil {
		return err
	}
	if len(bad) > 0 {
		var results []result
		for _, f := range bad {
			results = append(results, result{id: f.CreateSessionRequestData.Name, reason: f.FailureReason})
		}
		return resultsTable(c.stdout, "NAME", results)
	}
	return nil
}

// waitReady polls DescribeSessions until the session is READY (print it, nil)
// or DELETING/DELETED (print it, error with its StateReason). wctx bounds the
// wait; ctx is the run's context (interrupts).
func (c *cli) waitReady(wctx, ctx context.Context, cl *api.Client, id string, timeout time.Duration) error {
	start := time.Now()
	interval := 500 * time.Millisecond
	last := ""
	defer c.endProgress()
	for {
		resp, err := cl.DescribeSessions(wctx, api.DescribeSessionsRequest{SessionIds: []string{id}})
		if err != nil {
			if ctx.Err() == nil && wctx.Err() != nil {
				return fmt.Errorf("session %s is still %s after %s; check it with 'berth describe-sessions --session-ids %s'", id, orNone(last), timeout, id)
			}
			return err
		}
		raw := c.rt.lastBody()
		var s *api.Session
		for i := range resp.Sessions {
			if resp.Sessions[i].Id == id {
				s = &resp.Sessions[i]
			}
		}
		if s == nil {
			return fmt.Errorf("session %s is gone: the broker no longer lists it", id)
		}
		last = s.State
		if s.Substate != "" {
			last += "/" + s.Substate
		}
		c.progress(fmt.Sprintf("waiting for session %s: %s (%s)", id, last, time.Since(start).Round(time.Second)))
		switch s.State {
		case api.StateReady, api.StateDeleted, api.StateDeleting:
			c.endProgress()
			if c.table() {
				err = sessionsTable(c.stdout, []api.Session{*s}, "")
			} else {
				err = c.printJSON(raw, resp)
			}
			if err != nil {
				return err
			}
			if s.State == api.StateReady {
				return nil
			}
			reason := s.StateReason
			if reason == "" {
				reason = "no reason given"
			}
			return fmt.Errorf("session %s is %s: %s", id, s.State, reason)
		}
		if err := c.sleep(wctx, interval); err != nil {
			if ctx.Err() == nil {
				return fmt.Errorf("session %s is still %s after %s; check it with 'berth describe-sessions --session-ids %s'", id, last, timeout, id)
			}
			return err
		}
		interval = min(interval*3/2, 5*time.Second)
	}
}

// progress shows a progress line on stderr: rewritten in place on a terminal,
// one line per change otherwise.
func (c *cli) progress(line string) {
	if c.stderrTTY {
		fmt.Fprintf(c.stderr, "\r\x1b[K%s", line)
		c.progressShown = true
		return
	}
	// Without a terminal, print a line only when the state part changes.
	state, _, _ := strings.Cut(line, " (")
	if state != c.progressLast {
		fmt.Fprintln(c.stderr, line)
		c.progressLast = state
	}
}

// endProgress ends an in-place progress line.
func (c *cli) endProgress() {
	if c.progressShown {
		fmt.Fprintln(c.stderr)
		c.progressShown = false
	}
}

// sleepCtx waits d or until ctx is done.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// readInput reads the file at path (- for stdin) for option opt.
func (c *cli) readInput(opt, path, what string) ([]byte, error) {
	var r io.Reader
	if path == "-" {
		r = c.stdin
	} else {
		f, err := os.Open(path)
		if err != nil {
			return nil, usagef("--%s %s: %s; pass %s", opt, quoteArg(path), fsReason(err), what)
		}
		defer f.Close()
		if st, err := f.Stat(); err == nil && st.IsDir() {
			return nil, usagef("--%s %s: is a directory; pass %s", opt, quoteArg(path), what)
		}
		r = f
	}
	b, err := io.ReadAll(io.LimitReader(r, maxPermissionsFile+1))
	if err != nil {
		return nil, usagef("--%s %s: %s; pass %s", opt, quoteArg(path), fsReason(err), what)
	}
	if len(b) > maxPermissionsFile {
		return nil, usagef("--%s %s: larger than %d KiB; pass %s", opt, quoteArg(path), maxPermissionsFile>>10, what)
	}
	return b, nil
}
