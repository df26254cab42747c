package gateway

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"os/user"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/oauth"
	"github.com/berth-dev/berth/internal/permfile"
)

// pageScript is the session page's script: it reads the token from the
// query and the session ID from the fragment, asks whether the connection
// is view-only, and connects noVNC. It disconnects on pagehide, so that a
// closed tab does not keep a client slot.
const pageScript = `
import RFB from './novnc/core/rfb.js';
const status = document.getElementById('status');
const show = (text) => { status.textContent = text; status.hidden = !text; };
const token = new URLSearchParams(location.search).get('authToken') || '';
let sid = location.hash.slice(1);
try { sid = decodeURIComponent(sid); } catch (e) {}
const qs = 'authToken=' + encodeURIComponent(token) + '&sessionId=' + encodeURIComponent(sid);
async function main() {
  if (!token || !sid) { show('This link is incomplete: it needs an authToken and a session ID.'); return; }
  const r = await fetch('session-info?' + qs, {cache: 'no-store', credentials: 'omit'});
  if (!r.ok) { show('Cannot connect: ' + (await r.text()).trim()); return; }
  const info = await r.json();
  const url = new URL('websockify?' + qs, location.href);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  const rfb = new RFB(document.getElementById('screen'), url.href);
  rfb.viewOnly = !!info.viewOnly;
  rfb.scaleViewport = true;
  rfb.focusOnClick = true;
  window.rfb = rfb;
  rfb.addEventListener('connect', () => { show(''); document.body.dataset.state = 'connected'; rfb.focus(); });
  rfb.addEventListener('disconnect', (e) => {
    document.body.dataset.state = 'disconnected';
    show(e.detail.clean ? 'Disconnected.' : 'The connection to the session was lost.');
  });
  rfb.addEventListener('desktopname', (e) => { document.title = e.detail.name; });
  addEventListener('pagehide', () => rfb.disconnect());
}
main().catch((e) => show('Cannot connect: ' + e.message));
`

// page is the session page.
const page = `<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>berth session</title>
<style>
html, body { margin: 0; height: 100%; background: #1e1e1e; overflow: hidden; }
#screen { width: 100%; height: 100%; }
#status { position: fixed; top: 0; left: 0; right: 0; padding: .5em 1em; font: 14px sans-serif;
  color: #eee; background: rgba(40, 40, 40, .9); }
</style></head>
<body data-state="connecting"><div id="status">Connecting…</div><div id="screen"></div>
<script type="module">` + pageScript + `</script>
</body></html>
`

// pageCSP allows the page's own script (by hash), same-origin modules,
// fetches and WebSockets, and noVNC's data: cursors.
var pageCSP = func() string {
	sum := sha256.Sum256([]byte(pageScript))
	return "default-src 'none'; script-src 'self' 'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'; " +
		"connect-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; " +
		"base-uri 'none'; form-action 'none'"
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
	mux.HandleFunc("GET "+s.base+"websockify", s.serveWebSocket)
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
	w.Write([]byte(page))
}

// sessionInfo is the answer of GET session-info.
type sessionInfo struct {
	ViewOnly bool `json:"viewOnly"`
}

func (s *Server) serveInfo(w http.ResponseWriter, r *http.Request) {
	g, herr := s.authorize(r.Context(), r)
	if herr != nil {
		herr.write(w)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(sessionInfo{ViewOnly: g.rights.viewOnly()})
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
	return &grant{claims: claims, session: sess, rights: rt}, nil
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
