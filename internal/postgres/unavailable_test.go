package postgres_test

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/postgres"
	"github.com/berth-dev/berth/internal/postgres/pgtest"
)

// TestStore_Unavailable: while PostgreSQL is down every call fails with
// broker.ErrStoreUnavailable (the API's 503), and the same store works again
// once it is back, without being reopened.
func TestStore_Unavailable(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and stops a private PostgreSQL (make test runs it)")
	}
	pg := pgtest.StartServer(t)
	st, err := postgres.Open(t.Context(), pg.DSN, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.GetSession(t.Context(), "nope"); !errors.Is(err, broker.ErrNotFound) || errors.Is(err, broker.ErrStoreUnavailable) {
		t.Fatalf("GetSession of an unknown ID with the database up: %v", err)
	}
	pg.Stop(t)
	calls := []struct {
		name string
		call func(context.Context) error
	}{
		{"Ping", st.Ping},
		{"GetSession", func(ctx context.Context) error { _, err := st.GetSession(ctx, "x"); return err }},
		{"ListSessions", func(ctx context.Context) error {
			_, err := st.ListSessions(ctx, broker.SessionFilter{Owner: "alice", Limit: 10})
			return err
		}},
		{"UpdateSession", func(ctx context.Context) error {
			return st.UpdateSession(ctx, "x", func(*broker.Session) error { return nil })
		}},
		{"ServerStamps", func(ctx context.Context) error { _, err := st.ServerStamps(ctx); return err }},
		{"Setting", func(ctx context.Context) error { _, err := st.Setting(ctx, "k", "v"); return err }},
	}
	for _, c := range calls {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			if err := c.call(ctx); c.name != "Ping" && !errors.Is(err, broker.ErrStoreUnavailable) {
				t.Fatalf("with the database down: %v, want ErrStoreUnavailable", err)
			} else if err == nil {
				t.Fatal("no error with the database down")
			}
		})
	}
	pg.Start(t)
	if _, err := st.Setting(t.Context(), "k", "v"); err != nil {
		t.Fatalf("after the database came back: %v", err)
	}
}
