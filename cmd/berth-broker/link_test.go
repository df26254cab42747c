package main

import (
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/idlepoll"
	"github.com/berth-dev/berth/internal/poll"
)

// TestBroker_AgentLinkParks: behind the agent connector (connection limits,
// tlsaccept's handshakes, the agent authorization middleware) an idle agent
// link holds no goroutine: it waits in the shared idle poller
// (internal/idlepoll), not inside a TLS read, and holds no read buffer
// (internal/wslink).
func TestBroker_AgentLinkParks(t *testing.T) {
	b := MustRunMetricsBroker(t, nil)
	b.MustStartSimAgent(t, t.TempDir(), nil, hostReport("host-park", 0, nil))
	b.waitMetric(t, 1, "berth_broker_agent_links")
	p, err := idlepoll.Shared()
	if err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 20*time.Second, "the agent link idle in the poller", func() bool {
		buf := make([]byte, 4<<20)
		buf = buf[:runtime.Stack(buf, true)]
		for g := range strings.SplitSeq(string(buf), "\n\n") {
			if strings.Contains(g, "internal/agenthub.(*link).") {
				return false // reading, or waiting on a goroutine
			}
		}
		return p.Len() >= 1
	})
}
