package portal

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"sync"
	"time"

	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/logattr"
	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

// OIDCConfig is the identity provider the portal signs users in with
// (OpenID Connect authorization code with PKCE S256, state and nonce).
type OIDCConfig struct {
	// Issuer is the IdP's issuer URL; its discovery document is
	// Issuer/.well-known/openid-configuration.
	Issuer       string
	ClientID     string
	ClientSecret string
	// Scopes asked for (default openid profile).
	Scopes []string
	// UserClaim is the ID token claim that gives the OS user name (default
	// preferred_username).
	UserClaim string
	// UserPattern, when set, must match the claim's value; its first group
	// is the user name (^([^@]+)@example\.com$ takes an e-mail's local part).
	UserPattern *regexp.Regexp
	// GroupsClaim is the claim that lists the user's groups (default groups).
	GroupsClaim string
	// HTTPClient reaches the IdP (nil: http.DefaultClient).
	HTTPClient *http.Client
}

// oidcClient is the IdP, discovered on first use (and again after a failed
// discovery, at most every 10 s), so the broker starts while the IdP is down.
type oidcClient struct {
	cfg OIDCConfig

	mu       sync.Mutex
	provider *oidc.Provider
	tried    time.Time
	lastErr  error
}

func newOIDCClient(cfg OIDCConfig) (*oidcClient, error) {
	if cfg.Issuer == "" || cfg.ClientID == "" {
		return nil, errors.New("portal: the OIDC issuer and client ID are required")
	}
	if len(cfg.Scopes) == 0 {
		cfg.Scopes = []string{oidc.ScopeOpenID, "profile"}
	}
	if cfg.UserClaim == "" {
		cfg.UserClaim = "preferred_username"
	}
	if cfg.GroupsClaim == "" {
		cfg.GroupsClaim = "groups"
	}
	if cfg.UserPattern != nil && cfg.UserPattern.NumSubexp() != 1 {
		return nil, errors.New("portal: the user claim pattern must have exactly one group")
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = http.DefaultClient
	}
	return &oidcClient{cfg: cfg}, nil
}

// ctx carries the IdP's HTTP client.
func (o *oidcClient) ctx(ctx context.Context) context.Context {
	return oidc.ClientContext(ctx, o.cfg.HTTPClient)
}

// discover returns the provider, discovering it if need be.
func (o *oidcClient) discover(ctx context.Context) (*oidc.Provider, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.provider != nil {
		return o.provider, nil
	}
	if o.lastErr != nil && time.Since(o.tried) < 10*time.Second {
		return nil, o.lastErr
	}
	dctx, cancel := context.WithTimeout(o.ctx(ctx), 10*time.Second)
	defer cancel()
	pr, err := oidc.NewProvider(dctx, o.cfg.Issuer)
	o.tried, o.lastErr = time.Now(), err
	if err != nil {
		return nil, err
	}
	o.provider = pr
	return pr, nil
}

func (o *oidcClient) oauth2(pr *oidc.Provider, redirect string) *oauth2.Config {
	return &oauth2.Config{ClientID: o.cfg.ClientID, ClientSecret: o.cfg.ClientSecret, Endpoint: pr.Endpoint(),
		RedirectURL: redirect, Scopes: o.cfg.Scopes}
}

// endSessionURL is the IdP's end_session_endpoint with the ID token hint
// and where to come back, or "" when the IdP has none.
func (o *oidcClient) endSessionURL(ctx context.Context, idToken, back string) string {
	pr, err := o.discover(ctx)
	if err != nil {
		return ""
	}
	var meta struct {
		EndSession string `json:"end_session_endpoint"`
	}
	if pr.Claims(&meta) != nil || meta.EndSession == "" {
		return ""
	}
	u, err := url.Parse(meta.EndSession)
	if err != nil || u.Scheme != "https" && u.Scheme != "http" {
		return ""
	}
	q := u.Query()
	if idToken != "" {
		q.Set("id_token_hint", idToken)
	}
	q.Set("post_logout_redirect_uri", back)
	q.Set("client_id", o.cfg.ClientID)
	u.RawQuery = q.Encode()
	return u.String()
}

