package tlsaccept

import (
	"context"
	"crypto/tls"
	"testing"
	"time"
)

// resumes reports whether a client that got a ticket from a listener with
// the ticket keys of (secret, at) resumes its session with a new listener,
// as a restarted broker's, with the keys of (secret2, at2).
func resumes(t *testing.T, secret []byte, at time.Time, secret2 []byte, at2 time.Time) bool {
	t.Helper()
	cache := tls.NewLRUClientSessionCache(4)
	cert, pool := testCert(t)
	for i, k := range []struct {
		secret []byte
		at     time.Time
	}{{secret, at}, {secret2, at2}} {
		keys, err := TicketKeys(k.secret, time.Hour, k.at)
		if err != nil {
			t.Fatal(err)
		}
		cfg := &tls.Config{}
		cfg.SetSessionTicketKeys(keys)
		e := newEnvCert(t, cfg, Options{Name: "agent"}, cert, pool)
		c, done := e.dial(t, "localhost", cache)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		sc, err := e.ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		// TLS 1.3 tickets follow the handshake: the client takes them in
		// on its first read.
		sc.Write([]byte{1})
		if _, err := c.Read(make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
		sc.Close()
		e.ln.Close()
		if i == 1 {
			return c.ConnectionState().DidResume
		}
	}
	panic("unreachable")
}

func TestTicketKeys_ResumeAcrossRestart(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	other := []byte("another secret of at least 32 bytes")
	t0 := time.Unix(1_800_000_000, 0).Truncate(time.Hour).Add(10 * time.Minute)
	tests := []struct {
		name    string
		secret2 []byte
		at2     time.Time
		want    bool
	}{
		{"same secret, same period", secret, t0.Add(time.Minute), true},
		{"next period accepts the previous key", secret, t0.Add(time.Hour), true},
		{"a clock behind accepts the next period's key", secret, t0.Add(-time.Hour), true},
		{"two periods on", secret, t0.Add(2 * time.Hour), false},
		{"another secret", other, t0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := resumes(t, secret, t0, tt.secret2, tt.at2); got != tt.want {
				t.Errorf("resumed = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestTicketKeys(t *testing.T) {
	secret := make([]byte, 32)
	now := time.Unix(1_800_000_000, 0)
	a, err := TicketKeys(secret, 24*time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := TicketKeys(secret, 24*time.Hour, now.Add(24*time.Hour))
	if len(a) != 3 || a[0] != b[1] || a[2] != b[0] || a[0] == b[0] {
		t.Errorf("keys a day apart: the new current key must be the old next, the old current the new previous")
	}
	if _, err := TicketKeys(secret[:16], 0, now); err == nil {
		t.Error("TicketKeys took a 16-byte secret")
	}
}

func TestRotateTicketKeys(t *testing.T) {
	cfg := &tls.Config{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := RotateTicketKeys(ctx, []byte("short"), 0, cfg); err == nil {
		t.Error("RotateTicketKeys took a short secret")
	}
	secret := []byte("0123456789abcdef0123456789abcdef")
	if err := RotateTicketKeys(ctx, secret, 0, cfg); err != nil {
		t.Fatal(err)
	}
	// The keys set are today's: a listener holding them resumes a session
	// whose ticket came from keys derived now.
	cache := tls.NewLRUClientSessionCache(4)
	cert, pool := testCert(t)
	for i := range 2 {
		c := cfg
		if i == 0 {
			keys, _ := TicketKeys(secret, 0, time.Now())
			c = &tls.Config{}
			c.SetSessionTicketKeys(keys)
		}
		e := newEnvCert(t, c, Options{Name: "agent"}, cert, pool)
		cl, done := e.dial(t, "localhost", cache)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		sc, err := e.ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		sc.Write([]byte{1})
		cl.Read(make([]byte, 1))
		if i == 1 && !cl.ConnectionState().DidResume {
			t.Error("a session from keys derived now did not resume with RotateTicketKeys's")
		}
		sc.Close()
	}
}
