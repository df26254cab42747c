// Package cluster lets several brokers share one PostgreSQL database and serve
// one fleet. A Node is one broker's membership:
//
//   - it renews the broker's row in the brokers table every second, so the
//     others know it is alive;
//   - it holds or competes for the lease that gates cluster-wide periodic work
//     (broker.Leaser): the holder renews it every second, and when it dies
//     another broker takes it once it expires (LeaseTTL, 5 s by default);
//   - it is the broker's broker.Dispatcher: a command for an agent whose link
//     this broker holds goes straight to the local hub; one for an agent linked
//     to another broker is written to the commands table and announced with
//     NOTIFY; the broker holding the link claims it, runs it on its hub and
//     writes the result back, announced the same way. Both sides also poll,
//     so a lost notification (or a restart of PostgreSQL) costs at most a poll
//     interval. If the target broker dies, or the agent moves to another
//     broker before the command was claimed, the command is sent again to the
//     broker that holds the agent's link next (agents treat creates and
//     deletes of the same session as idempotent).
//
// Times that decide liveness and leases are PostgreSQL's now(), so the brokers'
// clocks need not agree.
package cluster

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/logattr"
)

// Interface guards.
var (
	_ broker.Dispatcher = (*Node)(nil)
	_ broker.Leaser     = (*Node)(nil)
)

// Locator tells which broker holds a server's agent link, as the store
// records it (empty when none or unknown). broker.Store's GetServer gives it.
type Locator func(ctx context.Context, serverID string) (brokerID string, err error)

// Options tune a Node. Zero values take the defaults noted.
type Options struct {
	// Heartbeat is how often the broker renews its row and its lease (1s).
	Heartbeat time.Duration
	// Dead is how long a broker may miss heartbeats before the others treat
	// it as dead (3s).
	Dead time.Duration
	// LeaseTTL is how long a lease lasts unless renewed (5s).
	LeaseTTL time.Duration
	// Poll is the fallback poll period for commands and results (500ms).
	Poll time.Duration
	// RehomeWait bounds how long a command waits for an agent whose broker
	// died to reconnect to another broker (15s).
	RehomeWait time.Duration
	// Logger receives the node's logs (slog.Default()).
	Logger *slog.Logger
	// OnBrokerDead is called on the lease holder, once per broker that
	// stopped renewing its heartbeat, so that work lost with it is done
	// again (broker.Service.Redrive). Optional.
	OnBrokerDead func(ctx context.Context, id string)
	// Address says where this broker runs, for the message that refuses
	// another broker started with the same ID (the host name and process
	// ID when empty).
	Address string
	// Process identifies this broker's process in its row (ThisProcess()
	// when zero), so that a broker restarted after a crash on the same
	// machine takes its broker-id over at once (Process.gone).
	Process Process
}

func (o *Options) setDefaults() {
	def := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&o.Heartbeat, time.Second)
	def(&o.Dead, 3*time.Second)
	def(&o.LeaseTTL, 5*time.Second)
	def(&o.Poll, 500*time.Millisecond)
	def(&o.RehomeWait, 15*time.Second)
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Process == (Process{}) {
		o.Process = ThisProcess()
	}
	if o.Address == "" {
		host, _ := os.Hostname()
		o.Address = fmt.Sprintf("host %s, pid %d", host, os.Getpid())
	}
}

// leaseName names the one lease: the broker holding it runs the queue,
// expiry and cleanup.
const leaseName = "maintenance"

// Node is one broker's place in the cluster. Create it with New, start it with
// Run; it is safe for concurrent use.
type Node struct {
	pool *pgxpool.Pool
	id   string
	// instance tells this process's row of brokers from that of another
	// process with the same ID.
	instance string
	local    broker.Dispatcher
	locate   Locator
	opts     Options
	log      *slog.Logger

	// channel is the NOTIFY channel, one per database schema.
	channel string

	// leaderUntil is the monotonic deadline (UnixNano of a time.Now() taken
	// before the renewal was sent) until which this broker holds the lease.
	leaderUntil atomic.Int64
	base        time.Time // monotonic origin of leaderUntil

	mu      sync.Mutex
	waiters map[int64]*waiter // relayed commands this broker waits for, by ID

	wake chan struct{} // a command for this broker was announced
}

