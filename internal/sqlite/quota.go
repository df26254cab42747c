package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/berth-dev/berth/internal/broker"
)

// The quota counts (broker.QuotaCounts): placed (server_id set), not
// DELETED sessions and the sum of their GPUs (SessionSpec.GPUs, "gpus" in
// the spec's JSON), per owner (through sessions_owner_seq), per template
// (through the expression index sessions_template of 0007), and the
// sessions launched with identity provider groups (through the partial
// index sessions_launch_groups). The instr terms match the indexes'.
const (
	quotaPlaced = ` AND server_id != '' AND state != 'DELETED'`
	// quotaOwnersSQL: ?1 the owners as a JSON array.
	quotaOwnersSQL = `SELECT owner, count(*), coalesce(sum(json_extract(spec, '$.gpus')), 0) FROM sessions
		WHERE owner IN (SELECT value FROM json_each(?))` + quotaPlaced + ` GROUP BY owner`
	// quotaTemplatesSQL: ?1 the template IDs as a JSON array.
	quotaTemplatesSQL = `SELECT json_extract(spec, '$.tpl'), count(*), coalesce(sum(json_extract(spec, '$.gpus')), 0) FROM sessions
		WHERE instr(spec, '"tpl":') > 0 AND json_extract(spec, '$.tpl') IN (SELECT value FROM json_each(?))` + quotaPlaced + `
		GROUP BY 1`
	// quotaLaunchedSQL: the sessions launched with identity provider groups.
	quotaLaunchedSQL = `SELECT owner, coalesce(json_extract(spec, '$.groups'), '[]'), coalesce(json_extract(spec, '$.gpus'), 0)
		FROM sessions WHERE instr(spec, '"groups":') > 0` + quotaPlaced
)

// queryer runs a read query: the read pool, or a write transaction.
type queryer func(ctx context.Context, q string, args ...any) (*sql.Rows, error)

// quotaCounts reads what the quotas qs need, in at most three queries.
func quotaCounts(ctx context.Context, query queryer, qs []broker.Quota) (*broker.QuotaCounts, error) {
	owners, templates, groups := broker.QuotaReads(qs)
	c := &broker.QuotaCounts{ByOwner: make(map[string]broker.QuotaUse), ByTemplate: make(map[string]broker.QuotaUse)}
	byKey := func(q string, list []string, into map[string]broker.QuotaUse) error {
		if len(list) == 0 {
			return nil
		}
		arg, err := json.Marshal(list)
		if err != nil {
			return err
		}
		rows, err := query(ctx, q, string(arg))
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var (
				k string
				u broker.QuotaUse
			)
			if err := rows.Scan(&k, &u.Sessions, &u.GPUs); err != nil {
				return err
			}
			into[k] = u
		}
		return rows.Err()
	}
	if err := byKey(quotaOwnersSQL, owners, c.ByOwner); err != nil {
		return nil, fmt.Errorf("quota use of owners: %w", err)
	}
	if err := byKey(quotaTemplatesSQL, templates, c.ByTemplate); err != nil {
		return nil, fmt.Errorf("quota use of templates: %w", err)
	}
	if groups {
		if err := readLaunched(ctx, query, c); err != nil {
			return nil, fmt.Errorf("quota use of launch groups: %w", err)
		}
	}
	return c, nil
}

// readLaunched reads the sessions launched with identity provider groups.
func readLaunched(ctx context.Context, query queryer, c *broker.QuotaCounts) error {
	rows, err := query(ctx, quotaLaunchedSQL)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var (
			l      broker.LaunchedUse
			groups string
		)
		if err := rows.Scan(&l.Owner, &groups, &l.GPUs); err != nil {
			return err
		}
		if err := json.Unmarshal([]byte(groups), &l.Groups); err != nil || len(l.Groups) == 0 {
			continue // not a list of groups: counts towards none
		}
		c.Launched = append(c.Launched, l)
	}
	return rows.Err()
}

// QuotaUse returns the current use of each quota, counted in the mirror,
// or read on the read pool without one.
func (s *Store) QuotaUse(ctx context.Context, qs []broker.Quota) ([]broker.QuotaUse, error) {
	var c *broker.QuotaCounts
	ok := false
	if s.m != nil {
		c, ok = s.m.quotaCounts(qs)
	}
	if !ok {
		var err error
		if c, err = quotaCounts(ctx, s.query, qs); err != nil {
			return nil, err
		}
	}
	out := make([]broker.QuotaUse, len(qs))
	for i := range qs {
		out[i] = c.Use(&qs[i])
	}
	return out, nil
}

