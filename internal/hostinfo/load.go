package hostinfo

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/berth-dev/berth/internal/agentproto"
)

// probeLoad fills Load from /proc/loadavg.
func probeLoad(_ context.Context, p *Prober, r *agentproto.HostReport) error {
	data, err := p.readFile("/proc/loadavg")
	if err != nil {
		return fmt.Errorf("loadavg: %w", err)
	}
	l, err := parseLoadavg(string(data))
	if err != nil {
		return err
	}
	r.Load = l
	return nil
}

// parseLoadavg reads the three load averages at the start of /proc/loadavg.
func parseLoadavg(s string) (agentproto.Load, error) {
	f := strings.Fields(s)
	if len(f) < 3 {
		return agentproto.Load{}, fmt.Errorf("loadavg: malformed %.40q", s)
	}
	var v [3]float64
	for i := range v {
		x, err := strconv.ParseFloat(f[i], 64)
		if err != nil || x < 0 {
			return agentproto.Load{}, fmt.Errorf("loadavg: malformed %.40q", s)
		}
		v[i] = x
	}
	return agentproto.Load{One: v[0], Five: v[1], Fifteen: v[2]}, nil
}
