package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/berth-dev/berth/internal/broker"
)

const (
	serverCols = `seq, id, agent_client_id, open, last_seen, broker_id, created_at, version, info`

	lockServerForUpsertSQL = `SELECT seq, agent_client_id, open, created_at, version,
		max_virtual_sessions, max_sessions_per_user, tags, info FROM servers WHERE id = $1 FOR UPDATE`
	insertServerSQL = `INSERT INTO servers (id, agent_client_id, open, last_seen, broker_id, created_at,
		max_virtual_sessions, max_sessions_per_user, tags, info) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
		ON CONFLICT (id) DO NOTHING RETURNING seq, version`
	// updateServerSQL takes a new version if $7 is true.
	updateServerSQL = `UPDATE servers SET last_seen = $1, broker_id = $2,
		max_virtual_sessions = $3, max_sessions_per_user = $4, tags = $5, info = $6,
		version = CASE WHEN $7::boolean THEN nextval('server_versions') ELSE version END
		WHERE seq = $8 RETURNING version`
	deleteServerTagsSQL = `DELETE FROM server_tags WHERE server_id = $1`
	insertServerTagsSQL = `INSERT INTO server_tags (server_id, key, value)
		SELECT $1, k, v FROM unnest($2::text[], $3::text[]) AS t(k, v)`

	// A server ID's binding holds while its agent client is active.
	getBindingSQL = `SELECT b.agent_client_id FROM server_bindings b
		JOIN clients c ON c.id = b.agent_client_id AND c.active WHERE b.server_id = $1 FOR UPDATE OF b`
	bindServerSQL = `INSERT INTO server_bindings (server_id, agent_client_id, bound_at) VALUES ($1, $2, $3)
		ON CONFLICT (server_id) DO UPDATE SET agent_client_id = excluded.agent_client_id, bound_at = excluded.bound_at`
	markLinkedSQL = `UPDATE clients SET linked_at = $1 WHERE id = $2 AND linked_at = 0`
)

// UpsertServer inserts the server or updates its Info, LastSeen and BrokerID,
// keeping Open, Seq and CreatedAt of an existing row; srv gets those kept
// values and the row's Version. A new server with a zero CreatedAt gets the
// current time. The row takes a new Version when anything but LastSeen and
// BrokerID changes, and its tag rows are rewritten only when its tags changed.
// It returns broker.ErrConflict if the server exists with another
// AgentClientID, or if its ID is bound to another agent client that is still
// active: a new server's ID is bound to its agent client (which is marked
// linked), and the binding outlives the row.
func (s *Store) UpsertServer(ctx context.Context, srv *broker.Server) (err error) {
	defer unavailable(&err)
	b, err := json.Marshal(srv.Info)
	if err != nil {
		return fmt.Errorf("upsert server %q: encode info: %w", srv.ID, err)
	}
	info, tags := string(b), tagsJSON(srv.Info.Tags)
	var (
		seq, version int64
		open         bool
		createdAt    time.Time
	)
	err = s.inTx(ctx, func(tx pgx.Tx) error {
		var (
			agent, oldTags, oldInfo string
			created                 int64
			oldMaxV, oldMaxU        int
		)
		err := tx.QueryRow(ctx, lockServerForUpsertSQL, srv.ID).
			Scan(&seq, &agent, &open, &created, &version, &oldMaxV, &oldMaxU, &oldTags, &oldInfo)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			open, createdAt = srv.Open, srv.CreatedAt
			if createdAt.IsZero() {
				createdAt = s.now()
			}
			var bound string
			switch err := tx.QueryRow(ctx, getBindingSQL, srv.ID).Scan(&bound); {
			case err == nil && bound != srv.AgentClientID:
				return fmt.Errorf("server ID is bound to agent client %s (unregister that client to release it): %w", bound, broker.ErrConflict)
			case err != nil && !errors.Is(err, pgx.ErrNoRows):
				return err
			}
			if _, err := tx.Exec(ctx, bindServerSQL, srv.ID, srv.AgentClientID, toMillis(createdAt)); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, markLinkedSQL, toMillis(createdAt), srv.AgentClientID); err != nil {
				return err
			}
			err := tx.QueryRow(ctx, insertServerSQL,
				srv.ID, srv.AgentClientID, open, toMillis(srv.LastSeen), srv.BrokerID, toMillis(createdAt),
				srv.Info.MaxVirtualSessions, srv.Info.MaxConcurrentSessionsPerUser, tags, info).Scan(&seq, &version)
			if errors.Is(err, pgx.ErrNoRows) {
				// Another broker inserted it since the SELECT; the next
				// attempt finds the row.
				return errRetry
			}
			if err != nil {
				return err
			}
			return insertTags(ctx, tx, srv.ID, srv.Info.Tags)
		case err != nil:
			return err
		case agent != srv.AgentClientID:
			return fmt.Errorf("server is registered by another agent client: %w", broker.ErrConflict)
		}
		createdAt = fromMillis(created)
		changed := info != oldInfo || tags != oldTags ||
			srv.Info.MaxVirtualSessions != oldMaxV || srv.Info.MaxConcurrentSessionsPerUser != oldMaxU
		if err := tx.QueryRow(ctx, updateServerSQL,
			toMillis(srv.LastSeen), srv.BrokerID, srv.Info.MaxVirtualSessions, srv.Info.MaxConcurrentSessionsPerUser,
			tags, info, changed, seq).Scan(&version); err != nil {
			return err
		}
		if tags == oldTags {
			return nil
		}
		if _, err := tx.Exec(ctx, deleteServerTagsSQL, srv.ID); err != nil {
			return err
		}
		return insertTags(ctx, tx, srv.ID, srv.Info.Tags)
	})
	if err != nil {
		return fmt.Errorf("upsert server %q: %w", srv.ID, err)
	}
	srv.Seq, srv.Open, srv.CreatedAt, srv.Version = seq, open, createdAt, version
	return nil
}