// New returns a Node for broker id on pool. local runs commands on the agent
// links this broker holds (the agent hub); locate finds the broker holding
// another server's link.
func New(pool *pgxpool.Pool, id string, local broker.Dispatcher, locate Locator, opts Options) *Node {
	opts.setDefaults()
	return &Node{
		pool:     pool,
		id:       id,
		instance: rand.Text(),
		local:    local,
		locate:   locate,
		opts:     opts,
		log:      opts.Logger.With("component", "cluster", logattr.BrokerID, id),
		base:     time.Now(),
		waiters:  make(map[int64]*waiter),
		wake:     make(chan struct{}, 1),
	}
}

// ID returns the broker's ID.
func (n *Node) ID() string { return n.id }

// Start registers the broker and settles the NOTIFY channel name. Call it
// before Run and before the first Dispatch.
func (n *Node) Start(ctx context.Context) error {
	var schema string
	if err := n.pool.QueryRow(ctx, `SELECT current_schema()`).Scan(&schema); err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	sum := sha256.Sum256([]byte(schema))
	n.channel = "berth_" + hex.EncodeToString(sum[:8])
	if err := n.register(ctx); err != nil {
		return err
	}
	return nil
}

// ErrDuplicateID is wrapped by the error of Start when another broker with
// the same ID is alive.
var ErrDuplicateID = errors.New("another live broker has this broker-id")

// register claims the broker's row: a new one, one left by a broker whose
// heartbeat is older than Dead (it died or stopped), one held by a process
// that is gone (Process.gone: it crashed on this machine), or this
// process's own. A row whose heartbeat is fresh is watched until it would be
// older than Dead: if its holder renewed it meanwhile, it is alive and
// register refuses, naming where that broker runs and how old its heartbeat
// is, since two brokers with one ID would take each other's agent links and
// commands; if not, the ID is taken over.
func (n *Node) register(ctx context.Context) error {
	for range 8 { // each turn claims, takes over or waits; a race costs a turn
		h, err := n.claimRow(ctx)
		switch {
		case err != nil:
			return err
		case h == nil:
			return nil
		case h.vanished:
			continue // the row went away (its broker stopped): claim it
		case n.opts.Process.gone(parseProcess(h.process), processStart):
			took, err := n.takeRow(ctx, h.instance)
			if err != nil {
				return err
			}
			if took {
				n.log.Info("took the broker-id over from a process of this machine that is gone",
					"previous", h.address, "previous_heartbeat_age", h.age.Round(time.Millisecond))
				return nil
			}
			continue
		}
		// Fresh, and its process not known to be gone: see whether it is
		// renewed before it would count as dead.
		wait := min(max(n.opts.Dead-h.age, 0)+n.opts.Heartbeat/2, n.opts.Dead+n.opts.Heartbeat)
		n.log.Info("broker-id held by a broker whose heartbeat is fresh; waiting to see whether it is alive",
			"holder", h.address, "heartbeat_age", h.age.Round(time.Millisecond), "wait", wait.Round(time.Millisecond))
		if h.renewed(ctx, n, wait) {
			return h.refusal(n)
		}
	}
	return fmt.Errorf("cluster: register broker %q: the row kept changing hands: %w", n.id, ErrDuplicateID)
}

// holder is the process that holds a broker's row, as claimRow found it.
type holder struct {
	vanished                   bool      // the row went away between claimRow's two statements
	instance, address, process string    // instance is "" for a broker of an earlier release
	heartbeat                  time.Time // PostgreSQL's time of its last heartbeat
	age                        time.Duration
}

