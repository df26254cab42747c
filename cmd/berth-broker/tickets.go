package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
)

// ticketSecretSetting names the store setting that holds the secret the
// connectors' TLS session ticket keys are derived from
// (tlsaccept.TicketKeys), shared by every broker on the store.
const ticketSecretSetting = "tls-ticket-secret"

// loadTicketSecret reads the session ticket secret from the store, storing
// a new random one first if there is none. Keeping it in the store lets an
// agent resume its TLS session after the broker restarts, and with another
// broker sharing a PostgreSQL store: a resumed handshake signs and verifies
// no certificate.
func (m *Main) loadTicketSecret(ctx context.Context) error {
	b := make([]byte, 32)
	rand.Read(b)
	v, err := m.store.Setting(ctx, ticketSecretSetting, hex.EncodeToString(b))
	if err != nil {
		return fmt.Errorf("read the TLS session ticket secret from the store: %w", err)
	}
	if m.ticketSecret, err = hex.DecodeString(v); err != nil || len(m.ticketSecret) < 32 {
		return fmt.Errorf("the store's %s setting is not 32 bytes or more in hex", ticketSecretSetting)
	}
	return nil
}
