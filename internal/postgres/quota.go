package postgres

import (
	"context"
	"fmt"
	"hash/fnv"
	"slices"

	"github.com/jackc/pgx/v5"

	"github.com/berth-dev/berth/internal/broker"
)

// The quota counts: the placed (server_id set), not DELETED sessions of a
// quota and the sum of their GPUs (SessionSpec.GPUs, "gpus" in the spec's
// JSON). The user count walks sessions_owner_seq; the group and template
// counts scan the active sessions, and only run when such a quota is set.
const (
	quotaCountHead = `SELECT count(*), coalesce(sum((spec::jsonb->>'gpus')::bigint), 0) FROM sessions
		WHERE server_id <> '' AND state <> 'DELETED' AND `
	// quotaUserSQL: $1 the owner.
	quotaUserSQL = quotaCountHead + `owner = $1`
	// quotaGroupSQL: $1 the members, $2 the group (a session launched with
	// it among its identity provider groups counts too).
	quotaGroupSQL = quotaCountHead + `(owner = ANY($1::text[])
		OR (spec LIKE '%"groups":%' AND spec::jsonb->'groups' @> to_jsonb($2::text)))`
	// quotaTemplateSQL: $1 the template ID.
	quotaTemplateSQL = quotaCountHead + `spec LIKE '%"tpl":%' AND spec::jsonb->>'tpl' = $1`
	// quotaLockSQL takes a quota key's transaction-scoped advisory lock.
	quotaLockSQL = `SELECT pg_advisory_xact_lock($1)`
)

// quotaQuery returns the count query of q and its arguments.
func quotaQuery(q *broker.Quota) (string, []any, error) {
	switch q.Kind {
	case broker.QuotaUser:
		return quotaUserSQL, []any{q.Name}, nil
	case broker.QuotaGroup:
		members := q.Members
		if members == nil {
			members = []string{}
		}
		return quotaGroupSQL, []any{members, q.Name}, nil
	case broker.QuotaTemplate:
		return quotaTemplateSQL, []any{q.Name}, nil
	}
	return "", nil, fmt.Errorf("unknown quota kind %q", q.Kind)
}

// quotaLockID is the advisory lock of a quota key: a 64-bit FNV-1a hash of
// the key in berth's quota namespace. Two keys that share a hash only wait
// for each other.
func quotaLockID(key string) int64 {
	h := fnv.New64a()
	h.Write([]byte("berth-quota\x00" + key))
	return int64(h.Sum64())
}

// QuotaUse returns the current use of each quota, in one round trip and
// without locks.
func (s *Store) QuotaUse(ctx context.Context, qs []broker.Quota) (_ []broker.QuotaUse, err error) {
	defer unavailable(&err)
	out := make([]broker.QuotaUse, len(qs))
	if len(qs) == 0 {
		return out, nil
	}
	b := &pgx.Batch{}
	for i := range qs {
		q, args, err := quotaQuery(&qs[i])
		if err != nil {
			return nil, err
		}
		b.Queue(q, args...).QueryRow(func(r pgx.Row) error {
			return r.Scan(&out[i].Sessions, &out[i].GPUs)
		})
	}
	if err := s.pool.SendBatch(ctx, b).Close(); err != nil {
		return nil, fmt.Errorf("quota use: %w", err)
	}
	return out, nil
}

// quotaState is the quota part of a CommitPlacements transaction: the
// distinct quotas of the batch by key and their use as the transaction
// sees it.
type quotaState struct {
	keys   []string // sorted
	quotas map[string]*broker.Quota
	use    map[string]*broker.QuotaUse
}

// collect notes the quotas of a placement; the first placement with a key
// gives the quota that is counted.
func (qs *quotaState) collect(pl broker.Placement) {
	for i := range pl.Quotas {
		q := &pl.Quotas[i]
		k := q.Key()
		if qs.quotas == nil {
			qs.quotas = make(map[string]*broker.Quota)
			qs.use = make(map[string]*broker.QuotaUse)
		}
		if _, ok := qs.quotas[k]; !ok {
			qs.quotas[k] = q
			qs.keys = append(qs.keys, k)
		}
	}
}

// queue adds to the transaction's read batch the advisory lock of each
// quota key, in sorted key order (the same in every broker, after the
// server and session row locks, so that two transactions never wait for
// each other in a circle), and then each quota's count. Under read
// committed each count sees every commit made before it got its locks: a
// concurrent placement on the same quota, of this broker or another,
// commits before or after this transaction, never interleaved.
func (qs *quotaState) queue(b *pgx.Batch) error {
	if len(qs.keys) == 0 {
		return nil
	}
	slices.Sort(qs.keys)
	for _, k := range qs.keys {
		b.Queue(quotaLockSQL, quotaLockID(k))
	}
	for _, k := range qs.keys {
		query, args, err := quotaQuery(qs.quotas[k])
		if err != nil {
			return err
		}
		u := &broker.QuotaUse{}
		qs.use[k] = u
		b.Queue(query, args...).QueryRow(func(r pgx.Row) error {
			return r.Scan(&u.Sessions, &u.GPUs)
		})
	}
	return nil
}

// check tells whether pl fits its quotas: nil or a *broker.QuotaError.
func (qs *quotaState) check(pl broker.Placement) error {
	for i := range pl.Quotas {
		q := &pl.Quotas[i]
		if u := qs.use[q.Key()]; u != nil {
			if err := q.Check(*u, pl.Session.Spec.GPUs); err != nil {
				return fmt.Errorf("session %q: %w", pl.Session.ID, err)
			}
		}
	}
	return nil
}

// take counts an accepted placement against its quotas.
func (qs *quotaState) take(pl broker.Placement) {
	for i := range pl.Quotas {
		if u := qs.use[pl.Quotas[i].Key()]; u != nil {
			u.Sessions++
			u.GPUs += pl.Session.Spec.GPUs
		}
	}
}
