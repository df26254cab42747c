package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/agent"
	"github.com/berth-dev/berth/internal/agentproto"
	"github.com/berth-dev/berth/internal/driver/sim"
	"github.com/berth-dev/berth/internal/pki"
	"github.com/berth-dev/berth/internal/poll"
)

// The attack of TestBroker_SlowClients, from loopback addresses other than
// 127.0.0.1 (where the API client and the agent are): per spread address,
// slow POST /oauth2/token bodies (one byte a second), TCP connections that
// never start TLS, and TLS connections that never send a request, on the
// client and agent ports; plus one greedy address opening more idle
// connections to the client port than its per-address limit.
const (
	attackSpreadAddrs = 7 // 127.0.0.2 to 127.0.0.8
	attackSlowBody    = 115
	attackIdleTCP     = 30 // client port; half as many on the agent port
	attackIdleTLS     = 25 // client port; 15 on the agent port
	attackAgentTCP    = 15
	attackAgentTLS    = 15
	attackGreedy      = 600 // idle TCP from 127.0.0.9 to the client port
	attackGreedyAddr  = "127.0.0.9"
	// attackTotal is every connection the attacker opens.
	attackTotal = attackSpreadAddrs*(attackSlowBody+attackIdleTCP+attackIdleTLS+attackAgentTCP+attackAgentTLS) + attackGreedy

	slowHeaderTimeout = 2 * time.Second
	slowReadTimeout   = 5 * time.Second
	// attackGiveUp is how long the attacker keeps a connection going before
	// it reports it as never cut: four times the read timeout.
	attackGiveUp = 4 * slowReadTimeout
)

// attackResult is what the attacker process reports.
type attackResult struct {
	Opened    map[string]int   `json:"opened"`
	Cut       map[string]int   `json:"cut"`
	StillOpen map[string]int   `json:"still_open"`
	MaxLife   map[string]int64 `json:"max_life_ms"` // of the connections cut
	DialErrs  int              `json:"dial_errors"`
}

