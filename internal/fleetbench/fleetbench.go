// Package fleetbench is berth's fleet benchmark: one process simulates N
// agents speaking the real protocol (internal/agent with the sim driver:
// TLS, WebSocket, hello, updates, commands) against a real berth-broker
// binary started as a child process, and measures the broker through its
// API and /proc: memory, CPU, and the times until servers are AVAILABLE and
// sessions READY. cmd/berth-bench runs it (make bench-fleet); the scenarios
// and how to read the table are in docs/performance.md.
//
// The sim driver runs no desktop: these numbers are the broker's and the
// link's, never a desktop's.
package fleetbench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/berth-dev/berth/api"
)

// Scenario names, in the order they run.
const (
	ScenarioRegister     = "register"
	ScenarioConnect      = "connect"
	ScenarioIdleFixed    = "idle-fixed"
	ScenarioIdleChanging = "idle-changing"
	ScenarioStorm        = "storm"
	ScenarioRestart      = "restart"
	ScenarioChurn        = "churn"
	ScenarioPages        = "pages"
)

// Scenarios lists every scenario, in the order they run.
var Scenarios = []string{ScenarioRegister, ScenarioConnect, ScenarioIdleFixed, ScenarioIdleChanging,
	ScenarioStorm, ScenarioRestart, ScenarioChurn, ScenarioPages}

// Options configure a run. Zero values take the defaults named.
type Options struct {
	// Agents is the number of simulated agents (1000).
	Agents int
	// Scenarios to run; empty or "all" runs every one.
	Scenarios []string
	// Broker is the berth-broker binary (bin/berth-broker).
	Broker string
	// Store is "sqlite" (the default) or "postgres"; DSN is PostgreSQL's
	// connection string, to an empty database.
	Store, DSN string
	// UpdateInterval is the broker's base update interval (10 s, its
	// default): its agent-heartbeat-timeout-seconds is set to three times
	// it. The broker stretches it for a fleet past its
	// agent-max-updates-per-second.
	UpdateInterval time.Duration
	// AgentInterval is the agents' own update interval (their
	// broker_update_interval): 0 (the default) follows the broker, as an
	// agent that does not set it does.
	AgentInterval time.Duration
	// IdleWindow is what the idle scenarios measure CPU over (60 s).
	IdleWindow time.Duration
	// Sessions is the create storm's size, and the sessions the restart
	// scenario checks when no storm ran before it (10,000).
	Sessions int
	// StormClients is how many CreateSessions calls of the storm (and of
	// the sessions the restart scenario makes) are in flight at once (1:
	// each call after the last one's answer, as one client sends them).
	StormClients int
	// Churn is how long the churn scenario runs (5 min), ChurnRate its
	// creates per second (50); each churn session is deleted 10 s after
	// it was created.
	Churn     time.Duration
	ChurnRate int
	// LogLevel is the broker's log-level (info).
	LogLevel string
	// BrokerProperties are extra "key = value" lines of the broker's
	// broker.properties; one replaces the benchmark's own line of its key.
	// E.g. delete-session-duration-seconds = 120, for a churn that reaches
	// its steady state in minutes.
	BrokerProperties []string
	// WorkDir holds the broker's working path (and the agents' state
	// directories when AgentStateDir is "" and there is no tmpfs); ""
	// makes a temporary directory, removed at the end unless Keep.
	WorkDir string
	Keep    bool
	// AgentStateDir holds the simulated agents' state directories (each
	// registering agent writes its credentials there, fsynced and renamed
	// into place). "" makes a temporary directory on /dev/shm when that is
	// a writable tmpfs, else in WorkDir: ten thousand simulated hosts
	// writing into one directory of the broker's disk cost the kernel
	// seconds of CPU that a fleet of real hosts, each with its own disk,
	// never takes from the broker (a 10,000-agent registration took 13.6 s
	// with the state on the broker's disk, 10.0 s on tmpfs, side by side).
	AgentStateDir string
	// SimGCPercent is the simulating process's GOGC while it runs (400;
	// a negative value leaves Go's default, and so does GOGC set in the
	// environment). N agents in one process share one heap of about
	// 100 KB an agent, which the GC scans over and over; N real hosts each
	// have a small heap of their own, and none of that work on the broker's
	// cores. At 10,000 agents the GC took about a fifth of the simulating
	// process's CPU in a restart at Go's default.
	SimGCPercent int
	// Progress receives a line now and then on long work; nil discards.
	Progress io.Writer
}

