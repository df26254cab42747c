package pgtest_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/berth-dev/berth/internal/postgres/pgtest"
)

// TestServer_StopStart shows that a private server comes back with its data
// after Stop and Start (what the broker fault tests rely on).
func TestServer_StopStart(t *testing.T) {
	s := pgtest.StartServer(t)
	exec := func(q string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, s.DSN)
		if err != nil {
			return err
		}
		defer c.Close(ctx)
		_, err = c.Exec(ctx, q)
		return err
	}
	if err := exec(`CREATE TABLE kept (x int); INSERT INTO kept VALUES (1)`); err != nil {
		t.Fatal(err)
	}
	s.Stop(t)
	if err := exec(`SELECT 1`); err == nil {
		t.Fatal("the stopped server still answers")
	}
	s.Start(t)
	if err := exec(`SELECT x FROM kept`); err != nil {
		t.Fatalf("after restart: %v", err)
	}
}
