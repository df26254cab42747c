package gateway

import (
	"bytes"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"html/template"
	"net/http"
	"os/user"
	"strconv"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/oauth"
	"github.com/berth-dev/berth/internal/permfile"
)

// web holds the session page and its assets: page.html (a template that
// names the assets with their content hashes), page.js and page.css. The
// page reads the token from the query and the session ID from the
// fragment, loads noVNC from "novnc/", and talks to "session-info",
// "websockify" and "files" next to it.
//
//go:embed web/page.html web/page.js web/page.css
var web embed.FS

// pageCSP lets the page run only its own served scripts and styles (no
// inline script or style; noVNC's element styles are set through the CSSOM,
// which style-src does not govern), fetch and open WebSockets to the
// gateway, show noVNC's data: and blob: cursors, and never be framed.
const pageCSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; " +
	"img-src 'self' data: blob:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// asset is one embedded file of the page, served under its name.
type asset struct {
	body  []byte
	ctype string
	etag  string // quoted content hash
	hash  string // short content hash, the "v" query of the page's links
}

// pageAssets are the page's assets by name, and page the rendered page.
var pageAssets, page = func() (map[string]*asset, []byte) {
	m := map[string]*asset{}
	for name, ctype := range map[string]string{
		"page.js":  "text/javascript; charset=utf-8",
		"page.css": "text/css; charset=utf-8",
	} {
		b, err := web.ReadFile("web/" + name)
		if err != nil {
			panic(err)
		}
		sum := sha256.Sum256(b)
		h := hex.EncodeToString(sum[:8])
		m[name] = &asset{body: b, ctype: ctype, etag: `"` + h + `"`, hash: h}
	}
	t := template.Must(template.ParseFS(web, "web/page.html"))
	var buf bytes.Buffer
	if err := t.Execute(&buf, map[string]string{
		"JS":  "page.js?v=" + m["page.js"].hash,
		"CSS": "page.css?v=" + m["page.css"].hash,
	}); err != nil {
		panic(err)
	}
	return m, buf.Bytes()
}()

// Close codes sent to dropped clients.
const (
	closeGoingAway = 1001
	closePolicy    = 1008
)

// routes builds the handler.
func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	pagePattern := "GET " + s.cfg.WebURLPath
	if strings.HasSuffix(s.cfg.WebURLPath, "/") {
		pagePattern += "{$}"
	}
	mux.HandleFunc(pagePattern, s.servePage)
	mux.HandleFunc("GET "+s.base+"session-info", s.serveInfo)
	mux.HandleFunc("GET "+s.base+"{asset}", serveAsset)
	mux.HandleFunc("GET "+s.base+"websockify", s.serveWebSocket)
	mux.HandleFunc("POST "+s.base+"extend", s.serveExtend)
	mux.HandleFunc("GET "+s.base+"notice-wait", s.serveNoticeWait)
	s.fileRoutes(mux)
	files := http.StripPrefix(s.base+"novnc/", http.FileServer(http.Dir(s.cfg.NoVNCPath)))
	mux.Handle("GET "+s.base+"novnc/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/") {
			http.NotFound(w, r) // no directory listings
			return
		}
		w.Header().Set("Cache-Control", "public, max-age=3600")
		files.ServeHTTP(w, r)
	}))
	return securityHeaders(mux)
}

// securityHeaders sets the headers every response carries. The page's URL
// holds the token, so nothing may send it on as a Referer.
func securityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Strict-Transport-Security", "max-age=31536000")
		h.ServeHTTP(w, r)
	})
}

func (s *Server) servePage(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Security-Policy", pageCSP)
	w.Write(page)
}

