package cluster_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/cluster"
	"github.com/berth-dev/berth/internal/poll"
	"github.com/berth-dev/berth/internal/postgres"
	"github.com/berth-dev/berth/internal/postgres/pgtest"
)

// hub stands in for one broker's agent hub in these unit tests of the relay:
// it holds links to some servers and answers commands for them.
type hub struct {
	mu     sync.Mutex
	linked map[string]bool
	got    []broker.Command
	answer func(ctx context.Context, serverID string, cmd broker.Command) (*broker.Result, error)
}

func newHub(servers ...string) *hub {
	h := &hub{linked: map[string]bool{}}
	for _, s := range servers {
		h.linked[s] = true
	}
	return h
}

func (h *hub) Dispatch(ctx context.Context, serverID string, cmd broker.Command) (*broker.Result, error) {
	h.mu.Lock()
	ok := h.linked[serverID]
	if ok {
		h.got = append(h.got, cmd)
	}
	answer := h.answer
	h.mu.Unlock()
	if !ok {
		return nil, broker.ErrAgentUnreachable
	}
	if answer != nil {
		return answer(ctx, serverID, cmd)
	}
	return &broker.Result{}, nil
}

func (h *hub) commands() []broker.Command {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]broker.Command(nil), h.got...)
}

// locations is the store's record of which broker holds which server's link.
type locations struct {
	mu sync.Mutex
	m  map[string]string
}

func (l *locations) set(server, brokerID string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.m[server] = brokerID
}

func (l *locations) locate(_ context.Context, server string) (string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.m[server]
	if !ok {
		return "", broker.ErrNotFound
	}
	return b, nil
}

// fixture is a database schema with the berth tables.
type fixture struct {
	dsn string
	loc *locations
}

func newFixture(t *testing.T) *fixture {
	dsn := pgtest.DSN(t)
	st, err := postgres.Open(t.Context(), dsn, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	return &fixture{dsn: dsn, loc: &locations{m: map[string]string{}}}
}

var fastOptions = cluster.Options{
	Heartbeat:  100 * time.Millisecond,
	Dead:       400 * time.Millisecond,
	LeaseTTL:   600 * time.Millisecond,
	Poll:       100 * time.Millisecond,
	RehomeWait: 5 * time.Second,
	Logger:     slog.New(slog.NewTextHandler(io.Discard, nil)),
}

// node is a running cluster.Node with its own pool.
type node struct {
	*cluster.Node
	pool   *pgxpool.Pool
	cancel context.CancelFunc
	done   chan struct{}
}

func (f *fixture) start(t *testing.T, id string, h *hub) *node {
	t.Helper()
	pool, err := pgxpool.New(t.Context(), f.dsn)
	if err != nil {
		t.Fatal(err)
	}
	n := cluster.New(pool, id, h, f.loc.locate, fastOptions)
	if err := n.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	nd := &node{Node: n, pool: pool, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(nd.done)
		_ = n.Run(ctx)
	}()
	t.Cleanup(nd.stop)
	return nd
}

// stop ends the node as a broker shutting down does (it gives its lease up).
func (nd *node) stop() {
	nd.cancel()
	<-nd.done
	nd.pool.Close()
}

// kill ends the node as SIGKILL would: its connections go first, so it can
// neither renew nor give up anything.
func (nd *node) kill() {
	nd.pool.Close()
	nd.cancel()
	<-nd.done
}

func TestDispatch_Relay(t *testing.T) {
	f := newFixture(t)
	hubA, hubB := newHub("a1"), newHub("b1")
	a := f.start(t, "broker-a", hubA)
	f.start(t, "broker-b", hubB)
	f.loc.set("a1", "broker-a")
	f.loc.set("b1", "broker-b")
	f.loc.set("gone", "")

	png := []byte("\x89PNG 4K bytes would go here")
	hubB.answer = func(ctx context.Context, serverID string, cmd broker.Command) (*broker.Result, error) {
		switch cmd.SessionID {
		case "fails":
			return nil, &broker.CommandError{Reason: "dcv said no"}
		case "lost":
			return nil, broker.ErrAgentUnreachable
		case "slow":
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(2 * time.Second):
			}
		}
		return &broker.Result{Images: []broker.Image{{Format: "png", Data: png, Primary: true}}}, nil
	}
	tests := []struct {
		name     string
		server   string
		session  string
		wantErr  func(error) bool
		wantImgs int
	}{
		{"local", "a1", "s", nil, 0},
		{"relayed", "b1", "s", nil, 1},
		{"agent failure", "b1", "fails", func(err error) bool {
			var ce *broker.CommandError
			return errors.As(err, &ce) && ce.Reason == "dcv said no"
		}, 0},
		{"link lost at the target", "b1", "lost", func(err error) bool { return errors.Is(err, broker.ErrAgentUnreachable) }, 0},
		{"no link anywhere", "gone", "s", func(err error) bool { return errors.Is(err, broker.ErrAgentUnreachable) }, 0},
		{"unknown server", "nope", "s", func(err error) bool { return errors.Is(err, broker.ErrAgentUnreachable) }, 0},
		{"deadline", "b1", "slow", func(err error) bool { return errors.Is(err, context.DeadlineExceeded) }, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), time.Second)
			defer cancel()
			cmd := broker.Command{Kind: broker.CommandScreenshot, SessionID: tt.session, Screenshot: &broker.ScreenshotCommand{MaxWidth: 3840, MaxHeight: 2160, Format: "png"}}
			res, err := a.Dispatch(ctx, tt.server, cmd)
			if tt.wantErr != nil {
				if !tt.wantErr(err) {
					t.Fatalf("Dispatch: %v (result %+v)", err, res)
				}
				return
			}
			if err != nil {
				t.Fatalf("Dispatch: %v", err)
			}
			if len(res.Images) != tt.wantImgs {
				t.Fatalf("got %d images, want %d", len(res.Images), tt.wantImgs)
			}
			if tt.wantImgs > 0 && string(res.Images[0].Data) != string(png) {
				t.Fatalf("image data %q", res.Images[0].Data)
			}
		})
	}
	got := hubB.commands()
	if len(got) == 0 || got[0].Screenshot == nil || got[0].Screenshot.MaxWidth != 3840 {
		t.Fatalf("broker b ran %+v", got)
	}
}