// loginState is a sign-in in progress, stored by the hash of its state.
type loginState struct {
	Nonce    string `json:"nonce"`
	Verifier string `json:"verifier"`
	Redirect string `json:"redirect"`
}

// loginTTL bounds a sign-in at the IdP.
const loginTTL = 10 * time.Minute

// login sends the browser to the IdP.
func (p *Portal) login(w http.ResponseWriter, r *http.Request) {
	if p.oidc == nil {
		p.fail(w, r, http.StatusNotFound, nil, "This portal has no identity provider configured (portal-oidc-issuer). Ask your administrator for a sign-in link (berth-broker portal-link).")
		return
	}
	pr, err := p.oidc.discover(r.Context())
	if err != nil {
		p.log.Warn("portal: identity provider discovery failed", "issuer", p.oidc.cfg.Issuer, "err", err)
		p.fail(w, r, http.StatusBadGateway, nil, "The identity provider cannot be reached just now. Try again in a minute; if it keeps failing, tell your administrator (portal-oidc-issuer).")
		return
	}
	st := loginState{Nonce: randomToken(), Verifier: oauth2.GenerateVerifier(), Redirect: p.baseURL(r) + "/portal/callback"}
	state := randomToken()
	data, _ := json.Marshal(st)
	if err := p.store.PutPortalToken(r.Context(), hashKey("login", state), data, p.now().Add(loginTTL)); err != nil {
		p.log.Error("store portal sign-in", "err", err)
		p.fail(w, r, http.StatusServiceUnavailable, nil, "The broker could not start the sign-in just now. Try again in a few seconds.")
		return
	}
	http.SetCookie(w, &http.Cookie{Name: loginCookie, Value: state, Path: "/portal/", MaxAge: int(loginTTL / time.Second),
		HttpOnly: true, Secure: true, SameSite: http.SameSiteLaxMode})
	u := p.oidc.oauth2(pr, st.Redirect).AuthCodeURL(state, oidc.Nonce(st.Nonce), oauth2.S256ChallengeOption(st.Verifier))
	http.Redirect(w, r, u, http.StatusFound)
}