// serveAsset serves an embedded asset of the page. A request with the
// current hash ("?v=", as the page links them) may be cached for good;
// any other is revalidated by its ETag.
func serveAsset(w http.ResponseWriter, r *http.Request) {
	a := pageAssets[r.PathValue("asset")]
	if a == nil {
		http.NotFound(w, r)
		return
	}
	h := w.Header()
	h.Set("Content-Type", a.ctype)
	h.Set("ETag", a.etag)
	if r.URL.Query().Get("v") == a.hash {
		h.Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		h.Set("Cache-Control", "no-cache")
	}
	for _, tag := range strings.Split(r.Header.Get("If-None-Match"), ",") {
		if strings.TrimSpace(tag) == a.etag {
			w.WriteHeader(http.StatusNotModified)
			return
		}
	}
	h.Set("Content-Length", strconv.Itoa(len(a.body)))
	w.Write(a.body)
}

// sessionInfo is the answer of GET session-info: what the page shows and
// which of its controls it enables.
type sessionInfo struct {
	ViewOnly    bool            `json:"viewOnly"`
	User        string          `json:"user"`
	Owner       string          `json:"owner"`
	Permissions infoPermissions `json:"permissions"`
	// Storage says whether the session has a storage root (the files
	// panel).
	Storage bool `json:"storage"`
	// Peers are the users of the session's other live connections, sorted,
	// each once.
	Peers []string `json:"peers"`
	// ExpiresAt is when the connection token expires (RFC 3339, UTC);
	// empty when it does not.
	ExpiresAt string `json:"expiresAt,omitempty"`
	// Notice is the session's current warning from the broker (the
	// page's banner); absent when none.
	Notice *infoNotice `json:"notice,omitempty"`
	// Disconnected is why this page (its clientId) was disconnected by
	// the broker's policy; the page shows it and does not reconnect by
	// itself. Absent when it was not.
	Disconnected string `json:"disconnected,omitempty"`
}

// infoPermissions are the user's rights in the session, as the page needs
// them.
type infoPermissions struct {
	ClipboardCopy  bool `json:"clipboardCopy"`
	ClipboardPaste bool `json:"clipboardPaste"`
	FileUpload     bool `json:"fileUpload"`
	FileDownload   bool `json:"fileDownload"`
	Keyboard       bool `json:"keyboard"`
	Mouse          bool `json:"mouse"`
}