// quotaTx checks the quotas of a CommitPlacements transaction. SQLite runs
// one write transaction at a time, so the counts it reads in the
// transaction hold until it commits. The first placement with quotas reads
// the counts of every quota of the batch (in the mirror, or in at most three
// queries without one); each placement written adds to the use. A
// transaction without quotas reads nothing.
type quotaTx struct {
	s   *Store
	tx  *sql.Tx
	ps  []broker.Placement
	use map[string]*broker.QuotaUse
}

// check refuses pl, with an itemError wrapping a *broker.QuotaError, when
// one of its quotas would be exceeded.
func (qt *quotaTx) check(ctx context.Context, pl broker.Placement) error {
	if qt.use == nil {
		if err := qt.load(ctx); err != nil {
			return err
		}
	}
	for i := range pl.Quotas {
		q := &pl.Quotas[i]
		if u := qt.use[q.Key()]; u != nil {
			if err := q.Check(*u, pl.Session.Spec.GPUs); err != nil {
				return itemError{fmt.Errorf("session %q: %w", pl.Session.ID, err)}
			}
		}
	}
	return nil
}

// load reads the use of every quota of the batch in the transaction; the
// first placement with a key gives the quota that is counted.
func (qt *quotaTx) load(ctx context.Context) error {
	var qs []broker.Quota
	seen := make(map[string]bool)
	for _, pl := range qt.ps {
		for _, q := range pl.Quotas {
			if k := q.Key(); !seen[k] {
				seen[k] = true
				qs = append(qs, q)
			}
		}
	}
	var c *broker.QuotaCounts
	ok := false
	if qt.s.m != nil {
		c, ok = qt.s.m.quotaCounts(qs)
	}
	if !ok {
		query := func(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
			st, err := qt.s.txStmt(ctx, qt.tx, q)
			if err != nil {
				return nil, err
			}
			return st.QueryContext(ctx, args...)
		}
		var err error
		if c, err = quotaCounts(ctx, query, qs); err != nil {
			return err
		}
	}
	qt.use = make(map[string]*broker.QuotaUse, len(qs))
	for i := range qs {
		u := c.Use(&qs[i])
		qt.use[qs[i].Key()] = &u
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

// quotaCounts counts what the quotas qs need in the mirror, without SQL:
// the owners' rows through byOwner, templates and launch groups in one walk
// of the rows that have a spec. ok is false when the mirror is stale. Within
// a placement transaction, which holds the only writer, the mirror is the
// database's state: every commit applies to it before the writer is free.
func (m *mirror) quotaCounts(qs []broker.Quota) (_ *broker.QuotaCounts, ok bool) {
	owners, templates, groups := broker.QuotaReads(qs)
	c := &broker.QuotaCounts{ByOwner: make(map[string]broker.QuotaUse), ByTemplate: make(map[string]broker.QuotaUse)}
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.stale {
		return nil, false
	}
	placed := func(r *row) bool { return !r.dead && r.serverID != noServer && r.state != stateDeleted }
	gpus := func(r *row) int {
		if r.more == nil {
			return 0
		}
		return r.more.spec.GPUs
	}
	for _, o := range owners {
		l := m.byOwner[o]
		if l == nil {
			continue
		}
		var u broker.QuotaUse
		for _, r := range l.rows {
			if placed(r) {
				u.Sessions++
				u.GPUs += gpus(r)
			}
		}
		if u != (broker.QuotaUse{}) {
			c.ByOwner[o] = u
		}
	}
	if len(templates) == 0 && !groups {
		return c, true
	}
	for _, r := range m.all.rows {
		if r.more == nil || !placed(r) {
			continue
		}
		sp := &r.more.spec
		if sp.Template != "" {
			if _, want := slices.BinarySearch(templates, sp.Template); want {
				u := c.ByTemplate[sp.Template]
				u.Sessions++
				u.GPUs += sp.GPUs
				c.ByTemplate[sp.Template] = u
			}
		}
		if groups && len(sp.Groups) > 0 {
			c.Launched = append(c.Launched, broker.LaunchedUse{Owner: r.owner.Value(), Groups: sp.Groups, GPUs: sp.GPUs})
		}
	}
	return c, true
}

// noServer is the server ID of an unplaced session.
var noServer = intern("")
