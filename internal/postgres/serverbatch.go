package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/berth-dev/berth/internal/broker"
)

// UpdateServers writes the Info, LastSeen and BrokerID of existing servers
// in one transaction (the broker's flush of volatile host figures); a row
// takes a new Version when anything but LastSeen and BrokerID changed. A
// server whose row is gone, or is registered by another agent client, is
// skipped. The servers are not modified.
func (s *Store) UpdateServers(ctx context.Context, srvs []*broker.Server) (err error) {
	defer unavailable(&err)
	if len(srvs) == 0 {
		return nil
	}
	type row struct {
		srv        *broker.Server
		info, tags string
	}
	rows := make([]row, len(srvs))
	for i, srv := range srvs {
		b, err := json.Marshal(srv.Info)
		if err != nil {
			return fmt.Errorf("update server %q: encode info: %w", srv.ID, err)
		}
		rows[i] = row{srv, string(b), tagsJSON(srv.Info.Tags)}
	}
	err = s.inTx(ctx, func(tx pgx.Tx) error {
		for _, r := range rows {
			var (
				seq, version            int64
				agent, oldTags, oldInfo string
				open                    bool
				created                 int64
				oldMaxV, oldMaxU        int
			)
			err := tx.QueryRow(ctx, lockServerForUpsertSQL, r.srv.ID).
				Scan(&seq, &agent, &open, &created, &version, &oldMaxV, &oldMaxU, &oldTags, &oldInfo)
			if errors.Is(err, pgx.ErrNoRows) || (err == nil && agent != r.srv.AgentClientID) {
				continue
			}
			if err != nil {
				return err
			}
			in := &r.srv.Info
			changed := r.info != oldInfo || r.tags != oldTags ||
				in.MaxVirtualSessions != oldMaxV || in.MaxConcurrentSessionsPerUser != oldMaxU
			if err := tx.QueryRow(ctx, updateServerSQL,
				toMillis(r.srv.LastSeen), r.srv.BrokerID, in.MaxVirtualSessions, in.MaxConcurrentSessionsPerUser,
				r.tags, r.info, changed, seq).Scan(&version); err != nil {
				return err
			}
			if r.tags == oldTags {
				continue
			}
			if _, err := tx.Exec(ctx, deleteServerTagsSQL, r.srv.ID); err != nil {
				return err
			}
			if err := insertTags(ctx, tx, r.srv.ID, in.Tags); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("update %d servers: %w", len(srvs), err)
	}
	return nil
}
