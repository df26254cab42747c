package vnc

import (
	"context"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/agent"
)

// BenchmarkDriver_CreateReady measures Create (to READY, init started)
// followed by Delete; run it with -benchtime 20x. It reports the median and
// the slowest create.
func BenchmarkDriver_CreateReady(b *testing.B) {
	d := newDriver(b, "")
	ctx := context.Background()
	var times []time.Duration
	for b.Loop() {
		id := newID(b)
		t0 := time.Now()
		if err := d.Create(ctx, agent.CreateRequest{ID: id, Owner: testUser1}); err != nil {
			b.Fatal(err)
		}
		times = append(times, time.Since(t0))
		if err := d.Delete(ctx, id); err != nil {
			b.Fatal(err)
		}
	}
	slices.Sort(times)
	b.ReportMetric(float64(times[len(times)/2].Microseconds())/1000, "ms-median")
	b.ReportMetric(float64(times[len(times)-1].Microseconds())/1000, "ms-max")
}

// BenchmarkDriver_Idle10 starts 10 sessions and measures the resident memory
// and CPU of the process that runs the driver while it idles for 10 s.
func BenchmarkDriver_Idle10(b *testing.B) {
	for b.Loop() {
		d := newDriver(b, "")
		ctx := context.Background()
		for range 10 {
			id := newID(b)
			if err := d.Create(ctx, agent.CreateRequest{ID: id, Owner: testUser2}); err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { d.Delete(ctx, id) })
		}
		runtime.GC()
		debug.FreeOSMemory()
		cpu0 := cpuTicks(b)
		t0 := time.Now()
		time.Sleep(10 * time.Second)
		for range 20 { // the agent lists its sessions every update interval
			d.Sessions(ctx)
		}
		busy := float64(cpuTicks(b)-cpu0) / 100 / time.Since(t0).Seconds() * 100
		b.ReportMetric(rssMB(b), "MB-rss")
		b.ReportMetric(busy, "%cpu")
	}
}

// cpuTicks returns this process's user+system time in clock ticks.
func cpuTicks(tb testing.TB) int64 {
	data, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		tb.Fatal(err)
	}
	f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return u + s
}

// rssMB returns this process's resident set size in MB.
func rssMB(tb testing.TB) float64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		tb.Fatal(err)
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseFloat(strings.Fields(rest)[0], 64)
			return kb / 1024
		}
	}
	return 0
}
