package sqlite_test

import (
	"testing"

	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/broker/storetest"
)

func TestEventStore(t *testing.T) {
	storetest.RunEvents(t, func(t *testing.T) broker.Store { return MustOpen(t, tempPath(t)) })
}
