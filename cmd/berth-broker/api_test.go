package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"image"
	_ "image/png"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/agentproto"
	"github.com/berth-dev/berth/internal/driver/sim"
	"github.com/berth-dev/berth/internal/poll"
)

func hostReport(hostname string, maxVirtual int, tags map[string]string) agentproto.HostReport {
	r := agentproto.HostReport{
		Hostname: hostname, IP: "127.0.0.1", WebURLPath: "/", Version: "sim-1", AgentVersion: "test",
		Driver: "sim", Healthy: true, MaxVirtualSessions: maxVirtual, Tags: tags,
		Endpoints: []agentproto.Endpoint{{IP: "127.0.0.1", Port: 8443, WebURLPath: "/", Protocol: "HTTP"}},
	}
	r.OS.Family, r.OS.Name, r.OS.Version, r.OS.Kernel = "linux", "Debian GNU/Linux", "12", "6.1.0"
	r.CPU.Vendor, r.CPU.Model, r.CPU.Arch, r.CPU.Count, r.CPU.CoresPerCPU = "GenuineIntel", "Sim CPU", "x86_64", 4, 2
	r.Memory.TotalBytes, r.Memory.UsedBytes = 8<<30, 2<<30
	return r
}

// describe returns all sessions by ID.
func describe(t *testing.T, c *api.Client, ids ...string) map[string]api.Session {
	t.Helper()
	out := map[string]api.Session{}
	req := api.DescribeSessionsRequest{SessionIds: ids}
	for {
		resp, err := c.DescribeSessions(context.Background(), req)
		if err != nil {
			t.Fatalf("DescribeSessions: %v", err)
		}
		for _, s := range resp.Sessions {
			out[s.Id] = s
		}
		if resp.NextToken == "" {
			return out
		}
		req.NextToken = resp.NextToken
	}
}

func waitState(t *testing.T, c *api.Client, id, state string) api.Session {
	t.Helper()
	var last api.Session
	poll.Until(t, 15*time.Second, "session "+id+" "+state, func() bool {
		last = describe(t, c, id)[id]
		return last.State == state
	})
	return last
}

func create(t *testing.T, c *api.Client, reqs ...api.CreateSessionRequest) *api.CreateSessionsResponse {
	t.Helper()
	resp, err := c.CreateSessions(context.Background(), reqs)
	if err != nil {
		t.Fatalf("CreateSessions: %v", err)
	}
	return resp
}

