package oauth_test

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/oauth"
)

// holdStore holds RegisterWithStatement until released, telling when a call
// is inside.
type holdStore struct {
	oauth.Store
	inside  chan struct{}
	release chan struct{}
}

func (s *holdStore) RegisterWithStatement(ctx context.Context, hash []byte, c *oauth.Client) (*oauth.SoftwareStatement, error) {
	s.inside <- struct{}{}
	<-s.release
	return s.Store.RegisterWithStatement(ctx, hash, c)
}

// TestAuthority_RegisterAgentHandler_Admission: with Concurrent
// registrations under way, another is answered 503 temporarily_unavailable
// with Retry-After at once (it used to queue until the agent timed out and
// registered again, leaving an unused client), and it takes nothing from the
// rate limits; once a slot is free registrations succeed again, and the shed
// one is logged without the statement.
func TestAuthority_RegisterAgentHandler_Admission(t *testing.T) {
	e := MustEnv(t)
	ctx := context.Background()
	s, err := e.auth.GenerateSoftwareStatement(ctx, "1.0.0", oauth.StatementLimits{})
	if err != nil {
		t.Fatal(err)
	}
	hold := &holdStore{Store: e.auth.Store, inside: make(chan struct{}), release: make(chan struct{})}
	e.auth.Store = hold
	e.auth.Registrations = oauth.RegistrationLimits{PerMinute: 2, Concurrent: 1}
	h := e.auth.RegisterAgentHandler()

	first := make(chan *httptest.ResponseRecorder)
	go func() { first <- register(h, "192.0.2.1:1", s.Statement, "a") }()
	<-hold.inside // the first registration holds the only slot
	for i := range 5 {
		w := register(h, "192.0.2.2:1", s.Statement, "b")
		if w.Code != 503 || w.Header().Get("Retry-After") != "1" {
			t.Fatalf("registration %d while the slot is taken: %d, Retry-After %q; want 503 and 1", i, w.Code, w.Header().Get("Retry-After"))
		}
		if got := strings.TrimSpace(w.Body.String()); got != `{"error":"temporarily_unavailable","error_description":"too many agent registrations at once; retry in 1 s"}` {
			t.Fatalf("503 body %s", got)
		}
	}
	close(hold.release)
	if w := <-first; w.Code != 201 {
		t.Fatalf("the admitted registration: %d %s", w.Code, w.Body)
	}
	// The five shed ones took nothing from the limit of 2 a minute.
	go func() { <-hold.inside }()
	if w := register(h, "192.0.2.2:1", s.Statement, "b"); w.Code != 201 {
		t.Fatalf("after the slot was freed: %d %s", w.Code, w.Body)
	}
	log := e.log.String()
	if !strings.Contains(log, "agent registrations shed") || strings.Contains(log, s.Statement) {
		t.Errorf("log lacks the shed registrations or holds the statement:\n%s", log)
	}
}
