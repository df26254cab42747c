package fleetbench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http/httptrace"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/berth-dev/berth/api"
)

// The API client that watches DescribeServers runs in a process of its own
// (the probe): in the simulating process, busy with thousands of agents'
// TLS and WebSocket work, its goroutines waited seconds for a CPU, and
// those waits showed up as slow DescribeServers pages (9 s at 10,000
// registering agents, where a separate client saw at most 1.1 s). A real
// API client is a separate process too.

// probeEnv marks the probe process in its environment.
const probeEnv = "BERTH_BENCH_PROBE"

// probeInterval is the pause between two scans of a watch.
const probeInterval = 100 * time.Millisecond

// IsProbe reports whether this process is the API-client process that
// berth-bench starts for itself; its main runs RunProbe instead of Run.
func IsProbe() bool { return os.Getenv(probeEnv) == "1" }

// probeConfig is the probe's first line on its standard input, so that the
// client secret appears in no command line or environment.
type probeConfig struct {
	BrokerURL    string `json:"broker_url"`
	CAFile       string `json:"ca_file"`
	ClientID     string `json:"client_id"`
	ClientSecret string `json:"client_secret"`
}

// probeScan is the line the probe writes after each pass over
// DescribeServers.
type probeScan struct {
	Watch     int    `json:"watch"`     // the watch it belongs to
	Available int    `json:"available"` // servers listed AVAILABLE
	At        int64  `json:"at"`        // Unix nanoseconds when the pass's last page came
	Slowest   int64  `json:"slowest"`   // the pass's slowest page, nanoseconds
	FirstByte int64  `json:"first_byte"`
	Err       string `json:"err,omitempty"`
	// A create's lines, one per CreateSessions call: the sessions created
	// (ID to owner), the items refused by reason, and Done on the last.
	Created map[string]string `json:"created,omitempty"`
	Reasons map[string]int    `json:"reasons,omitempty"`
	Done    bool              `json:"done,omitempty"`
	// Ready is a ready watch's count of its sessions listed READY.
	Ready int `json:"ready,omitempty"`
}

