package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/placement"
)

const (
	// lockServersSQL locks the servers of a batch in ID order, the same in
	// every broker, so that transactions placing on common servers queue
	// instead of deadlocking.
	lockServersSQL = `SELECT id, max_virtual_sessions, max_sessions_per_user FROM servers
		WHERE id = ANY($1) ORDER BY id FOR UPDATE`
	// lockMovedSQL locks the existing sessions of a batch, after the servers.
	lockMovedSQL = `SELECT id, seq, state, server_id FROM sessions WHERE id = ANY($1) ORDER BY id FOR UPDATE`
	// existingSQL returns which of the IDs of new sessions exist.
	existingSQL = `SELECT id FROM sessions WHERE id = ANY($1)`
	// serverCountsSQL counts the active VIRTUAL and CONSOLE sessions of the
	// servers (an index-only scan of sessions_server_state). It runs after
	// lockServersSQL, so it sees every placement committed on them before.
	serverCountsSQL = `SELECT server_id, count(*) FILTER (WHERE type = 'VIRTUAL'),
		count(*) FILTER (WHERE type = 'CONSOLE') FROM sessions
		WHERE server_id = ANY($1) AND state <> 'DELETED' GROUP BY server_id`
	// ownerCountsSQL counts the active sessions of each (server, owner) pair.
	ownerCountsSQL = `SELECT s.server_id, s.owner, count(*)
		FROM unnest($1::text[], $2::text[]) AS p(server_id, owner)
		JOIN sessions s ON s.server_id = p.server_id AND s.owner = p.owner
		WHERE s.state <> 'DELETED' GROUP BY s.server_id, s.owner`
	// moveSessionsSQL rewrites the sessions of its array arguments (those of
	// sessionRows.moveArgs) by Seq.
	moveSessionsSQL = `UPDATE sessions AS s SET owner = u.owner, name = u.name, type = u.type,
		server_id = u.server_id, state = u.state, substate = u.substate, state_reason = u.state_reason,
		max_concurrent_clients = u.max_concurrent_clients, storage_root = u.storage_root,
		creation_time = u.creation_time, last_disconnection_time = u.last_disconnection_time,
		num_connections = u.num_connections, updated_at = u.updated_at, attempts = u.attempts,
		excluded = u.excluded, enqueued = u.enqueued, enqueued_at = u.enqueued_at, spec = u.spec
		FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
		$8::text[], $9::bigint[], $10::text[], $11::bigint[], $12::bigint[], $13::bigint[], $14::bigint[],
		$15::integer[], $16::text[], $17::boolean[], $18::bigint[], $19::text[])
		AS u(seq, owner, name, type, server_id, state, substate, state_reason, max_concurrent_clients,
		storage_root, creation_time, last_disconnection_time, num_connections, updated_at, attempts,
		excluded, enqueued, enqueued_at, spec)
		WHERE s.seq = u.seq`
)

// CommitPlacements commits placements in one transaction. It locks the
// batch's servers (SELECT ... FOR UPDATE, in ID order) and the existing
// sessions it moves, counts the servers' current sessions, and then decides
// each placement in order with the capacity rule, placement.Fits, against
// those counts and the placements before it: VIRTUAL sessions below max
// virtual sessions, the owner's sessions below max sessions per user (0:
// unlimited) and, for a CONSOLE session, no other active CONSOLE session. A
// placement that does not fit gets broker.ErrServerFull, wrapping the
// *placement.Refusal, in the returned slice (same order) and is not written;
// one that its Quotas refuse gets a *broker.QuotaError (broker.ErrOverQuota):
// the quotas are counted under a transaction-scoped advisory lock per
// Quota.Key, taken in key order after the row locks (quota.go), so that
// brokers placing concurrently never exceed one;
// an unknown server, or an unknown session for Insert=false, gives
// broker.ErrNotFound; an Insert=false session that is no longer CREATING and
// unplaced, or an existing ID for Insert=true, gives broker.ErrConflict.
// Others are inserted (their Seqs assigned, increasing in batch order) or have
// their row rewritten. The reads and the writes each go in one pipelined
// batch. The second result is a failure of the whole transaction, in which
// case nothing is written.
func (s *Store) CommitPlacements(ctx context.Context, ps []broker.Placement) (_ []error, err error) {
	defer unavailable(&err)
	if len(ps) == 0 {
		return []error{}, nil
	}
	var c *placementTx
	err = s.inTx(ctx, func(tx pgx.Tx) error {
		c = newPlacementTx(ps)
		if err := c.read(ctx, tx); err != nil {
			return err
		}
		if err := c.decide(); err != nil {
			return err
		}
		if err := c.write(ctx, tx); err != nil {
			return err
		}
		var evs []*broker.Event
		for i, pl := range ps {
			if c.errs[i] == nil {
				evs = append(evs, pl.Session.Events...)
			}
		}
		return s.appendEventsTx(ctx, tx, evs)
	})
	if err != nil {
		return nil, fmt.Errorf("commit placements: %w", err)
	}
	for i, pl := range ps {
		if c.errs[i] == nil && pl.Insert {
			pl.Session.Seq = c.seqs[i]
		}
	}
	return c.errs, nil
}

