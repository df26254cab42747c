package httpapi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/audit"
	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/oauth"
)

// OpDescribeAudit is GET /berth/v1/audit, the audit log for admins.
const OpDescribeAudit = "DescribeAudit"

// AuditRecorder is told of each state-changing API call. *audit.Appender
// implements it: Add must return at once (finish runs later, off the
// request's path).
type AuditRecorder interface {
	Add(ctx context.Context, rec *audit.Record, finish func(*audit.Record))
}

// AuditReader reads the audit log for GET /berth/v1/audit. The stores
// implement it.
type AuditReader interface {
	ListAudit(ctx context.Context, f audit.Filter) ([]audit.Record, error)
}

// readOnlyPOSTs are the operations that use POST but change nothing.
var readOnlyPOSTs = map[string]bool{OpDescribeSessions: true, OpDescribeServers: true, OpGetSessionScreenshots: true}

// audited reports whether calls of pattern (a ServeMux pattern, "METHOD
// /path") and operation op are recorded: every call that changes state
// (POST, PUT, PATCH, DELETE but the read-only POSTs) and
// GetSessionConnectionData, which hands out a connection token.
func audited(pattern, op string) bool {
	method, _, _ := strings.Cut(pattern, " ")
	switch method {
	case http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
		return !readOnlyPOSTs[op]
	}
	return op == OpGetSessionConnectionData
}

// maxAuditResponse caps the bytes of an answer kept to read the IDs it
// created and its failures from.
const maxAuditResponse = 1 << 20

// audit records each call of next (route pattern, operation op) with
// s.Audit, when it changes state. It runs after authentication, so it knows
// the caller: calls refused for want of a valid token change nothing and are
// not recorded (anyone could grow the log with them); the request metrics
// count them. On the request's path it only copies the bodies; reading the
// IDs out of them runs in the audit appender's goroutine.
func (s *Server) audit(pattern, op string, next http.Handler) http.Handler {
	if s.Audit == nil || !audited(pattern, op) {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &audit.Record{Time: s.now(), Action: op, Source: remoteIP(r.RemoteAddr)}
		rec.ActorKind, rec.Actor = actorOf(PrincipalFrom(r.Context()))
		pathTargets(rec, r)
		var reqBody bytes.Buffer
		if r.Body != nil && r.Body != http.NoBody {
			r.Body = &teeBody{ReadCloser: r.Body, buf: &reqBody}
		}
		aw := &auditWriter{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(aw, r)
		status, respBody := aw.status, aw.body.Bytes()
		s.Audit.Add(context.WithoutCancel(r.Context()), rec, func(rec *audit.Record) {
			completeRecord(rec, op, status, reqBody.Bytes(), respBody)
		})
	})
}

// now is the Service's clock.
func (s *Server) now() time.Time {
	if s.Service != nil && s.Service.Now != nil {
		return s.Service.Now()
	}
	return time.Now()
}

// actorOf names the caller of a request: anonymous without a principal
// (enable-authorization = false).
func actorOf(p *oauth.Principal) (kind, id string) {
	switch {
	case p == nil:
		return audit.ActorAnonymous, ""
	case p.Kind == oauth.KindExternal:
		return audit.ActorExternal, p.ClientID
	}
	return audit.ActorClient, p.ClientID
}

// remoteIP is the address of RemoteAddr without its port.
func remoteIP(addr string) string {
	if host, _, err := net.SplitHostPort(addr); err == nil {
		return host
	}
	return addr
}

// pathTargets adds the IDs in r's path: /berth/v1/<things>/{id}/... and
// /sessionConnectionData/{sessionId}/{user}.
func pathTargets(rec *audit.Record, r *http.Request) {
	if id := r.PathValue("sessionId"); id != "" {
		rec.AddTarget(audit.TargetSession, id)
		rec.AddTarget(audit.TargetUser, r.PathValue("user"))
		return
	}
	id := r.PathValue("id")
	if id == "" {
		return
	}
	rest, ok := strings.CutPrefix(r.URL.Path, "/berth/v1/")
	if !ok {
		return
	}
	coll, _, _ := strings.Cut(rest, "/")
	rec.AddTarget(strings.TrimSuffix(coll, "s"), id)
}

// teeBody copies what the handler reads of a request body, up to
// MaxBodyBytes (decode reads no more).
type teeBody struct {
	io.ReadCloser
	buf *bytes.Buffer
}