// claimRow inserts or claims the broker's row; it returns nil when it did, or
// else the row's holder.
func (n *Node) claimRow(ctx context.Context) (*holder, error) {
	ctx, cancel := context.WithTimeout(ctx, max(n.opts.Heartbeat, 5*time.Second))
	defer cancel()
	tag, err := n.pool.Exec(ctx, `INSERT INTO brokers (id, instance, address, process) VALUES ($1, $2, $3, $5)
		ON CONFLICT (id) DO UPDATE SET heartbeat = now(), started_at = now(), instance = EXCLUDED.instance, address = EXCLUDED.address, process = EXCLUDED.process
		WHERE brokers.instance = EXCLUDED.instance OR brokers.heartbeat < now() - make_interval(secs => $4)`,
		n.id, n.instance, n.opts.Address, n.opts.Dead.Seconds(), n.opts.Process.String())
	if err != nil {
		return nil, fmt.Errorf("cluster: register broker %q: %w", n.id, err)
	}
	if tag.RowsAffected() == 1 {
		return nil, nil
	}
	h := &holder{}
	var age float64
	err = n.pool.QueryRow(ctx, `SELECT instance, address, process, heartbeat, EXTRACT(EPOCH FROM now() - heartbeat)::float8 FROM brokers WHERE id = $1`,
		n.id).Scan(&h.instance, &h.address, &h.process, &h.heartbeat, &age)
	if errors.Is(err, pgx.ErrNoRows) {
		return &holder{vanished: true}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("cluster: register broker %q: %w", n.id, err)
	}
	h.age = time.Duration(age * float64(time.Second))
	return h, nil
}

// takeRow claims the row from instance, a process that is gone; false when
// the row changed meanwhile.
func (n *Node) takeRow(ctx context.Context, instance string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, max(n.opts.Heartbeat, 5*time.Second))
	defer cancel()
	tag, err := n.pool.Exec(ctx, `UPDATE brokers SET heartbeat = now(), started_at = now(), instance = $2, address = $3, process = $4
		WHERE id = $1 AND instance = $5`, n.id, n.instance, n.opts.Address, n.opts.Process.String(), instance)
	if err != nil {
		return false, fmt.Errorf("cluster: register broker %q: %w", n.id, err)
	}
	return tag.RowsAffected() == 1, nil
}

// renewed waits wait (or until ctx ends), then reports whether h's process
// still holds the row with a newer heartbeat than claimRow saw: it is alive.
func (h *holder) renewed(ctx context.Context, n *Node, wait time.Duration) bool {
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return true // not starting anyway: the refusal says why not
	case <-t.C:
	}
	ctx, cancel := context.WithTimeout(ctx, max(n.opts.Heartbeat, 5*time.Second))
	defer cancel()
	var newer bool
	var age float64
	err := n.pool.QueryRow(ctx, `SELECT heartbeat > $3, EXTRACT(EPOCH FROM now() - heartbeat)::float8 FROM brokers WHERE id = $1 AND instance = $2`,
		n.id, h.instance, h.heartbeat).Scan(&newer, &age)
	if err != nil || !newer {
		return false
	}
	h.age = time.Duration(age * float64(time.Second)) // for the refusal
	return true
}

// refusal is register's error for a live holder.
func (h *holder) refusal(n *Node) error {
	addr := h.address
	if addr == "" {
		addr = "an unknown address (a broker of an earlier release)"
	}
	return fmt.Errorf("cluster: broker-id %q is in use by a live broker at %s, whose last heartbeat was %s ago: give each broker its own broker-id, or stop that one first (it is taken over once its heartbeat is older than %s): %w",
		n.id, addr, h.age.Round(time.Millisecond), n.opts.Dead, ErrDuplicateID)
}

// Run keeps the broker's heartbeat and lease, listens for announcements and
// serves commands for the agents linked here until ctx is done; then it gives
// the lease up so another broker takes it at once.
func (n *Node) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, f := range []func(context.Context){n.heartbeatLoop, n.listenLoop, n.serveLoop} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f(ctx)
		}()
	}
	wg.Wait()
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	n.leaderUntil.Store(0)
	if _, err := n.pool.Exec(rctx, `DELETE FROM leases WHERE name = $1 AND holder = $2`, leaseName, n.id); err != nil {
		n.log.Warn("give up lease", "err", err)
	}
	if _, err := n.pool.Exec(rctx, `DELETE FROM brokers WHERE id = $1 AND instance = $2`, n.id, n.instance); err != nil {
		n.log.Warn("leave cluster", "err", err)
	}
	return nil
}

// IsLeader implements broker.Leaser: whether this broker holds the lease now.
func (n *Node) IsLeader(context.Context) bool {
	return int64(time.Since(n.base)) < n.leaderUntil.Load()
}

