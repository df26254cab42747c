package postgres_test

import (
	"testing"

	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/broker/storetest"
)

func TestStore_TemplateContract(t *testing.T) {
	storetest.RunTemplates(t, func(t *testing.T) broker.Store { return MustOpenFresh(t) })
}