// RunProbe is the probe process's main: it reads a probeConfig line, then
// commands, one per line, from in:
//
//	watch ID N   scan DescribeServers every probeInterval, writing a
//	             probeScan line per pass, until a pass shows N servers
//	             AVAILABLE (that pass's line is the watch's last)
//	listen ID ADDR...
//	             connect to each TCP address in turn, every 5 ms until it
//	             answers, and write one probeScan line stamped when the
//	             last one did
//	create ID N K NAME
//	             create N sessions named NAME through CreateSessions, in
//	             calls of batchSize, K of them in flight at once, writing
//	             a line per call and a last one Done
//	ready ID SESSION...
//	             ask DescribeSessions for the sessions not yet seen READY
//	             (a pass every quarter probeInterval), writing a line per
//	             pass with how many were seen READY, until all were
//	stop         end the current watch
//
// It returns the exit code once in ends (the parent went away).
func RunProbe(ctx context.Context, in io.Reader, out io.Writer) int {
	r := bufio.NewReader(in)
	line, err := r.ReadBytes('\n')
	if err != nil {
		fmt.Fprintln(os.Stderr, "berth-bench probe: no configuration:", err)
		return 2
	}
	var cfg probeConfig
	if err := json.Unmarshal(line, &cfg); err != nil {
		fmt.Fprintln(os.Stderr, "berth-bench probe: configuration:", err)
		return 2
	}
	hc, err := api.NewHTTPClient(cfg.CAFile, false)
	if err != nil {
		fmt.Fprintln(os.Stderr, "berth-bench probe:", err)
		return 2
	}
	hc.Timeout = 2 * time.Minute
	c := &api.Client{BrokerURL: cfg.BrokerURL, ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret, HTTPClient: hc}
	var mu sync.Mutex // serializes out
	enc := json.NewEncoder(out)
	write := func(s probeScan) {
		mu.Lock()
		defer mu.Unlock()
		_ = enc.Encode(s)
	}
	stopWatch := func() {} // ends the current watch and waits for it
	defer func() { stopWatch() }()
	// begin ends the current watch and runs fn as the next one.
	begin := func(fn func(ctx context.Context)) {
		stopWatch()
		wctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			fn(wctx)
		}()
		stopWatch = func() { cancel(); <-done }
	}
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return 0
		}
		f := strings.Fields(line)
		var id int
		if len(f) >= 3 {
			if id, err = strconv.Atoi(f[1]); err != nil {
				fmt.Fprintf(os.Stderr, "berth-bench probe: bad command %q\n", line)
				return 2
			}
		}
		switch {
		case len(f) == 3 && f[0] == "watch":
			want, err := strconv.Atoi(f[2])
			if err != nil {
				fmt.Fprintf(os.Stderr, "berth-bench probe: bad command %q\n", line)
				return 2
			}
			begin(func(ctx context.Context) { watchServers(ctx, c, id, want, write) })
		case len(f) >= 3 && f[0] == "listen":
			addrs := f[2:]
			begin(func(ctx context.Context) {
				if at, err := waitListening(ctx, addrs); ctx.Err() == nil {
					s := probeScan{Watch: id, At: at.UnixNano()}
					if err != nil {
						s.Err = err.Error()
					}
					write(s)
				}
			})
		case len(f) == 5 && f[0] == "create":
			n, err := strconv.Atoi(f[2])
			k, kerr := strconv.Atoi(f[3])
			if err != nil || n < 0 || kerr != nil || k < 1 {
				fmt.Fprintf(os.Stderr, "berth-bench probe: bad command %q\n", line)
				return 2
			}
			name := f[4]
			begin(func(ctx context.Context) {
				err := createSessions(ctx, c, n, k, name, func(created map[string]string, reasons map[string]int) {
					write(probeScan{Watch: id, Created: created, Reasons: reasons, At: time.Now().UnixNano()})
				})
				if ctx.Err() != nil {
					return
				}
				last := probeScan{Watch: id, Done: true, At: time.Now().UnixNano()}
				if err != nil {
					last.Err = err.Error()
				}
				write(last)
			})
		case len(f) >= 3 && f[0] == "ready":
			ids := f[2:]
			begin(func(ctx context.Context) { watchReady(ctx, c, id, ids, write) })
		case len(f) == 1 && f[0] == "stop":
			stopWatch()
			stopWatch = func() {}
		default:
			fmt.Fprintf(os.Stderr, "berth-bench probe: bad command %q\n", line)
			return 2
		}
	}
}

