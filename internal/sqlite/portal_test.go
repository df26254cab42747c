package sqlite_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/berth-dev/berth/internal/portal/portaltest"
	"github.com/berth-dev/berth/internal/sqlite"
)

// TestPortalStore: portal sessions and single-use tokens (portal.Store).
func TestPortalStore(t *testing.T) {
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "berth.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	portaltest.Run(t, st)
}
