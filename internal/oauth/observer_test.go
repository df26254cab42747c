package oauth_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/oauth"
)

// recorder is an oauth.Observer that keeps what it was told.
type recorder struct {
	mu     sync.Mutex
	events []string
}

var _ oauth.Observer = (*recorder)(nil)

func (r *recorder) TokenIssued(kind string) { r.add("issued " + kind) }

func (r *recorder) TokenRefused(kind, reason string) { r.add("refused " + kind + " " + reason) }

func (r *recorder) add(e string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

// take returns the events so far and forgets them.
func (r *recorder) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.events
	r.events = nil
	return out
}

func TestAuthority_Observer(t *testing.T) {
	e := MustEnv(t)
	rec := &recorder{}
	e.auth.Observer = rec
	ctx := context.Background()
	api, secret := e.MustClient(t, oauth.KindAPI)
	access, _, err := e.auth.IssueAccessToken(ctx, api)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := e.auth.IssueConnectionToken(ctx, "s-1", "alice", "alice")
	if err != nil {
		t.Fatal(err)
	}
	if got := rec.take(); len(got) != 2 || got[0] != "issued access" || got[1] != "issued connection" {
		t.Fatalf("events after issuing = %q", got)
	}

	verify := []struct {
		name  string
		run   func() error
		event string // "" when the token is good
	}{
		{"good access token", func() error { _, err := e.auth.VerifyAccessToken(ctx, access); return err }, ""},
		{"good connection token", func() error { _, err := e.auth.VerifyConnectionToken(ctx, conn); return err }, ""},
		{"malformed access token", func() error { _, err := e.auth.VerifyAccessToken(ctx, "abc"); return err }, "refused access malformed"},
		{"connection token as access token", func() error { _, err := e.auth.VerifyAccessToken(ctx, conn); return err }, "refused access wrong_token"},
		{"access token as connection token", func() error { _, err := e.auth.VerifyConnectionToken(ctx, access); return err }, "refused connection wrong_token"},
		{"tampered signature", func() error {
			_, err := e.auth.VerifyAccessToken(ctx, access[:len(access)-4]+"AAAA")
			return err
		}, "refused access signature"},
	}
	for _, tt := range verify {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.run()
			got := rec.take()
			switch {
			case tt.event == "" && (err != nil || len(got) != 0):
				t.Errorf("err %v, events %q; want no refusal", err, got)
			case tt.event != "" && (err == nil || len(got) != 1 || got[0] != tt.event):
				t.Errorf("err %v, events %q; want %q", err, got, tt.event)
			}
		})
	}

	t.Run("expired access token", func(t *testing.T) {
		e.clock.Add(2 * time.Hour)
		defer e.clock.Add(-2 * time.Hour)
		if _, err := e.auth.VerifyAccessToken(ctx, access); err == nil {
			t.Fatal("expired token verified")
		}
		if got := rec.take(); len(got) != 1 || got[0] != "refused access expired" {
			t.Errorf("events = %q", got)
		}
	})

	t.Run("token endpoint", func(t *testing.T) {
		h := e.auth.TokenHandler()
		for _, tc := range []struct {
			target, id, secret string
			event              string
		}{
			{"/oauth2/token?grant_type=client_credentials", api.ID, secret, "issued access"},
			{"/oauth2/token?grant_type=client_credentials", api.ID, "wrong", "refused token_request invalid_client"},
			{"/oauth2/token?grant_type=password", api.ID, secret, "refused token_request unsupported_grant_type"},
			{"/oauth2/token", api.ID, secret, "refused token_request invalid_request"},
		} {
			r := httptest.NewRequest(http.MethodPost, tc.target, nil)
			r.SetBasicAuth(tc.id, tc.secret)
			h.ServeHTTP(httptest.NewRecorder(), r)
			if got := rec.take(); len(got) != 1 || got[0] != tc.event {
				t.Errorf("%s as %s: events %q, want %q", tc.target, tc.secret, got, tc.event)
			}
		}
	})
}
