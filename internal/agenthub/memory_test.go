package agenthub_test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/agenthub"
	"github.com/berth-dev/berth/internal/agentproto"
	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/poll"
	"github.com/berth-dev/berth/internal/sqlite"
	"github.com/berth-dev/berth/internal/tlsaccept"
	"github.com/coder/websocket"
)

// The link benchmarks run a broker core on SQLite and a hub behind a TLS
// http.Server (set up as berth-broker's), and N agents in a child process
// of the test binary (TestLinkAgents), so that the process measured holds
// only the broker's side of the links. Set BERTH_LINK_N to a comma list of
// fleet sizes (default 1000).

// BenchmarkLinkMemory reports what one idle agent link costs the broker:
// heap+stack bytes per link after a GC (live_B/link), resident memory per
// link before and after the runtime returns free memory (rss_B/link,
// rss_free_B/link), and goroutines per link.
func BenchmarkLinkMemory(b *testing.B) {
	for _, n := range linkCounts() {
		b.Run(fmt.Sprintf("agents=%d", n), func(b *testing.B) {
			env := newLinkBroker(b)
			base := measureMem()
			agents := env.startAgents(b, n, 0, false)
			defer agents.stop()
			end := measureMem()
			if f := os.Getenv("BERTH_LINK_HEAPPROFILE"); f != "" {
				writeHeapProfile(b, f)
			}
			per := func(a, z uint64) float64 { return (float64(z) - float64(a)) / float64(n) }
			b.ReportMetric(per(base.live, end.live), "live_B/link")
			b.ReportMetric(per(base.rss, end.rss), "rss_B/link")
			b.ReportMetric(float64(end.goroutines-base.goroutines)/float64(n), "goroutines/link")
			b.ReportMetric(per(base.stack, end.stack), "stack_B/link")
			b.ReportMetric(float64(end.rss)/1e6, "rss_MB")
			debug.FreeOSMemory()
			freed := readRSS()
			b.ReportMetric(per(base.rss, freed), "rss_free_B/link")
			// What the Go runtime holds from the OS after the return (heap
			// spans in use, stacks, metadata); the rest of the RSS is outside
			// the Go heap (SQLite's page caches, C-like allocators).
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			b.ReportMetric(per(base.goHeld, ms.Sys-ms.HeapReleased), "go_held_B/link")
			b.ReportMetric(per(base.heapInuse, ms.HeapInuse), "heap_inuse_B/link")
			for range b.N {
				runtime.Gosched() // one measurement per fleet size
			}
		})
	}
}