// TestBroker_SlowClients is the review's finding 5: 2,000 slow or idle
// clients against a broker with a real agent linked (the sim driver: this is
// a broker-scale test and only the link matters). Every slow or idle
// connection must be cut (the slow bodies at the read timeout, the idle ones
// at the header timeout), the agent must stay linked and available, and API
// calls must keep succeeding; the latencies, the RSS and the refusals are
// logged. The attacker runs in a child process so that the RSS is the
// broker's (plus the test's API client and agent).
func TestBroker_SlowClients(t *testing.T) {
	if testing.Short() {
		t.Skip("load test: skipped with -short")
	}
	raiseFileLimit(t, 3*attackTotal)
	b := MustRunMain(t, t.TempDir(), func(c *Config) {
		c.RequestHeaderTimeout = slowHeaderTimeout
		c.RequestReadTimeout = slowReadTimeout
		c.IdleTimeout = 30 * time.Second
	})
	links := &linkCounter{}
	b.startLinkedSimAgent(t, links)
	c := b.MustClient(t)
	poll.Until(t, 15*time.Second, "the agent's server AVAILABLE", func() bool {
		s, ok := servers(t, c)["slow-host"]
		return ok && s.Availability == api.AvailabilityAvailable
	})
	resp := create(t, c, api.CreateSessionRequest{Name: "s", Owner: "alice", Type: "VIRTUAL"})
	if len(resp.SuccessfulList) != 1 {
		t.Fatalf("create: %+v", resp.UnsuccessfulList)
	}
	waitState(t, c, resp.SuccessfulList[0].Id, "READY")

	// API calls from 127.0.0.1 all along: a fresh token (a new client, so
	// no cached token) and DescribeSessions, then DescribeServers to check
	// the agent.
	hc, err := api.NewHTTPClient(filepath.Join(b.dir, "ca.pem"), false)
	if err != nil {
		t.Fatal(err)
	}
	hc.Timeout = 30 * time.Second
	var (
		mu          sync.Mutex
		attacking   bool
		lat         []time.Duration // during the attack
		calls, errs int
		unavailable []string
	)
	stop := make(chan struct{})
	apiDone := make(chan struct{})
	go func() {
		defer close(apiDone)
		ctx := context.Background()
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			cl := &api.Client{BrokerURL: c.BrokerURL, ClientID: c.ClientID, ClientSecret: c.ClientSecret, HTTPClient: hc}
			t0 := time.Now()
			_, err1 := cl.Token(ctx)
			t1 := time.Now()
			_, err2 := cl.DescribeSessions(ctx, api.DescribeSessionsRequest{})
			t2 := time.Now()
			sv, err3 := cl.DescribeServers(ctx, api.DescribeServersRequest{})
			mu.Lock()
			calls += 3
			for _, err := range []error{err1, err2, err3} {
				if err != nil {
					errs++
					t.Errorf("API call under attack: %v", err)
				}
			}
			if attacking {
				lat = append(lat, t1.Sub(t0), t2.Sub(t1))
			}
			if err3 == nil && (len(sv.Servers) != 1 || sv.Servers[0].Availability != api.AvailabilityAvailable) {
				unavailable = append(unavailable, fmt.Sprintf("%+v", sv.Servers))
			}
			mu.Unlock()
		}
	}()

	clientLn, agentLn := b.limited["client"], b.limited["agent"]
	baseOpen := clientLn.Open() + agentLn.Open()
	debug.FreeOSMemory()
	rssBefore := rssKB(t)
	peak := atomic.Int64{}
	peak.Store(rssBefore)
	peakOpen := atomic.Int64{}
	sampleDone := make(chan struct{})
	go func() {
		defer close(sampleDone)
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			if r := rssKB(t); r > peak.Load() {
				peak.Store(r)
			}
			if n := int64(clientLn.Open() + agentLn.Open()); n > peakOpen.Load() {
				peakOpen.Store(n)
			}
		}
	}()

	// The attack.
	cmd := exec.Command(os.Args[0], "-test.run=^TestSlowClientsAttacker$", "-test.count=1")
	cmd.Env = append(os.Environ(), "BERTH_SLOW_ATTACK="+b.ClientAddr()+","+b.AgentAddr())
	cmd.Stderr = testWriter{t}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var res attackResult
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "ATTACK-OPENING":
			mu.Lock()
			attacking = true
			mu.Unlock()
		case strings.HasPrefix(line, "ATTACK-RESULT "):
			if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "ATTACK-RESULT ")), &res); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("attacker: %v", err)
	}
	mu.Lock()
	attacking = false
	mu.Unlock()

	// After: the broker is back to its own connections.
	poll.Until(t, 30*time.Second, "the attack's connections to close", func() bool {
		return clientLn.Open()+agentLn.Open() <= baseOpen+2
	})
	// The link, a WebSocket on the agent port, outlives the read timeout
	// that cut the slow bodies on the same listener: net/http clears a
	// hijacked connection's deadlines.
	poll.Until(t, 30*time.Second, "the agent's link to be older than twice the read timeout", func() bool {
		return time.Since(time.Unix(0, links.upAt.Load())) > 2*slowReadTimeout
	})
	close(stop)
	<-apiDone
	<-sampleDone
	rssAfter := rssKB(t)
	debug.FreeOSMemory()
	rssFreed := rssKB(t)

	refusedTotal, refusedAddr := clientLn.Refused()
	mu.Lock()
	defer mu.Unlock()
	slices.Sort(lat)
	t.Logf("attack: %d connections opened (%d dial errors): %v", attackTotal, res.DialErrs, res.Opened)
	t.Logf("cut by the broker: %v; longest life of a cut connection (ms): %v; still open after %s: %v",
		res.Cut, res.MaxLife, attackGiveUp, res.StillOpen)
	t.Logf("refused on accept by the client port: %d over the total, %d over the per-address limit; peak connections held: %d",
		refusedTotal, refusedAddr, peakOpen.Load())
	t.Logf("API under attack: %d calls (token and DescribeSessions timed: %d), %d errors, p50 %s, p99 %s, max %s",
		calls, len(lat), errs, pct(lat, 50), pct(lat, 99), pct(lat, 100))
	t.Logf("RSS: before %d MB, peak %d MB, after %d MB (%d MB after FreeOSMemory); agent links up %d, down %d",
		rssBefore/1024, peak.Load()/1024, rssAfter/1024, rssFreed/1024, links.up.Load(), links.down.Load())

	if res.DialErrs > 0 {
		t.Errorf("%d attack connections could not be dialed", res.DialErrs)
	}
	for kind, n := range res.StillOpen {
		if n > 0 {
			t.Errorf("%d %s connections were still open after %s (read timeout %s, header timeout %s)",
				n, kind, attackGiveUp, slowReadTimeout, slowHeaderTimeout)
		}
	}
	if res.Cut["slow-body"] != attackSpreadAddrs*attackSlowBody {
		t.Errorf("%d slow bodies cut, want all %d", res.Cut["slow-body"], attackSpreadAddrs*attackSlowBody)
	}
	if want := uint64(attackGreedy - DefaultConfig().ClientMaxConnsPerAddr); refusedAddr < want {
		t.Errorf("the client port refused %d connections over the per-address limit, want at least %d (the greedy address's excess)", refusedAddr, want)
	}
	if len(unavailable) > 0 {
		t.Errorf("the agent's server was not AVAILABLE %d times, e.g. %s", len(unavailable), unavailable[0])
	}
	if links.up.Load() != 1 || links.down.Load() != 0 {
		t.Errorf("the agent's link went up %d and down %d times, want once up and never down", links.up.Load(), links.down.Load())
	}
	if calls == 0 || len(lat) == 0 {
		t.Error("no API call was made during the attack")
	}
	if peak.Load()-rssBefore > 1<<20 {
		t.Errorf("RSS grew by %d MB under the attack", (peak.Load()-rssBefore)/1024)
	}
}

