package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"slices"

	"github.com/jackc/pgx/v5"

	"github.com/berth-dev/berth/internal/broker"
)

// The quota counts (broker.QuotaCounts): placed (server_id set), not
// DELETED sessions and the sum of their GPUs (SessionSpec.GPUs, "gpus" in
// the spec's JSON), per owner (through sessions_owner_seq), per template
// (through the expression index sessions_template of 0009), and the
// sessions launched with identity provider groups (through the partial
// index sessions_launch_groups). The strpos terms match the indexes'.
const (
	quotaPlaced = ` AND server_id <> '' AND state <> 'DELETED'`
	// quotaOwnersSQL: $1 the owners.
	quotaOwnersSQL = `SELECT owner, count(*), coalesce(sum((spec::jsonb->>'gpus')::bigint), 0) FROM sessions
		WHERE owner = ANY($1::text[])` + quotaPlaced + ` GROUP BY owner`
	// quotaTemplatesSQL: $1 the template IDs.
	quotaTemplatesSQL = `SELECT spec::jsonb->>'tpl', count(*), coalesce(sum((spec::jsonb->>'gpus')::bigint), 0) FROM sessions
		WHERE strpos(spec, '"tpl":') > 0 AND spec::jsonb->>'tpl' = ANY($1::text[])` + quotaPlaced + ` GROUP BY 1`
	// quotaLaunchedSQL: the sessions launched with identity provider groups.
	quotaLaunchedSQL = `SELECT owner, coalesce(spec::jsonb->>'groups', '[]'), coalesce((spec::jsonb->>'gpus')::bigint, 0)
		FROM sessions WHERE strpos(spec, '"groups":') > 0` + quotaPlaced
	// quotaLockSQL takes the transaction-scoped advisory locks of quota
	// keys, one after the other in the order of the array.
	quotaLockSQL = `SELECT count(pg_advisory_xact_lock(k)) FROM unnest($1::bigint[]) AS k`
)

// quotaLockID is the advisory lock of a quota key: a 64-bit FNV-1a hash of
// the key in berth's quota namespace. Two keys that share a hash only wait
// for each other.
func quotaLockID(key string) int64 {
	h := fnv.New64a()
	h.Write([]byte("berth-quota\x00" + key))
	return int64(h.Sum64())
}

// queueQuotaCounts adds to b the queries of what the quotas qs need (at
// most three) and returns the counts they fill when b runs.
func queueQuotaCounts(b *pgx.Batch, qs []broker.Quota) *broker.QuotaCounts {
	owners, templates, groups := broker.QuotaReads(qs)
	c := &broker.QuotaCounts{ByOwner: make(map[string]broker.QuotaUse), ByTemplate: make(map[string]broker.QuotaUse)}
	byKey := func(q string, list []string, into map[string]broker.QuotaUse) {
		if len(list) == 0 {
			return
		}
		b.Queue(q, list).Query(func(rows pgx.Rows) error {
			var (
				k string
				u broker.QuotaUse
			)
			_, err := pgx.ForEachRow(rows, []any{&k, &u.Sessions, &u.GPUs}, func() error {
				into[k] = u
				return nil
			})
			return err
		})
	}
	byKey(quotaOwnersSQL, owners, c.ByOwner)
	byKey(quotaTemplatesSQL, templates, c.ByTemplate)
	if groups {
		b.Queue(quotaLaunchedSQL).Query(func(rows pgx.Rows) error {
			var (
				l    broker.LaunchedUse
				list string
			)
			_, err := pgx.ForEachRow(rows, []any{&l.Owner, &list, &l.GPUs}, func() error {
				l.Groups = nil
				if err := json.Unmarshal([]byte(list), &l.Groups); err == nil && len(l.Groups) > 0 {
					c.Launched = append(c.Launched, l)
				}
				return nil
			})
			return err
		})
	}
	return c
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
	c := queueQuotaCounts(b, qs)
	if err := s.pool.SendBatch(ctx, b).Close(); err != nil {
		return nil, fmt.Errorf("quota use: %w", err)
	}
	for i := range qs {
		out[i] = c.Use(&qs[i])
	}
	return out, nil
}

// quotaState is the quota part of a CommitPlacements transaction: the
// distinct quotas of the batch by key and their use as the transaction
// sees it.
type quotaState struct {
	keys   []string // sorted
	quotas map[string]*broker.Quota
	counts *broker.QuotaCounts
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
		}
		if _, ok := qs.quotas[k]; !ok {
			qs.quotas[k] = q
			qs.keys = append(qs.keys, k)
		}
	}
}

// queue adds to the transaction's read batch the advisory locks of the
// quota keys, in sorted key order (the same in every broker, after the
// server and session row locks, so that two transactions never wait for
// each other in a circle), and then the quotas' counts. Under read
// committed each count sees every commit made before it got its locks: a
// concurrent placement on the same quota, of this broker or another,
// commits before or after this transaction, never interleaved.
func (qs *quotaState) queue(b *pgx.Batch) {
	if len(qs.keys) == 0 {
		return
	}
	slices.Sort(qs.keys)
	ids := make([]int64, len(qs.keys))
	list := make([]broker.Quota, len(qs.keys))
	for i, k := range qs.keys {
		ids[i], list[i] = quotaLockID(k), *qs.quotas[k]
	}
	b.Queue(quotaLockSQL, ids)
	qs.counts = queueQuotaCounts(b, list)
}

// useOf returns the use of a quota of the batch, derived from the counts
// read the first time.
func (qs *quotaState) useOf(q *broker.Quota) *broker.QuotaUse {
	k := q.Key()
	if u := qs.use[k]; u != nil {
		return u
	}
	if qs.use == nil {
		qs.use = make(map[string]*broker.QuotaUse)
	}
	u := qs.counts.Use(qs.quotas[k])
	qs.use[k] = &u
	return &u
}

// check tells whether pl fits its quotas: nil or a *broker.QuotaError.
func (qs *quotaState) check(pl broker.Placement) error {
	for i := range pl.Quotas {
		q := &pl.Quotas[i]
		if err := q.Check(*qs.useOf(q), pl.Session.Spec.GPUs); err != nil {
			return fmt.Errorf("session %q: %w", pl.Session.ID, err)
		}
	}
	return nil
}

// take counts an accepted placement against its quotas.
func (qs *quotaState) take(pl broker.Placement) {
	for i := range pl.Quotas {
		u := qs.useOf(&pl.Quotas[i])
		u.Sessions++
		u.GPUs += pl.Session.Spec.GPUs
	}
}