func (t *teeBody) Read(p []byte) (int, error) {
	n, err := t.ReadCloser.Read(p)
	if n > 0 && t.buf.Len() < MaxBodyBytes {
		t.buf.Write(p[:min(n, MaxBodyBytes-t.buf.Len())])
	}
	return n, err
}

// auditWriter keeps the status and (up to maxAuditResponse) the body of an
// answer.
type auditWriter struct {
	http.ResponseWriter
	status      int
	wroteHeader bool
	body        bytes.Buffer
}

func (w *auditWriter) WriteHeader(code int) {
	if !w.wroteHeader && code >= 200 {
		w.status, w.wroteHeader = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *auditWriter) Write(p []byte) (int, error) {
	w.wroteHeader = true
	if room := maxAuditResponse - w.body.Len(); room > 0 {
		w.body.Write(p[:min(len(p), room)])
	}
	return w.ResponseWriter.Write(p)
}

// Unwrap gives http.ResponseController the underlying writer.
func (w *auditWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// completeRecord fills in rec from the call's request and answer: the IDs
// they name (never other values: no tokens, secrets, files), the result,
// and for a permissions file its size and SHA-256 only.
func completeRecord(rec *audit.Record, op string, status int, reqBody, respBody []byte) {
	rec.Status = status
	var req any
	if json.Unmarshal(reqBody, &req) == nil {
		var perms []string
		walkIDs(rec, req, "", 0, func(key, v string) {
			if key == "permissionsfile" {
				sum := sha256.Sum256([]byte(v))
				perms = append(perms, fmt.Sprintf("%d bytes sha256:%s", len(v), hex.EncodeToString(sum[:8])))
			}
		})
		if len(perms) > 0 {
			rec.Detail = "permissions files: " + strings.Join(perms, ", ")
		}
	}
	var resp map[string]any
	_ = json.Unmarshal(respBody, &resp)
	if status >= 400 {
		rec.Result = audit.ResultFailed
		rec.Error = strconv.Itoa(status)
		if code, _ := resp["code"].(string); code != "" {
			rec.Error += " " + code
		}
		return
	}
	idKind := audit.TargetSession
	switch {
	case strings.Contains(op, "Webhook"):
		idKind = audit.TargetWebhook
	case strings.Contains(op, "Template") && op != OpLaunchTemplate:
		idKind = audit.TargetTemplate
	}
	walkIDs(rec, resp, idKind, 0, nil)
	ok, okList := resp["SuccessfulList"].([]any)
	bad, badList := resp["UnsuccessfulList"].([]any)
	rec.Result = audit.ResultOK
	if okList || badList {
		if len(bad) > 0 {
			rec.Result = audit.ResultPartial
			if len(ok) == 0 {
				rec.Result = audit.ResultFailed
			}
			rec.Error = fmt.Sprintf("%d of %d failed", len(bad), len(ok)+len(bad))
			if reason := firstReason(bad); reason != "" {
				rec.Error += ": " + reason
			}
		}
	}
	if id, _ := resp["RequestId"].(string); id != "" {
		rec.Detail = strings.TrimPrefix(rec.Detail+"; request "+id, "; ")
	}
}

// firstReason is the FailureReason of the first failed item, cut short.
func firstReason(items []any) string {
	m, _ := items[0].(map[string]any)
	r, _ := m["FailureReason"].(string)
	return truncateText(r, 200)
}

// idKeys are the keys whose values are the IDs of what a call acts on.
var idKeys = map[string]string{
	"sessionid":  audit.TargetSession,
	"serverid":   audit.TargetServer,
	"templateid": audit.TargetTemplate,
	"webhookid":  audit.TargetWebhook,
	"owner":      audit.TargetOwner,
}

// nestedKinds are the keys of nested objects whose "Id" is the ID of
// another kind than the answer's own.
var nestedKinds = map[string]string{
	"Server":   audit.TargetServer,
	"Session":  audit.TargetSession,
	"Template": audit.TargetTemplate,
}

// maxAuditTargets caps the targets of one record (a batch of 1,000 sessions
// names them all).
const maxAuditTargets = 2000

// walkIDs adds to rec the IDs in v, a decoded JSON value, down to a small
// depth: the values of idKeys, and those of "Id" as idKind ("" : ignored).
// other, when set, is told of every other string value with its lowercased
// key.
func walkIDs(rec *audit.Record, v any, idKind string, depth int, other func(key, v string)) {
	if depth > 4 || len(rec.Targets) >= maxAuditTargets {
		return
	}
	switch x := v.(type) {
	case []any:
		for _, e := range x {
			walkIDs(rec, e, idKind, depth+1, other)
		}
	case map[string]any:
		for k, e := range x {
			s, isStr := e.(string)
			if !isStr {
				// A nested object says what its "Id" is: a session's Server.
				kind := idKind
				if k, ok := nestedKinds[k]; ok {
					kind = k
				}
				walkIDs(rec, e, kind, depth+1, other)
				continue
			}
			lk := strings.ToLower(k)
			switch kind, ok := idKeys[lk]; {
			case ok:
				rec.AddTarget(kind, s)
			case lk == "id" && idKind != "":
				rec.AddTarget(idKind, s)
			case other != nil:
				other(lk, s)
			}
		}
	}
}

// describeAudit answers GET /berth/v1/audit: the audit log's records, for
// admins (isAuditAdmin), filtered by since, until, client, session and
// action, after a sequence number, at most limit.
func (s *Server) describeAudit(w http.ResponseWriter, r *http.Request) error {
	if s.AuditLog == nil {
		return &httpError{status: http.StatusNotFound, code: broker.CodeNotFound, msg: "audit: the audit log is not kept by this broker"}
	}
	if !s.isAuditAdmin(PrincipalFrom(r.Context())) {
		return &httpError{status: http.StatusForbidden, code: broker.CodeForbidden,
			msg: "audit: only the broker's own API clients (register-api-client) listed in audit-api-clients, if set, may read the audit log"}
	}
	q := r.URL.Query()
	f := audit.Filter{Actor: q.Get("client"), Session: q.Get("session"), Action: q.Get("action")}
	for _, p := range []struct {
		name string
		t    *time.Time
	}{{"since", &f.Since}, {"until", &f.Until}} {
		if v := q.Get(p.name); v != "" {
			t, err := time.Parse(time.RFC3339, v)
			if err != nil {
				return &httpError{status: http.StatusBadRequest, code: broker.CodeInvalidInput, msg: p.name + ": expected an RFC 3339 time, got " + strconv.Quote(truncateText(v, 64))}
			}
			*p.t = t
		}
	}
	for _, p := range []struct {
		name string
		n    *int64
		max  int64
	}{{"after", &f.AfterSeq, 1 << 62}, {"limit", new(int64), audit.MaxLimit}} {
		if v := q.Get(p.name); v != "" {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 || n > p.max {
				return &httpError{status: http.StatusBadRequest, code: broker.CodeInvalidInput, msg: fmt.Sprintf("%s: expected an integer from 0 to %d, got %q", p.name, p.max, truncateText(v, 64))}
			}
			*p.n = n
			if p.name == "limit" {
				f.Limit = int(n)
			}
		}
	}
	recs, err := s.AuditLog.ListAudit(r.Context(), f)
	if err != nil {
		return err
	}
	resp := api.DescribeAuditResponse{Records: make([]api.AuditRecord, len(recs))}
	for i, rec := range recs {
		resp.Records[i] = auditToAPI(rec)
	}
	limit := f.Limit
	if limit <= 0 {
		limit = audit.DefaultLimit
	}
	if len(recs) == min(limit, audit.MaxLimit) && len(recs) > 0 {
		resp.NextAfter = recs[len(recs)-1].Seq
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}

// isAuditAdmin reports whether p may read the audit log: anyone when
// authorization is off; otherwise a client of the broker's own
// authorization server (register-api-client: the clients that can already
// open and close servers and delete any session), and only those of
// AuditClients when it is not empty. Agents and external clients may not.
func (s *Server) isAuditAdmin(p *oauth.Principal) bool {
	if s.Verifier == nil {
		return true
	}
	if p == nil || p.Kind != oauth.KindAPI {
		return false
	}
	if len(s.AuditClients) == 0 {
		return true
	}
	for _, c := range s.AuditClients {
		if c == p.ClientID {
			return true
		}
	}
	return false
}

// auditToAPI converts a record to its wire form.
func auditToAPI(r audit.Record) api.AuditRecord {
	out := api.AuditRecord{Seq: r.Seq, Time: r.Time.UTC(), ActorKind: r.ActorKind, Actor: r.Actor, Action: r.Action,
		Source: r.Source, Result: r.Result, Status: r.Status, Error: r.Error, Detail: r.Detail, Broker: r.Broker,
		PrevHash: r.PrevHash, Hash: r.Hash, Targets: []api.AuditTarget{}}
	for _, t := range r.Targets {
		out.Targets = append(out.Targets, api.AuditTarget{Kind: t.Kind, Id: t.ID})
	}
	return out
}
