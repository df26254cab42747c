package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/poll"
)

// TestBroker_RestartKeepsState restarts the broker on the same working path:
// sessions, servers (open/closed), API clients and signing keys survive, and a
// token issued before the restart still works.
func TestBroker_RestartKeepsState(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	b := MustRunMain(t, dir, nil)
	c := b.MustClient(t)
	ag := b.MustStartSimAgent(t, t.TempDir(), nil, hostReport("host-r", 0, nil))
	var srvID string
	poll.Until(t, 10*time.Second, "server", func() bool { srvID = servers(t, c)["host-r"].Id; return srvID != "" })
	resp := create(t, c, api.CreateSessionRequest{Name: "keep", Owner: "alice", Type: "VIRTUAL"})
	id := resp.SuccessfulList[0].Id
	waitState(t, c, id, api.StateReady)
	tok, err := c.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.CloseServers(ctx, []api.CloseServerRequest{{ServerId: srvID, Force: true}}); err != nil {
		t.Fatal(err)
	}
	// Rotate the key: the old token must still verify after the restart.
	var out bytes.Buffer
	if code := run(ctx, []string{"renew-auth-server-api-key", "--config", b.writeConfig(t)}, &out, io.Discard); code != 0 || !strings.Contains(out.String(), "Keys renewed.") {
		t.Fatalf("renew-auth-server-api-key: exit %d, %q", code, out.String())
	}
	stateDir := ag.StateDir
	ag.Stop()
	b.Close()

	b2 := MustRunMain(t, dir, nil)
	c2 := &api.Client{BrokerURL: "https://" + b2.ClientAddr(), HTTPClient: b2.hc}
	c2.ClientID, c2.ClientSecret = c.ClientID, c.ClientSecret
	if _, err := c2.Token(ctx); err != nil {
		t.Fatalf("API client lost: %v", err)
	}
	old := &api.Client{BrokerURL: "https://" + b2.ClientAddr(), HTTPClient: b2.hc}
	// Use the pre-restart token directly.
	oldTokenClient(old, tok)
	got, err := old.DescribeSessions(ctx, api.DescribeSessionsRequest{SessionIds: []string{id}})
	if err != nil || len(got.Sessions) != 1 {
		t.Fatalf("token from before the restart: %v, %+v", err, got)
	}
	s, err := c2.DescribeServers(ctx, api.DescribeServersRequest{ServerIds: []string{srvID}})
	if err != nil || len(s.Servers) != 1 || s.Servers[0].UnavailabilityReason == api.AvailabilityAvailable {
		t.Fatalf("server lost: %v %+v", err, s)
	}
	b2.MustStartSimAgent(t, stateDir, nil, hostReport("host-r", 0, nil))
	poll.Until(t, 10*time.Second, "server back, still closed", func() bool {
		s := servers(t, c2)["host-r"]
		return s.Id == srvID && s.UnavailabilityReason == api.ReasonServerClosed
	})
}

// oldTokenClient makes c send tok as its bearer token.
func oldTokenClient(c *api.Client, tok string) {
	base := c.HTTPClient.Transport
	hc := *c.HTTPClient
	hc.Transport = roundTripFunc(func(r *http.Request) (*http.Response, error) {
		r.Header.Set("Authorization", "Bearer "+tok)
		return base.RoundTrip(r)
	})
	c.HTTPClient = &hc
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
