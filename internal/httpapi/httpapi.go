// Package httpapi is the REST transport of the Session Manager API: routes,
// request decoding with field-level errors, bearer-token authentication and the
// single mapping from broker errors to HTTP statuses. It converts between the
// public api wire types and the broker's domain types.
package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/oauth"
)

// MaxBodyBytes caps request bodies; larger bodies get 413.
const MaxBodyBytes = 1 << 20

// MaxBatchItems caps the items of one batch call.
const MaxBatchItems = 1000

// Verifier checks bearer access tokens. Implemented by *oauth.Authority.
type Verifier interface {
	VerifyAccessToken(ctx context.Context, token string) (*oauth.Principal, error)
}

// Pinger reports whether the store answers (for /health).
type Pinger interface {
	Ping(ctx context.Context) error
}

// RequestObserver is told how each API request ended, for metrics. It must be
// quick and safe for concurrent use.
type RequestObserver interface {
	// ObserveRequest records one request: operation is the API's name
	// (Operations), status the HTTP status answered, d the time taken.
	ObserveRequest(operation string, status int, d time.Duration)
}

// Operation names given to RequestObserver: the Session Manager APIs and the
// token endpoint.
const (
	OpDescribeSessions         = "DescribeSessions"
	OpDescribeServers          = "DescribeServers"
	OpCreateSessions           = "CreateSessions"
	OpDeleteSessions           = "DeleteSessions"
	OpUpdateSessionPermissions = "UpdateSessionPermissions"
	OpGetSessionConnectionData = "GetSessionConnectionData"
	OpGetSessionScreenshots    = "GetSessionScreenshots"
	OpOpenServers              = "OpenServers"
	OpCloseServers             = "CloseServers"
	OpToken                    = "Token"
)

// Operations lists every operation name RequestObserver receives, berth's
// own (templates.go) after Amazon's.
func Operations() []string {
	return append([]string{OpDescribeSessions, OpDescribeServers, OpCreateSessions, OpDeleteSessions, OpUpdateSessionPermissions,
		OpGetSessionConnectionData, OpGetSessionScreenshots, OpOpenServers, OpCloseServers, OpToken}, berthOperations()...)
}

// Server serves the client API.
type Server struct {
	Service *broker.Service
	// Verifier checks tokens; nil (enable-authorization = false) turns checks off.
	Verifier Verifier
	// TokenHandler serves /oauth2/token and JWKSHandler the key set; nil to not
	// serve them (enable-authorization-server = false).
	TokenHandler http.Handler
	JWKSHandler  http.Handler
	// Spec is served at /dcv-session-manager-api.yaml when not nil.
	Spec   []byte
	Health Pinger
	Logger *slog.Logger
	// Observer, when set, is told of every API and token request.
	Observer RequestObserver
	// Webhooks, when set, serves the webhook API (webhooks.go).
	Webhooks WebhookRegistry
	// Audit, when set, records every state-changing call (audit.go);
	// AuditLog serves GET /berth/v1/audit, to the API clients of
	// AuditClients when not empty (audit-api-clients).
	Audit        AuditRecorder
	AuditLog     AuditReader
	AuditClients []string

	serverCache serverJSON
}

type principalKey struct{}