func TestDispatch_Create(t *testing.T) {
	f := newFixture(t)
	hubB := newHub("b1")
	a := f.start(t, "broker-a", newHub())
	f.start(t, "broker-b", hubB)
	f.loc.set("b1", "broker-b")
	cmd := broker.Command{Kind: broker.CommandCreate, SessionID: "s1", Create: &broker.CreateCommand{
		Name: "n", Owner: `CORP\alice`, Type: "VIRTUAL", MaxConcurrentClients: 3,
		Spec: broker.SessionSpec{AutorunFile: "run.sh", AutorunFileArguments: []string{"a b", "'c'"}, PermissionsFile: "[permissions]\n%owner% allow builtin\n"},
	}}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if _, err := a.Dispatch(ctx, "b1", cmd); err != nil {
		t.Fatal(err)
	}
	got := hubB.commands()
	if len(got) != 1 || got[0].Create == nil || got[0].Create.Owner != `CORP\alice` ||
		len(got[0].Create.Spec.AutorunFileArguments) != 2 || got[0].Create.Spec.AutorunFileArguments[0] != "a b" {
		t.Fatalf("broker b ran %+v", got)
	}
}

// TestDispatch_Rehome: the broker holding the link dies; the command waits
// for the agent to reconnect to another broker and runs there.
func TestDispatch_Rehome(t *testing.T) {
	f := newFixture(t)
	hubB, hubC := newHub("x"), newHub()
	hubB.answer = func(ctx context.Context, _ string, _ broker.Command) (*broker.Result, error) {
		<-ctx.Done() // never answers: it is about to die
		return nil, ctx.Err()
	}
	a := f.start(t, "broker-a", newHub())
	b := f.start(t, "broker-b", hubB)
	f.start(t, "broker-c", hubC)
	f.loc.set("x", "broker-b")

	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := a.Dispatch(ctx, "x", broker.Command{Kind: broker.CommandDelete, SessionID: "s1"})
		done <- err
	}()
	poll.Until(t, 10*time.Second, "the command at broker b", func() bool { return len(hubB.commands()) == 1 })
	b.kill()
	// The agent reconnects to c, which takes it a while.
	//sleep-ok: the agent's reconnection delay, part of the scenario; nothing waits on it
	time.Sleep(300 * time.Millisecond)
	hubC.mu.Lock()
	hubC.linked["x"] = true
	hubC.mu.Unlock()
	f.loc.set("x", "broker-c")
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Dispatch: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Dispatch did not return")
	}
	if got := hubC.commands(); len(got) != 1 || got[0].SessionID != "s1" {
		t.Fatalf("broker c ran %+v", got)
	}
}

