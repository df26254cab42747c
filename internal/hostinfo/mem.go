package hostinfo

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/berth-dev/berth/internal/agentproto"
)

// probeMemory fills Memory from /proc/meminfo: used memory is MemTotal −
// MemAvailable (MemFree + Buffers + Cached on kernels older than 3.14), used
// swap is SwapTotal − SwapFree.
func probeMemory(_ context.Context, p *Prober, r *agentproto.HostReport) error {
	data, err := p.readFile("/proc/meminfo")
	if err != nil {
		return fmt.Errorf("meminfo: %w", err)
	}
	m := parseMeminfo(data)
	total, ok := m["MemTotal"]
	if !ok {
		return errors.New("meminfo: no MemTotal")
	}
	avail, ok := m["MemAvailable"]
	if !ok {
		avail = m["MemFree"] + m["Buffers"] + m["Cached"]
	}
	r.Memory.TotalBytes = total
	r.Memory.UsedBytes = max(total-avail, 0)
	r.Memory.SwapTotalBytes = m["SwapTotal"]
	r.Memory.SwapUsedBytes = max(m["SwapTotal"]-m["SwapFree"], 0)
	return nil
}

// parseMeminfo returns /proc/meminfo's values in bytes ("MemTotal: 123 kB").
func parseMeminfo(data []byte) map[string]int64 {
	m := make(map[string]int64)
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil || n < 0 {
			continue
		}
		if len(f) > 1 && strings.EqualFold(f[1], "kB") {
			n *= 1024
		}
		m[strings.TrimSpace(k)] = n
	}
	return m
}