func (s *Server) serveInfo(w http.ResponseWriter, r *http.Request) {
	g, herr := s.authorize(r.Context(), r)
	if herr != nil {
		// A verified token names a session the broker issued it for, so
		// 404 ("session not found") here means that session has ended
		// (deleted, or no longer READY): the page says so.
		herr.write(w)
		return
	}
	p := g.session.Permissions
	if p == nil {
		p = permfile.Default()
	}
	f := p.Features(g.claims.User, g.session.Owner, s.cfg.Groups)
	info := sessionInfo{
		ViewOnly: g.rights.viewOnly(),
		User:     g.claims.User,
		Owner:    g.session.Owner,
		Permissions: infoPermissions{
			ClipboardCopy:  g.rights.clipboardCopy,
			ClipboardPaste: g.rights.clipboardPaste,
			FileUpload:     f["file-upload"],
			FileDownload:   f["file-download"],
			Keyboard:       g.rights.keyboard,
			Mouse:          g.rights.mouse,
		},
		Storage:      g.session.StorageRoot != "",
		Peers:        s.peers(g.session.ID, g.client),
		Notice:       s.noticeFor(g.session.ID, g.claims.User == g.session.Owner),
		Disconnected: s.kickedFor(g.session.ID, g.client),
	}
	if !g.claims.ExpiresAt.IsZero() {
		info.ExpiresAt = g.claims.ExpiresAt.UTC().Format(time.RFC3339)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(info)
}

// httpError is a refusal: a status and a short reason for the client.
type httpError struct {
	status int
	reason string
}

// metricReason is the Refused* reason of a refusal, from its status.
func (e *httpError) metricReason() string {
	switch e.status {
	case http.StatusBadRequest:
		return RefusedBadRequest
	case http.StatusUnauthorized:
		return RefusedUnauthorized
	case http.StatusForbidden:
		return RefusedForbidden
	case http.StatusNotFound:
		return RefusedNotFound
	}
	return RefusedUnavailable
}

func (e *httpError) write(w http.ResponseWriter) {
	w.Header().Set("Cache-Control", "no-store")
	http.Error(w, e.reason, e.status)
}

// grant is an authorized connection request.
type grant struct {
	claims  *oauth.ConnectionClaims
	session Session
	rights  rights
	// client is the page's clientId (see peers.go); empty when none or
	// not valid.
	client string
}

// authorize checks the request's token against the session it names.
func (s *Server) authorize(ctx context.Context, r *http.Request) (*grant, *httpError) {
	q := r.URL.Query()
	token, sid := q.Get("authToken"), q.Get("sessionId")
	if token == "" {
		return nil, &httpError{http.StatusUnauthorized, "missing authToken"}
	}
	if sid == "" {
		return nil, &httpError{http.StatusBadRequest, "missing sessionId"}
	}
	if s.cfg.Verifier == nil || s.cfg.Sessions == nil {
		return nil, &httpError{http.StatusServiceUnavailable, "the gateway is not configured"}
	}
	vctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	claims, err := s.cfg.Verifier.VerifyConnectionToken(vctx, token)
	if err != nil {
		var te *oauth.TokenError
		if errors.As(err, &te) {
			return nil, &httpError{http.StatusUnauthorized, te.Error()}
		}
		s.log.Warn("cannot verify connection token", "err", err)
		return nil, &httpError{http.StatusServiceUnavailable, "cannot verify the token now"}
	}
	if claims == nil || claims.User == "" {
		return nil, &httpError{http.StatusUnauthorized, "invalid token"}
	}
	if !claims.ExpiresAt.IsZero() && !s.cfg.Now().Before(claims.ExpiresAt) {
		return nil, &httpError{http.StatusUnauthorized, "invalid token: token expired"}
	}
	if claims.SessionID != sid {
		return nil, &httpError{http.StatusForbidden, "the token is not for this session"}
	}
	sess, ok := s.cfg.Sessions.Session(sid)
	if !ok {
		return nil, &httpError{http.StatusNotFound, "session not found"}
	}
	if claims.Owner != "" && claims.Owner != sess.Owner {
		return nil, &httpError{http.StatusForbidden, "the token is not for this session"}
	}
	rt := s.rights(sess, claims.User)
	if !rt.display {
		return nil, &httpError{http.StatusForbidden, "the user is not allowed to connect to this session"}
	}
	return &grant{claims: claims, session: sess, rights: rt, client: clientID(q.Get("clientId"))}, nil
}

// rights are what a user may do in a connection.
type rights struct {
	display, keyboard, mouse, clipboardPaste, clipboardCopy bool
}

func (r *rights) viewOnly() bool { return !r.keyboard && !r.mouse }

// allows says whether a client message of class in may pass.
func (r *rights) allows(in input) bool {
	switch in {
	case inputKeyboard:
		return r.keyboard
	case inputMouse:
		return r.mouse
	case inputClipboard:
		return r.clipboardPaste
	case inputClipboardRequest:
		return r.clipboardCopy
	case inputControl:
		return r.keyboard || r.mouse
	}
	return true
}

// rights evaluates the session's permissions for user.
func (s *Server) rights(sess Session, user string) rights {
	p := sess.Permissions
	if p == nil {
		p = permfile.Default()
	}
	f := p.Features(user, sess.Owner, s.cfg.Groups)
	return rights{
		display:        f["display"],
		keyboard:       f["keyboard"],
		mouse:          f["mouse"],
		clipboardPaste: f["clipboard-paste"],
		clipboardCopy:  f["clipboard-copy"],
	}
}

// osGroups resolves a user's groups on this host. An unknown user has no
// groups (an empty, non-nil list: osgroup: rules must not match on a guess).
func osGroups(name string) []string {
	out := []string{}
	u, err := user.Lookup(name)
	if err != nil {
		return out
	}
	ids, err := u.GroupIds()
	if err != nil {
		return out
	}
	for _, id := range ids {
		if g, err := user.LookupGroupId(id); err == nil {
			out = append(out, g.Name)
		}
	}
	return out
}
