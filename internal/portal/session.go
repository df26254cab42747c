package portal

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/logattr"
)

// Store keeps portal sessions and single-use tokens (portal links, sign-ins
// in progress) by the SHA-256 of their secret, never the secret itself.
// internal/sqlite and internal/postgres implement it.
type Store interface {
	// PutPortalSession stores (or replaces) the session of key.
	PutPortalSession(ctx context.Context, key, data []byte, expires time.Time) error
	// PortalSession returns the session of key and its expiry;
	// broker.ErrNotFound when there is none.
	PortalSession(ctx context.Context, key []byte) ([]byte, time.Time, error)
	// DeletePortalSession removes the session of key (none is not an error).
	DeletePortalSession(ctx context.Context, key []byte) error
	// PutPortalToken stores a single-use token.
	PutPortalToken(ctx context.Context, key, data []byte, expires time.Time) error
	// TakePortalToken removes the token of key and returns its data, in one
	// step, so a token is taken once; broker.ErrNotFound when there is none
	// or it expired before now.
	TakePortalToken(ctx context.Context, key []byte, now time.Time) ([]byte, error)
	// PurgePortal removes sessions and tokens that expired before now and
	// returns how many.
	PurgePortal(ctx context.Context, now time.Time) (int64, error)
}

// Cookie names. The session cookie is __Host- free because its Path is
// /portal/ (a __Host- cookie must have Path=/).
const (
	sessionCookie = "berth_portal"
	loginCookie   = "berth_portal_login"
)

// csrfField and csrfHeader carry the synchronizer token.
const (
	csrfField  = "csrf"
	csrfHeader = "X-CSRF-Token"
)

// randomToken returns 32 random bytes, base64url.
func randomToken() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// hashKey is the store key of a secret (a cookie value or a token).
func hashKey(kind, secret string) []byte {
	h := sha256.Sum256([]byte(kind + ":" + secret))
	return h[:]
}

// startSession stores a new portal session for the user and sets its cookie.
func (p *Portal) startSession(ctx context.Context, w http.ResponseWriter, user string, groups []string, admin bool, idToken string) error {
	secret := randomToken()
	s := &Session{User: user, Groups: groups, Admin: admin || p.isAdminGroup(groups), CSRF: randomToken(),
		Expires: p.now().Add(p.cfg.SessionLifetime).UTC().Truncate(time.Second), IDToken: idToken}
	data, err := json.Marshal(s)
	if err != nil {
		return err
	}
	if err := p.store.PutPortalSession(ctx, hashKey("session", secret), data, s.Expires); err != nil {
		return err
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: secret, Path: "/portal/", Expires: s.Expires,
		MaxAge: int(p.cfg.SessionLifetime / time.Second), HttpOnly: true, Secure: true, SameSite: http.SameSiteLaxMode})
	return nil
}

func (p *Portal) isAdminGroup(groups []string) bool {
	if p.cfg.AdminGroup == "" {
		return false
	}
	for _, g := range groups {
		if g == p.cfg.AdminGroup {
			return true
		}
	}
	return false
}

// session returns the request's portal session: nil, nil when it has none
// (no cookie, unknown or expired); an error when the store failed.
func (p *Portal) session(r *http.Request) (*Session, error) {
	c, err := r.Cookie(sessionCookie)
	if err != nil || c.Value == "" || len(c.Value) > 128 {
		return nil, nil
	}
	key := hashKey("session", c.Value)
	data, exp, err := p.store.PortalSession(r.Context(), key)
	if errors.Is(err, broker.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if !p.now().Before(exp) {
		return nil, nil
	}
	var s Session
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("portal session: %w", err)
	}
	s.ID = hex.EncodeToString(key)
	s.Expires = exp
	return &s, nil
}

// optionalSession is session without the error (for pages that work signed
// out).
func (p *Portal) optionalSession(r *http.Request) *Session {
	s, _ := p.session(r)
	return s
}

