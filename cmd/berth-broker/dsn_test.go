package main

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
)

// TestPostgres_PasswordNeverShown: a broker that cannot open its PostgreSQL
// store says why without the password in persistence-dsn, in its error or
// its logs.
func TestPostgres_PasswordNeverShown(t *testing.T) {
	const pw = "s3cret-Pw-42"
	tests := []struct{ name, dsn string }{
		{"refused", "postgres://berth:" + pw + "@127.0.0.1:1/berth?connect_timeout=2"},
		{"unparsable", "postgres://berth:" + pw + "@127.0.0.1:99999999/berth"},
		{"bad option", "postgres://berth:" + pw + "@127.0.0.1/berth?sslmode=bogus"},
		{"key=value", "host=127.0.0.1 port=1 user=berth password=" + pw + " dbname=berth connect_timeout=2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			m := NewMain()
			m.Config.WorkingPath = t.TempDir()
			m.Config.ClientBindHost, m.Config.AgentBindHost = "127.0.0.1", "127.0.0.1"
			m.Config.ClientPort, m.Config.AgentPort = 0, 0
			m.Config.PersistenceDB, m.Config.PersistenceDSN = "postgresql", tt.dsn
			m.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			err := m.Run(context.Background())
			m.Close()
			if err == nil {
				t.Fatal("the broker started without its database")
			}
			if strings.Contains(err.Error(), pw) || strings.Contains(logs.String(), pw) {
				t.Fatalf("the password shows:\nerror: %v\nlogs: %s", err, logs.String())
			}
			if !strings.Contains(err.Error(), "persistence-dsn") {
				t.Errorf("the error does not name persistence-dsn: %v", err)
			}
			t.Logf("%v", err)
		})
	}
}