// tagsJSON returns the canonical JSON of tags (encoding/json sorts map keys).
func tagsJSON(tags map[string]string) string {
	if len(tags) == 0 {
		return "{}"
	}
	b, _ := json.Marshal(tags) // a map[string]string always encodes
	return string(b)
}

func insertTags(ctx context.Context, tx pgx.Tx, id string, tags map[string]string) error {
	if len(tags) == 0 {
		return nil
	}
	keys := make([]string, 0, len(tags))
	values := make([]string, 0, len(tags))
	for k, v := range tags {
		keys = append(keys, pgText(k))
		values = append(values, pgText(v))
	}
	_, err := tx.Exec(ctx, insertServerTagsSQL, id, keys, values)
	return err
}

// GetServer returns broker.ErrNotFound for an unknown ID.
func (s *Store) GetServer(ctx context.Context, id string) (_ *broker.Server, err error) {
	defer unavailable(&err)
	rows, _ := s.pool.Query(ctx, `SELECT `+serverCols+` FROM servers WHERE id = $1`, id)
	srv, err := pgx.CollectExactlyOneRow(rows, scanServer)
	if errors.Is(err, pgx.ErrNoRows) {
		err = broker.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("get server %q: %w", id, err)
	}
	return srv, nil
}

// ListServers returns the servers f selects, ordered by Seq.
func (s *Store) ListServers(ctx context.Context, f broker.ServerFilter) (_ []*broker.Server, err error) {
	defer unavailable(&err)
	q := `SELECT ` + serverCols + ` FROM servers WHERE seq > $1`
	args := []any{f.AfterSeq}
	if len(f.IDs) > 0 {
		args = append(args, f.IDs)
		q += fmt.Sprintf(` AND id = ANY($%d)`, len(args))
	}
	q += ` ORDER BY seq`
	if f.Limit > 0 {
		args = append(args, f.Limit)
		q += fmt.Sprintf(` LIMIT $%d`, len(args))
	}
	rows, _ := s.pool.Query(ctx, q, args...)
	out, err := pgx.CollectRows(rows, scanServer)
	if err != nil {
		return nil, fmt.Errorf("list servers: %w", err)
	}
	return out, nil
}

// brokerDead is how long a broker may miss its heartbeat in the brokers table
// before it counts as gone: internal/cluster's default Options.Dead.
const brokerDead = 3 * time.Second

// ServerStamps returns the ID, Version, LastSeen and BrokerID of every
// server, in no particular order, and whether that broker's heartbeat is
// fresh (within brokerDead, by PostgreSQL's clock).
func (s *Store) ServerStamps(ctx context.Context) (_ []broker.ServerStamp, err error) {
	defer unavailable(&err)
	rows, _ := s.pool.Query(ctx, `SELECT s.id, s.version, s.last_seen, s.broker_id,
		COALESCE(b.heartbeat > now() - make_interval(secs => $1), false)
		FROM servers s LEFT JOIN brokers b ON b.id = s.broker_id`, brokerDead.Seconds())
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (broker.ServerStamp, error) {
		var (
			st   broker.ServerStamp
			seen int64
		)
		err := r.Scan(&st.ID, &st.Version, &seen, &st.BrokerID, &st.HolderLive)
		st.LastSeen = fromMillis(seen)
		return st, err
	})
	if err != nil {
		return nil, fmt.Errorf("server stamps: %w", err)
	}
	return out, nil
}