// stormClients says how the storm's calls are sent.
func stormClients(k int) string {
	if k <= 1 {
		return "one after the other"
	}
	return fmt.Sprintf("%d in flight at once", k)
}

// churnLifetime is how long a churn session lives before it is deleted.
const churnLifetime = 10 * time.Second

// batchSize is the largest CreateSessions/DeleteSessions call and
// Describe page (the API's bound).
const batchSize = 1000

func (o Options) withDefaults() Options {
	if o.Agents <= 0 {
		o.Agents = 1000
	}
	if o.Broker == "" {
		o.Broker = "bin/berth-broker"
	}
	if o.Store == "" {
		o.Store = "sqlite"
	}
	if o.UpdateInterval <= 0 {
		o.UpdateInterval = 10 * time.Second
	}
	if o.IdleWindow <= 0 {
		o.IdleWindow = 60 * time.Second
	}
	if o.StormClients <= 0 {
		o.StormClients = 1
	}
	if o.Sessions <= 0 {
		o.Sessions = 10000
	}
	if o.Churn <= 0 {
		o.Churn = 5 * time.Minute
	}
	if o.ChurnRate <= 0 {
		o.ChurnRate = 50
	}
	if o.LogLevel == "" {
		o.LogLevel = "info"
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	return o
}

// selected returns the scenarios to run, in their order, or an error
// naming an unknown one.
func (o Options) selected() ([]string, error) {
	if len(o.Scenarios) == 0 || slices.Contains(o.Scenarios, "all") {
		return Scenarios, nil
	}
	for _, s := range o.Scenarios {
		if !slices.Contains(Scenarios, s) {
			return nil, fmt.Errorf("unknown scenario %q (known: %s, all)", s, strings.Join(Scenarios, ", "))
		}
	}
	var out []string
	for _, s := range Scenarios {
		if slices.Contains(o.Scenarios, s) {
			out = append(out, s)
		}
	}
	return out, nil
}

// Run runs the selected scenarios and returns their table. It raises the
// open-file limit (soft to hard) for itself and the broker. A scenario
// that fails is reported in its row and the next one runs; Run returns an
// error only when it cannot start at all.
func Run(ctx context.Context, o Options) (*Report, error) {
	o = o.withDefaults()
	names, err := o.selected()
	if err != nil {
		return nil, err
	}
	switch o.Store {
	case "sqlite":
	case "postgres", "postgresql":
		if o.DSN == "" {
			return nil, errors.New("store postgres needs a DSN (an empty database)")
		}
	default:
		return nil, fmt.Errorf("store %q: want sqlite or postgres", o.Store)
	}
	if _, err := os.Stat(o.Broker); err != nil {
		return nil, fmt.Errorf("broker binary: %w (make build)", err)
	}
	if o.Broker, err = filepath.Abs(o.Broker); err != nil {
		return nil, err
	}
	limit, err := raiseFileLimit()
	if err != nil {
		return nil, fmt.Errorf("raise the open-file limit: %w", err)
	}
	dir := o.WorkDir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "berth-bench-"); err != nil {
			return nil, err
		}
		if !o.Keep {
			defer os.RemoveAll(dir)
		}
	} else if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if gc := simGCPercent(o); gc > 0 {
		defer debug.SetGCPercent(debug.SetGCPercent(gc))
	}
	agentDir, err := agentStateDir(o, dir)
	if err != nil {
		return nil, err
	}
	if agentDir != dir && o.AgentStateDir == "" && !o.Keep {
		defer os.RemoveAll(agentDir)
	}
	rep := &Report{Machine: readMachine()}
	rep.Machine.FileLimit = limit
	rep.Settings = settings(o)
	rep.Settings = append(rep.Settings, "the simulated agents' state directories are in "+agentDir)
	if gc := simGCPercent(o); gc > 0 {
		rep.Settings = append(rep.Settings, fmt.Sprintf("the simulating process runs with GOGC=%d (-sim-gogc): its agents share one heap, which real hosts do not", gc))
	}
	b := &bench{o: o, dir: dir, agentDir: agentDir, live: map[string]string{}}
	defer b.close()
	b.progress("work directory %s (broker log: %s)", dir, filepath.Join(dir, "broker.log"))
	for _, name := range names {
		if ctx.Err() != nil {
			break
		}
		b.progress("%s: start", name)
		row := scenarioFuncs[name](b, ctx)
		row.Scenario = name
		if row.Agents == 0 {
			row.Agents = o.Agents
		}
		rep.Rows = append(rep.Rows, row)
		b.progress("%s: done: %s", name, strings.Join(row.cells()[3:], " | "))
	}
	if self, err := readProc(os.Getpid()); err == nil {
		rep.SimPeakMB = float64(self.HWMKB) * 1024 / 1e6
	}
	return rep, nil
}