// movedRow is the locked row of a session to move.
type movedRow struct {
	seq             int64
	state, serverID string
}

// ownerKey identifies an owner's sessions on a server.
type ownerKey struct{ server, owner string }

// placementTx is one attempt at a CommitPlacements transaction.
type placementTx struct {
	ps   []broker.Placement
	errs []error
	seqs []int64

	servers               []string // distinct server IDs
	moveIDs, insertIDs    []string
	pairServer, pairOwner []string // distinct (server, owner) pairs
	limits                map[string]placement.Limits
	moved                 map[string]movedRow
	exists                map[string]bool
	virtual, console      map[string]int
	owned                 map[ownerKey]int
	inserts, moves        sessionRows
	insertIdx             []int // index in ps of each row of inserts
	quota                 quotaState
}

func newPlacementTx(ps []broker.Placement) *placementTx {
	c := &placementTx{
		ps:      ps,
		errs:    make([]error, len(ps)),
		seqs:    make([]int64, len(ps)),
		limits:  make(map[string]placement.Limits),
		moved:   make(map[string]movedRow),
		exists:  make(map[string]bool),
		virtual: make(map[string]int),
		console: make(map[string]int),
		owned:   make(map[ownerKey]int),
	}
	seenServer := make(map[string]bool)
	seenPair := make(map[ownerKey]bool)
	for _, pl := range ps {
		ss := pl.Session
		if ss == nil {
			continue
		}
		if !seenServer[ss.ServerID] {
			seenServer[ss.ServerID] = true
			c.servers = append(c.servers, ss.ServerID)
		}
		if k := (ownerKey{ss.ServerID, ss.Owner}); !seenPair[k] {
			seenPair[k] = true
			c.pairServer = append(c.pairServer, k.server)
			c.pairOwner = append(c.pairOwner, k.owner)
		}
		if pl.Insert {
			c.insertIDs = append(c.insertIDs, ss.ID)
		} else {
			c.moveIDs = append(c.moveIDs, ss.ID)
		}
		c.quota.collect(pl)
	}
	return c
}

// read locks the servers, the sessions to move and the quota keys (in that
// order) and reads what decide needs, in one round trip.
func (c *placementTx) read(ctx context.Context, tx pgx.Tx) error {
	b := &pgx.Batch{}
	b.Queue(lockServersSQL, c.servers).Query(func(rows pgx.Rows) error {
		var (
			id string
			l  placement.Limits
		)
		_, err := pgx.ForEachRow(rows, []any{&id, &l.MaxVirtual, &l.MaxPerUser}, func() error {
			c.limits[id] = l
			return nil
		})
		return err
	})
	if len(c.moveIDs) > 0 {
		b.Queue(lockMovedSQL, c.moveIDs).Query(func(rows pgx.Rows) error {
			var (
				id string
				m  movedRow
			)
			_, err := pgx.ForEachRow(rows, []any{&id, &m.seq, &m.state, &m.serverID}, func() error {
				c.moved[id] = m
				return nil
			})
			return err
		})
	}
	if len(c.insertIDs) > 0 {
		b.Queue(existingSQL, c.insertIDs).Query(func(rows pgx.Rows) error {
			var id string
			_, err := pgx.ForEachRow(rows, []any{&id}, func() error {
				c.exists[id] = true
				return nil
			})
			return err
		})
	}
	c.quota.queue(b)
	b.Queue(serverCountsSQL, c.servers).Query(func(rows pgx.Rows) error {
		var (
			id     string
			nv, nc int
		)
		_, err := pgx.ForEachRow(rows, []any{&id, &nv, &nc}, func() error {
			c.virtual[id], c.console[id] = nv, nc
			return nil
		})
		return err
	})
	b.Queue(ownerCountsSQL, c.pairServer, c.pairOwner).Query(func(rows pgx.Rows) error {
		var (
			k ownerKey
			n int
		)
		_, err := pgx.ForEachRow(rows, []any{&k.server, &k.owner, &n}, func() error {
			c.owned[k] = n
			return nil
		})
		return err
	})
	return tx.SendBatch(ctx, b).Close()
}