// SetServerOpen sets whether the server takes new sessions; a change takes a
// new Version. It returns broker.ErrNotFound for an unknown ID.
func (s *Store) SetServerOpen(ctx context.Context, id string, open bool) (err error) {
	defer unavailable(&err)
	if err := s.updateServer(ctx, `UPDATE servers SET open = $1,
		version = CASE WHEN open = $1 THEN version ELSE nextval('server_versions') END
		WHERE id = $2`, open, id); err != nil {
		return fmt.Errorf("set server %q open: %w", id, err)
	}
	return nil
}

// SetServerSeen records contact with the server's agent through broker
// brokerID at t (zero t: link lost). It keeps the Version. It returns
// broker.ErrNotFound for an unknown ID.
func (s *Store) SetServerSeen(ctx context.Context, id, brokerID string, t time.Time) (err error) {
	defer unavailable(&err)
	if err := s.updateServer(ctx, `UPDATE servers SET last_seen = $1, broker_id = $2 WHERE id = $3`,
		toMillis(t), brokerID, id); err != nil {
		return fmt.Errorf("set server %q seen: %w", id, err)
	}
	return nil
}

// SetServersSeen records contact with many servers' agents through broker
// brokerID in one statement; unknown IDs are skipped. It keeps the
// Versions.
func (s *Store) SetServersSeen(ctx context.Context, brokerID string, seen map[string]time.Time) (err error) {
	defer unavailable(&err)
	if len(seen) == 0 {
		return nil
	}
	ids := make([]string, 0, len(seen))
	times := make([]int64, 0, len(seen))
	for id, t := range seen {
		ids = append(ids, id)
		times = append(times, toMillis(t))
	}
	if _, err := s.pool.Exec(ctx, `UPDATE servers s SET last_seen = l.seen, broker_id = $1
		FROM unnest($2::text[], $3::bigint[]) AS l(id, seen)
		WHERE s.id = l.id`, brokerID, ids, times); err != nil {
		return fmt.Errorf("set %d servers seen: %w", len(seen), err)
	}
	return nil
}

// ClearServerLinks implements broker.LinkClearer: it empties the broker_id
// of each server in links that still names brokerID and whose last_seen is
// not after the time its link closed, in one statement. It keeps the Version.
func (s *Store) ClearServerLinks(ctx context.Context, brokerID string, links map[string]time.Time) (err error) {
	defer unavailable(&err)
	ids := make([]string, 0, len(links))
	closed := make([]int64, 0, len(links))
	for id, t := range links {
		ids = append(ids, id)
		closed = append(closed, toMillis(t))
	}
	if _, err := s.pool.Exec(ctx, `UPDATE servers s SET broker_id = ''
		FROM unnest($2::text[], $3::bigint[]) AS l(id, closed)
		WHERE s.id = l.id AND s.broker_id = $1 AND s.last_seen <= l.closed`, brokerID, ids, closed); err != nil {
		return fmt.Errorf("clear server links: %w", err)
	}
	return nil
}

// updateServer runs a one-row UPDATE and returns broker.ErrNotFound if it
// matched no row.
func (s *Store) updateServer(ctx context.Context, q string, args ...any) error {
	tag, err := s.pool.Exec(ctx, q, args...)
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return broker.ErrNotFound
	}
	return nil
}

// DeleteServer removes the server, its tags and its sessions. An unknown ID is
// not an error. It locks the server row before the sessions, in the order
// CommitPlacements locks them.
func (s *Store) DeleteServer(ctx context.Context, id string) (err error) {
	defer unavailable(&err)
	err = s.inTx(ctx, func(tx pgx.Tx) error {
		b := &pgx.Batch{}
		b.Queue(`SELECT 1 FROM servers WHERE id = $1 FOR UPDATE`, id)
		b.Queue(`DELETE FROM sessions WHERE server_id = $1`, id)
		b.Queue(`DELETE FROM servers WHERE id = $1`, id) // server_tags cascade
		return tx.SendBatch(ctx, b).Close()
	})
	if err != nil {
		return fmt.Errorf("delete server %q: %w", id, err)
	}
	return nil
}

func scanServer(r pgx.CollectableRow) (*broker.Server, error) {
	var (
		srv                 broker.Server
		lastSeen, createdAt int64
		info                []byte
	)
	if err := r.Scan(&srv.Seq, &srv.ID, &srv.AgentClientID, &srv.Open, &lastSeen, &srv.BrokerID, &createdAt,
		&srv.Version, &info); err != nil {
		return nil, err
	}
	if err := json.Unmarshal(info, &srv.Info); err != nil {
		return nil, fmt.Errorf("decode server %q info: %w", srv.ID, err)
	}
	srv.LastSeen, srv.CreatedAt = fromMillis(lastSeen), fromMillis(createdAt)
	return &srv, nil
}
