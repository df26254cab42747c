package fleetbench

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/berth-dev/berth/internal/agent"
	"github.com/berth-dev/berth/internal/agentproto"
	"github.com/berth-dev/berth/internal/driver/sim"
)

// fleet is N simulated agents in this process: each an agent.Agent, the
// real agent code, with a sim driver, speaking TLS and WebSocket to the
// broker. They share one TLS configuration (one root pool) and one logger.
type fleet struct {
	dir      string // holds one state directory per agent
	tls      *tls.Config
	interval time.Duration

	// changing makes the host reports' load figure change at every report.
	changing atomic.Bool
	warns    *countingHandler
	// reports counts the host reports the agents made: one per periodic
	// update, so its rate tells the update interval in effect.
	reports atomic.Int64

	agents []*simAgent
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// simAgent is one simulated agent and what the benchmark watches of it.
type simAgent struct {
	i   int
	id  string
	drv *sim.Driver
	f   *fleet

	up       atomic.Bool
	upAt     atomic.Int64 // UnixNano of the last Welcome
	welcomes atomic.Int64
	// lastReport is when the agent last made a host report (UnixNano),
	// gap the time between its last two: its update interval.
	lastReport, gap atomic.Int64
}

// newFleet prepares n agents (not started); caFile is the broker's CA.
func newFleet(dir, caFile string, n int, interval time.Duration) (*fleet, error) {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", caFile)
	}
	f := &fleet{
		dir:      dir,
		tls:      &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		interval: interval,
		warns:    &countingHandler{},
	}
	for i := range n {
		f.agents = append(f.agents, &simAgent{i: i, id: fmt.Sprintf("fleetbench-%06d", i), drv: sim.New(), f: f})
	}
	return f, nil
}

// running says whether the agents run.
func (f *fleet) running() bool { return f.cancel != nil }

// start runs every agent against brokerURL at once, as a fleet does when
// its broker comes back. With statement, agents without stored credentials
// register with it.
func (f *fleet) start(brokerURL, statement string) {
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel = cancel
	log := slog.New(f.warns)
	for _, a := range f.agents {
		ag := &agent.Agent{
			BrokerURLs:        []string{brokerURL},
			TLSConfig:         f.tls,
			ServerID:          a.id,
			StateDir:          filepath.Join(f.dir, a.id),
			SoftwareStatement: statement,
			Driver:            a.drv,
			Report:            a.report,
			UpdateInterval:    f.interval,
			Version:           "fleetbench",
			Logger:            log,
			Metrics:           a,
		}
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			_ = ag.Run(ctx)
		}()
	}
}

// stop stops every agent and waits for them.
func (f *fleet) stop() {
	if f.cancel == nil {
		return
	}
	f.cancel()
	f.wg.Wait()
	f.cancel = nil
}

// linked counts the agents whose link is up and was welcomed after since.
func (f *fleet) linked(since time.Time) (n int) {
	t := unixNano(since)
	for _, a := range f.agents {
		if a.up.Load() && a.upAt.Load() >= t {
			n++
		}
	}
	return n
}

// firstWelcome is the earliest Welcome after since, zero if none.
func (f *fleet) firstWelcome(since time.Time) time.Time {
	t, first := unixNano(since), int64(0)
	for _, a := range f.agents {
		if u := a.upAt.Load(); u >= t && (first == 0 || u < first) {
			first = u
		}
	}
	if first == 0 {
		return time.Time{}
	}
	return time.Unix(0, first)
}

// unixNano is t.UnixNano(), 0 for the zero time.
func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// medianGap is the median time between the last two host reports of the
// agents that made two: the update interval in effect, whatever the phases
// of the agents' timers (the rate over a window shorter than a few
// intervals depends on them).
func (f *fleet) medianGap() time.Duration {
	gaps := make([]int64, 0, len(f.agents))
	for _, a := range f.agents {
		if g := a.gap.Load(); g > 0 {
			gaps = append(gaps, g)
		}
	}
	if len(gaps) == 0 {
		return 0
	}
	slices.Sort(gaps)
	return time.Duration(gaps[len(gaps)/2])
}

// welcomes is the number of Welcomes the agents got in all.
func (f *fleet) welcomes() (n int64) {
	for _, a := range f.agents {
		n += a.welcomes.Load()
	}
	return n
}

// sessions counts the sessions the sim drivers hold, by ID, and the
// sessions held by more than one agent.
func (f *fleet) sessions(ctx context.Context) (byID map[string]int, duplicated int) {
	byID = map[string]int{}
	for _, a := range f.agents {
		list, _ := a.drv.Sessions(ctx)
		for _, s := range list {
			byID[s.ID]++
			if byID[s.ID] == 2 {
				duplicated++
			}
		}
	}
	return byID, duplicated
}