// WithPrincipal returns ctx carrying the authenticated principal.
func WithPrincipal(ctx context.Context, p *oauth.Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// PrincipalFrom returns the principal of an authenticated request, or nil.
func PrincipalFrom(ctx context.Context) *oauth.Principal {
	p, _ := ctx.Value(principalKey{}).(*oauth.Principal)
	return p
}

// Handler returns the API's routes.
func (s *Server) Handler() http.Handler {
	if s.Logger == nil {
		s.Logger = slog.Default()
	}
	mux := http.NewServeMux()
	api := func(pattern, op string, h func(http.ResponseWriter, *http.Request) error) {
		mux.Handle(pattern, s.observe(op, s.authn(s.audit(pattern, op, s.wrap(h)))))
	}
	api("POST /describeSessions", OpDescribeSessions, s.describeSessions)
	api("POST /describeServers", OpDescribeServers, s.describeServers)
	api("POST /createSessions", OpCreateSessions, s.createSessions)
	api("POST /deleteSessions", OpDeleteSessions, s.deleteSessions)
	api("PUT /sessionPermissions", OpUpdateSessionPermissions, s.updatePermissions)
	api("GET /sessionConnectionData/{sessionId}/{user}", OpGetSessionConnectionData, s.connectionData)
	api("POST /getSessionScreenshots", OpGetSessionScreenshots, s.screenshots)
	api("POST /openServers", OpOpenServers, s.openServers)
	api("POST /closeServers", OpCloseServers, s.closeServers)
	s.berthRoutes(api) // templates.go: berth's own API under /berth/v1/
	if s.TokenHandler != nil {
		mux.Handle("/oauth2/token", s.observe(OpToken, s.TokenHandler))
	}
	if s.JWKSHandler != nil {
		mux.Handle("GET /.well-known/jwks.json", s.JWKSHandler)
	}
	mux.Handle("GET /health", HealthHandler(s.Health))
	if s.Spec != nil {
		mux.HandleFunc("GET /dcv-session-manager-api.yaml", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/yaml")
			_, _ = w.Write(s.Spec)
		})
	}
	mux.Handle("/", s.wrap(func(w http.ResponseWriter, r *http.Request) error {
		return &httpError{status: http.StatusNotFound, msg: fmt.Sprintf("no such API: %s %s", r.Method, r.URL.Path), code: "NO_SUCH_API"}
	}))
	return mux
}

// HealthHandler answers GET /health: 200 {"status":"ok"} when the store answers,
// 503 otherwise, for load balancers.
func HealthHandler(p Pinger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		if p != nil {
			if err := p.Ping(r.Context()); err != nil {
				w.WriteHeader(http.StatusServiceUnavailable)
				_, _ = io.WriteString(w, `{"status":"unhealthy","error":"the store does not answer"}`)
				return
			}
		}
		_, _ = io.WriteString(w, `{"status":"ok"}`)
	})
}

// observe tells the Observer, if any, how each request to h ended.
func (s *Server) observe(op string, h http.Handler) http.Handler {
	if s.Observer == nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		h.ServeHTTP(sw, r)
		s.Observer.ObserveRequest(op, sw.status, time.Since(start))
	})
}

// statusWriter remembers the status a handler answered.
type statusWriter struct {
	http.ResponseWriter
	status      int
	wroteHeader bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wroteHeader && code >= 200 {
		w.status, w.wroteHeader = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	w.wroteHeader = true
	return w.ResponseWriter.Write(p)
}

// Unwrap gives http.ResponseController the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// authn requires a valid bearer token when a Verifier is set.
func (s *Server) authn(next http.Handler) http.Handler {
	if s.Verifier == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, err := oauth.BearerToken(r)
		if err == nil {
			var p *oauth.Principal
			if p, err = s.Verifier.VerifyAccessToken(r.Context(), tok); err == nil {
				next.ServeHTTP(w, r.WithContext(WithPrincipal(r.Context(), p)))
				return
			}
		}
		msg := "No authorization header"
		var te *oauth.TokenError
		switch {
		case errors.Is(err, oauth.ErrNoAuthorization):
		case errors.As(err, &te):
			msg = "invalid token: " + te.Reason
			w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		default:
			msg = "invalid token"
			w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		}
		writeJSON(w, http.StatusUnauthorized, api.ErrorResponse{Error: msg, Code: "UNAUTHORIZED"})
	})
}

// httpError is a transport-level failure (bad body, unknown route).
type httpError struct {
	status int
	msg    string
	code   string
}

func (e *httpError) Error() string { return e.msg }

// statusOf is the single mapping from broker error codes to HTTP statuses.
// Session lookups answer 400, as the reference documents only 400 for them.
var statusOf = map[string]int{
	broker.CodeInvalidInput: http.StatusBadRequest,
	broker.CodeNotFound:     http.StatusBadRequest,
	broker.CodeNotReady:     http.StatusBadRequest,
	broker.CodeForbidden:    http.StatusBadRequest,
	broker.CodeUnavailable:  http.StatusServiceUnavailable,
	broker.CodeInternal:     http.StatusInternalServerError,
}