// TestSlowClientsAttacker is the attacker process of TestBroker_SlowClients;
// it does nothing unless BERTH_SLOW_ATTACK names the client and agent
// addresses.
func TestSlowClientsAttacker(t *testing.T) {
	target := os.Getenv("BERTH_SLOW_ATTACK")
	if target == "" {
		t.Skip("the attacker of TestBroker_SlowClients")
	}
	clientAddr, agentAddr, _ := strings.Cut(target, ",")
	raiseFileLimit(t, 2*attackTotal)
	type job struct{ kind, from, addr string }
	var jobs []job
	for i := range attackSpreadAddrs {
		from := "127.0.0." + strconv.Itoa(2+i)
		add := func(n int, kind, addr string) {
			for range n {
				jobs = append(jobs, job{kind, from, addr})
			}
		}
		add(attackSlowBody, "slow-body", clientAddr)
		add(attackIdleTCP, "idle-tcp", clientAddr)
		add(attackIdleTLS, "idle-tls", clientAddr)
		add(attackAgentTCP, "idle-tcp-agent", agentAddr)
		add(attackAgentTLS, "idle-tls-agent", agentAddr)
	}
	for range attackGreedy {
		jobs = append(jobs, job{"greedy-tcp", attackGreedyAddr, clientAddr})
	}

	var mu sync.Mutex
	res := attackResult{Opened: map[string]int{}, Cut: map[string]int{}, StillOpen: map[string]int{}, MaxLife: map[string]int64{}}
	fmt.Println("ATTACK-OPENING")
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64) // dials in flight
	for _, j := range jobs {
		sem <- struct{}{}
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(j.from)}, Timeout: 10 * time.Second}
		raw, err := d.Dial("tcp", j.addr)
		if err != nil {
			<-sem
			mu.Lock()
			res.DialErrs++
			mu.Unlock()
			continue
		}
		opened := time.Now()
		mu.Lock()
		res.Opened[j.kind]++
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			var conn net.Conn = raw
			defer conn.Close()
			release := sync.OnceFunc(func() { <-sem })
			defer release()
			if strings.HasPrefix(j.kind, "idle-tls") || j.kind == "slow-body" {
				tc := tls.Client(raw, &tls.Config{InsecureSkipVerify: true, ServerName: "localhost"})
				tc.SetDeadline(time.Now().Add(attackGiveUp))
				err := tc.Handshake()
				tc.SetDeadline(time.Time{})
				if err != nil {
					// Closed during the handshake: cut.
					release()
					record(&mu, &res, j.kind, opened, true)
					return
				}
				conn = tc
			}
			release()
			cut := make(chan struct{})
			go func() { // the reader sees the broker's close
				defer close(cut)
				conn.SetReadDeadline(time.Now().Add(attackGiveUp))
				_, _ = io.Copy(io.Discard, conn)
			}()
			if j.kind == "slow-body" {
				_, _ = io.WriteString(conn, "POST /oauth2/token HTTP/1.1\r\nHost: broker\r\n"+
					"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\n")
			trickle:
				for {
					select {
					case <-cut:
						break trickle
					case <-time.After(time.Second):
						if _, err := conn.Write([]byte("g")); err != nil {
							break trickle
						}
					}
				}
			}
			<-cut
			record(&mu, &res, j.kind, opened, time.Since(opened) < attackGiveUp)
		}()
	}
	wg.Wait()
	b, _ := json.Marshal(res)
	fmt.Println("ATTACK-RESULT " + string(b))
}