// requireSession returns the request's session, or answers: 503 when the
// store failed, 401 to the script's API, else 303 to the sign-in page.
func (p *Portal) requireSession(w http.ResponseWriter, r *http.Request) (*Session, bool) {
	s, err := p.session(r)
	if err != nil {
		p.log.Error("read portal session", "err", err)
		p.fail(w, r, http.StatusServiceUnavailable, nil, "The broker could not read your sign-in just now. Reload the page in a few seconds.")
		return nil, false
	}
	if s != nil {
		return s, true
	}
	if wantsJSON(r) || r.Method != http.MethodGet && r.Method != http.MethodHead {
		p.fail(w, r, http.StatusUnauthorized, nil, "You are signed out (or your sign-in expired). Sign in again at /portal/signin.")
		return nil, false
	}
	http.Redirect(w, r, "/portal/signin", http.StatusSeeOther)
	return nil, false
}

// checkCSRF refuses (403) a state change whose origin is another site or
// that lacks s's synchronizer token. GET and HEAD pass.
func (p *Portal) checkCSRF(w http.ResponseWriter, r *http.Request, s *Session) bool {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return true
	}
	if !p.sameOrigin(r) {
		p.fail(w, r, http.StatusForbidden, s, "Refused: this request came from another site. Use the portal's own buttons; if you did, reload the page and try again.")
		return false
	}
	tok := r.Header.Get(csrfHeader)
	if tok == "" {
		tok = r.PostFormValue(csrfField)
	}
	if tok == "" || subtle.ConstantTimeCompare([]byte(tok), []byte(s.CSRF)) != 1 {
		p.fail(w, r, http.StatusForbidden, s, "Refused: the form's security token is missing or out of date (csrf). Reload the page and try again.")
		return false
	}
	return true
}

// sameOrigin reports whether a state-changing request comes from the
// portal's own pages: Sec-Fetch-Site, when sent, must be same-origin (or
// none: typed by the user); Origin, when sent, must be the portal's.
func (p *Portal) sameOrigin(r *http.Request) bool {
	switch r.Header.Get("Sec-Fetch-Site") {
	case "", "same-origin", "none":
	default:
		return false
	}
	o := r.Header.Get("Origin")
	if o == "" {
		return true
	}
	if o == "null" {
		return false
	}
	return strings.EqualFold(o, p.origin(r))
}

// origin is the portal's origin: ExternalURL's, else https:// and the
// request's Host.
func (p *Portal) origin(r *http.Request) string {
	if p.cfg.ExternalURL != "" {
		if u, err := url.Parse(p.cfg.ExternalURL); err == nil {
			return u.Scheme + "://" + u.Host
		}
	}
	return "https://" + r.Host
}

// baseURL is the portal's base URL (no trailing slash), for redirects.
func (p *Portal) baseURL(r *http.Request) string {
	if p.cfg.ExternalURL != "" {
		return p.cfg.ExternalURL
	}
	return "https://" + r.Host
}

// linkData is a portal link's stored data.
type linkData struct {
	User   string   `json:"user"`
	Groups []string `json:"groups,omitempty"`
	Admin  bool     `json:"admin,omitempty"`
}

// MaxLinkLifetime bounds a portal link's lifetime.
const MaxLinkLifetime = 24 * time.Hour

// CreateLink stores a single-use portal link for user and returns its
// token; the link is https://HOST:PORT/portal/link?token=TOKEN. The user
// name must pass the session owner rule.
func CreateLink(ctx context.Context, st Store, user string, groups []string, admin bool, ttl time.Duration, now time.Time) (string, error) {
	if err := broker.ValidateUserName("user", user); err != nil {
		return "", err
	}
	if ttl <= 0 || ttl > MaxLinkLifetime {
		return "", fmt.Errorf("expires-in: must be more than 0 and at most %s, got %s", MaxLinkLifetime, ttl)
	}
	for _, g := range groups {
		if g == "" || len(g) > 256 || strings.ContainsFunc(g, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			return "", fmt.Errorf("groups: %q is not a group name (1 to 256 printable characters)", g)
		}
	}
	tok := randomToken()
	data, err := json.Marshal(linkData{User: user, Groups: groups, Admin: admin})
	if err != nil {
		return "", err
	}
	if err := st.PutPortalToken(ctx, hashKey("link", tok), data, now.Add(ttl)); err != nil {
		return "", err
	}
	return tok, nil
}

