// Package portal is berth's web portal, served by the broker at /portal/ on
// the client API listener: end users sign in (OpenID Connect, or a single-use
// portal link from `berth-broker portal-link`), see their sessions and those
// shared with them live, launch from templates, connect, share and delete;
// admins run the fleet (admin.go). Pages are server-rendered html/template
// with embedded CSS and one small script, under a strict Content Security
// Policy; every state change carries the portal session's CSRF token and
// passes an Origin / Sec-Fetch-Site check. Portal sessions live hashed in the
// broker's store (Store), so any broker of a cluster serves any user. Every
// rule about sessions and templates is the broker core's (broker.Service).
//
// # Extension point for admin pages (admin.go)
//
// Admin pages register in (*Portal).registerAdmin, a method that admin.go
// defines (see adminHook below: when admin.go does not define it yet, nothing
// is registered). Inside it, register each route with
//
//	p.adminRoute("GET /portal/admin/servers", func(w http.ResponseWriter, r *http.Request, s *Session) { ... })
//	p.adminRoute("POST /portal/admin/servers/{id}/close", ...)
//
// adminRoute answers 303 to the sign-in page without a portal session, 403
// (a page saying so) for a user who is not in the admin group, and for
// every method but GET and HEAD checks the CSRF token (form field "csrf" or
// header X-CSRF-Token) and the request's origin first (403 when either is
// wrong). s is the signed-in admin's portal session (s.User, s.Groups,
// s.CSRF).
//
// Render a page with p.render(w, r, status, "admin_servers.html", s, data):
// the template file (templates/admin_*.html, embedded) defines "content"
// (and may define "title"); it is executed inside layout.html, which draws
// the header, the nav (admin links, shown to admins only: add yours with
// p.addAdminNav("Servers", "/portal/admin/servers") in registerAdmin) and
// the footer. In the template, .Data is
// data, .S the portal session, .CSRF the token for forms
// (<input type="hidden" name="csrf" value="{{.CSRF}}">). Errors: p.fail(w, r,
// status, s, msg) renders error.html with msg, which should say what to do.
// CSS classes (static/portal.css): .card, .grid, .table (with th/td),
// .btn, .btn-primary, .btn-danger, .btn-small, .state (with .state-ready,
// .state-creating, .state-deleting, .state-deleted, .state-unknown,
// .state-closed), .note, .error, .muted, .field (label + input), .inline
// (a form on one line), .pager. Scripts: add behaviour to static/portal.js
// keyed on data-* attributes; never inline script or style (the CSP refuses
// them).
package portal

import (
	"cmp"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/broker"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// CSP is the Content Security Policy of every portal answer.
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; " +
	"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// Config configures a Portal.
type Config struct {
	// Service is the broker core.
	Service *broker.Service
	// Store keeps portal sessions and single-use tokens.
	Store Store
	// OIDC is the identity provider; nil means sign-in by portal link only.
	OIDC *OIDCConfig
	// AdminGroup is the group whose members are admins ("" : only portal
	// links made with --admin give admins).
	AdminGroup string
	// SessionLifetime is how long a portal session lasts (default 8 h).
	SessionLifetime time.Duration
	// ExternalURL is the portal's base URL as browsers reach it
	// (https://broker.example.com:8443); "" takes it from each request's Host.
	ExternalURL string
	// Logger logs; nil discards.
	Logger *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Audit, when set, records every state-changing action (audit.go).
	Audit AuditRecorder
}

// Portal serves the portal's pages under /portal/.
type Portal struct {
	cfg   Config
	svc   *broker.Service
	store Store
	log   *slog.Logger
	now   func() time.Time
	pages map[string]*template.Template
	mux   *http.ServeMux
	oidc  *oidcClient
	// assets maps a static file name to its content-hashed URL.
	assets map[string]string
	thumbs thumbCache
	// adminNav are the admin pages' nav links (addAdminNav).
	adminNav []navLink
}

// Session is a signed-in user's portal session.
type Session struct {
	// ID is the hash of the cookie's value (hex), the store key.
	ID string `json:"-"`
	// User is the OS user name: sessions' owner.
	User   string   `json:"user"`
	Groups []string `json:"groups,omitempty"`
	Admin  bool     `json:"admin,omitempty"`
	// CSRF is the synchronizer token of this portal session's forms.
	CSRF    string    `json:"csrf"`
	Expires time.Time `json:"expires"`
	// IDToken is the IdP's ID token, the hint of its end_session_endpoint.
	IDToken string `json:"idToken,omitempty"`
}

// New returns a Portal.
func New(cfg Config) (*Portal, error) {
	if cfg.Service == nil || cfg.Store == nil {
		return nil, errors.New("portal: Service and Store are required")
	}
	cfg.SessionLifetime = cmp.Or(cfg.SessionLifetime, 8*time.Hour)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	cfg.ExternalURL = strings.TrimRight(cfg.ExternalURL, "/")
	p := &Portal{cfg: cfg, svc: cfg.Service, store: cfg.Store, log: cfg.Logger.With("component", "portal"), now: cfg.Now,
		mux: http.NewServeMux()}
	if err := p.loadAssets(); err != nil {
		return nil, err
	}
	if err := p.loadPages(); err != nil {
		return nil, err
	}
	if cfg.OIDC != nil {
		o, err := newOIDCClient(*cfg.OIDC)
		if err != nil {
			return nil, err
		}
		p.oidc = o
	}
	p.routes()
	return p, nil
}

// Handler returns the portal's handler; mount it at "/portal/".
func (p *Portal) Handler() http.Handler { return p }

// ServeHTTP serves a portal request with the portal's headers.
func (p *Portal) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", CSP)
	h.Set("X-Content-Type-Options", "nosniff")
	// same-origin, not no-referrer: with no-referrer browsers send
	// "Origin: null" on the portal's own form posts, which the origin check
	// refuses; other sites (the desktop's gateway, the IdP) get no referrer.
	h.Set("Referrer-Policy", "same-origin")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	if !strings.HasPrefix(r.URL.Path, "/portal/static/") {
		h.Set("Cache-Control", "no-store")
	}
	p.mux.ServeHTTP(w, r)
}

