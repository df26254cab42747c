// Command berth-bench is berth's fleet benchmark: it simulates N agents
// speaking the real protocol against a real berth-broker started as a child
// process, runs the scenarios (connect with registration and with stored
// credentials, idle, create storm, kill and restart, churn) and prints one
// markdown table of the broker's memory, CPU and times. See
// docs/performance.md; `make bench-fleet N=1000` builds and runs it.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/berth-dev/berth/internal/fleetbench"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	if fleetbench.IsProbe() { // the API client berth-bench started for itself
		code := fleetbench.RunProbe(ctx, os.Stdin, os.Stdout)
		stop()
		os.Exit(code)
	}
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run parses the flags, runs the benchmark and prints its table; it
// returns the exit code: 0, 1 when a scenario failed, 2 for bad flags.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("berth-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o fleetbench.Options
	fs.IntVar(&o.Agents, "n", 1000, "number of simulated agents")
	scenarios := fs.String("scenarios", "all", "comma-separated scenarios to run, in this order: "+strings.Join(fleetbench.Scenarios, ", ")+"; or all")
	fs.StringVar(&o.Broker, "broker", "bin/berth-broker", "the berth-broker binary to run")
	fs.StringVar(&o.Store, "store", "sqlite", "the broker's store: sqlite or postgres")
	fs.StringVar(&o.DSN, "dsn", "", "PostgreSQL connection string, to an empty database (with -store postgres)")
	fs.DurationVar(&o.Churn, "duration", 5*time.Minute, "how long the churn scenario runs")
	fs.IntVar(&o.ChurnRate, "churn-rate", 50, "churn: sessions created (and, 10 s later, deleted) per second")
	fs.IntVar(&o.Sessions, "sessions", 10000, "sessions of the create storm (and of the restart scenario without a storm before it)")
	fs.IntVar(&o.StormClients, "storm-clients", 1, "CreateSessions calls of 1,000 the storm keeps in flight at once (1: one after the other)")
	fs.DurationVar(&o.UpdateInterval, "update-interval", 10*time.Second, "the broker's base update interval: its agent-heartbeat-timeout-seconds is three times it (10s: the broker's default); past agent-max-updates-per-second the broker stretches it")
	fs.DurationVar(&o.AgentInterval, "agent-interval", 0, "the agents' own update interval (broker_update_interval); 0: as often as the broker asks")
	fs.DurationVar(&o.IdleWindow, "idle-window", 60*time.Second, "how long the idle scenarios measure the broker's CPU")
	fs.StringVar(&o.LogLevel, "log-level", "info", "the broker's log-level")
	fs.StringVar(&o.WorkDir, "dir", "", "work directory (the broker's working path and broker.log; the agents' state too where there is no tmpfs); default: a temporary one, removed at the end")
	fs.BoolVar(&o.Keep, "keep", false, "keep the temporary work directory and agent state directory")
	fs.IntVar(&o.SimGCPercent, "sim-gogc", 400, "the simulating process's GOGC (its agents share one heap, which real hosts do not); -1: Go's default, as does GOGC in the environment")
	fs.StringVar(&o.AgentStateDir, "agent-state-dir", "", "directory for the simulated agents' state (their credentials); default: a temporary one on /dev/shm when it is a tmpfs, else in the work directory")
	out := fs.String("out", "", "also write the markdown table to this file")
	fs.Func("broker-property", "a `KEY=VALUE` line for the broker's broker.properties, replacing the benchmark's own line of KEY (repeatable), e.g. delete-session-duration-seconds=120", func(v string) error {
		k, val, ok := strings.Cut(v, "=")
		k, val = strings.TrimSpace(k), strings.TrimSpace(val)
		if !ok || k == "" || strings.ContainsAny(k+val, "\r\n") {
			return fmt.Errorf("want KEY=VALUE on one line, got %q", v)
		}
		o.BrokerProperties = append(o.BrokerProperties, k+" = "+val)
		return nil
	})
	fs.Usage = func() {
		fmt.Fprintf(stderr, `Usage: berth-bench [flags]

berth-bench simulates -n agents in this process, each running the real agent
code (internal/agent) with the sim driver over TLS and WebSocket, against a
berth-broker it starts as a child process in a temporary directory, and runs
the scenarios:

  register       every agent registers with the software statement and links
  connect        the broker restarts; every agent connects with its stored credentials
  idle-fixed     the broker's CPU while the agents send the same host report
  idle-changing  the same with a new load figure in every report
  storm          -sessions sessions through CreateSessions until all are READY
  restart        SIGKILL the broker, start it again; checks no session is lost or duplicated
  churn          create and delete sessions at a steady rate for -duration; does RSS plateau?
  pages          DescribeSessions pages against JupyterHub's (needs Debian's jupyterhub)

It raises its open-file limit (soft to hard) for itself and the broker, prints
progress on stderr and one markdown table on stdout. Flags:

`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "berth-bench: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	for _, s := range strings.Split(*scenarios, ",") {
		if s = strings.TrimSpace(s); s != "" {
			o.Scenarios = append(o.Scenarios, s)
		}
	}
	o.Progress = stderr
	rep, err := fleetbench.Run(ctx, o)
	if err != nil {
		fmt.Fprintln(stderr, "berth-bench:", err)
		return 2
	}
	var b strings.Builder
	b.WriteString("## berth fleet benchmark, " + time.Now().UTC().Format("2006-01-02 15:04 UTC") + "\n\n")
	if err := rep.WriteMarkdown(&b); err != nil {
		fmt.Fprintln(stderr, "berth-bench:", err)
		return 1
	}
	fmt.Fprint(stdout, b.String())
	if *out != "" {
		if err := os.WriteFile(*out, []byte(b.String()), 0o644); err != nil {
			fmt.Fprintln(stderr, "berth-bench:", err)
			return 1
		}
	}
	if rep.Failed() {
		return 1
	}
	return 0
}