// decide checks each placement in order, fills errs and collects the rows to
// write.
func (c *placementTx) decide() error {
	placed := make(map[string]bool) // IDs inserted or moved by this batch
	for i, pl := range c.ps {
		ss := pl.Session
		if ss == nil {
			c.errs[i] = errors.New("placement without a session")
			continue
		}
		var seq int64
		if !pl.Insert {
			m, ok := c.moved[ss.ID]
			switch {
			case placed[ss.ID]:
				c.errs[i] = fmt.Errorf("session %q was placed by an earlier item of the batch: %w", ss.ID, broker.ErrConflict)
				continue
			case !ok:
				c.errs[i] = fmt.Errorf("session %q: %w", ss.ID, broker.ErrNotFound)
				continue
			case m.state != broker.StateCreating || m.serverID != "":
				// Deleted or placed since the caller read it: never overwrite.
				c.errs[i] = fmt.Errorf("session %q is %s on %q, no longer waiting for placement: %w",
					ss.ID, m.state, m.serverID, broker.ErrConflict)
				continue
			}
			seq = m.seq
		}
		lim, ok := c.limits[ss.ServerID]
		if !ok {
			c.errs[i] = fmt.Errorf("server %q: %w", ss.ServerID, broker.ErrNotFound)
			continue
		}
		key := ownerKey{ss.ServerID, ss.Owner}
		counts := placement.Counts{Virtual: c.virtual[ss.ServerID], Console: c.console[ss.ServerID], Owned: c.owned[key]}
		if err := placement.Fits(lim, counts, placement.AskOf(ss.Owner, ss.Type)); err != nil {
			c.errs[i] = fmt.Errorf("server %q %w: %w", ss.ServerID, err, broker.ErrServerFull)
			continue
		}
		if pl.Insert && (c.exists[ss.ID] || placed[ss.ID]) {
			c.errs[i] = fmt.Errorf("session %q: session ID exists: %w", ss.ID, broker.ErrConflict)
			continue
		}
		if err := c.quota.check(pl); err != nil {
			c.errs[i] = err
			continue
		}
		var err error
		if pl.Insert {
			err = c.inserts.add(0, ss)
			c.insertIdx = append(c.insertIdx, i)
		} else {
			err = c.moves.add(seq, ss)
			c.seqs[i] = seq
		}
		if err != nil {
			return err
		}
		placed[ss.ID] = true
		c.quota.take(pl)
		switch ss.Type {
		case broker.TypeVirtual:
			c.virtual[ss.ServerID]++
		case broker.TypeConsole:
			c.console[ss.ServerID]++
		}
		c.owned[key]++
	}
	return nil
}

// write inserts and updates the accepted placements in one round trip. A new
// session whose ID another transaction inserted meanwhile gets
// broker.ErrConflict.
func (c *placementTx) write(ctx context.Context, tx pgx.Tx) error {
	b := &pgx.Batch{}
	if c.inserts.len() > 0 {
		b.Queue(insertSessionsSQL+` ON CONFLICT (id) DO NOTHING RETURNING id, seq`, c.inserts.insertArgs()...).
			Query(func(rows pgx.Rows) error {
				seqs, err := collectSeqs(rows)
				if err != nil {
					return err
				}
				for _, i := range c.insertIdx {
					id := c.ps[i].Session.ID
					if seq, ok := seqs[id]; ok {
						c.seqs[i] = seq
					} else {
						c.errs[i] = fmt.Errorf("session %q: session ID exists: %w", id, broker.ErrConflict)
					}
				}
				return nil
			})
	}
	if c.moves.len() > 0 {
		b.Queue(moveSessionsSQL, c.moves.moveArgs()...)
	}
	if b.Len() == 0 {
		return nil
	}
	return tx.SendBatch(ctx, b).Close()
}
