package idptest_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/idptest"
)

// relyingParty is a test callback endpoint: it answers its redirect URI
// with the query it got, as JSON.
func relyingParty(t *testing.T) (*httptest.Server, string) {
	t.Helper()
	rp := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(r.URL.Query())
	}))
	t.Cleanup(rp.Close)
	return rp, rp.URL + "/callback"
}

// browser returns an HTTP client with a cookie jar that trusts the IdP's
// CA and the relying party's certificate.
func browser(t *testing.T, o *idptest.OIDC, rp *httptest.Server) *http.Client {
	t.Helper()
	pem, err := os.ReadFile(o.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	pool.AddCert(rp.Certificate())
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Jar: jar, Timeout: 30 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

// authURL returns an authorization URL for o's client with a new state and,
// unless noPKCE, an S256 code challenge; and the code verifier.
func authURL(o *idptest.OIDC, redirect string, noPKCE bool) (u, verifier string) {
	verifier = rand.Text() + rand.Text()
	sum := sha256.Sum256([]byte(verifier))
	q := url.Values{
		"response_type": {"code"},
		"client_id":     {o.ClientID},
		"redirect_uri":  {redirect},
		"scope":         {"openid profile email groups"},
		"state":         {rand.Text()},
		"nonce":         {rand.Text()},
	}
	if !noPKCE {
		q.Set("code_challenge", base64.RawURLEncoding.EncodeToString(sum[:]))
		q.Set("code_challenge_method", "S256")
	}
	return o.Issuer + "oauth2/auth?" + q.Encode(), verifier
}

// callback decodes the relying party's answer: the callback's query.
func callback(t *testing.T, resp *http.Response) url.Values {
	t.Helper()
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("the sign-in ended on %s with %s: %s", resp.Request.URL.Redacted(), resp.Status, b)
	}
	var q url.Values
	if err := json.Unmarshal(b, &q); err != nil {
		t.Fatalf("the sign-in ended on %s, not the callback: %.300s", resp.Request.URL.Redacted(), b)
	}
	return q
}

// TestOIDC walks the authorization code flow with PKCE as a relying party
// does, for each default user: login page, consent, code, token exchange,
// and the ID token's claims. It checks the refusals too: an unknown user,
// no PKCE, a wrong code verifier, and a redirect URI not registered.
func TestOIDC(t *testing.T) {
	rp, redirect := relyingParty(t)
	o := idptest.StartOIDC(t)
	// The relying party's address is known after Hydra's start here, as a
	// broker's is in the e2e tests.
	o.SetRedirectURLs(t, redirect)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	for _, user := range []string{"ann", "bob", "admin"} {
		t.Run(user, func(t *testing.T) {
			hc := browser(t, o, rp)
			u, verifier := authURL(o, redirect, false)
			resp, err := o.SignIn(ctx, hc, u, user)
			if err != nil {
				t.Fatal(err)
			}
			q := callback(t, resp)
			code := q.Get("code")
			if code == "" {
				t.Fatalf("the callback got no code: %v", q)
			}
			// A wrong verifier is refused (PKCE), before the right one.
			if _, err := exchange(ctx, o, hc, code, redirect, verifier+"x"); err == nil {
				t.Error("the token endpoint took a wrong code_verifier")
			}
			// Hydra spends the code on the failed try; sign in again.
			u, verifier = authURL(o, redirect, false)
			resp, err = o.SignIn(ctx, hc, u, user)
			if err != nil {
				t.Fatal(err)
			}
			code = callback(t, resp).Get("code")
			tok, err := exchange(ctx, o, hc, code, redirect, verifier)
			if err != nil {
				t.Fatal(err)
			}
			claims := idptest.Claims(tok.IDToken)
			if claims == nil {
				t.Fatalf("no ID token in %+v", tok)
			}
			if claims["iss"] != o.Issuer || claims["sub"] != user || claims["preferred_username"] != user {
				t.Errorf("ID token iss %v sub %v preferred_username %v, want %s, %s, %s", claims["iss"], claims["sub"], claims["preferred_username"], o.Issuer, user, user)
			}
			var groups []string
			for _, g := range claims["groups"].([]any) {
				groups = append(groups, g.(string))
			}
			if !slices.Equal(groups, idptest.DefaultUsers[user]) {
				t.Errorf("groups %v, want %v", groups, idptest.DefaultUsers[user])
			}
			if aud, _ := claims["aud"].([]any); len(aud) != 1 || aud[0] != o.ClientID {
				t.Errorf("aud %v, want [%s]", claims["aud"], o.ClientID)
			}
			// The userinfo endpoint has the same claims.
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, o.Issuer+"userinfo", nil)
			req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
			ui, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var info map[string]any
			json.NewDecoder(ui.Body).Decode(&info)
			ui.Body.Close()
			if info["preferred_username"] != user || info["groups"] == nil {
				t.Errorf("userinfo %v, want preferred_username %s and groups", info, user)
			}
		})
	}
	if got := o.Logins(); !slices.Equal(got, []string{"ann", "ann", "bob", "bob", "admin", "admin"}) {
		t.Errorf("Logins() = %v", got)
	}

	t.Run("refusals", func(t *testing.T) {
		hc := browser(t, o, rp)
		// An unknown user: the login page says so and stays.
		u, _ := authURL(o, redirect, false)
		resp, err := o.SignIn(ctx, hc, u, "mallory")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), "Unknown user") {
			t.Errorf("unknown user: %s %.300s, want 400 Unknown user", resp.Status, b)
		}
		// No PKCE: Hydra sends an error to the callback.
		u, _ = authURL(o, redirect, true)
		resp, err = o.SignIn(ctx, hc, u, "ann")
		if err != nil {
			t.Fatal(err)
		}
		if q := callback(t, resp); q.Get("code") != "" || q.Get("error") == "" {
			t.Errorf("without PKCE the callback got %v, want an error", q)
		}
		// A redirect URI not registered: Hydra does not redirect to it.
		u, _ = authURL(o, rp.URL+"/elsewhere", false)
		resp, err = o.SignIn(ctx, hc, u, "ann")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if strings.HasPrefix(resp.Request.URL.String(), rp.URL) {
			t.Errorf("an unregistered redirect URI was followed to %s", resp.Request.URL)
		}
	})
}

// tokenResponse is the token endpoint's answer.
type tokenResponse struct {
	AccessToken  string `json:"access_token"`
	IDToken      string `json:"id_token"`
	RefreshToken string `json:"refresh_token"`
}

// exchange redeems code at the token endpoint with client_secret_basic.
func exchange(ctx context.Context, o *idptest.OIDC, hc *http.Client, code, redirect, verifier string) (*tokenResponse, error) {
	form := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {redirect}, "code_verifier": {verifier}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, o.TokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, err
	}
	req.SetBasicAuth(url.QueryEscape(o.ClientID), url.QueryEscape(o.ClientSecret))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return nil, &tokenError{resp.Status, string(b)}
	}
	var tok tokenResponse
	return &tok, json.Unmarshal(b, &tok)
}

// tokenError is a refusal of the token endpoint.
type tokenError struct{ status, body string }

func (e *tokenError) Error() string { return "token endpoint: " + e.status + ": " + e.body }