// simGCPercent returns the GOGC the simulating process sets for itself, or
// 0 to leave the GC alone.
func simGCPercent(o Options) int {
	if o.SimGCPercent < 0 || os.Getenv("GOGC") != "" {
		return 0
	}
	if o.SimGCPercent == 0 {
		return defaultSimGCPercent
	}
	return o.SimGCPercent
}

// defaultSimGCPercent is Options.SimGCPercent's default.
const defaultSimGCPercent = 400

// agentStateDir returns the directory for the agents' state directories:
// o.AgentStateDir (made if missing), else a new temporary one on /dev/shm
// when it is a writable tmpfs, else workDir.
func agentStateDir(o Options, workDir string) (string, error) {
	if o.AgentStateDir != "" {
		if err := os.MkdirAll(o.AgentStateDir, 0o700); err != nil {
			return "", fmt.Errorf("agent state directory: %w", err)
		}
		return filepath.Abs(o.AgentStateDir)
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs("/dev/shm", &st); err != nil || st.Type != tmpfsMagic {
		return workDir, nil
	}
	dir, err := os.MkdirTemp("/dev/shm", "berth-bench-agents-")
	if err != nil {
		return workDir, nil // not writable: the work directory will do
	}
	return dir, nil
}

// tmpfsMagic is statfs's f_type of a tmpfs (linux/magic.h TMPFS_MAGIC).
const tmpfsMagic = 0x01021994

// settings describes the run for the report.
func settings(o Options) []string {
	store := "SQLite"
	if o.Store != "sqlite" {
		store = "PostgreSQL"
	}
	return []string{
		fmt.Sprintf("broker: %s on %s, log-level %s; %d simulated agents in one process (internal/agent with the sim driver: real TLS, WebSocket, hello/update/command), all from 127.0.0.1",
			o.Broker, store, o.LogLevel, o.Agents),
		fmt.Sprintf("broker's base update interval %s (agent-heartbeat-timeout-seconds = 3 × that), stretched past its agent-max-updates-per-second; agents %s; idle CPU is measured over %s; fixed reports send the same host report, changing ones a new load figure every time",
			o.UpdateInterval, agentInterval(o.AgentInterval), o.IdleWindow),
		fmt.Sprintf("create storm: %d sessions in CreateSessions calls of %d, %s; churn: %d creates/s, each session deleted %s after its creation, for %s",
			o.Sessions, batchSize, stormClients(o.StormClients), o.ChurnRate, churnLifetime, o.Churn),
		"times are from the scenario's start (restart: from the SIGKILL); RSS is VmRSS in MB, CPU utime+stime over the window in % of one core",
	}
}

// scenarioFuncs run one scenario each.
var scenarioFuncs = map[string]func(*bench, context.Context) Row{
	ScenarioRegister:     (*bench).register,
	ScenarioConnect:      (*bench).connect,
	ScenarioIdleFixed:    func(b *bench, ctx context.Context) Row { return b.idle(ctx, false) },
	ScenarioIdleChanging: func(b *bench, ctx context.Context) Row { return b.idle(ctx, true) },
	ScenarioStorm:        (*bench).storm,
	ScenarioRestart:      (*bench).restart,
	ScenarioChurn:        (*bench).churn,
	ScenarioPages:        (*bench).pages,
}

// bench is the state one run carries from scenario to scenario: a
// scenario sets up what it needs that an earlier one did not leave.
type bench struct {
	o   Options
	dir string
	// agentDir holds the agents' state directories (agentStateDir).
	agentDir string

	b         *brokerProc
	client    *api.Client
	probe     *prober // the API-client process that watches DescribeServers
	statement string
	f         *fleet
	// registered: the agents hold credentials from a registration.
	registered bool
	// live are the sessions created and not deleted: ID → owner.
	live map[string]string
	// agentsGen numbers the agents' state directories (a new register
	// scenario starts from empty ones).
	agentsGen atomic.Int32
	// warnKinds0 counts the agents' warnings by kind at the scenario's
	// start (fleetMark).
	warnKinds0 map[string]int64
}

// progress writes a progress line.
func (b *bench) progress(format string, args ...any) {
	fmt.Fprintf(b.o.Progress, "%s berth-bench: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// close stops the agents and the broker.
func (b *bench) close() {
	if b.f != nil {
		b.f.stop()
	}
	if b.probe != nil {
		b.probe.close()
	}
	if b.b != nil {
		_ = b.b.stop()
	}
}

// fleetTimeout bounds the wait for every agent to link.
func (b *bench) fleetTimeout() time.Duration {
	return 2*time.Minute + time.Duration(b.o.Agents)*20*time.Millisecond
}

// readyTimeout bounds the wait for n sessions to be READY.
func (b *bench) readyTimeout(n int) time.Duration {
	return 2*time.Minute + time.Duration(n)*20*time.Millisecond
}

// startBroker starts the broker process (writing its configuration on
// first use) and waits until it listens and /health answers.
func (b *bench) startBroker(ctx context.Context) error {
	if b.b == nil {
		bp, err := newBroker(b.o.Broker, b.dir, b.o)
		if err != nil {
			return err
		}
		b.b = bp
	}
	if err := b.b.start(); err != nil {
		return err
	}
	if err := b.b.waitListening(ctx, 2*time.Minute); err != nil {
		return err
	}
	hc, err := api.NewHTTPClient(filepath.Join(b.b.dir, "ca.pem"), false)
	if err != nil {
		return err
	}
	return b.b.waitHealthy(ctx, hc, 2*time.Minute)
}

// ensureBroker starts the broker if it does not run, and prepares the API
// client, the software statement and the simulated agents.
func (b *bench) ensureBroker(ctx context.Context) error {
	if b.b == nil || b.b.exited() {
		if b.b != nil {
			b.progress("the broker is not running (it exited); starting it again")
		}
		if err := b.startBroker(ctx); err != nil {
			return err
		}
	}
	if b.client == nil {
		c, err := b.b.registerClient(ctx)
		if err != nil {
			return err
		}
		b.client = c
	}
	if b.probe == nil {
		p, err := startProber(b.client, filepath.Join(b.b.dir, "ca.pem"))
		if err != nil {
			return err
		}
		b.probe = p
	}
	if b.statement == "" {
		st, err := os.ReadFile(filepath.Join(b.b.dir, "agent-software-statement"))
		if err != nil {
			return fmt.Errorf("the broker's software statement: %w", err)
		}
		b.statement = strings.TrimSpace(string(st))
	}
	if b.f == nil {
		return b.newFleet()
	}
	return nil
}

// newFleet prepares agents with empty state directories.
func (b *bench) newFleet() error {
	gen := b.agentsGen.Add(1)
	f, err := newFleet(filepath.Join(b.agentDir, fmt.Sprintf("agents-%d", gen)), filepath.Join(b.b.dir, "ca.pem"), b.o.Agents, b.o.AgentInterval)
	if err != nil {
		return err
	}
	b.f, b.registered = f, false
	return nil
}

// ensureLinked makes sure the broker runs and every agent is linked and
// its server AVAILABLE, registering the agents first if they never did.
//
// The links that count are those welcomed since it was called, when it
// starts the broker or the agents; otherwise every link that is up, which
// is to the running broker. (It took the time after starting the agents,
// so that agents welcomed before that, on a busy machine, were never
// counted and the wait ran into its timeout.)
func (b *bench) ensureLinked(ctx context.Context) error {
	since := time.Now()
	restarted := b.b == nil || b.b.exited()
	if err := b.ensureBroker(ctx); err != nil {
		return err
	}
	if !b.f.running() {
		if !b.registered {
			b.progress("registering %d agents first (not measured)", b.o.Agents)
		}
		b.f.start(b.b.agentURL(), b.statement)
	} else if !restarted {
		since = time.Time{}
	}
	b.registered = true
	if b.f.linked(since) == b.o.Agents {
		return nil
	}
	_, err := b.waitFleet(ctx, since, "linking")
	return err
}

// fleetTimes are the times waitFleet saw.
type fleetTimes struct {
	first, linked, available time.Time
	slowestPage              pageTime // the slowest DescribeServers page
	availableBeforeLinked    bool
}

// waitFleet waits until every agent has been welcomed since start and
// DescribeServers shows every server AVAILABLE, and returns when each
// happened first. It polls the agents every 10 ms; the probe watches
// DescribeServers (watchServers).
func (b *bench) waitFleet(ctx context.Context, start time.Time, what string) (fleetTimes, error) {
	ctx, cancel := context.WithTimeout(ctx, b.fleetTimeout())
	defer cancel()
	n := b.o.Agents
	var t fleetTimes
	var lastAvail, lastLinked atomic.Int64
	availDone := make(chan error, 1)
	scans, err := b.probe.watchAvailable(n)
	if err != nil {
		return t, err
	}
	defer b.probe.stop()
	go func() {
		lastErr := "none"
		for {
			select {
			case s := <-scans:
				if d := time.Duration(s.Slowest); d > t.slowestPage.total {
					t.slowestPage = pageTime{total: d, firstByte: time.Duration(s.FirstByte)}
				}
				if s.Err != "" {
					lastErr = s.Err
					continue
				}
				lastAvail.Store(int64(s.Available))
				if s.Available >= n {
					t.available = time.Unix(0, s.At)
					t.availableBeforeLinked = lastLinked.Load() < int64(n)
					availDone <- nil
					return
				}
			case <-b.probe.done:
				availDone <- fmt.Errorf("DescribeServers: %d of %d AVAILABLE: %w", lastAvail.Load(), n, b.probe.err)
				return
			case <-ctx.Done():
				availDone <- fmt.Errorf("DescribeServers: %d of %d AVAILABLE (last error: %s)", lastAvail.Load(), n, lastErr)
				return
			}
		}
	}()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	report := time.Now()
	var availErr error
	availSeen := false
	for {
		linked := b.f.linked(start)
		lastLinked.Store(int64(linked))
		if t.first.IsZero() {
			t.first = b.f.firstWelcome(start)
		}
		if linked >= n && t.linked.IsZero() {
			t.linked = time.Now()
		}
		if !availSeen {
			select {
			case availErr = <-availDone:
				availSeen = true
			default:
			}
		}
		if availSeen && !t.linked.IsZero() {
			return t, availErr
		}
		if time.Since(report) >= 5*time.Second {
			report = time.Now()
			b.progress("%s: %d/%d agents linked, %d AVAILABLE, %s; %d agent warnings (last: %s)",
				what, linked, n, lastAvail.Load(), time.Since(start).Round(time.Second), b.f.warns.n.Load(), b.f.warns.lastWarning())
		}
		select {
		case <-ctx.Done():
			if !availSeen {
				availErr = <-availDone
			}
			err := fmt.Errorf("after %s: %d of %d agents linked", time.Since(start).Round(time.Second), linked, n)
			if availErr != nil {
				err = fmt.Errorf("%w; %v", err, availErr)
			}
			return t, err
		case <-tick.C:
		}
	}
}

// sessionScan is what one pass over DescribeSessions saw.
type sessionScan struct {
	state  map[string]string // ID → state, for every listed session
	listed map[string]int    // ID → times listed
}

// scanSessions pages through DescribeSessions.
func (b *bench) scanSessions(ctx context.Context) (sessionScan, error) {
	sc := sessionScan{state: map[string]string{}, listed: map[string]int{}}
	max := batchSize
	next := ""
	for {
		out, err := b.client.DescribeSessions(ctx, api.DescribeSessionsRequest{MaxResults: &max, NextToken: next})
		if err != nil {
			return sc, err
		}
		for _, s := range out.Sessions {
			sc.state[s.Id] = s.State
			sc.listed[s.Id]++
		}
		if out.NextToken == "" {
			return sc, nil
		}
		next = out.NextToken
	}
}

// waitReady waits until DescribeSessions lists every session of ids READY,
// as the API-client process (the probe) sees it: scanning every session's
// page from this process, busy with the simulated agents, took long enough
// to blur the time it measures.
func (b *bench) waitReady(ctx context.Context, ids map[string]string, start time.Time, what string) (time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, b.readyTimeout(len(ids)))
	defer cancel()
	if b.probe == nil {
		return time.Time{}, errors.New("no API-client process")
	}
	report := time.Now()
	ready := 0
	at, err := b.probe.ready(ctx, slices.Collect(maps.Keys(ids)), func(n int) {
		ready = n
		if time.Since(report) >= 5*time.Second {
			report = time.Now()
			b.progress("%s: %d/%d sessions READY, %s", what, n, len(ids), time.Since(start).Round(time.Second))
		}
	})
	if err != nil {
		return time.Time{}, fmt.Errorf("after %s: %d of %d sessions READY: %w", time.Since(start).Round(time.Second), ready, len(ids), err)
	}
	return at, nil
}

// createSessions creates n sessions in calls of batchSize, adds them to
// b.live and returns them; failed counts the items refused. The calls go
// from the API-client process (the probe), as a real client's do from a
// process of its own: in this one they waited for a CPU behind the
// simulated agents' work.
func (b *bench) createSessions(ctx context.Context, n int, name string) (created map[string]string, failed int, reasons map[string]int, err error) {
	if b.probe == nil {
		return nil, 0, nil, errors.New("no API-client process")
	}
	created, failed, reasons, err = b.probe.create(ctx, n, b.o.StormClients, name)
	maps.Copy(b.live, created)
	return created, failed, reasons, err
}

// deleteSessions deletes sessions in calls of batchSize and removes them
// from b.live; it returns the items refused.
func (b *bench) deleteSessions(ctx context.Context, ids map[string]string) (failed int, err error) {
	var reqs []api.DeleteSessionRequest
	flush := func() error {
		if len(reqs) == 0 {
			return nil
		}
		out, err := b.client.DeleteSessions(ctx, reqs)
		reqs = reqs[:0]
		if err != nil {
			return err
		}
		failed += len(out.UnsuccessfulList)
		return nil
	}
	for id, owner := range ids {
		reqs = append(reqs, api.DeleteSessionRequest{SessionId: id, Owner: owner})
		delete(b.live, id)
		if len(reqs) == batchSize {
			if err := flush(); err != nil {
				return failed, err
			}
		}
	}
	return failed, flush()
}

// measure takes the broker's first sample of a scenario and starts
// sampling it; done takes the last and fills row.
type measure struct {
	b     *bench
	start procSample
	self  procSample // this process: the simulated agents and the client
	smp   *sampler
}

func (b *bench) measure(every time.Duration) *measure {
	m := &measure{b: b, smp: startSampler(b.b.pid, every)}
	m.start, _ = readProc(b.b.pid())
	m.self, _ = readProc(os.Getpid())
	return m
}

// done fills the row's RSS, peak and CPU; it returns the samples.
func (m *measure) done(row *Row) []procSample {
	end, err := readProc(m.b.b.pid())
	samples := m.smp.Stop()
	if err != nil {
		row.Notes = append(row.Notes, "broker not running at the end: "+err.Error())
		return samples
	}
	samples = append(samples, end)
	row.RSSMB = float64(end.RSSKB) * 1024 / 1e6
	row.PeakRSSMB = float64(maxRSSKB(samples)) * 1024 / 1e6
	if m.start.At.IsZero() {
		return samples
	}
	row.CPUPercent = cpuPercent(m.start, end)
	row.Window = end.At.Sub(m.start.At)
	if self, err := readProc(os.Getpid()); err == nil && !m.self.At.IsZero() {
		row.Notes = append(row.Notes, fmt.Sprintf("the agents' process used %.0f %% of a core", cpuPercent(m.self, self)))
	}
	return samples
}

// fail records err as the row's failure, with the end of the broker's log
// when the broker died.
func (b *bench) fail(row *Row, err error) Row {
	row.Err = err.Error()
	if b.b != nil && b.b.exited() {
		row.Err += "; the broker exited: " + strings.ReplaceAll(b.b.logTail(5), "\n", " ⏎ ")
	}
	return *row
}

// fleetMark notes the agents' welcomes and warnings at a scenario's start,
// for fleetNotes.
func (b *bench) fleetMark() (welcomes, warns int64) {
	b.warnKinds0, _ = b.f.warns.kindsSince(nil)
	return b.f.welcomes(), b.f.warns.n.Load()
}

// fleetNotes describes agent-side counts since a scenario began: welcomes,
// and warnings by kind, the most frequent first.
func (b *bench) fleetNotes(row *Row, welcomes0, warns0 int64) {
	row.Notes = append(row.Notes, fmt.Sprintf("%d welcomes for %d agents", b.f.welcomes()-welcomes0, b.o.Agents))
	_, top := b.f.warns.kindsSince(b.warnKinds0)
	if len(top) > 4 {
		top = append(top[:4], "…")
	}
	if w := b.f.warns.n.Load() - warns0; w > 0 || len(top) > 0 {
		row.Notes = append(row.Notes, fmt.Sprintf("%d agent warnings; agent log lines by kind: %s", w, strings.Join(top, "; ")))
	}
}

// fillFleetTimes copies waitFleet's times into row.
func fillFleetTimes(row *Row, start time.Time, t fleetTimes) {
	since := func(x time.Time) time.Duration {
		if x.IsZero() {
			return 0
		}
		return x.Sub(start)
	}
	row.ToFirst, row.ToLinked, row.ToAvailable = since(t.first), since(t.linked), since(t.available)
	if p := t.slowestPage; p.total > 0 {
		row.Notes = append(row.Notes, fmt.Sprintf("slowest DescribeServers page %s (its first byte after %s)", fmtDur(p.total), fmtDur(p.firstByte)))
	}
	if t.availableBeforeLinked {
		row.Notes = append(row.Notes, "DescribeServers showed every server AVAILABLE before every agent had linked")
	}
}

// agentInterval describes the agents' own update interval.
func agentInterval(d time.Duration) string {
	if d <= 0 {
		return "report as often as the broker asks (broker_update_interval unset)"
	}
	return fmt.Sprintf("report at least every %s (broker_update_interval)", d)
}
