package sqlite

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/berth-dev/berth/internal/broker"
)

// updateDueSQL writes a READY session's lifetime bookkeeping (life, due_at)
// when it is still as the caller read it: only those columns change, so
// of the indexes only the partial one of due_at is touched.
const updateDueSQL = `UPDATE sessions SET life = ?, due_at = ? WHERE seq = ? AND state = 'READY' AND due_at = ?
	AND life = ? AND num_connections = ? AND last_input_time = ? AND last_disconnection_time = ? AND updated_at = ?`

// UpdateSessionsDue implements broker.DueWriter: it writes the Life and
// DueAt of each session in one transaction, each only while the session is
// as its write's Read says. The result says, in order, which were written.
func (s *Store) UpdateSessionsDue(ctx context.Context, ws []broker.DueWrite) ([]bool, error) {
	out := make([]bool, len(ws))
	if len(ws) == 0 {
		return out, nil
	}
	err := s.writeMirrored(ctx, func(tx *sql.Tx) error {
		clear(out)
		upd, err := s.txStmt(ctx, tx, updateDueSQL) // prepared once per transaction
		if err != nil {
			return err
		}
		for i, w := range ws {
			life, err := encodeLife(&w.Life)
			if err != nil {
				return err
			}
			was, err := encodeLife(&w.Read.Life)
			if err != nil {
				return err
			}
			x := w.Read
			res, err := upd.ExecContext(ctx, life, toMillis(w.DueAt), x.Seq, toMillis(x.DueAt), was,
				x.NumOfConnections, toMillis(x.LastInputTime), toMillis(x.LastDisconnectionTime), toMillis(x.UpdatedAt))
			if err != nil {
				return fmt.Errorf("session %q: %w", x.ID, err)
			}
			n, err := res.RowsAffected()
			if err != nil {
				return err
			}
			out[i] = n == 1
		}
		return nil
	}, func(m *mirror) {
		for i, w := range ws {
			if out[i] {
				m.setDueLocked(w.Read.ID, &w.Life, toMillis(w.DueAt))
			}
		}
	})
	if err != nil {
		return nil, fmt.Errorf("update sessions' lifetimes: %w", err)
	}
	return out, nil
}

// setDueLocked sets the Life and DueAt of session id's row, as
// UpdateSessionsDue wrote them. m.mu must be held for writing.
func (m *mirror) setDueLocked(id string, life *broker.SessionLife, due int64) {
	old := m.byID[id]
	if old == nil {
		return
	}
	// Lifetimes are not in the API's shape: the new version keeps the
	// old one's encoding.
	r := &row{rowData: old.rowData}
	if e := old.memo.Load(); e != nil {
		r.memo.Store(e)
	}
	r.dead = false
	var more rowMore
	if old.more != nil {
		more = *old.more
	}
	more.life, more.dueAt = lifeCopy(life), due
	r.more = nil
	if old.more != nil || due != 0 || !life.IsZero() {
		r.more = &more
	}
	m.putLocked(r)
}