// TestDispatch_DeadBrokerTimesOut: with no broker taking the agent over, the
// command fails with ErrAgentUnreachable after RehomeWait, not at the
// caller's deadline.
func TestDispatch_DeadBrokerTimesOut(t *testing.T) {
	f := newFixture(t)
	a := f.start(t, "broker-a", newHub())
	b := f.start(t, "broker-b", newHub("x"))
	f.loc.set("x", "broker-b")
	b.kill()
	poll.Until(t, 20*fastOptions.Dead, "broker b to count as dead", func() bool {
		list, err := a.Brokers(t.Context())
		return err == nil && len(list) == 1
	})
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	start := time.Now()
	_, err := a.Dispatch(ctx, "x", broker.Command{Kind: broker.CommandDelete, SessionID: "s1"})
	if !errors.Is(err, broker.ErrAgentUnreachable) {
		t.Fatalf("Dispatch: %v", err)
	}
	if d := time.Since(start); d > fastOptions.RehomeWait+5*time.Second {
		t.Fatalf("Dispatch took %s", d)
	}
}

func waitLeader(t *testing.T, within time.Duration, nodes ...*node) *node {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		var leaders []*node
		for _, n := range nodes {
			if n.IsLeader(t.Context()) {
				leaders = append(leaders, n)
			}
		}
		if len(leaders) > 1 {
			t.Fatalf("%d leaders at once", len(leaders))
		}
		if len(leaders) == 1 {
			return leaders[0]
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no leader within %s", within)
	return nil
}

func TestLease(t *testing.T) {
	f := newFixture(t)
	nodes := []*node{f.start(t, "b1", newHub()), f.start(t, "b2", newHub()), f.start(t, "b3", newHub())}
	first := waitLeader(t, 3*time.Second, nodes...)
	// Exactly one leader for a while.
	for range 20 {
		if got := waitLeader(t, time.Second, nodes...); got != first {
			t.Fatalf("leadership moved from %s to %s without a failure", first.ID(), got.ID())
		}
		time.Sleep(25 * time.Millisecond)
	}
	// SIGKILL-like death: another broker takes over once the lease expires.
	first.kill()
	var rest []*node
	for _, n := range nodes {
		if n != first {
			rest = append(rest, n)
		}
	}
	start := time.Now()
	second := waitLeader(t, 3*time.Second, rest...)
	t.Logf("%s took the lease %s after %s died", second.ID(), time.Since(start), first.ID())
	// A clean stop gives the lease up at once.
	second.stop()
	var last *node
	for _, n := range rest {
		if n != second {
			last = n
		}
	}
	waitLeader(t, 2*time.Second, last)
}

func TestBrokers(t *testing.T) {
	f := newFixture(t)
	a := f.start(t, "b1", newHub())
	b := f.start(t, "b2", newHub())
	list, err := a.Brokers(t.Context())
	if err != nil || len(list) != 2 {
		t.Fatalf("Brokers: %v, %v", list, err)
	}
	b.kill()
	poll.Until(t, 20*fastOptions.Dead, "Brokers to list b1 alone once b2 died", func() bool {
		list, err = a.Brokers(t.Context())
		return err == nil && len(list) == 1 && list[0] == "b1"
	})
}

// TestStart_DuplicateID: a second broker started with the ID of a live one
// is refused with a message that names the ID, where the other broker runs
// and how old its heartbeat is; once that broker has stopped, or has died
// and its heartbeat is older than Dead, the ID may be used again.
func TestStart_DuplicateID(t *testing.T) {
	f := newFixture(t)
	first := f.start(t, "b1", newHub())
	pool, err := pgxpool.New(t.Context(), f.dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	opts := fastOptions
	opts.Address = "host other, pid 42"
	err = cluster.New(pool, "b1", newHub(), f.loc.locate, opts).Start(t.Context())
	if !errors.Is(err, cluster.ErrDuplicateID) {
		t.Fatalf("second broker b1: %v, want ErrDuplicateID", err)
	}
	host, _ := os.Hostname()
	for _, want := range []string{`"b1"`, "host " + host + ", pid ", "last heartbeat was ", " ago"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("refusal %q does not say %q", err, want)
		}
	}
	t.Log(err)

	// Stopped: the ID is free at once.
	first.stop()
	second := f.start(t, "b1", newHub())
	// Killed: free once its heartbeat is older than Dead.
	second.kill()
	third := cluster.New(pool, "b1", newHub(), f.loc.locate, opts)
	deadline := time.Now().Add(10 * fastOptions.Dead)
	for {
		err := third.Start(t.Context())
		if err == nil {
			break
		}
		if !errors.Is(err, cluster.ErrDuplicateID) || time.Now().After(deadline) {
			t.Fatalf("after the first b1 died: %v", err)
		}
		time.Sleep(fastOptions.Heartbeat)
	}
}

// TestStart_TakesOverFromGoneProcess: a broker restarted after a crash on
// the same machine takes its broker-id over at once when the process that
// holds the row is gone, while a row held by a running process is not taken
// over before its heartbeat ages (before, a broker started at once after a
// SIGKILL refused to start: the dead one's heartbeat was still fresh).
func TestStart_TakesOverFromGoneProcess(t *testing.T) {
	self := cluster.ThisProcess()
	if self == (cluster.Process{}) {
		t.Skip("/proc does not tell this process's identity here")
	}
	f := newFixture(t)
	pool, err := pgxpool.New(t.Context(), f.dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	opts := fastOptions
	opts.Dead = time.Hour // no heartbeat ages enough in this test: only a takeover frees the ID

	// Held by a running process (this test's parent): the ID stays taken.
	parent := cluster.ProcessOf(os.Getppid())
	if parent == (cluster.Process{}) {
		t.Skip("/proc does not tell the parent process's identity here")
	}
	holder := opts
	holder.Process, holder.Address = parent, "host here, the running parent"
	if err := cluster.New(pool, "b1", newHub(), f.loc.locate, holder).Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	err = cluster.New(pool, "b1", newHub(), f.loc.locate, opts).Start(ctx)
	cancel()
	if !errors.Is(err, cluster.ErrDuplicateID) {
		t.Fatalf("b1 held by a running process: %v, want ErrDuplicateID", err)
	}

	// Held by a process that has exited: taken over at once.
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	dead := self
	dead.PID = cmd.ProcessState.Pid()
	holder.Process, holder.Address = dead, "host here, a crashed broker"
	if _, err := pool.Exec(t.Context(), `DELETE FROM brokers WHERE id = 'b1'`); err != nil {
		t.Fatal(err)
	}
	if err := cluster.New(pool, "b1", newHub(), f.loc.locate, holder).Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel = context.WithTimeout(t.Context(), 30*time.Second) // a guard: the wait it replaces is an hour
	defer cancel()
	if err := cluster.New(pool, "b1", newHub(), f.loc.locate, opts).Start(ctx); err != nil {
		t.Fatalf("b1 held by exited process %d: %v", dead.PID, err)
	}
	var process string
	if err := pool.QueryRow(t.Context(), `SELECT process FROM brokers WHERE id = 'b1'`).Scan(&process); err != nil {
		t.Fatal(err)
	}
	if process != self.String() {
		t.Errorf("row's process %q, want this process %q", process, self.String())
	}
}
