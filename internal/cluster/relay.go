package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/logattr"
)

// wireVersion versions the JSON of relayed commands and results, so that a
// broker of a newer release refuses what it cannot read instead of guessing.
const wireVersion = 1

// commandWire is a broker.Command as stored in commands.body.
type commandWire struct {
	V   int            `json:"v"`
	Cmd broker.Command `json:"cmd"`
}

// resultWire is a command's outcome as stored in commands.result.
type resultWire struct {
	V      int            `json:"v"`
	Images []broker.Image `json:"images,omitempty"`
	// Err is "" (success), "unreachable", "command" (the agent's failure,
	// Reason), "timeout" or "error" (Reason).
	Err    string `json:"err,omitempty"`
	Reason string `json:"reason,omitempty"`
}

func encodeResult(res *broker.Result, err error) resultWire {
	w := resultWire{V: wireVersion}
	var ce *broker.CommandError
	switch {
	case err == nil:
		if res != nil {
			w.Images = res.Images
		}
	case errors.Is(err, broker.ErrAgentUnreachable):
		w.Err = "unreachable"
	case errors.As(err, &ce):
		w.Err, w.Reason = "command", ce.Reason
	case errors.Is(err, context.DeadlineExceeded):
		w.Err = "timeout"
	default:
		w.Err, w.Reason = "error", err.Error()
	}
	return w
}

func (w *resultWire) decode() (*broker.Result, error) {
	if w.V != wireVersion {
		return nil, fmt.Errorf("relayed result of wire version %d, want %d (brokers of different releases)", w.V, wireVersion)
	}
	switch w.Err {
	case "":
		return &broker.Result{Images: w.Images}, nil
	case "unreachable":
		return nil, broker.ErrAgentUnreachable
	case "command":
		return nil, &broker.CommandError{Reason: w.Reason}
	case "timeout":
		return nil, context.DeadlineExceeded
	default:
		return nil, errors.New(w.Reason)
	}
}

// waiter is a relayed command this broker waits for.
type waiter struct {
	done chan struct{} // closed when the result is written
	once sync.Once
}

func (w *waiter) finish() { w.once.Do(func() { close(w.done) }) }

// errMoved means a relayed command must be sent again: its target broker died
// or the agent's link moved before the command was claimed.
var errMoved = errors.New("agent link moved")

// Dispatch implements broker.Dispatcher. It runs cmd on the local hub when
// this broker holds the agent's link, and otherwise relays it to the broker
// that does. When that broker is dead it waits up to RehomeWait for the agent
// to reconnect to a live broker, then relays it there.
func (n *Node) Dispatch(ctx context.Context, serverID string, cmd broker.Command) (*broker.Result, error) {
	res, err := n.local.Dispatch(ctx, serverID, cmd)
	if !errors.Is(err, broker.ErrAgentUnreachable) {
		return res, err
	}
	var rehome time.Time
	tries := 0
	for {
		target, err := n.locate(ctx, serverID)
		if errors.Is(err, broker.ErrNotFound) {
			return nil, broker.ErrAgentUnreachable
		}
		if err != nil {
			return nil, fmt.Errorf("locate the agent of %s: %w", serverID, err)
		}
		if target == "" {
			return nil, broker.ErrAgentUnreachable
		}
		if target == n.id {
			// The store names this broker but the hub has no link: it just
			// closed, or opened between the two looks.
			return n.local.Dispatch(ctx, serverID, cmd)
		}
		alive, err := n.alive(ctx, target)
		if err != nil {
			return nil, fmt.Errorf("check broker %s: %w", target, err)
		}
		if alive {
			res, err := n.relay(ctx, target, serverID, cmd)
			tries++
			switch {
			case errors.Is(err, errMoved):
			case errors.Is(err, broker.ErrAgentUnreachable) && tries < 3:
				// The target lost the link; ask the store again (the agent may
				// have moved) unless it still names the same broker.
				if now, lerr := n.locate(ctx, serverID); lerr != nil || now == target {
					return nil, broker.ErrAgentUnreachable
				}
				continue
			default:
				return res, err
			}
		}
		// The broker holding the link is dead: its agent reconnects elsewhere
		// within a few seconds.
		if rehome.IsZero() {
			rehome = time.Now().Add(n.opts.RehomeWait)
			n.log.Info("waiting for an agent to leave a dead broker", logattr.ServerID, serverID, "dead_broker", target, "kind", cmd.Kind)
		} else if time.Now().After(rehome) {
			return nil, broker.ErrAgentUnreachable
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(n.opts.Poll):
		}
	}
}

