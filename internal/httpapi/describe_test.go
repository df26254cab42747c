package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/sqlite"
)

type acceptAll struct{}

func (acceptAll) Dispatch(ctx context.Context, serverID string, cmd broker.Command) (*broker.Result, error) {
	return &broker.Result{}, nil
}

type noTokens struct{}

func (noTokens) IssueConnectionToken(ctx context.Context, sessionID, owner, user string) (string, error) {
	return "", nil
}

// testInfo is what the agent of server i reports: tags, a GPU, AWS fields on
// every other server, and strings that need escaping.
func testInfo(i int) broker.ServerInfo {
	info := broker.ServerInfo{
		Hostname: fmt.Sprintf("host-%d<&>", i), IP: fmt.Sprintf("10.0.0.%d", i), Port: 8443, WebURLPath: "/",
		Endpoints: []broker.Endpoint{{IPAddress: "10.0.0.1", Port: 8443, WebURLPath: "/", Protocol: "HTTP"}},
		Version:   "2024.0", AgentVersion: "test", Driver: "sim", Healthy: true,
		Host: broker.Host{OSFamily: "linux", OSName: "Debian \"GNU\"/Linux", OSVersion: "12", KernelVersion: "6.1.0",
			MemTotal: 64 << 30, MemUsed: 8 << 30, CPUVendor: "GenuineIntel", CPUModel: "Xeon", CPUArch: "x86_64", CPUs: 16, CoresPerCPU: 8,
			Load1: 0.25, GPUs: []broker.GPU{{Vendor: "NVIDIA", Model: "L4"}}, LoggedInUsers: []string{"alice"}},
		Tags: map[string]string{"rack": "r" + strconv.Itoa(i%3), "ünï": "cødé\u2028"},
	}
	if i%2 == 0 {
		info.Host.AWSRegion, info.Host.EC2InstanceID = "eu-west-1", "i-0123"
	}
	return info
}

// pageBroker is a broker on a temp SQLite file with servers srv-0..srv-(n-1)
// linked, and the API served over HTTPS on loopback.
func pageBroker(t testing.TB, servers int) (*broker.Service, *sqlite.Store, *httptest.Server) {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "b.db"))
	if err != nil {
		t.Fatal(err)
	}
	svc, err := broker.New(ctx, st, acceptAll{}, noTokens{}, broker.Config{BrokerID: "test", HeartbeatTimeout: time.Hour}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { _ = svc.Run(rctx); close(done) }()
	for i := range servers {
		if err := svc.AgentConnected(ctx, "", fmt.Sprintf("srv-%d", i), testInfo(i), nil); err != nil {
			t.Fatal(err)
		}
	}
	ts := httptest.NewTLSServer((&Server{Service: svc, Logger: slog.New(slog.DiscardHandler)}).Handler())
	t.Cleanup(func() { ts.Close(); cancel(); <-done; st.Close() })
	return svc, st, ts
}

// describe posts a DescribeSessions request and returns the body.
func describe(t *testing.T, ts *httptest.Server, req string) []byte {
	t.Helper()
	return postPage(t, ts, "/describeSessions", req)
}

// postPage posts req to path, expects 200 with a JSON body of the
// Content-Length it announced, and returns the body.
func postPage(t *testing.T, ts *httptest.Server, path, req string) []byte {
	t.Helper()
	resp, err := ts.Client().Post(ts.URL+path, "application/json", strings.NewReader(req))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %v %s", resp.StatusCode, err, body)
	}
	if resp.ContentLength != int64(len(body)) || resp.Header.Get("Content-Type") != "application/json" {
		t.Errorf("Content-Length %d, Content-Type %q, body %d bytes", resp.ContentLength, resp.Header.Get("Content-Type"), len(body))
	}
	return body
}