// BenchmarkLinkIdleCPU reports the broker's CPU (percent of one core) with N
// agents linked and each sending one update per interval: fixed reports
// (heartbeats), or reports whose load and memory figures change every time;
// and its resident memory at the end of the window (idle_rss_MB), with the
// GC percentage the hub's policy chose. BERTH_LINK_INTERVAL and
// BERTH_LINK_WINDOW change the interval (30s) and the window (10s).
func BenchmarkLinkIdleCPU(b *testing.B) {
	interval := 30 * time.Second
	if v := os.Getenv("BERTH_LINK_INTERVAL"); v != "" {
		if d, err := time.ParseDuration(v); err == nil {
			interval = d
		}
	}
	window := 10 * time.Second
	if v := os.Getenv("BERTH_LINK_WINDOW"); v != "" {
		if d, err := time.ParseDuration(v); err == nil {
			window = d
		}
	}
	for _, n := range linkCounts() {
		for _, changing := range []bool{false, true} {
			b.Run(fmt.Sprintf("agents=%d/changing=%v", n, changing), func(b *testing.B) {
				env := newLinkBroker(b)
				var ms00 runtime.MemStats
				runtime.ReadMemStats(&ms00)
				agents := env.startAgents(b, n, interval, changing)
				defer agents.stop()
				// Let the first round of updates (a full report each) pass.
				time.Sleep(interval) //sleep-ok: the agents' first round of updates passes before the window
				if f := os.Getenv("BERTH_LINK_CPUPROFILE"); f != "" {
					stop := startCPUProfile(b, f)
					defer stop()
				}
				var ms0 runtime.MemStats
				runtime.ReadMemStats(&ms0)
				u0, t0 := cpuTime(), time.Now()
				time.Sleep(window) //sleep-ok: CPU is measured over a fixed window
				used, wall := cpuTime()-u0, time.Since(t0)
				b.ReportMetric(100*used.Seconds()/wall.Seconds(), "cpu_%")
				b.ReportMetric(float64(n)/interval.Seconds(), "updates/s")
				// Resident memory as it is after the idle window (no forced
				// GC): what the GC policy leaves between collections.
				b.ReportMetric(float64(readRSS())/1e6, "idle_rss_MB")
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				b.ReportMetric(float64(ms.Sys-ms.HeapReleased)/1e6, "idle_go_held_MB")
				// Goroutine stacks per link once updates have gone through
				// the links (BenchmarkLinkMemory's links never read one).
				b.ReportMetric((float64(ms.StackInuse)-float64(ms00.StackInuse))/float64(n), "idle_stack_B/link")
				b.ReportMetric(float64(ms.NumGC-ms0.NumGC), "window_gcs")
				b.ReportMetric(float64(debug.SetGCPercent(-1)), "gogc")
				debug.SetGCPercent(100)
				for range b.N {
					runtime.Gosched()
				}
			})
		}
	}
}