// relay runs cmd through target and waits for the result. It returns errMoved
// when the command must go elsewhere.
func (n *Node) relay(ctx context.Context, target, serverID string, cmd broker.Command) (*broker.Result, error) {
	body, err := json.Marshal(commandWire{V: wireVersion, Cmd: cmd})
	if err != nil {
		return nil, err
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(5 * time.Minute)
	}
	var id int64
	err = n.pool.QueryRow(ctx, `WITH c AS (
			INSERT INTO commands (origin, target, server_id, body, deadline) VALUES ($1, $2, $3, $4, $5) RETURNING id)
		SELECT id, pg_notify($6, 'c ' || $2 || ' ' || id) FROM c`,
		n.id, target, serverID, body, deadline, n.channel).Scan(&id, nil)
	if err != nil {
		return nil, fmt.Errorf("relay %s to broker %s: %w", cmd.Kind, target, err)
	}
	w := &waiter{done: make(chan struct{})}
	n.mu.Lock()
	n.waiters[id] = w
	n.mu.Unlock()
	defer func() {
		n.mu.Lock()
		delete(n.waiters, id)
		n.mu.Unlock()
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_, _ = n.pool.Exec(dctx, `DELETE FROM commands WHERE id = $1`, id)
	}()
	tick := time.NewTicker(n.opts.Poll)
	defer tick.Stop()
	sent := time.Now()
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-w.done:
			return n.result(ctx, id)
		case <-tick.C:
		}
		// The poll: a lost notification, a dead target, a moved agent.
		var claimed, done bool
		err := n.pool.QueryRow(ctx, `SELECT claimed_at IS NOT NULL, done_at IS NOT NULL FROM commands WHERE id = $1`, id).Scan(&claimed, &done)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			return nil, errMoved // collected: the target never answered
		case err != nil:
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			continue // PostgreSQL is away; keep waiting until ctx ends
		case done:
			return n.result(ctx, id)
		}
		if time.Since(sent) < n.opts.Dead/2 {
			continue
		}
		if alive, err := n.alive(ctx, target); err == nil && !alive {
			return nil, errMoved
		}
		if !claimed {
			if now, err := n.locate(ctx, serverID); err == nil && now != target {
				return nil, errMoved
			}
		}
	}
}

// result reads and decodes a finished command's result.
func (n *Node) result(ctx context.Context, id int64) (*broker.Result, error) {
	var raw []byte
	if err := n.pool.QueryRow(ctx, `SELECT result FROM commands WHERE id = $1`, id).Scan(&raw); err != nil {
		return nil, fmt.Errorf("read relayed result: %w", err)
	}
	var w resultWire
	if err := json.Unmarshal(raw, &w); err != nil {
		return nil, fmt.Errorf("read relayed result: %w", err)
	}
	return w.decode()
}

// serveLoop claims and runs the commands other brokers relay to this one.
func (n *Node) serveLoop(ctx context.Context) {
	t := time.NewTicker(n.opts.Poll)
	defer t.Stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-n.wake:
		}
		if err := n.claim(ctx, &wg); err != nil && ctx.Err() == nil {
			n.log.Debug("claim relayed commands", "err", err)
		}
	}
}

// claim takes every command waiting for this broker and runs each on the hub.
func (n *Node) claim(ctx context.Context, wg *sync.WaitGroup) error {
	rows, err := n.pool.Query(ctx, `UPDATE commands SET claimed_at = now()
		WHERE target = $1 AND claimed_at IS NULL AND deadline > now()
		RETURNING id, origin, server_id, body, deadline`, n.id)
	if err != nil {
		return err
	}
	type claimed struct {
		id               int64
		origin, serverID string
		body             []byte
		deadline         time.Time
	}
	list, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (c claimed, err error) {
		err = r.Scan(&c.id, &c.origin, &c.serverID, &c.body, &c.deadline)
		return c, err
	})
	if err != nil {
		return err
	}
	for _, c := range list {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n.run(ctx, c.id, c.origin, c.serverID, c.body, c.deadline)
		}()
	}
	return nil
}

// run executes one relayed command on the local hub and writes its result.
func (n *Node) run(ctx context.Context, id int64, origin, serverID string, body []byte, deadline time.Time) {
	var w commandWire
	var out resultWire
	if err := json.Unmarshal(body, &w); err != nil || w.V != wireVersion {
		out = resultWire{V: wireVersion, Err: "error", Reason: fmt.Sprintf("broker %s cannot read a relayed command of wire version %d", n.id, w.V)}
	} else {
		cctx, cancel := context.WithDeadline(ctx, deadline)
		res, err := n.local.Dispatch(cctx, serverID, w.Cmd)
		cancel()
		if ctx.Err() != nil {
			return // shutting down: the origin sees this broker die and sends it again
		}
		out = encodeResult(res, err)
	}
	raw, err := json.Marshal(out)
	if err != nil {
		return
	}
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	_, err = n.pool.Exec(wctx, `WITH u AS (UPDATE commands SET done_at = now(), result = $2 WHERE id = $1 RETURNING id)
		SELECT pg_notify($3, 'r ' || $4 || ' ' || id) FROM u`, id, raw, n.channel, origin)
	if err != nil {
		n.log.Warn("write relayed result", "command", id, "origin", origin, "err", err)
	}
}

// listenLoop holds a connection that LISTENs on the cluster's channel and
// turns notifications into wake-ups; it reconnects after failures.
func (n *Node) listenLoop(ctx context.Context) {
	for ctx.Err() == nil {
		err := n.listen(ctx)
		if ctx.Err() != nil {
			return
		}
		n.log.Debug("cluster notifications", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

func (n *Node) listen(ctx context.Context) error {
	conn, err := pgx.ConnectConfig(ctx, n.pool.Config().ConnConfig.Copy())
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		_ = conn.Close(cctx)
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{n.channel}.Sanitize()); err != nil {
		return err
	}
	// Catch up on what was announced while not listening.
	n.signalAll()
	for {
		nt, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		kind, rest, _ := strings.Cut(nt.Payload, " ")
		i := strings.LastIndexByte(rest, ' ')
		if i < 0 {
			continue
		}
		who, num := rest[:i], rest[i+1:]
		if who != n.id {
			continue
		}
		switch kind {
		case "c":
			select {
			case n.wake <- struct{}{}:
			default:
			}
		case "r":
			id, err := strconv.ParseInt(num, 10, 64)
			if err != nil {
				continue
			}
			n.mu.Lock()
			w := n.waiters[id]
			n.mu.Unlock()
			if w != nil {
				w.finish()
			}
		}
	}
}

// signalAll wakes the serve loop; waiters poll on their own.
func (n *Node) signalAll() {
	select {
	case n.wake <- struct{}{}:
	default:
	}
}