// Run purges expired portal sessions and tokens every interval until ctx
// ends.
func (p *Portal) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(cmp.Or(interval, 10*time.Minute))
	defer t.Stop()
	for {
		if n, err := p.store.PurgePortal(ctx, p.now()); err != nil {
			if ctx.Err() == nil {
				p.log.Warn("purge expired portal sessions", "err", err)
			}
		} else if n > 0 {
			p.log.Debug("purged expired portal sessions and tokens", "count", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// handlerFunc is a handler of a signed-in user.
type handlerFunc func(w http.ResponseWriter, r *http.Request, s *Session)

// userRoute registers h for signed-in users: without a portal session a GET
// goes to the sign-in page (an API path gets 401); a state change checks
// CSRF first.
func (p *Portal) userRoute(pattern string, h handlerFunc) {
	h = p.audited(pattern, h) // audit.go
	p.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		s, ok := p.requireSession(w, r)
		if !ok {
			return
		}
		if !p.checkCSRF(w, r, s) {
			return
		}
		h(w, r, s)
	})
}

// adminRoute registers h for admins: see the package comment.
func (p *Portal) adminRoute(pattern string, h handlerFunc) {
	h = p.audited(pattern, h) // audit.go
	p.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		s, ok := p.requireSession(w, r)
		if !ok {
			return
		}
		if !s.Admin {
			p.fail(w, r, http.StatusForbidden, s, "This page is for administrators. Ask an administrator to add you to the portal's admin group if you need it.")
			return
		}
		if !p.checkCSRF(w, r, s) {
			return
		}
		h(w, r, s)
	})
}

// adminHook is implemented by admin.go's registerAdmin.
type adminHook interface{ registerAdmin() }

func (p *Portal) routes() {
	m := p.mux
	m.HandleFunc("GET /portal/static/{file}", p.static)
	m.HandleFunc("GET /portal/{$}", p.home)
	m.HandleFunc("GET /portal", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/portal/", http.StatusMovedPermanently)
	})
	m.HandleFunc("GET /portal/signin", p.signinPage)
	m.HandleFunc("GET /portal/login", p.login)
	m.HandleFunc("GET /portal/callback", p.callback)
	m.HandleFunc("GET /portal/link", p.linkPage)
	m.HandleFunc("POST /portal/link", p.linkSignIn)
	m.HandleFunc("POST /portal/logout", p.logout)
	m.HandleFunc("GET /portal/signedout", p.signedOut)
	p.userRoutes()
	if a, ok := any(p).(adminHook); ok {
		a.registerAdmin()
	}
	m.HandleFunc("/portal/", func(w http.ResponseWriter, r *http.Request) {
		p.fail(w, r, http.StatusNotFound, p.optionalSession(r), "There is no such page. Go to My sessions.")
	})
}

// static serves an embedded asset; its URL carries its content hash, so it
// is cached for a year.
func (p *Portal) static(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("file")
	base, _, _ := strings.Cut(name, ".v")
	ext := path.Ext(name)
	file := strings.TrimSuffix(base, path.Ext(base)) + ext
	if ext == "" || p.assets[file] != "/portal/static/"+name {
		http.NotFound(w, r)
		return
	}
	b, err := fs.ReadFile(staticFS, "static/"+file)
	if err != nil {
		http.NotFound(w, r)
		return
	}
	switch ext {
	case ".css":
		w.Header().Set("Content-Type", "text/css; charset=utf-8")
	case ".js":
		w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
	case ".svg":
		w.Header().Set("Content-Type", "image/svg+xml")
	}
	w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	_, _ = w.Write(b)
}

// loadAssets names each static file by its content hash: portal.css is
// served as /portal/static/portal.v<hash>.css.
func (p *Portal) loadAssets() error {
	p.assets = map[string]string{}
	ents, err := fs.ReadDir(staticFS, "static")
	if err != nil {
		return err
	}
	for _, e := range ents {
		b, err := fs.ReadFile(staticFS, "static/"+e.Name())
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		ext := path.Ext(e.Name())
		p.assets[e.Name()] = "/portal/static/" + strings.TrimSuffix(e.Name(), ext) + ".v" + hex.EncodeToString(sum[:6]) + ext
	}
	return nil
}
