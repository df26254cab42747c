package sqlite_test

import (
	"testing"

	"github.com/berth-dev/berth/internal/broker/storetest"
	"github.com/berth-dev/berth/internal/webhook"
)

func TestStore_WebhookContract(t *testing.T) {
	storetest.RunWebhooks(t, func(t *testing.T) webhook.Store { return MustOpen(t, tempPath(t)) })
}