// wrap turns a handler that returns an error into an http.Handler.
func (s *Server) wrap(h func(http.ResponseWriter, *http.Request) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			s.Error(w, r, err)
		}
	})
}

// Error writes err as a JSON error response. Only internal errors are logged,
// and their text never reaches the client.
func (s *Server) Error(w http.ResponseWriter, r *http.Request, err error) {
	var he *httpError
	if errors.As(err, &he) {
		writeJSON(w, he.status, api.ErrorResponse{Error: he.msg, Code: he.code})
		return
	}
	code := broker.ErrorCode(err)
	status, ok := statusOf[code]
	if !ok {
		status = http.StatusInternalServerError
	}
	msg := err.Error()
	if status >= 500 {
		s.Logger.Error("api request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		msg = "internal error; the broker logged the cause"
		switch {
		case errors.Is(err, broker.ErrStoreUnavailable):
			msg = broker.ErrStoreUnavailable.Error() // not the driver's text: it names hosts
		case code == broker.CodeUnavailable:
			msg = err.Error()
		}
	}
	writeJSON(w, status, api.ErrorResponse{Error: msg, Code: code})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":"could not encode the response","code":"INTERNAL"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// decode reads a JSON body into v. optional allows an empty body.
func decode(w http.ResponseWriter, r *http.Request, v any, optional bool) error {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return &httpError{status: http.StatusRequestEntityTooLarge, code: "BODY_TOO_LARGE",
				msg: fmt.Sprintf("body: larger than %d bytes", MaxBodyBytes)}
		}
		return &httpError{status: http.StatusBadRequest, code: broker.CodeInvalidInput, msg: "body: could not be read"}
	}
	if len(strings.TrimSpace(string(body))) == 0 {
		if optional {
			return nil
		}
		return &httpError{status: http.StatusBadRequest, code: broker.CodeInvalidInput, msg: "body: is required"}
	}
	if err := json.Unmarshal(body, v); err != nil {
		return &httpError{status: http.StatusBadRequest, code: broker.CodeInvalidInput, msg: jsonErrorMessage(err)}
	}
	return nil
}

// jsonErrorMessage names the field and the problem of a decoding error.
func jsonErrorMessage(err error) string {
	var te *json.UnmarshalTypeError
	var se *json.SyntaxError
	switch {
	case errors.As(err, &te):
		field := te.Field
		if field == "" {
			field = "body"
		}
		return fmt.Sprintf("%s: expected %s, got JSON %s", field, jsonTypeName(te.Type.Kind().String()), te.Value)
	case errors.As(err, &se):
		return fmt.Sprintf("body: invalid JSON at byte %d: %v", se.Offset, err)
	default:
		return "body: invalid JSON: " + err.Error()
	}
}

func jsonTypeName(kind string) string {
	switch kind {
	case "slice", "array":
		return "an array"
	case "struct", "map":
		return "an object"
	case "int", "int64", "int32":
		return "an integer"
	case "bool":
		return "a boolean"
	case "ptr":
		return "a value"
	}
	return "a " + kind
}

// decodeBatch reads a bare JSON array of at most MaxBatchItems items.
func decodeBatch[T any](w http.ResponseWriter, r *http.Request) ([]T, error) {
	var items []T
	if err := decode(w, r, &items, false); err != nil {
		return nil, err
	}
	switch {
	case items == nil:
		return nil, &httpError{status: http.StatusBadRequest, code: broker.CodeInvalidInput, msg: "body: a JSON array of requests is required"}
	case len(items) > MaxBatchItems:
		return nil, &httpError{status: http.StatusBadRequest, code: broker.CodeInvalidInput, msg: fmt.Sprintf("body: at most %d items per request, got %d", MaxBatchItems, len(items))}
	}
	return items, nil
}
