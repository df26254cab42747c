package postgres_test

import (
	"testing"

	"github.com/berth-dev/berth/internal/portal/portaltest"
)

// TestPortalStore: portal sessions and single-use tokens (portal.Store).
func TestPortalStore(t *testing.T) {
	portaltest.Run(t, MustOpenFresh(t))
}