// createSessions creates n sessions named name in CreateSessions calls of
// batchSize (owners user0000 to user0999 in turn), k calls in flight at
// once (each of k goroutines sends the next call when its last one was
// answered), and hands each call's outcome to got, which k goroutines may
// call at once. It returns the first error; calls not yet sent then are
// not sent.
func createSessions(ctx context.Context, c *api.Client, n, k int, name string, got func(created map[string]string, reasons map[string]int)) error {
	calls := (n + batchSize - 1) / batchSize
	var next atomic.Int64
	errs := make([]error, max(min(k, calls), 1)) // a goroutine a client, no more than calls
	var wg sync.WaitGroup
	for g := range errs {
		wg.Go(func() {
			for {
				call := int(next.Add(1)) - 1
				if call >= calls {
					return
				}
				done := call * batchSize
				reqs := make([]api.CreateSessionRequest, min(batchSize, n-done))
				for i := range reqs {
					reqs[i] = api.CreateSessionRequest{Name: name, Owner: fmt.Sprintf("user%04d", (done+i)%1000), Type: api.TypeVirtual}
				}
				out, err := c.CreateSessions(ctx, reqs)
				if err != nil {
					errs[g] = err
					next.Store(int64(calls)) // send no more
					return
				}
				created, reasons := make(map[string]string, len(out.SuccessfulList)), map[string]int{}
				for _, s := range out.SuccessfulList {
					created[s.Id] = s.Owner
				}
				for _, u := range out.UnsuccessfulList {
					reasons[u.FailureReason]++
				}
				got(created, reasons)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// watchReady asks DescribeSessions for the sessions of ids not yet seen
// READY (by SessionIds, batchSize a call) until it has seen every one READY,
// or ctx ends. A pass asks only for those still pending, so that the
// passes, and so the time a session's READY takes to be seen, shrink as the
// sessions get READY.
func watchReady(ctx context.Context, c *api.Client, id int, ids []string, write func(probeScan)) {
	pending := slices.Clone(ids)
	for {
		var err error
		pending, err = scanReady(ctx, c, pending)
		if ctx.Err() != nil {
			return
		}
		s := probeScan{Watch: id, Ready: len(ids) - len(pending), At: time.Now().UnixNano()}
		if err != nil {
			s.Err = err.Error()
		}
		write(s)
		if len(pending) == 0 {
			return
		}
		wait(ctx, probeInterval/4)
	}
}

// scanReady returns the sessions of pending that DescribeSessions does not
// list READY.
func scanReady(ctx context.Context, c *api.Client, pending []string) ([]string, error) {
	var left []string
	for start := 0; start < len(pending); start += batchSize {
		chunk := pending[start:min(start+batchSize, len(pending))]
		max := batchSize
		out, err := c.DescribeSessions(ctx, api.DescribeSessionsRequest{SessionIds: chunk, MaxResults: &max})
		if err != nil {
			return append(left, pending[start:]...), err
		}
		ready := make(map[string]bool, len(out.Sessions))
		for _, s := range out.Sessions {
			if s.State == api.StateReady {
				ready[s.Id] = true
			}
		}
		for _, id := range chunk {
			if !ready[id] {
				left = append(left, id)
			}
		}
	}
	return left, nil
}

// watchServers watches DescribeServers until want servers are AVAILABLE or
// ctx ends. It pages through every server until it knows want of them;
// from then on it asks only for the servers it has not yet seen AVAILABLE
// (by ServerIds, batchSize a call), so that its passes shrink as servers
// come, as watchReady's do: back-to-back passes over a whole fleet of
// 10,000 cost the broker, and this process on the same cores, the CPU of
// encoding and decoding about 10 MB each. When the last one is seen
// AVAILABLE, a pass over every server confirms that want of them are
// (servers that fell back are watched again); the scan it writes is
// stamped with when the last server was seen AVAILABLE. (Pausing as long
// as the last pass took cut its CPU, but in a 10,000-agent restart, whose
// servers come mostly at the end, it slept through their coming: all
// AVAILABLE 0.5 s after all linked, against 0.1 s.)
func watchServers(ctx context.Context, c *api.Client, id, want int, write func(probeScan)) {
	var pending []string // known servers not yet seen AVAILABLE
	seen := 0            // servers seen AVAILABLE
	full := true         // page through every server
	var slowest pageTime
	for {
		var err error
		if full {
			var avail int
			avail, pending, slowest, err = scanServers(ctx, c)
			seen = avail
			full = err != nil || avail+len(pending) < want // not every server known yet
		} else {
			n := len(pending)
			pending, slowest, err = scanPending(ctx, c, pending)
			seen += n - len(pending)
		}
		if ctx.Err() != nil {
			return
		}
		s := probeScan{Watch: id, Available: seen, At: time.Now().UnixNano(),
			Slowest: int64(slowest.total), FirstByte: int64(slowest.firstByte)}
		if err == nil && !full && len(pending) == 0 {
			// Every one seen AVAILABLE: confirm with a pass over all.
			var avail int
			var notAvail []string
			var confirm pageTime
			avail, notAvail, confirm, err = scanServers(ctx, c)
			if ctx.Err() != nil {
				return
			}
			if confirm.total > slowest.total {
				s.Slowest, s.FirstByte = int64(confirm.total), int64(confirm.firstByte)
			}
			if err == nil && avail >= want {
				s.Available = avail
				write(s)
				return
			}
			if err == nil {
				pending, seen = notAvail, avail
				s.Available = avail
			}
		}
		if err != nil {
			s.Err = err.Error()
		}
		write(s)
		wait(ctx, probeInterval)
	}
}

// scanPending asks DescribeServers for the servers of pending and returns
// those it does not list AVAILABLE, and its slowest page.
func scanPending(ctx context.Context, c *api.Client, pending []string) (left []string, slowest pageTime, err error) {
	for start := 0; start < len(pending); start += batchSize {
		chunk := pending[start:min(start+batchSize, len(pending))]
		max := batchSize
		var out *api.DescribeServersResponse
		var page pageTime
		out, page, err = describeServers(ctx, c, api.DescribeServersRequest{ServerIds: chunk, MaxResults: &max})
		if page.total > slowest.total {
			slowest = page
		}
		if err != nil {
			return append(left, pending[start:]...), slowest, err
		}
		avail := make(map[string]bool, len(out.Servers))
		for _, s := range out.Servers {
			if s.Availability == api.AvailabilityAvailable {
				avail[s.Id] = true
			}
		}
		for _, id := range chunk {
			if !avail[id] {
				left = append(left, id)
			}
		}
	}
	return left, slowest, nil
}

// waitListening connects to each address in turn until it answers, and
// returns when the last one did.
func waitListening(ctx context.Context, addrs []string) (time.Time, error) {
	var d net.Dialer
	for _, addr := range addrs {
		for {
			dctx, cancel := context.WithTimeout(ctx, time.Second)
			c, err := d.DialContext(dctx, "tcp", addr)
			cancel()
			if err == nil {
				c.Close()
				break
			}
			if !wait(ctx, 5*time.Millisecond) {
				return time.Time{}, fmt.Errorf("%s: %w", addr, err)
			}
		}
	}
	return time.Now(), nil
}

// pageTime is how long one DescribeServers page took: until its answer's
// first byte came (the broker's share, and the network's) and in all.
type pageTime struct{ firstByte, total time.Duration }

// scanServers pages through DescribeServers: it counts the AVAILABLE
// servers and returns the others' IDs, and the slowest page.
func scanServers(ctx context.Context, c *api.Client) (available int, notAvailable []string, slowest pageTime, err error) {
	max := batchSize
	next := ""
	for {
		out, page, err := describeServers(ctx, c, api.DescribeServersRequest{MaxResults: &max, NextToken: next})
		if page.total > slowest.total {
			slowest = page
		}
		if err != nil {
			return available, notAvailable, slowest, err
		}
		for _, s := range out.Servers {
			if s.Availability == api.AvailabilityAvailable {
				available++
			} else {
				notAvailable = append(notAvailable, s.Id)
			}
		}
		if out.NextToken == "" {
			return available, notAvailable, slowest, nil
		}
		next = out.NextToken
	}
}

// describeServers asks for one page and times it.
func describeServers(ctx context.Context, c *api.Client, req api.DescribeServersRequest) (*api.DescribeServersResponse, pageTime, error) {
	t0 := time.Now()
	var first time.Time
	tctx := httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{GotFirstResponseByte: func() { first = time.Now() }})
	out, err := c.DescribeServers(tctx, req)
	page := pageTime{total: time.Since(t0)}
	if !first.IsZero() {
		page.firstByte = first.Sub(t0)
	}
	return out, page, err
}

// prober is the parent's handle on the probe process.
type prober struct {
	cmd   *exec.Cmd
	in    io.WriteCloser
	done  chan struct{} // closed when the probe's output ends
	mu    sync.Mutex
	watch int            // the current watch's ID; guarded by mu
	scans chan probeScan // the current watch's lines; guarded by mu
	err   error          // why the output ended; set before done closes
}

// startProber starts the probe: this executable again, with probeEnv set.
func startProber(c *api.Client, caFile string) (*prober, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("the API-client process: %w", err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), probeEnv+"=1")
	cmd.Stderr = os.Stderr
	// No Pdeathsig: Linux sends it when the forking thread exits, which in
	// Go is not the process. The probe ends when its standard input does,
	// as it does when this process exits in any way.
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	outR, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("the API-client process: %w", err)
	}
	p := &prober{cmd: cmd, in: in, done: make(chan struct{})}
	cfg, _ := json.Marshal(probeConfig{BrokerURL: c.BrokerURL, CAFile: caFile, ClientID: c.ClientID, ClientSecret: c.ClientSecret})
	if _, err := in.Write(append(cfg, '\n')); err != nil {
		p.close()
		return nil, fmt.Errorf("the API-client process: %w", err)
	}
	go p.read(outR)
	return p, nil
}

// read hands each line of the probe's output to the watch it belongs to.
func (p *prober) read(r io.Reader) {
	defer close(p.done)
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 16<<20) // a create's line holds a call's sessions
	for sc.Scan() {
		var s probeScan
		if err := json.Unmarshal(sc.Bytes(), &s); err != nil {
			p.err = fmt.Errorf("the API-client process wrote %q: %w", sc.Text(), err)
			return
		}
		p.mu.Lock()
		if s.Watch == p.watch && p.scans != nil {
			select {
			case p.scans <- s:
			default: // the watcher went away
			}
		}
		p.mu.Unlock()
	}
	p.err = sc.Err()
	if p.err == nil {
		p.err = errors.New("the API-client process ended")
	}
}

// begin starts a watch with the command cmd (its ID is put in for %d) and
// returns its lines; stop ends it.
func (p *prober) begin(cmd string) (<-chan probeScan, error) {
	p.mu.Lock()
	p.watch++
	id := p.watch
	ch := make(chan probeScan, 64)
	p.scans = ch
	p.mu.Unlock()
	if _, err := fmt.Fprintf(p.in, cmd+"\n", id); err != nil {
		return nil, fmt.Errorf("the API-client process: %w", err)
	}
	return ch, nil
}

// watchAvailable starts a watch for want AVAILABLE servers and returns its
// passes; stop ends it.
func (p *prober) watchAvailable(want int) (<-chan probeScan, error) {
	return p.begin("watch %d " + strconv.Itoa(want))
}

// listening waits until every address of addrs accepts TCP connections,
// as the probe sees it, and returns when they did.
func (p *prober) listening(ctx context.Context, addrs ...string) (time.Time, error) {
	ch, err := p.begin("listen %d " + strings.Join(addrs, " "))
	if err != nil {
		return time.Time{}, err
	}
	defer p.stop()
	select {
	case s := <-ch:
		if s.Err != "" {
			return time.Time{}, errors.New(s.Err)
		}
		return time.Unix(0, s.At), nil
	case <-p.done:
		return time.Time{}, p.err
	case <-ctx.Done():
		return time.Time{}, ctx.Err()
	}
}

// create has the probe create n sessions named name (a word), k calls at
// once, and returns
// them (ID to owner) and the items refused by reason.
func (p *prober) create(ctx context.Context, n, k int, name string) (created map[string]string, failed int, reasons map[string]int, err error) {
	created, reasons = map[string]string{}, map[string]int{}
	ch, err := p.begin("create %d " + strconv.Itoa(n) + " " + strconv.Itoa(max(k, 1)) + " " + name)
	if err != nil {
		return created, 0, reasons, err
	}
	defer p.stop()
	for {
		select {
		case s := <-ch:
			maps.Copy(created, s.Created)
			for r, k := range s.Reasons {
				reasons[r] += k
				failed += k
			}
			if s.Done {
				if s.Err != "" {
					return created, failed, reasons, errors.New(s.Err)
				}
				return created, failed, reasons, nil
			}
		case <-p.done:
			return created, failed, reasons, p.err
		case <-ctx.Done():
			return created, failed, reasons, ctx.Err()
		}
	}
}

// ready waits until the probe sees every session of ids READY, and returns
// when it did; each pass's count goes to progress.
func (p *prober) ready(ctx context.Context, ids []string, progress func(ready int)) (time.Time, error) {
	if len(ids) == 0 {
		return time.Now(), nil
	}
	ch, err := p.begin("ready %d " + strings.Join(ids, " "))
	if err != nil {
		return time.Time{}, err
	}
	defer p.stop()
	for {
		select {
		case s := <-ch:
			if s.Err == "" && s.Ready == len(ids) {
				return time.Unix(0, s.At), nil
			}
			progress(s.Ready)
		case <-p.done:
			return time.Time{}, p.err
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		}
	}
}

// stop ends the current watch.
func (p *prober) stop() {
	p.mu.Lock()
	p.scans = nil
	p.mu.Unlock()
	_, _ = io.WriteString(p.in, "stop\n")
}

// close ends the probe process.
func (p *prober) close() {
	_ = p.in.Close()
	t := time.AfterFunc(5*time.Second, func() { _ = p.cmd.Process.Kill() })
	_ = p.cmd.Wait()
	t.Stop()
}