// linkPage asks to continue: a link is taken by POST only, so a mail
// scanner or chat preview that fetches it does not use it up.
func (p *Portal) linkPage(w http.ResponseWriter, r *http.Request) {
	tok := r.URL.Query().Get("token")
	if tok == "" || len(tok) > 128 {
		p.fail(w, r, http.StatusBadRequest, nil, "This sign-in link has no valid token (the token parameter). Copy the whole link, or ask your administrator for a new one (berth-broker portal-link).")
		return
	}
	p.render(w, r, http.StatusOK, "link.html", nil, tok)
}

// linkSignIn takes a portal link's token and starts a portal session.
func (p *Portal) linkSignIn(w http.ResponseWriter, r *http.Request) {
	if !p.sameOrigin(r) {
		p.fail(w, r, http.StatusForbidden, nil, "Refused: this sign-in came from another site. Open the link you were given directly.")
		return
	}
	tok := r.PostFormValue("token")
	if tok == "" || len(tok) > 128 {
		p.fail(w, r, http.StatusBadRequest, nil, "This sign-in link has no valid token (the token field). Ask your administrator for a new link.")
		return
	}
	data, err := p.store.TakePortalToken(r.Context(), hashKey("link", tok), p.now())
	if errors.Is(err, broker.ErrNotFound) {
		p.fail(w, r, http.StatusGone, nil, "This sign-in link was already used or has expired. Each link works once, for a few minutes: ask your administrator for a new one (berth-broker portal-link).")
		return
	}
	if err != nil {
		p.log.Error("take portal link", "err", err)
		p.fail(w, r, http.StatusServiceUnavailable, nil, "The broker could not check the link just now. Try again in a few seconds.")
		return
	}
	var ld linkData
	if err := json.Unmarshal(data, &ld); err != nil || broker.ValidateUserName("user", ld.User) != nil {
		p.fail(w, r, http.StatusBadRequest, nil, "This sign-in link is damaged. Ask your administrator for a new one.")
		return
	}
	if err := p.startSession(r.Context(), w, ld.User, ld.Groups, ld.Admin, ""); err != nil {
		p.log.Error("start portal session", "err", err)
		p.fail(w, r, http.StatusServiceUnavailable, nil, "The broker could not sign you in just now (the link is used up). Ask for a new link and try again.")
		return
	}
	p.log.Info("portal sign-in by link", logattr.User, ld.User)
	http.Redirect(w, r, "/portal/", http.StatusSeeOther)
}

// logout ends the portal session; with an IdP that has an
// end_session_endpoint the signed-out page offers to sign out there too.
func (p *Portal) logout(w http.ResponseWriter, r *http.Request) {
	s, err := p.session(r)
	if err != nil {
		p.fail(w, r, http.StatusServiceUnavailable, nil, "The broker could not read your sign-in just now. Try again in a few seconds.")
		return
	}
	if s != nil {
		if !p.checkCSRF(w, r, s) {
			return
		}
		key, _ := hex.DecodeString(s.ID)
		if err := p.store.DeletePortalSession(r.Context(), key); err != nil {
			p.log.Error("delete portal session", "err", err)
			p.fail(w, r, http.StatusServiceUnavailable, s, "The broker could not sign you out just now. Try again in a few seconds.")
			return
		}
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/portal/", MaxAge: -1, HttpOnly: true, Secure: true, SameSite: http.SameSiteLaxMode})
	end := ""
	if p.oidc != nil && s != nil {
		end = p.oidc.endSessionURL(r.Context(), s.IDToken, p.baseURL(r)+"/portal/signedout")
	}
	p.render(w, r, http.StatusOK, "signedout.html", nil, end)
}

// signedOut is where an IdP's sign-out returns.
func (p *Portal) signedOut(w http.ResponseWriter, r *http.Request) {
	p.render(w, r, http.StatusOK, "signedout.html", nil, "")
}

// signinPage offers the IdP's sign-in, or says how to get a portal link.
func (p *Portal) signinPage(w http.ResponseWriter, r *http.Request) {
	if s := p.optionalSession(r); s != nil {
		http.Redirect(w, r, "/portal/", http.StatusSeeOther)
		return
	}
	p.render(w, r, http.StatusOK, "signin.html", nil, struct{ OIDC bool }{p.oidc != nil})
}
