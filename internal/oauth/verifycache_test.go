package oauth_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/oauth"
)

// TestAuthority_VerifiedTokenCache checks what a token whose signature was
// verified before (and so is found in the verified-token cache) must still
// be refused for, each case after a successful verification of the same
// token.
func TestAuthority_VerifiedTokenCache(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name   string
		change func(t *testing.T, e *env, tok string) string // returns the token to verify next
		want   string
	}{
		{"verified again", func(t *testing.T, e *env, tok string) string { return tok }, ""},
		{"at its exp", func(t *testing.T, e *env, tok string) string {
			e.clock.Add(10 * time.Minute)
			return tok
		}, "token expired"},
		{"client deactivated", func(t *testing.T, e *env, tok string) string {
			_, claims := parts(t, tok)
			if err := e.store.SetClientActive(ctx, claims["sub"].(string), false); err != nil {
				t.Fatal(err)
			}
			e.clock.Add(5 * time.Second) // the documented window
			return tok
		}, "client is no longer active"},
		{"signature tampered", func(t *testing.T, e *env, tok string) string {
			last := tok[len(tok)-2]
			repl := "A"
			if last == 'A' {
				repl = "B"
			}
			return tok[:len(tok)-2] + repl + tok[len(tok)-1:]
		}, "signature is invalid"},
		{"claims tampered", func(t *testing.T, e *env, tok string) string {
			p := strings.Split(tok, ".")
			forged := strings.Split(e.resign(t, tok, func(_, c map[string]any) { c["client_kind"] = "agent" }), ".")
			return p[0] + "." + forged[1] + "." + p[2] // the old signature on new claims
		}, "signature is invalid"},
		{"key gone from the store", func(t *testing.T, e *env, tok string) string {
			e.store.mu.Lock()
			e.store.keys = nil
			e.store.mu.Unlock()
			e.clock.Add(11 * time.Second) // past the key cache's refresh
			return tok
		}, "unknown signing key"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := MustEnv(t)
			e.auth.AccessTokenTTL = 10 * time.Minute
			tok, _ := e.MustAccessToken(t)
			for range 2 {
				if _, err := e.auth.VerifyAccessToken(ctx, tok); err != nil {
					t.Fatalf("fresh token refused: %v", err)
				}
			}
			_, err := e.auth.VerifyAccessToken(ctx, tc.change(t, e, tok))
			if tc.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if got := reason(t, err); got != tc.want {
				t.Errorf("reason = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestAuthority_VerifiedTokenKept: a verified token is kept (once, however
// often it is verified), a refused one never is.
func TestAuthority_VerifiedTokenKept(t *testing.T) {
	ctx := context.Background()
	e := MustEnv(t)
	tok, _ := e.MustAccessToken(t)
	n0 := oauth.VerifiedTokens(e.auth)
	for range 3 {
		if _, err := e.auth.VerifyAccessToken(ctx, tok); err != nil {
			t.Fatal(err)
		}
	}
	if n := oauth.VerifiedTokens(e.auth); n != n0+1 {
		t.Errorf("cache holds %d tokens after verifying one (%d before)", n, n0)
	}
	n1 := oauth.VerifiedTokens(e.auth)
	bad := tok[:len(tok)-4] + "AAAA"
	if bad == tok {
		bad = tok[:len(tok)-4] + "BBBB"
	}
	if _, err := e.auth.VerifyAccessToken(ctx, bad); err == nil {
		t.Fatal("tampered token accepted")
	}
	if n := oauth.VerifiedTokens(e.auth); n != n1 {
		t.Errorf("refused token kept: %d -> %d", n1, n)
	}
}

// BenchmarkVerifyAccessToken verifies the same access token again and
// again, as a client's requests bring it.
func BenchmarkVerifyAccessToken(b *testing.B) {
	ctx := context.Background()
	e := MustEnv(b)
	tok, _ := e.MustAccessToken(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := e.auth.VerifyAccessToken(ctx, tok); err != nil {
			b.Fatal(err)
		}
	}
}
