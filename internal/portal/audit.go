package portal

import (
	"context"
	"net"
	"net/http"
	"strconv"
	"strings"

	"github.com/berth-dev/berth/internal/audit"
)

// AuditRecorder is told of each state-changing portal action (Config.Audit).
// *audit.Appender implements it.
type AuditRecorder interface {
	Add(ctx context.Context, rec *audit.Record, finish func(*audit.Record))
}

// portalActions name the portal's routes in the audit log; a state-changing
// route not listed is recorded as "portal." and its method and path.
var portalActions = map[string]string{
	"GET /portal/sessions/{id}/connect":        "portal.ConnectSession",
	"POST /portal/sessions/{id}/delete":        "portal.DeleteSession",
	"POST /portal/sessions/{id}/share":         "portal.ShareSession",
	"POST /portal/launch":                      "portal.LaunchTemplate",
	"POST /portal/admin/servers/{id}/open":     "portal.OpenServer",
	"POST /portal/admin/servers/{id}/close":    "portal.CloseServer",
	"POST /portal/admin/sessions/{id}/delete":  "portal.AdminDeleteSession",
	"POST /portal/admin/templates":             "portal.CreateTemplate",
	"POST /portal/admin/templates/{id}":        "portal.UpdateTemplate",
	"POST /portal/admin/templates/{id}/delete": "portal.DeleteTemplate",
}

// auditedRoute reports whether a portal route is recorded, and its action:
// every POST, and the connect page, which hands out a connection token.
func auditedRoute(pattern string) (string, bool) {
	if a, ok := portalActions[pattern]; ok {
		return a, true
	}
	method, path, _ := strings.Cut(pattern, " ")
	if method == http.MethodGet || method == "" || strings.HasPrefix(pattern, "/") {
		return "", false
	}
	return "portal." + method + " " + path, true
}

// audited wraps h, the handler of pattern, to record each call in the
// audit log with the signed-in user, the IDs in its path and form (the
// session, server or template; a share's user), the address and the
// result (the answer's status: 303 and 2xx are ok). Form values other than
// those IDs (tokens, the CSRF token, a template's fields) are not recorded.
func (p *Portal) audited(pattern string, h handlerFunc) handlerFunc {
	action, ok := auditedRoute(pattern)
	if !ok || p.cfg.Audit == nil {
		return h
	}
	kind := audit.TargetSession
	switch {
	case strings.Contains(pattern, "/servers/"):
		kind = audit.TargetServer
	case strings.Contains(pattern, "/templates"):
		kind = audit.TargetTemplate
	}
	return func(w http.ResponseWriter, r *http.Request, s *Session) {
		rec := &audit.Record{Time: p.now(), ActorKind: audit.ActorPortal, Actor: s.User, Action: action, Source: r.RemoteAddr}
		if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
			rec.Source = host
		}
		rec.AddTarget(kind, r.PathValue("id"))
		sw := &auditStatus{ResponseWriter: w, status: http.StatusOK}
		h(sw, r, s)
		if r.PostForm != nil { // read by the handler
			rec.AddTarget(audit.TargetTemplate, r.PostForm.Get("template"))
			rec.AddTarget(audit.TargetUser, r.PostForm.Get("user"))
		}
		rec.Status, rec.Result = sw.status, audit.ResultOK
		if sw.status >= 400 {
			rec.Result, rec.Error = audit.ResultFailed, strconv.Itoa(sw.status)
		}
		if s.Admin {
			rec.Detail = "portal admin"
		}
		p.cfg.Audit.Add(context.WithoutCancel(r.Context()), rec, nil)
	}
}

// auditStatus remembers the status an answer had.
type auditStatus struct {
	http.ResponseWriter
	status      int
	wroteHeader bool
}

func (w *auditStatus) WriteHeader(code int) {
	if !w.wroteHeader && code >= 200 {
		w.status, w.wroteHeader = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *auditStatus) Write(b []byte) (int, error) {
	w.wroteHeader = true
	return w.ResponseWriter.Write(b)
}

// Unwrap gives http.ResponseController the underlying writer.
func (w *auditStatus) Unwrap() http.ResponseWriter { return w.ResponseWriter }
