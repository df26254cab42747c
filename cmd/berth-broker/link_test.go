package main

import (
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/poll"
)

// TestBroker_AgentLinkParks: behind the agent connector (connection limits,
// tlsaccept's handshakes, the agent authorization middleware) an idle agent
// link waits on its socket, not inside a TLS read: its goroutine keeps a
// small stack and no read buffer (internal/wslink).
func TestBroker_AgentLinkParks(t *testing.T) {
	b := MustRunMetricsBroker(t, nil)
	b.MustStartSimAgent(t, t.TempDir(), nil, hostReport("host-park", 0, nil))
	b.waitMetric(t, 1, "berth_broker_agent_links")
	poll.Until(t, 20*time.Second, "the agent link's reader parked on its socket", func() bool {
		buf := make([]byte, 4<<20)
		buf = buf[:runtime.Stack(buf, true)]
		var waiting, parked int
		for g := range strings.SplitSeq(string(buf), "\n\n") {
			if !strings.Contains(g, "internal/agenthub.(*link).") {
				continue
			}
			if strings.Contains(g, "crypto/tls.(*Conn).Read") {
				waiting++
			}
			if strings.Contains(g, "WaitReadable") {
				waiting++
				parked++
			}
		}
		return waiting == 1 && parked == 1
	})
}
