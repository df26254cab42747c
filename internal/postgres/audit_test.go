package postgres_test

import (
	"testing"

	"github.com/berth-dev/berth/internal/audit"
	"github.com/berth-dev/berth/internal/broker/storetest"
	"github.com/berth-dev/berth/internal/postgres/pgtest"
)

// TestStore_AuditContract runs the audit contract; its ConcurrentWriters
// case appends from two brokers (two stores, two pools) on one schema.
func TestStore_AuditContract(t *testing.T) {
	storetest.RunAudit(t, func(t *testing.T) storetest.AuditHarness {
		dsn := pgtest.DSN(t)
		return storetest.AuditHarness{
			Store: MustOpen(t, dsn),
			Other: func(t *testing.T) audit.Store { return MustOpen(t, dsn) },
			Exec: func(t *testing.T, q string) error {
				_, err := pgtest.Admin(t, dsn).Exec(t.Context(), q)
				return err
			},
			DropGuards: `DROP TRIGGER IF EXISTS audit_log_guard ON audit_log`,
		}
	})
}