// callback finishes a sign-in: state, code exchange with the PKCE
// verifier, ID token signature, issuer, audience, expiry and nonce, then
// the user name and groups from their claims.
func (p *Portal) callback(w http.ResponseWriter, r *http.Request) {
	if p.oidc == nil {
		p.fail(w, r, http.StatusNotFound, nil, "This portal has no identity provider configured. Ask your administrator for a sign-in link (berth-broker portal-link).")
		return
	}
	q := r.URL.Query()
	if e := q.Get("error"); e != "" {
		p.fail(w, r, http.StatusUnauthorized, nil, fmt.Sprintf("The identity provider did not sign you in (%.100s: %.200s). Sign in again; if it keeps failing, tell your administrator.", e, q.Get("error_description")))
		return
	}
	state, code := q.Get("state"), q.Get("code")
	c, err := r.Cookie(loginCookie)
	if state == "" || code == "" || len(state) > 128 || err != nil || subtle.ConstantTimeCompare([]byte(c.Value), []byte(state)) != 1 {
		p.fail(w, r, http.StatusBadRequest, nil, "This sign-in answer does not belong to a sign-in started in this browser (state). Start again from the sign-in page.")
		return
	}
	http.SetCookie(w, &http.Cookie{Name: loginCookie, Value: "", Path: "/portal/", MaxAge: -1, HttpOnly: true, Secure: true, SameSite: http.SameSiteLaxMode})
	data, err := p.store.TakePortalToken(r.Context(), hashKey("login", state), p.now())
	if err != nil {
		if !errors.Is(err, broker.ErrNotFound) {
			p.log.Error("take portal sign-in", "err", err)
		}
		p.fail(w, r, http.StatusBadRequest, nil, "This sign-in expired or was already finished. Start again from the sign-in page.")
		return
	}
	var st loginState
	if err := json.Unmarshal(data, &st); err != nil {
		p.fail(w, r, http.StatusBadRequest, nil, "This sign-in is damaged. Start again from the sign-in page.")
		return
	}
	pr, err := p.oidc.discover(r.Context())
	if err != nil {
		p.fail(w, r, http.StatusBadGateway, nil, "The identity provider cannot be reached just now. Start again in a minute.")
		return
	}
	ctx, cancel := context.WithTimeout(p.oidc.ctx(r.Context()), 15*time.Second)
	defer cancel()
	tok, err := p.oidc.oauth2(pr, st.Redirect).Exchange(ctx, code, oauth2.VerifierOption(st.Verifier))
	if err != nil {
		p.log.Warn("portal: code exchange refused", "err", err)
		p.fail(w, r, http.StatusUnauthorized, nil, "The identity provider refused to finish the sign-in. Start again from the sign-in page; if it keeps failing, tell your administrator (portal-oidc-client-id and secret).")
		return
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		p.fail(w, r, http.StatusUnauthorized, nil, "The identity provider sent no ID token (is the openid scope in portal-oidc-scopes?). Tell your administrator.")
		return
	}
	idt, err := pr.Verifier(&oidc.Config{ClientID: p.oidc.cfg.ClientID}).Verify(ctx, raw)
	if err != nil || subtle.ConstantTimeCompare([]byte(idt.Nonce), []byte(st.Nonce)) != 1 {
		if err == nil {
			err = errors.New("nonce does not match")
		}
		p.log.Warn("portal: ID token refused", "err", err)
		p.fail(w, r, http.StatusUnauthorized, nil, "The identity provider's answer did not pass the checks (ID token). Start again from the sign-in page.")
		return
	}
	var claims map[string]any
	if err := idt.Claims(&claims); err != nil {
		p.fail(w, r, http.StatusUnauthorized, nil, "The ID token's claims could not be read. Tell your administrator.")
		return
	}
	user, msg := p.oidc.userName(claims)
	if msg != "" {
		p.fail(w, r, http.StatusForbidden, nil, msg)
		return
	}
	groups := claimStrings(claims[p.oidc.cfg.GroupsClaim])
	if err := p.startSession(r.Context(), w, user, groups, false, raw); err != nil {
		p.log.Error("start portal session", "err", err)
		p.fail(w, r, http.StatusServiceUnavailable, nil, "The broker could not sign you in just now. Try again in a few seconds.")
		return
	}
	p.log.Info("portal sign-in", logattr.User, user)
	http.Redirect(w, r, "/portal/", http.StatusSeeOther)
}

// userName maps the user claim to an OS user name, or says why it cannot.
func (o *oidcClient) userName(claims map[string]any) (string, string) {
	v, _ := claims[o.cfg.UserClaim].(string)
	if v == "" {
		return "", fmt.Sprintf("Your identity has no %q claim, which names your account here. Tell your administrator (portal-user-claim).", o.cfg.UserClaim)
	}
	if o.cfg.UserPattern != nil {
		m := o.cfg.UserPattern.FindStringSubmatch(v)
		if m == nil || m[1] == "" {
			return "", fmt.Sprintf("Your %s %q does not match this portal's rule (portal-user-claim-pattern), so it names no account here. Tell your administrator.", o.cfg.UserClaim, v)
		}
		v = m[1]
	}
	if err := broker.ValidateUserName(o.cfg.UserClaim, v); err != nil {
		return "", fmt.Sprintf("Your user name %q cannot own desktops here (%v). Tell your administrator (portal-user-claim, portal-user-claim-pattern).", v, err)
	}
	return v, ""
}

// claimStrings reads a claim that is a list of strings or one string.
func claimStrings(v any) []string {
	switch x := v.(type) {
	case string:
		if x != "" {
			return []string{x}
		}
	case []any:
		var out []string
		for _, e := range x {
			if s, ok := e.(string); ok && s != "" && len(out) < 1000 {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}
