package gateway_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/berth-dev/berth/internal/agent"
	"github.com/berth-dev/berth/internal/agentproto"
	"github.com/berth-dev/berth/internal/driver/vnc"
	"github.com/berth-dev/berth/internal/gateway"
	"github.com/berth-dev/berth/internal/localuser"
	"github.com/berth-dev/berth/internal/poll"
)

// realSessionEnv starts a vnc driver (real Xvnc) behind a gateway; it skips
// the test where that cannot run.
func realSessionEnv(t *testing.T) (*vnc.Driver, *broker, *httptest.Server) {
	t.Helper()
	return realSessionEnvConfig(t, nil)
}

// realSessionEnvConfig is realSessionEnv with mod applied to the driver's
// configuration.
func realSessionEnvConfig(t *testing.T, mod func(*vnc.Config)) (*vnc.Driver, *broker, *httptest.Server) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: runs a real Xvnc session as a local user")
	}
	cfg := vnc.Config{StateDir: t.TempDir(), Geometry: "1280x800", DesktopCommand: "openbox", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if mod != nil {
		mod(&cfg)
	}
	d, err := vnc.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	if ok, reason := d.Health(context.Background()); !ok {
		t.Skip(reason)
	}
	for _, u := range []string{"berthtest1", "berthtest2"} {
		localuser.Ensure(t, u)
	}
	b := newBroker(t)
	gw := gateway.New(gateway.Config{Verifier: b.verifier, Sessions: d, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	srv := httptest.NewUnstartedServer(gw.Handler())
	srv.StartTLS()
	t.Cleanup(func() {
		gw.Close()
		srv.Close()
	})
	return d, b, srv
}

func driverSession(t *testing.T, d *vnc.Driver, id string) agentproto.Session {
	t.Helper()
	list, _ := d.Sessions(context.Background())
	for _, s := range list {
		if s.ID == id {
			return s
		}
	}
	t.Fatalf("session %s not listed", id)
	return agentproto.Session{}
}

func TestGateway_RealXvnc(t *testing.T) {
	d, b, srv := realSessionEnv(t)
	ctx := context.Background()
	id := "gw-e2e-" + time.Now().Format("150405.000")[7:]
	perms := "[permissions]\n%owner% allow builtin\nberthtest2 allow display pointer\n"
	cctx, cancel := context.WithTimeout(ctx, 40*time.Second)
	defer cancel()
	if err := d.Create(cctx, agent.CreateRequest{ID: id, Owner: "berthtest1", Name: "e2e desk", MaxConcurrentClients: 2, PermissionsFile: perms}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Delete(ctx, id) })

	// The owner connects and reads Xvnc's handshake through the bridge.
	ownerTok := b.token(t, id, "berthtest1", "berthtest1")
	c1, status, body := dialWS(t, srv, ownerTok, id)
	if c1 == nil {
		t.Fatalf("owner: %d %s", status, body)
	}
	_, w, h, name := handshake(t, c1)
	if w != 1280 || h != 800 || name != "e2e desk" {
		t.Errorf("server init %dx%d %q", w, h, name)
	}
	poll.Until(t, 5*time.Second, "NumConnections 1", func() bool { return driverSession(t, d, id).NumConnections == 1 })

	// berthtest2 may watch; a third client is one too many.
	viewerTok := b.token(t, id, "berthtest1", "berthtest2")
	c2, status, body := dialWS(t, srv, viewerTok, id)
	if c2 == nil {
		t.Fatalf("viewer: %d %s", status, body)
	}
	handshake(t, c2)
	if c3, status, _ := dialWS(t, srv, ownerTok, id); c3 != nil || status != http.StatusServiceUnavailable {
		t.Errorf("third client: %d", status)
	}
	// A stranger, and a token of another session, are refused.
	if c, status, _ := dialWS(t, srv, b.token(t, id, "berthtest1", "nobody"), id); c != nil || status != http.StatusForbidden {
		t.Errorf("stranger: %d", status)
	}
	if c, status, _ := dialWS(t, srv, b.token(t, "other", "berthtest1", "berthtest1"), id); c != nil || status != http.StatusForbidden {
		t.Errorf("other session's token: %d", status)
	}

	// Revoking berthtest2's display drops the viewer at once.
	if err := d.SetPermissions(ctx, id, "[permissions]\n%owner% allow builtin\n"); err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
	defer rcancel()
	if _, _, err := c2.Read(rctx); websocket.CloseStatus(err) != websocket.StatusPolicyViolation {
		t.Errorf("viewer after revocation: %v", err)
	}
	poll.Until(t, 5*time.Second, "NumConnections 1 and a disconnection time", func() bool {
		s := driverSession(t, d, id)
		return s.NumConnections == 1 && !s.LastDisconnectionTime.IsZero()
	})

	// Deleting the session drops the owner too.
	if err := d.Delete(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c1.Read(rctx); websocket.CloseStatus(err) != websocket.StatusGoingAway {
		t.Errorf("owner after delete: %v", err)
	}
	if c, status, _ := dialWS(t, srv, ownerTok, id); c != nil || status != http.StatusNotFound {
		t.Errorf("after delete: %d", status)
	}
}
