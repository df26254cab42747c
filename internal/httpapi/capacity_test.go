package httpapi

import (
	"context"
	"encoding/pem"
	"log/slog"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/sqlite"
)

// capacityBroker serves a broker on loopback whose scaling signals show a
// shortfall in two classes (queued and refused) and one idle server on EC2,
// measured with a clock the test sets. It returns the server, a client
// whose answers are checked against api/openapi.yaml, and what moves the
// broker's clock on.
func capacityBroker(t *testing.T) (*httptest.Server, *api.Client, func(time.Duration)) {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "b.db"))
	if err != nil {
		t.Fatal(err)
	}
	svc, err := broker.New(ctx, st, acceptAll{}, noTokens{}, broker.Config{BrokerID: "test", HeartbeatTimeout: 2 * time.Hour,
		QueueMaxTime: 2 * time.Hour, Limits: broker.SessionLimits{MaxSessions: 1}}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	now := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	svc.Now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); defer mu.Unlock(); now = now.Add(d) }

	full := testInfo(1) // no EC2
	full.Hostname, full.MaxVirtualSessions, full.GLCapable = "full", 2, true
	if err := svc.AgentConnected(ctx, "", "srv-full", full, nil); err != nil {
		t.Fatal(err)
	}
	idle := testInfo(0) // on EC2: i-0123 in eu-west-1
	idle.Hostname = "idle"
	if err := svc.AgentConnected(ctx, "", "srv-idle", idle, nil); err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewTLSServer((&Server{Service: svc, Logger: slog.New(slog.DiscardHandler)}).Handler())
	t.Cleanup(func() { ts.Close(); st.Close() })
	c := &api.Client{BrokerURL: ts.URL, HTTPClient: specChecked(t, ts)}

	// alice and bob fill srv-full; alice's second waits for her quota (no
	// shortfall: servers would not help), carol's and dave's for room.
	for _, owner := range []string{"alice", "alice", "bob", "carol", "dave"} {
		r := api.CreateSessionRequest{Name: "d", Owner: owner, Type: "VIRTUAL", EnqueueRequest: true, Requirements: "server:Hostname='full'"}
		if _, err := c.CreateSessions(t.Context(), []api.CreateSessionRequest{r}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.DescribeCapacity(t.Context()); err != nil { // the first look at srv-idle
		t.Fatal(err)
	}
	advance(31 * time.Minute)
	// A GL create refused: srv-full has no room.
	res, err := c.CreateSessions(t.Context(), []api.CreateSessionRequest{{Name: "g", Owner: "erin", Type: "VIRTUAL",
		DcvGlEnabled: true, Requirements: "server:Hostname='full'"}})
	if err != nil || len(res.UnsuccessfulList) != 1 {
		t.Fatalf("GL create: %+v, %v; want it refused", res, err)
	}
	advance(time.Minute)
	return ts, c, advance
}

// TestCapacityAPI reads the scaling signals over the API (answers checked
// against api/openapi.yaml).
func TestCapacityAPI(t *testing.T) {
	_, c, _ := capacityBroker(t)
	got, err := c.DescribeCapacity(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Shortfall) != 2 {
		t.Fatalf("shortfall = %+v, want 2 classes", got.Shortfall)
	}
	q, r := got.Shortfall[0], got.Shortfall[1]
	t0 := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	if q.Type != "VIRTUAL" || q.DcvGlEnabled || q.Requirements != "server:Hostname = 'full'" || q.Count != 2 || q.Queued != 2 ||
		q.Refused != 0 || q.OldestSince == nil || !q.OldestSince.Equal(t0) || q.OldestWaitSeconds != 32*60 || len(q.Class) != 12 {
		t.Errorf("queued class = %+v", q)
	}
	if !r.DcvGlEnabled || r.Count != 1 || r.Refused != 1 || r.Queued != 0 || r.OldestWaitSeconds != 60 || r.Class == q.Class {
		t.Errorf("refused class = %+v", r)
	}
	if len(got.IdleServers) != 1 {
		t.Fatalf("idle = %+v, want srv-idle", got.IdleServers)
	}
	if i := got.IdleServers[0]; i.Id != "srv-idle" || i.Hostname != "idle" || i.Ec2InstanceId != "i-0123" || i.AwsRegion != "eu-west-1" ||
		!i.IdleSince.Equal(t0) || i.IdleSeconds != 32*60 {
		t.Errorf("idle server = %+v", i)
	}
	if got.IdleServerMinutes != 30 || !got.CheckedAt.Equal(t0.Add(32*time.Minute)) {
		t.Errorf("answer = %+v", got)
	}
}

// TestAutoscaleExample runs docs/examples/autoscale-aws.sh once against a
// real broker's capacity answer, with a fake aws on PATH that records its
// calls: its jq filters read the broker's JSON, it asks each group for the
// instances the shortfall needs, closes the idle server in berth and
// terminates its instance.
func TestAutoscaleExample(t *testing.T) {
	for _, tool := range []string{"bash", "jq", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("the example needs %s: %v", tool, err)
		}
	}
	ts, c, advance := capacityBroker(t)
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ts.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	calls := filepath.Join(dir, "aws.log")
	fake := `#!/bin/bash
echo "$*" >> "$AWS_LOG"
case "$*" in
*"describe-auto-scaling-groups --auto-scaling-group-names asg-default "*) printf '2\t10\t1\t2\n' ;;
*"describe-auto-scaling-groups --auto-scaling-group-names asg-gl "*) printf '1\t4\t0\t0\n' ;;
*"describe-auto-scaling-instances --instance-ids i-0123 "*) echo asg-default ;;
*describe*) echo "unexpected: $*" >&2; exit 254 ;;
esac
`
	if err := os.WriteFile(filepath.Join(dir, "aws"), []byte(fake), 0o755); err != nil {
		t.Fatal(err)
	}
	script, err := filepath.Abs("../../docs/examples/autoscale-aws.sh")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(t.Context(), "bash", script, "--once")
	cmd.Env = append(os.Environ(), "PATH="+dir+":"+os.Getenv("PATH"), "AWS_LOG="+calls, "CURL_CA_BUNDLE="+ca,
		"BERTH_BROKER_URL="+ts.URL, "BERTH_TOKEN=test", "ASG_DEFAULT=asg-default", "ASG_GL=asg-gl", "SESSIONS_PER_SERVER=4")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("autoscale-aws.sh: %v\n%s", err, out)
	}
	log, err := os.ReadFile(calls)
	if err != nil {
		t.Fatal(err)
	}
	var changes []string
	for l := range strings.Lines(string(log)) {
		if !strings.Contains(l, " describe-") {
			changes = append(changes, strings.TrimSpace(l))
		}
	}
	want := []string{
		// 2 queued sessions, 4 per server, none launching: 2 → 3.
		"autoscaling set-desired-capacity --auto-scaling-group-name asg-default --desired-capacity 3",
		// 1 refused GL session; the one instance launching covers it: nothing.
		"autoscaling terminate-instance-in-auto-scaling-group --instance-id i-0123 --should-decrement-desired-capacity",
	}
	if strings.Join(changes, "\n") != strings.Join(want, "\n") {
		t.Errorf("aws changes:\n%s\nwant:\n%s\nscript output:\n%s", strings.Join(changes, "\n"), strings.Join(want, "\n"), out)
	}
	// The idle server was closed in berth before its instance went.
	advance(time.Minute) // past the last check's scaling-interval-seconds
	got, err := c.DescribeCapacity(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(got.IdleServers) != 0 {
		t.Errorf("idle servers after the script = %+v, want srv-idle closed", got.IdleServers)
	}
}
