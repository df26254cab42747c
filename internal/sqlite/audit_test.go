package sqlite_test

import (
	"database/sql"
	"testing"

	_ "modernc.org/sqlite"

	"github.com/berth-dev/berth/internal/audit"
	"github.com/berth-dev/berth/internal/broker/storetest"
	"github.com/berth-dev/berth/internal/sqlite"
)

func TestStore_AuditContract(t *testing.T) {
	storetest.RunAudit(t, func(t *testing.T) storetest.AuditHarness {
		path := tempPath(t)
		s := MustOpen(t, path)
		return storetest.AuditHarness{
			Store: s,
			// An admin command's store beside the broker's.
			Other: func(t *testing.T) audit.Store {
				return MustOpenWith(t, path, sqlite.Options{NoSessionCache: true})
			},
			Exec: func(t *testing.T, q string) error {
				db, err := sql.Open("sqlite", path)
				if err != nil {
					return err
				}
				defer db.Close()
				_, err = db.ExecContext(t.Context(), q)
				return err
			},
			DropGuards: `DROP TRIGGER IF EXISTS audit_log_no_update; DROP TRIGGER IF EXISTS audit_log_no_delete`,
		}
	})
}