// startCPUProfile writes a CPU profile to path until stop is called.
func startCPUProfile(tb testing.TB, path string) (stop func()) {
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		tb.Fatal(err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}

func writeHeapProfile(tb testing.TB, path string) {
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	if err := pprof.WriteHeapProfile(f); err != nil {
		tb.Fatal(err)
	}
}

// linkGCHeadroom is the hub's GCHeadroom: berth-broker's default, or
// BERTH_LINK_GC_MIB MiB (0: Go's default GC).
func linkGCHeadroom() int64 {
	if v, err := strconv.ParseInt(os.Getenv("BERTH_LINK_GC_MIB"), 10, 64); err == nil {
		return v << 20
	}
	return agenthub.DefaultGCHeadroom
}

func linkCounts() []int {
	v := os.Getenv("BERTH_LINK_N")
	if v == "" {
		return []int{1000}
	}
	var out []int
	for _, f := range strings.Split(v, ",") {
		if n, err := strconv.Atoi(strings.TrimSpace(f)); err == nil && n > 0 {
			out = append(out, n)
		}
	}
	return out
}

type memSample struct {
	live, stack, rss  uint64
	goHeld, heapInuse uint64
	goroutines        int
}

func measureMem() memSample {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return memSample{
		live: ms.HeapAlloc + ms.StackInuse, stack: ms.StackInuse, rss: readRSS(), goroutines: runtime.NumGoroutine(),
		goHeld: ms.Sys - ms.HeapReleased, heapInuse: ms.HeapInuse,
	}
}

// readRSS returns the process's resident set size in bytes (0 off Linux).
func readRSS() uint64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// linkBroker is a broker core on SQLite with a hub behind a TLS listener.
type linkBroker struct {
	hub    *agenthub.Hub
	addr   string
	caFile string
}

type hubRef struct{ h *agenthub.Hub }

func (r *hubRef) Dispatch(ctx context.Context, id string, c broker.Command) (*broker.Result, error) {
	return r.h.Dispatch(ctx, id, c)
}

type linkNoTokens struct{}

func (linkNoTokens) IssueConnectionToken(context.Context, string, string, string) (string, error) {
	return "", nil
}

func newLinkBroker(tb testing.TB) *linkBroker {
	tb.Helper()
	ctx := context.Background()
	dir := tb.TempDir()
	st, err := sqlite.Open(ctx, filepath.Join(dir, "broker.db"))
	if err != nil {
		tb.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	ref := &hubRef{}
	svc, err := broker.New(ctx, st, ref, linkNoTokens{}, broker.Config{BrokerID: "bench"}, log)
	if err != nil {
		tb.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { _ = svc.Run(rctx); close(done) }()
	ref.h = agenthub.New(svc, nil, agenthub.Options{GCHeadroom: linkGCHeadroom()})

	cert, caPEM := selfSigned(tb)
	if err := os.WriteFile(filepath.Join(dir, "ca.pem"), caPEM, 0o600); err != nil {
		tb.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	srv := &http.Server{
		Handler:           ref.h.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	// berth-broker's agent connector: TLS handshakes finished by tlsaccept,
	// whose connections let idle links park on their sockets.
	tlsLn := tlsaccept.New(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}},
		tlsaccept.Options{Name: "agent", Logger: log})
	go func() { _ = srv.Serve(tlsLn) }()
	tb.Cleanup(func() {
		_ = srv.Close()
		_ = ref.h.Close()
		cancel()
		<-done
		_ = st.Close()
	})
	return &linkBroker{hub: ref.h, addr: ln.Addr().String(), caFile: filepath.Join(dir, "ca.pem")}
}

func selfSigned(tb testing.TB) (tls.Certificate, []byte) {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bench"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// agentProc is the child process holding the agents' ends of the links.
type agentProc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	once  sync.Once
}

func (p *agentProc) stop() {
	p.once.Do(func() {
		_ = p.stdin.Close()
		_ = p.cmd.Wait()
	})
}

// startAgents starts n agents in a child process and waits until the hub
// holds all their links. With interval > 0 each agent sends an update every
// interval (its host report with new load figures when changing, else a
// heartbeat).
func (e *linkBroker) startAgents(tb testing.TB, n int, interval time.Duration, changing bool) *agentProc {
	tb.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestLinkAgents$")
	cmd.Env = append(os.Environ(),
		"BERTH_LINK_AGENTS="+strconv.Itoa(n), "BERTH_LINK_ADDR="+e.addr, "BERTH_LINK_CA="+e.caFile,
		"BERTH_LINK_EVERY="+interval.String(), "BERTH_LINK_CHANGING="+strconv.FormatBool(changing))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	p := &agentProc{cmd: cmd, stdin: stdin}
	tb.Cleanup(p.stop)
	poll.Until(tb, 5*time.Minute, fmt.Sprintf("%d agents linked", n), func() bool { return e.hub.Count() == n })
	return p
}

// TestLinkAgents is the agents' process of the link benchmarks; it runs only
// when they start it.
func TestLinkAgents(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("BERTH_LINK_AGENTS"))
	if n == 0 {
		t.Skip("the agents' process of BenchmarkLinkMemory and BenchmarkLinkIdleCPU")
	}
	every, _ := time.ParseDuration(os.Getenv("BERTH_LINK_EVERY"))
	changing := os.Getenv("BERTH_LINK_CHANGING") == "true"
	caPEM, err := os.ReadFile(os.Getenv("BERTH_LINK_CA"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, MaxIdleConnsPerHost: -1}}
	url := "wss://" + os.Getenv("BERTH_LINK_ADDR") + "/agent/connect"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	conns := make([]*websocket.Conn, n)
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			for try := 0; ; try++ {
				c, err := linkAgent(ctx, hc, url, i)
				if err == nil {
					conns[i] = c
					go func() { // read acks until the link closes
						for {
							if _, _, err := c.Read(ctx); err != nil {
								return
							}
						}
					}()
					return
				}
				if try == 20 {
					t.Errorf("agent %d: %v", i, err)
					return
				}
				time.Sleep(100 * time.Millisecond) //sleep-ok: retry a refused connect
			}
		}()
	}
	wg.Wait()
	if every > 0 {
		go sendUpdates(ctx, conns, every, changing)
	}
	_, _ = io.Copy(io.Discard, os.Stdin) // until the benchmark is done
}

