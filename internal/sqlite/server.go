package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/broker"
)

const (
	serverCols = `seq, id, agent_client_id, open, last_seen, broker_id, created_at, info`

	getServerForUpsertSQL = `SELECT seq, agent_client_id, open, created_at, tags FROM servers WHERE id = ?`
	insertServerSQL       = `INSERT INTO servers (id, agent_client_id, open, last_seen, broker_id, created_at,
		max_virtual_sessions, max_sessions_per_user, tags, info) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
	updateServerSQL = `UPDATE servers SET last_seen = ?, broker_id = ?,
		max_virtual_sessions = ?, max_sessions_per_user = ?, tags = ?, info = ? WHERE seq = ?`
	deleteServerTagsSQL = `DELETE FROM server_tags WHERE server_id = ?`
	setServerOpenSQL    = `UPDATE servers SET open = ? WHERE id = ?`
	setServerSeenSQL    = `UPDATE servers SET last_seen = ?, broker_id = ? WHERE id = ?`

	// A server ID's binding holds while its agent client is active.
	getBindingSQL = `SELECT b.agent_client_id FROM server_bindings b
		JOIN clients c ON c.id = b.agent_client_id AND c.active = 1 WHERE b.server_id = ?`
	bindServerSQL = `INSERT INTO server_bindings (server_id, agent_client_id, bound_at) VALUES (?, ?, ?)
		ON CONFLICT (server_id) DO UPDATE SET agent_client_id = excluded.agent_client_id, bound_at = excluded.bound_at`
	markLinkedSQL = `UPDATE clients SET linked_at = ? WHERE id = ? AND linked_at = 0`
)

// UpsertServer inserts the server or updates its Info, LastSeen and BrokerID,
// keeping Open, Seq and CreatedAt of an existing row; s gets those kept values.
// A new server with a zero CreatedAt gets the current time. The server's tag
// rows are rewritten only when its tags changed. It returns broker.ErrConflict if
// the server exists with another AgentClientID, or if its ID is bound to
// another agent client that is still active: a new server's ID is bound to its
// agent client (which is marked linked), and the binding outlives the row.
func (s *Store) UpsertServer(ctx context.Context, srv *broker.Server) error {
	info, err := json.Marshal(srv.Info)
	if err != nil {
		return fmt.Errorf("upsert server %q: encode info: %w", srv.ID, err)
	}
	tags := tagsJSON(srv.Info.Tags)
	var (
		seq         int64
		open        bool
		createdAt   time.Time
		tagsChanged bool
	)
	err = s.writeMirrored(ctx, func(tx *sql.Tx) error {
		var (
			agent, oldTags string
			created        int64
		)
		err := s.txQueryRow(ctx, tx, getServerForUpsertSQL, srv.ID).
			Scan(&seq, &agent, &open, &created, &oldTags)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			open, createdAt = srv.Open, srv.CreatedAt
			if createdAt.IsZero() {
				createdAt = s.now()
			}
			var bound string
			switch err := s.txQueryRow(ctx, tx, getBindingSQL, srv.ID).Scan(&bound); {
			case err == nil && bound != srv.AgentClientID:
				return fmt.Errorf("server ID is bound to agent client %s (unregister that client to release it): %w", bound, broker.ErrConflict)
			case err != nil && !errors.Is(err, sql.ErrNoRows):
				return err
			}
			if _, err := s.txExec(ctx, tx, bindServerSQL, srv.ID, srv.AgentClientID, toMillis(createdAt)); err != nil {
				return err
			}
			if _, err := s.txExec(ctx, tx, markLinkedSQL, toMillis(createdAt), srv.AgentClientID); err != nil {
				return err
			}
			res, err := s.txExec(ctx, tx, insertServerSQL,
				srv.ID, srv.AgentClientID, boolInt(open), toMillis(srv.LastSeen), srv.BrokerID, toMillis(createdAt),
				srv.Info.MaxVirtualSessions, srv.Info.MaxConcurrentSessionsPerUser, tags, info)
			if err != nil {
				return err
			}
			if seq, err = res.LastInsertId(); err != nil {
				return err
			}
			tagsChanged = true
			return insertTags(ctx, tx, srv.ID, srv.Info.Tags)
		case err != nil:
			return err
		case agent != srv.AgentClientID:
			return fmt.Errorf("server is registered by another agent client: %w", broker.ErrConflict)
		}
		createdAt = fromMillis(created)
		if _, err := s.txExec(ctx, tx, updateServerSQL,
			toMillis(srv.LastSeen), srv.BrokerID, srv.Info.MaxVirtualSessions, srv.Info.MaxConcurrentSessionsPerUser,
			tags, info, seq); err != nil {
			return err
		}
		if tags == oldTags {
			return nil
		}
		if _, err := s.txExec(ctx, tx, deleteServerTagsSQL, srv.ID); err != nil {
			return err
		}
		tagsChanged = true
		return insertTags(ctx, tx, srv.ID, srv.Info.Tags)
	}, func(m *mirror) {
		m.setLimitsLocked(srv.ID, &srv.Info)
		if tagsChanged {
			m.setTagsLocked(srv.ID, srv.Info.Tags)
		}
	})
	if err != nil {
		return fmt.Errorf("upsert server %q: %w", srv.ID, err)
	}
	srv.Seq, srv.Open, srv.CreatedAt = seq, open, createdAt
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

func insertTags(ctx context.Context, tx *sql.Tx, id string, tags map[string]string) error {
	if len(tags) == 0 {
		return nil
	}
	var b strings.Builder
	args := make([]any, 0, 3*len(tags))
	b.WriteString(`INSERT INTO server_tags (server_id, key, value) VALUES `)
	for k, v := range tags {
		if len(args) > 0 {
			b.WriteString(", ")
		}
		b.WriteString("(?, ?, ?)")
		args = append(args, id, k, v)
	}
	_, err := tx.ExecContext(ctx, b.String(), args...)
	return err
}

// GetServer returns broker.ErrNotFound for an unknown ID.
func (s *Store) GetServer(ctx context.Context, id string) (*broker.Server, error) {
	srv, err := scanServer(s.queryRow(ctx, `SELECT `+serverCols+` FROM servers WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		err = broker.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("get server %q: %w", id, err)
	}
	return srv, nil
}

