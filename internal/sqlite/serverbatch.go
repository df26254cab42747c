package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/berth-dev/berth/internal/broker"
)

const getServerForUpdateSQL = `SELECT seq, agent_client_id, tags FROM servers WHERE id = ?`

// UpdateServers writes the Info, LastSeen and BrokerID of existing servers
// in one transaction (the broker's flush of volatile host figures). A
// server whose row is gone, or is registered by another agent client, is
// skipped. The servers are not modified.
func (s *Store) UpdateServers(ctx context.Context, srvs []*broker.Server) error {
	if len(srvs) == 0 {
		return nil
	}
	type row struct {
		srv        *broker.Server
		info, tags string
	}
	rows := make([]row, len(srvs))
	for i, srv := range srvs {
		info, err := json.Marshal(srv.Info)
		if err != nil {
			return fmt.Errorf("update server %q: encode info: %w", srv.ID, err)
		}
		rows[i] = row{srv, string(info), tagsJSON(srv.Info.Tags)}
	}
	var retagged, updated []*broker.Server
	err := s.writeMirrored(ctx, func(tx *sql.Tx) error {
		retagged, updated = retagged[:0], updated[:0]
		for _, r := range rows {
			var (
				seq           int64
				agent, oldTag string
			)
			err := s.txQueryRow(ctx, tx, getServerForUpdateSQL, r.srv.ID).Scan(&seq, &agent, &oldTag)
			if errors.Is(err, sql.ErrNoRows) || (err == nil && agent != r.srv.AgentClientID) {
				continue
			}
			if err != nil {
				return err
			}
			if _, err := s.txExec(ctx, tx, updateServerSQL,
				toMillis(r.srv.LastSeen), r.srv.BrokerID, r.srv.Info.MaxVirtualSessions,
				r.srv.Info.MaxConcurrentSessionsPerUser, r.tags, r.info, seq); err != nil {
				return err
			}
			updated = append(updated, r.srv)
			if r.tags == oldTag {
				continue
			}
			if _, err := s.txExec(ctx, tx, deleteServerTagsSQL, r.srv.ID); err != nil {
				return err
			}
			if err := insertTags(ctx, tx, r.srv.ID, r.srv.Info.Tags); err != nil {
				return err
			}
			retagged = append(retagged, r.srv)
		}
		return nil
	}, func(m *mirror) {
		for _, srv := range updated {
			m.setLimitsLocked(srv.ID, &srv.Info)
		}
		for _, srv := range retagged {
			m.setTagsLocked(srv.ID, srv.Info.Tags)
		}
	})
	if err != nil {
		return fmt.Errorf("update %d servers: %w", len(srvs), err)
	}
	return nil
}