// sendUpdates makes every agent send one update per interval, spread evenly,
// numbered as a version 3 agent numbers them. The first round carries each
// agent's whole host report; after it, changing agents send their moved load
// and memory figures alone, and only every third round asks for an ack, as
// a version 3 agent does.
func sendUpdates(ctx context.Context, conns []*websocket.Conn, every time.Duration, changing bool) {
	t := time.NewTicker(every / time.Duration(len(conns)))
	defer t.Stop()
	for seq := 0; ; seq++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		i := seq % len(conns)
		c := conns[i]
		if c == nil {
			continue
		}
		u := &agentproto.Update{Seq: uint64(seq/len(conns) + 1)}
		figures := agentproto.HostFigures{
			Load:            agentproto.Load{One: float64(seq%97) / 10, Five: float64(seq%89) / 10, Fifteen: float64(seq%83) / 10},
			MemoryUsedBytes: int64(seq%1000) << 20,
		}
		switch {
		case seq < len(conns):
			h := hostReport(i)
			h.SetFigures(figures)
			u.Host = &h
		case changing:
			u.Figures = &figures
		}
		id := strconv.Itoa(seq)
		if round := seq / len(conns); round%3 != 0 && u.Host == nil {
			// A version 3 agent asks for an ack about every third
			// interval (half its read timeout: (90 s + 30 s) / 2).
			id = ""
		}
		data, err := agentproto.Encode(id, u)
		if err != nil {
			panic(err)
		}
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_ = c.Write(wctx, websocket.MessageText, data)
		cancel()
	}
}

func linkAgent(ctx context.Context, hc *http.Client, url string, i int) (*websocket.Conn, error) {
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(dctx, url, &websocket.DialOptions{HTTPClient: hc})
	if err != nil {
		return nil, err
	}
	hello, err := agentproto.Encode("", &agentproto.Hello{
		ProtocolVersion: agentproto.ProtocolVersion, ServerID: fmt.Sprintf("srv-%05d", i),
		AgentVersion: "2024.0.999", Host: hostReport(i), Sessions: []agentproto.Session{},
	})
	if err != nil {
		return nil, err
	}
	if err := c.Write(dctx, websocket.MessageText, hello); err != nil {
		return nil, err
	}
	_, data, err := c.Read(dctx)
	if err != nil {
		return nil, err
	}
	if m, err := agentproto.Decode(data); err != nil || m.Type != agentproto.TypeWelcome {
		return nil, fmt.Errorf("answer to hello: %s", data)
	}
	return c, nil
}

// hostReport is the report of agent i, as a Linux host's agent sends it.
func hostReport(i int) agentproto.HostReport {
	return agentproto.HostReport{
		Hostname: fmt.Sprintf("desktop-%05d.example.internal", i), IP: fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255),
		WebURLPath: "/", Version: "2024.0.17979", AgentVersion: "2024.0.999", Driver: "sim", Healthy: true,
		Endpoints: []agentproto.Endpoint{{Port: 8443, WebURLPath: "/", Protocol: agentproto.ProtocolHTTP}, {Port: 8443, Protocol: agentproto.ProtocolQUIC}},
		OS:        agentproto.OS{Family: "linux", Name: "Ubuntu", Version: "22.04.4 LTS (Jammy Jellyfish)", Kernel: "6.5.0-1017-aws"},
		Memory:    agentproto.Memory{TotalBytes: 32 << 30, UsedBytes: 4 << 30},
		CPU:       agentproto.CPU{Vendor: "GenuineIntel", Model: "Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz", Arch: "x86_64", Count: 8, CoresPerCPU: 4},
		AWS:       &agentproto.AWS{Region: "eu-west-1", InstanceType: "g4dn.2xlarge", InstanceID: fmt.Sprintf("i-%017x", i), ImageID: "ami-0abcdef1234567890"},
		GPUs:      []agentproto.GPU{{Vendor: "NVIDIA", Model: "Tesla T4"}},
		Tags:      map[string]string{"pool": "engineering", "zone": "eu-west-1a"},
	}
}