// ListServers returns servers ordered by Seq.
func (s *Store) ListServers(ctx context.Context, f broker.ServerFilter) ([]*broker.Server, error) {
	q := `SELECT ` + serverCols + ` FROM servers WHERE seq > ?`
	args := []any{f.AfterSeq}
	if len(f.IDs) > 0 {
		ids, _ := json.Marshal(f.IDs)
		q += ` AND id IN (SELECT value FROM json_each(?))`
		args = append(args, string(ids))
	}
	q += ` ORDER BY seq`
	if f.Limit > 0 {
		q += ` LIMIT ?`
		args = append(args, f.Limit)
	}
	rows, err := s.query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list servers: %w", err)
	}
	defer rows.Close()
	var out []*broker.Server
	for rows.Next() {
		srv, err := scanServer(rows)
		if err != nil {
			return nil, fmt.Errorf("list servers: %w", err)
		}
		out = append(out, srv)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list servers: %w", err)
	}
	return out, nil
}

// SetServerOpen returns broker.ErrNotFound for an unknown ID.
func (s *Store) SetServerOpen(ctx context.Context, id string, open bool) error {
	if err := s.updateServer(ctx, setServerOpenSQL, boolInt(open), id); err != nil {
		return fmt.Errorf("set server %q open: %w", id, err)
	}
	return nil
}

// SetServerSeen records contact with the server's agent through broker brokerID
// at t (zero t: link lost). It returns broker.ErrNotFound for an unknown ID.
func (s *Store) SetServerSeen(ctx context.Context, id, brokerID string, t time.Time) error {
	if err := s.updateServer(ctx, setServerSeenSQL,
		toMillis(t), brokerID, id); err != nil {
		return fmt.Errorf("set server %q seen: %w", id, err)
	}
	return nil
}

// SetServersSeen records contact with many servers' agents through broker
// brokerID in one transaction; unknown IDs are skipped.
func (s *Store) SetServersSeen(ctx context.Context, brokerID string, seen map[string]time.Time) error {
	if len(seen) == 0 {
		return nil
	}
	err := s.write(ctx, func(tx *sql.Tx) error {
		stmt, err := s.txStmt(ctx, tx, setServerSeenSQL)
		if err != nil {
			return err
		}
		for id, t := range seen {
			if _, err := stmt.ExecContext(ctx, toMillis(t), brokerID, id); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("set %d servers seen: %w", len(seen), err)
	}
	return nil
}

// updateServer runs a one-row UPDATE and returns broker.ErrNotFound if it
// matched no row.
func (s *Store) updateServer(ctx context.Context, q string, args ...any) error {
	res, err := s.exec(ctx, q, args...)
	if err != nil {
		return err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return broker.ErrNotFound
	}
	return nil
}

// DeleteServer removes the server, its tags and its sessions. An unknown ID is
// not an error.
func (s *Store) DeleteServer(ctx context.Context, id string) error {
	var ids []string
	err := s.writeMirrored(ctx, func(tx *sql.Tx) (err error) {
		if ids, err = deleteReturningIDs(ctx, tx, `DELETE FROM sessions WHERE server_id = ? RETURNING id`, id); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM servers WHERE id = ?`, id) // server_tags cascade
		return err
	}, func(m *mirror) {
		for _, sid := range ids {
			m.removeLocked(sid)
		}
		m.setTagsLocked(id, nil)
		delete(m.limits, id)
	})
	if err != nil {
		return fmt.Errorf("delete server %q: %w", id, err)
	}
	return nil
}

func scanServer(r rowScanner) (*broker.Server, error) {
	var (
		srv                 broker.Server
		lastSeen, createdAt int64
		info                []byte
	)
	if err := r.Scan(&srv.Seq, &srv.ID, &srv.AgentClientID, &srv.Open, &lastSeen, &srv.BrokerID, &createdAt, &info); err != nil {
		return nil, err
	}
	if err := json.Unmarshal(info, &srv.Info); err != nil {
		return nil, fmt.Errorf("decode server %q info: %w", srv.ID, err)
	}
	srv.LastSeen, srv.CreatedAt = fromMillis(lastSeen), fromMillis(createdAt)
	return &srv, nil
}