// report is the agent's host report: fixed, except the load figure while
// the fleet's reports are changing.
func (a *simAgent) report(ctx context.Context) (agentproto.HostReport, error) {
	a.f.reports.Add(1)
	now := time.Now().UnixNano()
	if last := a.lastReport.Swap(now); last != 0 {
		a.gap.Store(now - last)
	}
	r := agentproto.HostReport{
		Hostname:   a.id,
		IP:         fmt.Sprintf("10.%d.%d.%d", a.i>>16&255, a.i>>8&255, a.i&255),
		Port:       8443,
		WebURLPath: "/",
		Version:    "sim",
		OS:         agentproto.OS{Family: "linux", Name: "Debian GNU/Linux", Version: "13", Kernel: "6.12.0"},
		Memory:     agentproto.Memory{TotalBytes: 64 << 30, UsedBytes: 8 << 30},
		CPU:        agentproto.CPU{Vendor: "GenuineIntel", Model: "Xeon", Arch: "x86_64", Count: 16, CoresPerCPU: 8},
		Load:       agentproto.Load{One: 0.5, Five: 0.5, Fifteen: 0.5},
	}
	if a.f.changing.Load() {
		// As a real host's: a different figure at every report.
		ms := time.Now().UnixMilli() + int64(a.i)
		r.Load.One = float64(ms%800) / 100
		r.Load.Five = float64(ms%400) / 100
	}
	return r, nil
}

// The agent.Metrics methods: the benchmark watches the link.

// BrokerLink implements agent.Metrics.
func (a *simAgent) BrokerLink(up bool) {
	if up {
		a.upAt.Store(time.Now().UnixNano())
		a.welcomes.Add(1)
	}
	a.up.Store(up)
}

// CommandDone implements agent.Metrics.
func (a *simAgent) CommandDone(string, time.Duration, string) {}

// SessionReady implements agent.Metrics.
func (a *simAgent) SessionReady(time.Duration) {}

// SessionStates implements agent.Metrics.
func (a *simAgent) SessionStates(map[string]int) {}

// CertificateRenewal implements agent.Metrics.
func (a *simAgent) CertificateRenewal(error) {}

// countingHandler is the simulated agents' slog handler: it counts the
// warnings and errors and keeps the last one, and drops the rest.
type countingHandler struct {
	n    atomic.Int64
	last atomic.Pointer[string]

	mu    sync.Mutex
	kinds map[string]int64 // warnings by warningKind
}

// Enabled implements slog.Handler.
func (h *countingHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }

// Handle implements slog.Handler.
func (h *countingHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Level < slog.LevelWarn {
		// Only the sheds: each agent logs its registration and link at INFO too.
		if strings.HasPrefix(r.Message, "broker busy") {
			h.mu.Lock()
			if h.kinds == nil {
				h.kinds = map[string]int64{}
			}
			h.kinds["(info) "+r.Message]++
			h.mu.Unlock()
		}
		return nil
	}
	h.n.Add(1)
	msg := r.Message
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "err" {
			msg += ": " + a.Value.String()
		}
		return true
	})
	h.last.Store(&msg)
	h.mu.Lock()
	if h.kinds == nil {
		h.kinds = map[string]int64{}
	}
	h.kinds[warningKind(msg)]++
	h.mu.Unlock()
	return nil
}

// warningKind is a warning without what varies between agents: the
// broker's URL, and the text between the message and the error's last
// part ("cannot connect to broker: ...: connect: connection refused" is
// "cannot connect to broker: … connection refused").
func warningKind(msg string) string {
	head, _, found := strings.Cut(msg, ": ")
	if !found {
		return msg
	}
	tail := msg[strings.LastIndex(msg, ": ")+2:]
	return head + ": … " + tail
}

// kindsSince returns the warnings by kind counted since before (a copy of
// an earlier kindsSince(nil)), the most frequent first, as "N× kind".
func (h *countingHandler) kindsSince(before map[string]int64) (now map[string]int64, top []string) {
	h.mu.Lock()
	now = maps.Clone(h.kinds)
	h.mu.Unlock()
	type kc struct {
		k string
		n int64
	}
	var ks []kc
	for k, n := range now {
		if d := n - before[k]; d > 0 {
			ks = append(ks, kc{k, d})
		}
	}
	slices.SortFunc(ks, func(a, b kc) int { return cmp.Or(cmp.Compare(b.n, a.n), strings.Compare(a.k, b.k)) })
	for _, k := range ks {
		top = append(top, fmt.Sprintf("%d× %.100s", k.n, k.k))
	}
	return now, top
}

// WithAttrs implements slog.Handler.
func (h *countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }

// WithGroup implements slog.Handler.
func (h *countingHandler) WithGroup(string) slog.Handler { return h }

// lastWarning is the last warning an agent logged, "" if none.
func (h *countingHandler) lastWarning() string {
	if p := h.last.Load(); p != nil {
		return *p
	}
	return ""
}