// expectedPage is the page that encoding/json gives for the broker's answer,
// converted the plain way (the converter, one ViewServer per server).
func expectedPage(t *testing.T, svc *broker.Service, q broker.DescribeQuery, requestID string) []byte {
	t.Helper()
	list, next, err := svc.DescribeSessions(context.Background(), q)
	if err != nil {
		t.Fatal(err)
	}
	cv := (&Server{Service: svc}).newConverter(httptest.NewRequest(http.MethodPost, "/", nil))
	resp := api.DescribeSessionsResponse{RequestId: requestID, Sessions: []api.Session{}, NextToken: next}
	for _, v := range list {
		resp.Sessions = append(resp.Sessions, cv.session(v))
	}
	b, err := json.Marshal(resp)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// changeServers changes pageBroker's servers the ways that must show in the
// pages: srv-1 sends a new host report (hostname and a tag "rack": "moved"),
// srv-2 is closed, srv-3's agent goes away, and a session lands on one.
func changeServers(t *testing.T, svc *broker.Service, hostname string) {
	t.Helper()
	ctx := context.Background()
	info := testInfo(1)
	info.Hostname, info.Tags["rack"] = hostname, "moved"
	if err := svc.AgentUpdate(ctx, "srv-1", &info, nil); err != nil {
		t.Fatal(err)
	}
	if res := svc.CloseServers(ctx, []string{"srv-2"}, []bool{true}); res[0].FailureCode != "" {
		t.Fatalf("close: %+v", res[0])
	}
	svc.AgentDisconnected(ctx, "srv-3")
	if res, err := svc.CreateSessions(ctx, []broker.CreateRequest{{Name: "more", Owner: "bob", Type: "VIRTUAL"}}); err != nil || res[0].Session == nil {
		t.Fatalf("create: %v %+v", err, res)
	}
}

// TestDescribeSessions_PageMatchesEncodingJSON checks the hand-built page,
// with the servers' cached encodings spliced in, byte for byte against
// encoding/json of the api types, on every page, and again after the servers
// changed: new agent reports, a closed server, an unreachable one, sessions
// moving the counts.
func TestDescribeSessions_PageMatchesEncodingJSON(t *testing.T) {
	ctx := context.Background()
	svc, st, ts := pageBroker(t, 5)
	now := time.Now().UTC().Truncate(time.Millisecond)
	var ss []*broker.Session
	for i := range 23 {
		x := &broker.Session{ID: fmt.Sprintf("sess-%02d", i), Name: "desk \"" + strconv.Itoa(i) + "\"", Owner: "alice",
			Type: "VIRTUAL", State: broker.StateReady, CreationTime: now, UpdatedAt: now, MaxConcurrentClients: int64(i % 2),
			NumOfConnections: int64(i % 3), StorageRoot: "/home/<alice>"}
		switch {
		case i%7 == 6:
			x.State, x.Substate = broker.StateCreating, broker.SubstatePendingPreparation
		case i%5 == 4:
			x.LastDisconnectionTime = now.Add(-time.Minute)
		}
		if i%6 != 5 {
			x.ServerID = fmt.Sprintf("srv-%d", i%5)
		}
		ss = append(ss, x)
	}
	if err := st.InsertSessions(ctx, ss); err != nil {
		t.Fatal(err)
	}
	check := func(t *testing.T) {
		t.Helper()
		token := ""
		pages := 0
		for {
			req := `{"Filters":[{"Key":"owner","Value":"alice"}],"MaxResults":10`
			if token != "" {
				req += `,"NextToken":"` + token + `"`
			}
			got := describe(t, ts, req+`}`)
			var resp api.DescribeSessionsResponse
			if err := json.Unmarshal(got, &resp); err != nil {
				t.Fatalf("invalid page %s: %v", got, err)
			}
			want := expectedPage(t, svc, broker.DescribeQuery{Filters: [][2]string{{"owner", "alice"}}, MaxResults: 10, NextToken: token}, resp.RequestId)
			if !bytes.Equal(got, want) {
				t.Fatalf("page %d differs:\n got %s\nwant %s", pages, got, want)
			}
			pages++
			if token = resp.NextToken; token == "" {
				break
			}
		}
		if pages != 3 {
			t.Fatalf("%d pages, want 3", pages)
		}
	}
	t.Run("fresh", check)
	t.Run("cached", check)

	// Sessions change: the pages show their new versions, not the
	// encodings that the pages above kept in the store's memos.
	errs, err := st.UpdateSessions(ctx, []string{"sess-00", "sess-07", "sess-12"}, func(x *broker.Session) error {
		x.NumOfConnections += 5
		x.LastDisconnectionTime = now.Add(-time.Hour)
		return nil
	})
	if err != nil || errors.Join(errs...) != nil {
		t.Fatal(err, errs)
	}
	t.Run("sessions changed", check)
	if got := string(describe(t, ts, `{"SessionIds":["sess-07"]}`)); !strings.Contains(got, `"NumOfConnections":6`) {
		t.Errorf("changed session sess-07 not shown with 6 connections:\n%s", got)
	}

	changeServers(t, svc, "renamed")
	t.Run("changed", check)
	got := string(describe(t, ts, `{"SessionIds":["sess-01","sess-02","sess-03"]}`))
	for _, want := range []string{`"Hostname":"renamed"`, `"Value":"moved"`, `"UnavailabilityReason":"SERVER_CLOSED"`, `"UnavailabilityReason":"UNREACHABLE_AGENT"`} {
		if !strings.Contains(got, want) {
			t.Errorf("page after the changes lacks %s:\n%s", want, got)
		}
	}
	if !strings.Contains(got, `"Type":"VIRTUAL","MaxConcurrentClients":1,"State":"UNKNOWN"`) {
		t.Errorf("session on the unreachable server not UNKNOWN:\n%s", got)
	}

	// The page shows the session UNKNOWN in its own copy: once the agent
	// relinks, the next pages (reusing the buffer) show it READY again.
	on3, err := st.ListSessions(ctx, broker.SessionFilter{ServerID: "srv-3"})
	if err != nil {
		t.Fatal(err)
	}
	var reports []broker.SessionReport
	for _, x := range on3 {
		reports = append(reports, broker.SessionReport{ID: x.ID, Name: x.Name, Owner: x.Owner, Type: x.Type, State: x.State,
			MaxConcurrentClients: x.MaxConcurrentClients, StorageRoot: x.StorageRoot, CreationTime: x.CreationTime,
			LastDisconnectionTime: x.LastDisconnectionTime, NumOfConnections: x.NumOfConnections})
	}
	if err := svc.AgentConnected(ctx, "", "srv-3", testInfo(3), reports); err != nil {
		t.Fatal(err)
	}
	t.Run("relinked", check)
	got = string(describe(t, ts, `{"SessionIds":["sess-03"]}`))
	if !strings.Contains(got, `"MaxConcurrentClients":1,"State":"READY"`) || strings.Contains(got, "UNREACHABLE_AGENT") {
		t.Errorf("session on the relinked server:\n%s", got)
	}
}

// TestDescribeSessions_ConcurrentPages serves pages from several goroutines at
// once (the page buffers are pooled): every answer must be the page asked for.
func TestDescribeSessions_ConcurrentPages(t *testing.T) {
	ctx := context.Background()
	_, st, ts := pageBroker(t, 3)
	now := time.Now().UTC().Truncate(time.Millisecond)
	var ss []*broker.Session
	for i := range 60 {
		ss = append(ss, &broker.Session{ID: fmt.Sprintf("sess-%02d", i), Name: "d", Owner: fmt.Sprintf("user%d", i%3), Type: "VIRTUAL",
			State: broker.StateReady, ServerID: fmt.Sprintf("srv-%d", i%3), CreationTime: now, UpdatedAt: now})
	}
	if err := st.InsertSessions(ctx, ss); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 6)
	for g := range 6 {
		wg.Go(func() {
			owner := fmt.Sprintf("user%d", g%3)
			for range 30 {
				resp, err := ts.Client().Post(ts.URL+"/describeSessions", "application/json",
					strings.NewReader(`{"Filters":[{"Key":"owner","Value":"`+owner+`"}]}`))
				if err != nil {
					errs <- err
					return
				}
				var page api.DescribeSessionsResponse
				err = json.NewDecoder(resp.Body).Decode(&page)
				resp.Body.Close()
				if err != nil || len(page.Sessions) != 20 {
					errs <- fmt.Errorf("%s: %d sessions, %v", owner, len(page.Sessions), err)
					return
				}
				for _, x := range page.Sessions {
					if x.Owner != owner || x.Server == nil || x.Server.Id != "srv-"+owner[4:] {
						errs <- fmt.Errorf("%s got session %s of %s on %v", owner, x.Id, x.Owner, x.Server)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