func (n *Node) heartbeatLoop(ctx context.Context) {
	t := time.NewTicker(n.opts.Heartbeat)
	defer t.Stop()
	failing := false
	for {
		err := n.heartbeat(ctx)
		if err == nil {
			err = n.renewLease(ctx)
		}
		if err == nil && n.IsLeader(ctx) {
			err = n.collect(ctx)
		}
		switch {
		case err != nil && ctx.Err() == nil && !failing:
			n.log.Warn("cluster heartbeat", "err", err)
			failing = true
		case err == nil && failing:
			n.log.Info("cluster heartbeat works again")
			failing = false
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (n *Node) heartbeat(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, n.opts.Heartbeat)
	defer cancel()
	tag, err := n.pool.Exec(ctx, `INSERT INTO brokers (id, instance, address, process) VALUES ($1, $2, $3, $4)
		ON CONFLICT (id) DO UPDATE SET heartbeat = now() WHERE brokers.instance = EXCLUDED.instance`, n.id, n.instance, n.opts.Address, n.opts.Process.String())
	if err == nil && tag.RowsAffected() == 0 {
		// Another process took the ID over after this one missed its
		// heartbeats (paused, cut off): it is the broker now.
		err = fmt.Errorf("broker-id %q was taken over by another broker after this one missed its heartbeats: %w", n.id, ErrDuplicateID)
	}
	return err
}

// renewLease takes the lease if it is free or expired, or renews it if this
// broker holds it.
func (n *Node) renewLease(ctx context.Context) error {
	sent := time.Since(n.base)
	ctx, cancel := context.WithTimeout(ctx, n.opts.Heartbeat)
	defer cancel()
	var holder string
	err := n.pool.QueryRow(ctx, `INSERT INTO leases (name, holder, expires_at)
		VALUES ($1, $2, now() + make_interval(secs => $3))
		ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at
		WHERE leases.holder = EXCLUDED.holder OR leases.expires_at < now()
		RETURNING holder`, leaseName, n.id, n.opts.LeaseTTL.Seconds()).Scan(&holder)
	was := n.IsLeader(ctx)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		n.leaderUntil.Store(0)
		if was {
			n.log.Info("lost the maintenance lease")
		}
		return nil
	case err != nil:
		return err
	}
	// Stop a margin before PostgreSQL would let another broker take it.
	n.leaderUntil.Store(int64(sent + n.opts.LeaseTTL - n.opts.Heartbeat))
	if !was {
		n.log.Info("took the maintenance lease")
	}
	return nil
}

// collect removes abandoned commands and dead brokers, and has the work of
// each dead broker done again.
func (n *Node) collect(ctx context.Context) error {
	if _, err := n.pool.Exec(ctx, `DELETE FROM commands WHERE deadline < now() - interval '1 minute'`); err != nil {
		return err
	}
	rows, err := n.pool.Query(ctx, `DELETE FROM brokers WHERE heartbeat < now() - make_interval(secs => $1) AND id <> $2 RETURNING id`,
		n.opts.Dead.Seconds(), n.id)
	if err != nil {
		return err
	}
	dead, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	for _, id := range dead {
		n.log.Warn("a broker stopped renewing its heartbeat; its agents reconnect to the others and its work is sent again", "dead_broker", id)
		if n.opts.OnBrokerDead != nil {
			n.opts.OnBrokerDead(ctx, id)
		}
	}
	return nil
}

// alive tells whether broker id renewed its heartbeat within Dead.
func (n *Node) alive(ctx context.Context, id string) (bool, error) {
	var ok bool
	err := n.pool.QueryRow(ctx, `SELECT heartbeat > now() - make_interval(secs => $2) FROM brokers WHERE id = $1`,
		id, n.opts.Dead.Seconds()).Scan(&ok)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	return ok, err
}

// Brokers returns the IDs of the brokers alive now.
func (n *Node) Brokers(ctx context.Context) ([]string, error) {
	rows, err := n.pool.Query(ctx, `SELECT id FROM brokers WHERE heartbeat > now() - make_interval(secs => $1) ORDER BY id`, n.opts.Dead.Seconds())
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}
