package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"

	"github.com/berth-dev/berth/internal/broker"
)

// The quota counts: the placed (server_id set), not DELETED sessions of a
// quota and the sum of their GPUs (SessionSpec.GPUs, "gpus" in the spec's
// JSON). The user count walks the owner's index; the group and template
// counts scan the active sessions, and only run when such a quota is set.
const (
	quotaCountHead = `SELECT count(*), coalesce(sum(json_extract(spec, '$.gpus')), 0) FROM sessions
		WHERE server_id != '' AND state != 'DELETED' AND `
	// quotaUserSQL: ?1 the owner.
	quotaUserSQL = quotaCountHead + `owner = ?`
	// quotaGroupSQL: ?1 the members as a JSON array, ?2 the group (a
	// session launched with it among its identity provider groups counts).
	quotaGroupSQL = quotaCountHead + `(owner IN (SELECT value FROM json_each(?1))
		OR (spec LIKE '%"groups":%' AND EXISTS (SELECT 1 FROM json_each(spec, '$.groups') WHERE value = ?2)))`
	// quotaTemplateSQL: ?1 the template ID.
	quotaTemplateSQL = quotaCountHead + `spec LIKE '%"tpl":%' AND json_extract(spec, '$.tpl') = ?`
)

// quotaQuery returns the count query of q and its arguments.
func quotaQuery(q *broker.Quota) (string, []any, error) {
	switch q.Kind {
	case broker.QuotaUser:
		return quotaUserSQL, []any{q.Name}, nil
	case broker.QuotaGroup:
		members, err := json.Marshal(q.Members)
		if err != nil {
			return "", nil, err
		}
		if q.Members == nil {
			members = []byte("[]")
		}
		return quotaGroupSQL, []any{string(members), q.Name}, nil
	case broker.QuotaTemplate:
		return quotaTemplateSQL, []any{q.Name}, nil
	}
	return "", nil, fmt.Errorf("unknown quota kind %q", q.Kind)
}

// QuotaUse returns the current use of each quota, read on the read pool.
func (s *Store) QuotaUse(ctx context.Context, qs []broker.Quota) ([]broker.QuotaUse, error) {
	out := make([]broker.QuotaUse, len(qs))
	for i := range qs {
		q, args, err := quotaQuery(&qs[i])
		if err != nil {
			return nil, err
		}
		if err := s.queryRow(ctx, q, args...).Scan(&out[i].Sessions, &out[i].GPUs); err != nil {
			return nil, fmt.Errorf("quota %s: %w", qs[i].Key(), err)
		}
	}
	return out, nil
}

// quotaTx checks the quotas of a CommitPlacements transaction. SQLite runs
// one write transaction at a time, so the counts it reads in the
// transaction hold until it commits. Each quota key is read once, on the
// first placement that has it; later placements add what the transaction
// placed. A transaction without quotas reads nothing.
type quotaTx struct {
	s   *Store
	tx  *sql.Tx
	use map[string]*broker.QuotaUse
}

// check refuses pl, with an itemError wrapping a *broker.QuotaError, when
// one of its quotas would be exceeded.
func (qt *quotaTx) check(ctx context.Context, pl broker.Placement) error {
	for i := range pl.Quotas {
		q := &pl.Quotas[i]
		u, err := qt.useOf(ctx, q)
		if err != nil {
			return err
		}
		if err := q.Check(*u, pl.Session.Spec.GPUs); err != nil {
			return itemError{fmt.Errorf("session %q: %w", pl.Session.ID, err)}
		}
	}
	return nil
}

// take counts a written placement against its quotas.
func (qt *quotaTx) take(pl broker.Placement) {
	for i := range pl.Quotas {
		if u := qt.use[pl.Quotas[i].Key()]; u != nil {
			u.Sessions++
			u.GPUs += pl.Session.Spec.GPUs
		}
	}
}

// useOf returns the quota's use in the transaction, reading it the first
// time.
func (qt *quotaTx) useOf(ctx context.Context, q *broker.Quota) (*broker.QuotaUse, error) {
	k := q.Key()
	if u := qt.use[k]; u != nil {
		return u, nil
	}
	query, args, err := quotaQuery(q)
	if err != nil {
		return nil, err
	}
	st, err := qt.s.txStmt(ctx, qt.tx, query)
	if err != nil {
		return nil, err
	}
	u := &broker.QuotaUse{}
	if err := st.QueryRowContext(ctx, args...).Scan(&u.Sessions, &u.GPUs); err != nil {
		return nil, fmt.Errorf("quota %s: %w", k, err)
	}
	if qt.use == nil {
		qt.use = make(map[string]*broker.QuotaUse)
	}
	qt.use[k] = u
	return u, nil
}
