package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"image"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/driver/sim"
	"github.com/berth-dev/berth/internal/poll"
)

// TestBroker_Lifecycle covers health, default screenshot size, fast placement of
// new servers, and the cleanup of unreachable servers and their sessions.
func TestBroker_Lifecycle(t *testing.T) {
	t.Parallel() // it mostly waits for the broker's timeouts: overlap it with the others that do
	ctx := context.Background()
	b := MustRunMain(t, t.TempDir(), func(c *Config) {
		c.UnreachableSessionsTimeout = 2 * time.Second
		c.UnreachableServerTimeout = 4 * time.Second
	})
	c := b.MustClient(t)

	// A new server takes sessions as soon as it is listed: no convergence delay.
	drv := sim.New()
	ag := b.MustStartSimAgent(t, t.TempDir(), drv, hostReport("host-l", 0, nil))
	poll.Until(t, 10*time.Second, "server listed", func() bool { return servers(t, c)["host-l"].Id != "" })
	resp := create(t, c, api.CreateSessionRequest{Name: "l", Owner: "lee", Type: "VIRTUAL"})
	if len(resp.SuccessfulList) != 1 {
		t.Fatalf("a just-registered server refused a session: %+v", resp.UnsuccessfulList)
	}
	id := resp.SuccessfulList[0].Id
	waitState(t, c, id, api.StateReady)

	// Screenshots default to session-screenshot-max-width/-height (160x100).
	shots, err := c.GetSessionScreenshots(ctx, []api.GetSessionScreenshotRequest{{SessionId: id}})
	if err != nil || len(shots.SuccessfulList) != 1 {
		t.Fatalf("screenshot: %v %+v", err, shots)
	}
	data, _ := base64.StdEncoding.DecodeString(shots.SuccessfulList[0].SessionScreenshot.Images[0].Data)
	cfg, _, err := image.DecodeConfig(bytes.NewReader(data))
	if err != nil || cfg.Width > 160 || cfg.Height > 100 || cfg.Width == 0 {
		t.Errorf("default screenshot %dx%d: %v", cfg.Width, cfg.Height, err)
	}

	// A session that ends on the host is reported DELETED.
	drv.SimulateExit(id)
	if s := waitState(t, c, id, api.StateDeleted); !strings.Contains(s.StateReason, "ended") && !strings.Contains(s.StateReason, "no longer") {
		t.Errorf("StateReason = %q", s.StateReason)
	}

	// An unhealthy desktop service makes the server unavailable for placement.
	drv.SetHealth(false, "Xvnc is not installed")
	poll.Until(t, 10*time.Second, "UNHEALTHY_DCV_SERVER", func() bool {
		return servers(t, c)["host-l"].UnavailabilityReason == api.ReasonUnhealthyDCVServer
	})
	if r := create(t, c, api.CreateSessionRequest{Name: "u", Owner: "lee", Type: "VIRTUAL"}); len(r.UnsuccessfulList) != 1 {
		t.Errorf("unhealthy server took a session: %+v", r)
	}
	drv.SetHealth(true, "")
	poll.Until(t, 10*time.Second, "healthy again", func() bool {
		return servers(t, c)["host-l"].Availability == api.AvailabilityAvailable
	})

	// Agent gone: its sessions are UNKNOWN, then DELETED after
	// seconds-before-deleting-sessions-unreachable-server, and the server is
	// removed after seconds-before-deleting-unreachable-dcv-server.
	resp = create(t, c, api.CreateSessionRequest{Name: "l2", Owner: "lee", Type: "VIRTUAL"})
	id2 := resp.SuccessfulList[0].Id
	waitState(t, c, id2, api.StateReady)
	ag.Stop()
	waitState(t, c, id2, api.StateUnknown)
	if s := waitState(t, c, id2, api.StateDeleted); !strings.Contains(s.StateReason, "unreachable") {
		t.Errorf("StateReason = %q", s.StateReason)
	}
	poll.Until(t, 10*time.Second, "server removed", func() bool {
		_, ok := servers(t, c)["host-l"]
		return !ok
	})
}
