package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/berth-dev/berth/internal/broker"
)

const (
	// lockDueSQL locks the rows UpdateSessionsDue may write, in ID order as
	// UpdateSessions does, so that the two never deadlock.
	lockDueSQL = `SELECT seq FROM sessions WHERE seq = ANY($1) ORDER BY id FOR UPDATE`
	// updateDueSQL writes the life and due_at of the sessions of its array
	// arguments that are still as the caller read them, and returns their
	// Seqs: only those two columns change, so of the indexes only the
	// partial one of due_at is touched.
	updateDueSQL = `UPDATE sessions AS s SET life = u.life, due_at = u.due
		FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bigint[], $5::text[], $6::bigint[], $7::bigint[],
		$8::bigint[], $9::bigint[]) AS u(seq, life, due, was_due, was_life, conns, input, disc, upd)
		WHERE s.seq = u.seq AND s.state = 'READY' AND s.due_at = u.was_due AND s.life = u.was_life
		AND s.num_connections = u.conns AND s.last_input_time = u.input AND s.last_disconnection_time = u.disc
		AND s.updated_at = u.upd
		RETURNING s.seq`
)

// UpdateSessionsDue implements broker.DueWriter: it writes the Life and
// DueAt of each session in one transaction, each only while the session is
// as its write's Read says. The result says, in order, which were written.
func (s *Store) UpdateSessionsDue(ctx context.Context, ws []broker.DueWrite) (_ []bool, err error) {
	defer unavailable(&err)
	out := make([]bool, len(ws))
	if len(ws) == 0 {
		return out, nil
	}
	n := len(ws)
	seq, due, wasDue, conns, input, disc, upd := make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n),
		make([]int64, n), make([]int64, n), make([]int64, n)
	life, wasLife := make([]string, n), make([]string, n)
	at := make(map[int64]int, n)
	for i, w := range ws {
		x := w.Read
		if life[i], err = encodeLife(&w.Life); err != nil {
			return nil, err
		}
		if wasLife[i], err = encodeLife(&x.Life); err != nil {
			return nil, err
		}
		seq[i], due[i], wasDue[i], conns[i] = x.Seq, toMillis(w.DueAt), toMillis(x.DueAt), x.NumOfConnections
		input[i], disc[i], upd[i] = toMillis(x.LastInputTime), toMillis(x.LastDisconnectionTime), toMillis(x.UpdatedAt)
		at[x.Seq] = i
	}
	err = s.inTx(ctx, func(tx pgx.Tx) error {
		clear(out)
		// One round trip. The commit does not wait for the WAL flush: a
		// crash may lose this bookkeeping (a warning is then sent again),
		// never a session, and the tick does not wait for the disk.
		b := &pgx.Batch{}
		b.Queue(`SET LOCAL synchronous_commit = off`)
		b.Queue(lockDueSQL, seq)
		var written int64
		b.Queue(updateDueSQL, seq, life, due, wasDue, wasLife, conns, input, disc, upd).Query(func(rows pgx.Rows) error {
			_, err := pgx.ForEachRow(rows, []any{&written}, func() error {
				if i, ok := at[written]; ok {
					out[i] = true
				}
				return nil
			})
			return err
		})
		return tx.SendBatch(ctx, b).Close()
	})
	if err != nil {
		return nil, fmt.Errorf("update sessions' lifetimes: %w", err)
	}
	return out, nil
}