func servers(t *testing.T, c *api.Client) map[string]api.Server {
	t.Helper()
	resp, err := c.DescribeServers(context.Background(), api.DescribeServersRequest{})
	if err != nil {
		t.Fatalf("DescribeServers: %v", err)
	}
	out := map[string]api.Server{}
	for _, s := range resp.Servers {
		out[s.Hostname] = s
	}
	return out
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// TestBroker_API drives every API through HTTPS with a token from /oauth2/token
// against a broker on SQLite and agents speaking the real protocol (sim driver).
func TestBroker_API(t *testing.T) {
	t.Parallel() // it mostly waits for the broker's timeouts: overlap it with the others that do
	ctx := context.Background()
	b := MustRunMain(t, t.TempDir(), nil)
	c := b.MustClient(t)

	flaky := sim.New()
	flaky.FailOwners = map[string]string{"flaky": "simulated failure: no display"}
	agA := b.MustStartSimAgent(t, t.TempDir(), flaky, hostReport("host-a", 0, map[string]string{"pool": "retry", "gpu": "none"}))
	agB := b.MustStartSimAgent(t, t.TempDir(), nil, hostReport("host-b", 0, map[string]string{"pool": "retry", "region": "eu"}))
	b.MustStartSimAgent(t, t.TempDir(), nil, hostReport("host-c", 2, map[string]string{"gpu": "a100"}))
	poll.Until(t, 10*time.Second, "three available servers", func() bool {
		n := 0
		for _, s := range servers(t, c) {
			if s.Availability == api.AvailabilityAvailable {
				n++
			}
		}
		return n == 3
	})
	srv := servers(t, c)
	idA, idB, idC := srv["host-a"].Id, srv["host-b"].Id, srv["host-c"].Id
	_ = agB

	t.Run("ServerReport", func(t *testing.T) {
		s := srv["host-c"]
		if s.Host.Os.Family != "linux" || s.Host.CpuInfo.NumberOfCpus != 4 || s.Host.Memory.TotalBytes != 8<<30 || len(s.Endpoints) != 1 {
			t.Errorf("server report not carried: %+v", s)
		}
		tags := map[string]string{}
		for _, kv := range s.Tags {
			tags[kv.Key] = kv.Value
		}
		want := map[string]string{"dcv:os-family": "linux", "dcv:max-virtual-sessions": "2", "dcv:max-concurrent-sessions-per-user": "unlimited", "gpu": "a100"}
		for k, v := range want {
			if tags[k] != v {
				t.Errorf("tag %s = %q, want %q", k, tags[k], v)
			}
		}
	})

	var ready string
	t.Run("CreateGoodAndBadItems", func(t *testing.T) {
		resp := create(t, c,
			api.CreateSessionRequest{Name: "s1", Owner: "alice", Type: "virtual", Requirements: "tag:gpu = 'a100'"},
			api.CreateSessionRequest{Owner: "alice", Type: "VIRTUAL"},
			api.CreateSessionRequest{Name: "x", Owner: "../etc", Type: "VIRTUAL"},
			api.CreateSessionRequest{Name: "x", Owner: "alice", Type: "VIRTUAL", InitFile: "../../bin/sh"},
			api.CreateSessionRequest{Name: "x", Owner: "alice", Type: "VIRTUAL", Requirements: "tag:gpu = "},
		)
		if len(resp.SuccessfulList) != 1 || len(resp.UnsuccessfulList) != 4 {
			t.Fatalf("got %d successful, %d unsuccessful: %+v", len(resp.SuccessfulList), len(resp.UnsuccessfulList), resp.UnsuccessfulList)
		}
		s := resp.SuccessfulList[0]
		if s.State != api.StateCreating || s.Substate != api.SubstateSessionPlacing || s.Type != "VIRTUAL" {
			t.Errorf("new session = %s/%s, want CREATING/SESSION_PLACING", s.State, s.Substate)
		}
		for i, field := range []string{"Name:", "Owner:", "InitFile:", "Requirements:"} {
			if got := resp.UnsuccessfulList[i].FailureReason; !strings.HasPrefix(got, field) {
				t.Errorf("failure %d = %q, want it to name %s", i, got, field)
			}
		}
		if resp.UnsuccessfulList[1].CreateSessionRequestData.Owner != "../etc" {
			t.Errorf("unsuccessful item does not echo the request: %+v", resp.UnsuccessfulList[1])
		}
		got := waitState(t, c, s.Id, api.StateReady)
		if got.Server == nil || got.Server.Id != idC {
			t.Fatalf("session placed on %+v, want host-c (tag:gpu = 'a100')", got.Server)
		}
		if got.Server.Ip != "127.0.0.1" || got.Server.Hostname != "host-c" || got.CreationTime.IsZero() {
			t.Errorf("session fields not filled: %+v", got)
		}
		ready = s.Id
	})

	t.Run("NoServerFits", func(t *testing.T) {
		resp := create(t, c, api.CreateSessionRequest{Name: "n", Owner: "bob", Type: "VIRTUAL", Requirements: "tag:gpu = 'h100'"})
		if len(resp.UnsuccessfulList) != 1 || !strings.Contains(resp.UnsuccessfulList[0].FailureReason, "do not match the requirements") {
			t.Fatalf("want a failure naming the requirements, got %+v", resp)
		}
	})

	t.Run("QueueTimesOut", func(t *testing.T) {
		resp := create(t, c, api.CreateSessionRequest{Name: "q", Owner: "bob", Type: "VIRTUAL", Requirements: "tag:gpu = 'h100'", EnqueueRequest: true})
		if len(resp.SuccessfulList) != 1 {
			t.Fatalf("enqueued create refused: %+v", resp.UnsuccessfulList)
		}
		s := waitState(t, c, resp.SuccessfulList[0].Id, api.StateDeleted)
		if !strings.Contains(s.StateReason, "create-sessions-queue-max-time-seconds") {
			t.Errorf("StateReason = %q, want the queue timeout", s.StateReason)
		}
	})

	t.Run("QueueWaitsForCapacity", func(t *testing.T) {
		// host-c takes 2 sessions; s1 holds one.
		resp := create(t, c,
			api.CreateSessionRequest{Name: "c2", Owner: "carol", Type: "VIRTUAL", Requirements: "tag:gpu = 'a100'"},
			api.CreateSessionRequest{Name: "c3", Owner: "carol", Type: "VIRTUAL", Requirements: "tag:gpu = 'a100'", EnqueueRequest: true},
		)
		if len(resp.SuccessfulList) != 2 {
			t.Fatalf("got %+v", resp)
		}
		first, queued := resp.SuccessfulList[0].Id, resp.SuccessfulList[1].Id
		waitState(t, c, first, api.StateReady)
		// host-c is full: the queued session waits for capacity.
		poll.Until(t, 10*time.Second, "host-c SERVER_FULL", func() bool {
			return servers(t, c)["host-c"].UnavailabilityReason == api.ReasonServerFull
		})
		if st := describe(t, c, queued)[queued]; st.State != api.StateCreating || st.Server != nil {
			t.Fatalf("queued session = %s on %v, want CREATING unplaced", st.State, st.Server)
		}
		del, err := c.DeleteSessions(ctx, []api.DeleteSessionRequest{{SessionId: first, Owner: "carol"}})
		if err != nil || len(del.SuccessfulList) != 1 {
			t.Fatalf("delete: %v %+v", err, del)
		}
		s := waitState(t, c, queued, api.StateReady)
		if s.Server.Id != idC {
			t.Errorf("queued session placed on %s, want host-c", s.Server.Id)
		}
	})

	t.Run("RetryOnAnotherServer", func(t *testing.T) {
		// host-b carries more load than host-a, so the first try goes to host-a, which fails "flaky".
		create(t, c, api.CreateSessionRequest{Name: "load", Owner: "dave", Type: "VIRTUAL", Requirements: "server:Hostname = 'host-b'"})
		resp := create(t, c, api.CreateSessionRequest{Name: "r", Owner: "flaky", Type: "VIRTUAL", Requirements: "tag:pool = 'retry'"})
		s := waitState(t, c, resp.SuccessfulList[0].Id, api.StateReady)
		if s.Server.Id != idB {
			t.Errorf("retried session on %s, want host-b", s.Server.Hostname)
		}
	})

	t.Run("DisableRetryOnFailure", func(t *testing.T) {
		resp := create(t, c, api.CreateSessionRequest{Name: "r", Owner: "flaky", Type: "VIRTUAL", Requirements: "server:Hostname = 'host-a'", DisableRetryOnFailure: true})
		s := waitState(t, c, resp.SuccessfulList[0].Id, api.StateDeleted)
		if !strings.Contains(s.StateReason, "simulated failure: no display") {
			t.Errorf("StateReason = %q, want the agent's reason", s.StateReason)
		}
	})

	t.Run("ConnectionData", func(t *testing.T) {
		cd, err := c.GetSessionConnectionData(ctx, ready, "alice")
		if err != nil {
			t.Fatal(err)
		}
		claims, err := b.auth.VerifyConnectionToken(ctx, cd.ConnectionToken)
		if err != nil {
			t.Fatalf("connection token: %v", err)
		}
		if claims.SessionID != ready || claims.Owner != "alice" || claims.User != "alice" || claims.ID == "" {
			t.Errorf("claims = %+v", claims)
		}
		if d := claims.ExpiresAt.Sub(claims.IssuedAt); d != time.Hour {
			t.Errorf("token lifetime %s, want 1h (connect-session-token-duration-minutes)", d)
		}
		var ae *api.Error
		if _, err := c.GetSessionConnectionData(ctx, ready, "mallory"); !errors.As(err, &ae) || ae.StatusCode != 400 || ae.Code != "USER_NOT_ALLOWED" {
			t.Errorf("user without permission: %v", err)
		}
		if _, err := c.GetSessionConnectionData(ctx, "no-such-session", "alice"); !errors.As(err, &ae) || ae.StatusCode != 400 {
			t.Errorf("unknown session: %v", err)
		}
	})

	t.Run("UpdateSessionPermissions", func(t *testing.T) {
		resp, err := c.UpdateSessionPermissions(ctx, []api.UpdateSessionPermissionsRequest{
			{SessionId: ready, Owner: "alice", PermissionsFile: b64("[permissions]\n%owner% allow builtin\nmallory allow display\n")},
			{SessionId: ready, Owner: "bob", PermissionsFile: b64("[permissions]\n")},
			{SessionId: ready, Owner: "alice", PermissionsFile: "!!notbase64"},
			{SessionId: ready, Owner: "alice", PermissionsFile: b64("[permissions]\nmallory allow teleport\n")},
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.SuccessfulList) != 1 || len(resp.UnsuccessfulList) != 3 {
			t.Fatalf("got %+v", resp)
		}
		for i, want := range []string{"owner", "base64", "teleport"} {
			if !strings.Contains(resp.UnsuccessfulList[i].FailureReason, want) {
				t.Errorf("failure %d = %q, want %q in it", i, resp.UnsuccessfulList[i].FailureReason, want)
			}
		}
		if _, err := c.GetSessionConnectionData(ctx, ready, "mallory"); err != nil {
			t.Errorf("mallory allowed display after the update, got %v", err)
		}
	})

	t.Run("Screenshots", func(t *testing.T) {
		w, h := int64(320), int64(200)
		resp, err := c.GetSessionScreenshots(ctx, []api.GetSessionScreenshotRequest{{SessionId: ready, MaxWidth: &w, MaxHeight: &h}, {SessionId: "nope"}})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.SuccessfulList) != 1 || len(resp.UnsuccessfulList) != 1 {
			t.Fatalf("got %+v", resp)
		}
		img := resp.SuccessfulList[0].SessionScreenshot.Images[0]
		data, _ := base64.StdEncoding.DecodeString(img.Data)
		cfg, format, err := image.DecodeConfig(bytes.NewReader(data))
		if err != nil || format != "png" || cfg.Width > 320 || cfg.Height > 200 || !img.Primary || img.CreationTime.IsZero() {
			t.Errorf("screenshot %s %dx%d primary=%v: %v", format, cfg.Width, cfg.Height, img.Primary, err)
		}
	})

	t.Run("DeleteOwnershipAndStates", func(t *testing.T) {
		resp, err := c.DeleteSessions(ctx, []api.DeleteSessionRequest{{SessionId: ready, Owner: "bob"}, {SessionId: "nope", Owner: "bob"}})
		if err != nil || len(resp.UnsuccessfulList) != 2 {
			t.Fatalf("got %v %+v", err, resp)
		}
		if !strings.Contains(resp.UnsuccessfulList[0].FailureReason, "owner") || resp.UnsuccessfulList[1].FailureReason != "The requested dcvSession does not exist" {
			t.Errorf("reasons = %+v", resp.UnsuccessfulList)
		}
		resp, err = c.DeleteSessions(ctx, []api.DeleteSessionRequest{{SessionId: ready, Owner: "alice"}})
		if err != nil || len(resp.SuccessfulList) != 1 || resp.SuccessfulList[0].State != api.StateDeleting {
			t.Fatalf("got %v %+v", err, resp)
		}
		waitState(t, c, ready, api.StateDeleted) // still visible for delete-session-duration-hours
	})

	t.Run("CloseAndOpenServers", func(t *testing.T) {
		resp, err := c.CloseServers(ctx, []api.CloseServerRequest{{ServerId: idB}, {ServerId: "nope"}})
		if err != nil || len(resp.UnsuccessfulList) != 2 {
			t.Fatalf("got %v %+v", err, resp)
		}
		if resp.UnsuccessfulList[0].FailureCode != api.FailureCodeServerHasSessions || resp.UnsuccessfulList[1].FailureCode != api.FailureCodeServerNotFound {
			t.Errorf("codes = %+v", resp.UnsuccessfulList)
		}
		if resp, err = c.CloseServers(ctx, []api.CloseServerRequest{{ServerId: idB, Force: true}}); err != nil || len(resp.SuccessfulList) != 1 {
			t.Fatalf("forced close: %v %+v", err, resp)
		}
		if s := servers(t, c)["host-b"]; s.UnavailabilityReason != api.ReasonServerClosed {
			t.Errorf("closed server reason = %q", s.UnavailabilityReason)
		}
		cr := create(t, c, api.CreateSessionRequest{Name: "x", Owner: "erin", Type: "VIRTUAL", Requirements: "server:Hostname = 'host-b'"})
		if len(cr.UnsuccessfulList) != 1 {
			t.Errorf("closed server took a session: %+v", cr)
		}
		op, err := c.OpenServers(ctx, []api.OpenServerRequest{{ServerId: idB}, {ServerId: "nope"}})
		if err != nil || len(op.SuccessfulList) != 1 || op.UnsuccessfulList[0].FailureCode != api.FailureCodeServerNotFound {
			t.Fatalf("open: %v %+v", err, op)
		}
		cr = create(t, c, api.CreateSessionRequest{Name: "x", Owner: "erin", Type: "VIRTUAL", Requirements: "server:Hostname = 'host-b'"})
		waitState(t, c, cr.SuccessfulList[0].Id, api.StateReady)
	})

	t.Run("PaginationAndFilters", func(t *testing.T) {
		var reqs []api.CreateSessionRequest
		for range 25 {
			reqs = append(reqs, api.CreateSessionRequest{Name: "p", Owner: "pager", Type: "VIRTUAL", Requirements: "tag:region = 'eu'"})
		}
		resp := create(t, c, reqs...)
		if len(resp.SuccessfulList) != 25 {
			t.Fatalf("created %d", len(resp.SuccessfulList))
		}
		ten := 10
		seen := map[string]bool{}
		req := api.DescribeSessionsRequest{Filters: []api.KeyValuePair{{Key: "owner", Value: "pager"}}, MaxResults: &ten}
		pages := 0
		for {
			page, err := c.DescribeSessions(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			pages++
			for _, s := range page.Sessions {
				if seen[s.Id] || s.Owner != "pager" {
					t.Fatalf("duplicate or foreign session %s on page %d", s.Id, pages)
				}
				seen[s.Id] = true
			}
			if page.NextToken == "" {
				break
			}
			if pages == 1 { // sessions added between pages do not disturb the cursor
				create(t, c, api.CreateSessionRequest{Name: "late", Owner: "other", Type: "VIRTUAL"})
			}
			req.NextToken = page.NextToken
		}
		if len(seen) != 25 || pages != 3 {
			t.Errorf("saw %d sessions on %d pages, want 25 on 3", len(seen), pages)
		}
		tagged, err := c.DescribeSessions(ctx, api.DescribeSessionsRequest{Filters: []api.KeyValuePair{{Key: "tag:region", Value: "eu"}, {Key: "owner", Value: "pager"}}})
		if err != nil || len(tagged.Sessions) != 25 {
			t.Errorf("tag filter: %v, %d sessions", err, len(tagged.Sessions))
		}
		var ae *api.Error
		first, _ := c.DescribeSessions(ctx, api.DescribeSessionsRequest{MaxResults: &ten})
		tampered := []byte(first.NextToken)
		tampered[3] ^= 1
		if _, err := c.DescribeSessions(ctx, api.DescribeSessionsRequest{MaxResults: &ten, NextToken: string(tampered)}); !errors.As(err, &ae) || ae.StatusCode != 400 {
			t.Errorf("tampered NextToken: %v", err)
		}
		if _, err := c.DescribeSessions(ctx, api.DescribeSessionsRequest{MaxResults: &ten, NextToken: first.NextToken, Filters: []api.KeyValuePair{{Key: "owner", Value: "x"}}}); !errors.As(err, &ae) || ae.StatusCode != 400 {
			t.Errorf("NextToken replayed on another query: %v", err)
		}
		one := 1
		sp, err := c.DescribeServers(ctx, api.DescribeServersRequest{MaxResults: &one})
		if err != nil || len(sp.Servers) != 1 || sp.NextToken == "" {
			t.Fatalf("server page: %v %+v", err, sp)
		}
	})

	t.Run("AgentLossAndReconcile", func(t *testing.T) {
		resp := create(t, c, api.CreateSessionRequest{Name: "k", Owner: "kate", Type: "VIRTUAL", Requirements: "server:Hostname = 'host-a'"})
		id := resp.SuccessfulList[0].Id
		waitState(t, c, id, api.StateReady)
		stateDir := agA.StateDir
		agA.Stop()
		waitState(t, c, id, api.StateUnknown)
		if s := servers(t, c)["host-a"]; s.UnavailabilityReason != api.ReasonUnreachableAgent {
			t.Errorf("server reason = %q, want UNREACHABLE_AGENT", s.UnavailabilityReason)
		}
		// The agent comes back with the same state dir and the same sessions.
		agA = b.MustStartSimAgent(t, stateDir, flaky, hostReport("host-a", 0, map[string]string{"pool": "retry", "gpu": "none"}))
		waitState(t, c, id, api.StateReady)
		all := describe(t, c)
		n := 0
		for _, s := range all {
			if s.Id == id {
				n++
			}
		}
		if srv := servers(t, c)["host-a"]; srv.Id != idA || n != 1 {
			t.Errorf("after reconnect: server %s (want %s), %d copies of the session", srv.Id, idA, n)
		}
	})
}