// record counts one attack connection's end: cut by the broker before the
// attacker gave up, or still open.
func record(mu *sync.Mutex, res *attackResult, kind string, opened time.Time, cut bool) {
	mu.Lock()
	defer mu.Unlock()
	if !cut {
		res.StillOpen[kind]++
		return
	}
	res.Cut[kind]++
	res.MaxLife[kind] = max(res.MaxLife[kind], time.Since(opened).Milliseconds())
}

// raiseFileLimit raises the soft limit of open files to at least n (up to
// the hard limit), or skips the test.
func raiseFileLimit(t *testing.T, n uint64) {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Skipf("getrlimit: %v", err)
	}
	if lim.Cur >= n {
		return
	}
	if lim.Max < n {
		t.Skipf("the hard limit of open files is %d; the test needs %d", lim.Max, n)
	}
	orig := lim
	lim.Cur = n
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Skipf("setrlimit: %v", err)
	}
	t.Cleanup(func() { syscall.Setrlimit(syscall.RLIMIT_NOFILE, &orig) })
}

// rssKB is this process's resident set size (VmRSS) in kB.
func rssKB(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skipf("no /proc/self/status: %v", err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	t.Skip("no VmRSS in /proc/self/status")
	return 0
}

// pct is the p-th percentile of sorted durations.
func pct(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := (len(sorted)*p + 99) / 100
	return sorted[min(max(i-1, 0), len(sorted)-1)].Round(time.Millisecond)
}

// linkCounter counts the agent's broker links coming up and going down
// (agent.Metrics).
type linkCounter struct {
	up, down atomic.Int64
	upAt     atomic.Int64 // Unix nanoseconds of the last link up
}

func (l *linkCounter) BrokerLink(up bool) {
	if up {
		l.upAt.Store(time.Now().UnixNano())
		l.up.Add(1)
	} else {
		l.down.Add(1)
	}
}
func (*linkCounter) CommandDone(string, time.Duration, string) {}
func (*linkCounter) SessionReady(time.Duration)                {}
func (*linkCounter) SessionStates(map[string]int)              {}
func (*linkCounter) CertificateRenewal(error)                  {}

// startLinkedSimAgent starts a sim agent, as MustStartSimAgent does, whose
// link comes and goes are counted by links.
func (b *testBroker) startLinkedSimAgent(t *testing.T, links *linkCounter) {
	t.Helper()
	pool, err := pki.LoadPool(filepath.Join(b.dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	stmt, err := os.ReadFile(filepath.Join(b.dir, SoftwareStatementFile))
	if err != nil {
		t.Fatal(err)
	}
	stateDir := t.TempDir()
	id, err := agent.LoadOrCreateServerID(stateDir)
	if err != nil {
		t.Fatal(err)
	}
	a := &agent.Agent{
		BrokerURLs:        []string{"wss://" + b.AgentAddr()},
		TLSConfig:         tlsConfig(pool),
		ServerID:          id,
		StateDir:          stateDir,
		SoftwareStatement: strings.TrimSpace(string(stmt)),
		Driver:            sim.New(),
		Report: func(context.Context) (agentproto.HostReport, error) {
			return hostReport("slow-host", 0, nil), nil
		},
		UpdateInterval: time.Second,
		Metrics:        links,
		Logger:         slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = a.Run(ctx)
	}()
	t.Cleanup(func() { cancel(); <-done })
}
