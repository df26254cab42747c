package oauth

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/logattr"
)

const (
	// maxAuthorizationLen bounds the Authorization header BearerToken accepts.
	maxAuthorizationLen = 8 << 10
	// maxBodyLen bounds request bodies of the token and registration endpoints.
	maxBodyLen = 64 << 10
)

// ErrNoAuthorization means a request carries no Authorization header.
var ErrNoAuthorization = errors.New("no authorization header")

// BearerToken returns the token of an "Authorization: Bearer <token>" header
// (RFC 6750 section 2.1; the scheme is case-insensitive). It returns
// ErrNoAuthorization if the request has no Authorization header, and a
// *TokenError if the header is longer than 8 KiB, repeated, of another scheme
// or malformed.
func BearerToken(r *http.Request) (string, error) {
	values := r.Header.Values("Authorization")
	if len(values) == 0 {
		return "", ErrNoAuthorization
	}
	if len(values) > 1 {
		return "", tokenError(reasonMalformedHeader)
	}
	h := values[0]
	if len(h) > maxAuthorizationLen {
		return "", tokenError(reasonHeaderTooLarge)
	}
	h = strings.Trim(h, " \t")
	scheme, token, ok := strings.Cut(h, " ")
	if !strings.EqualFold(scheme, "Bearer") {
		if scheme == "" || strings.ContainsAny(scheme, "\t\r\n") {
			return "", tokenError(reasonMalformedHeader)
		}
		return "", tokenError(reasonScheme)
	}
	token = strings.TrimLeft(token, " ")
	if !ok || !isB64Token(token) {
		return "", tokenError(reasonMalformedHeader)
	}
	return token, nil
}

// isB64Token reports whether s matches RFC 6750's
// b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"=".
func isB64Token(s string) bool {
	body := strings.TrimRight(s, "=")
	if body == "" {
		return false
	}
	for i := 0; i < len(body); i++ {
		c := body[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '-', c == '.', c == '_', c == '~', c == '+', c == '/':
		default:
			return false
		}
	}
	return true
}

// oauthError is an RFC 6749 section 5.2 (and RFC 7591 section 3.2.2) error body.
type oauthError struct {
	Error       string `json:"error"`
	Description string `json:"error_description,omitempty"`
}

// tokenResponse is an RFC 6749 section 5.1 success body.
type tokenResponse struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int64  `json:"expires_in"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v) // the client may be gone; nothing to do then
}

func writeOAuthError(w http.ResponseWriter, status int, code, description string) {
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Basic realm="berth"`)
	}
	writeJSON(w, status, oauthError{Error: code, Description: description})
}

func methodNotAllowed(w http.ResponseWriter, allow string) {
	w.Header().Set("Allow", allow)
	writeOAuthError(w, http.StatusMethodNotAllowed, "invalid_request", "method not allowed")
}

// TokenHandler serves the token endpoint, POST /oauth2/token, for the client
// credentials grant (RFC 6749 section 4.4), as the AWS broker does:
//
//   - grant_type=client_credentials comes from the query string or from an
//     application/x-www-form-urlencoded body (both may carry it if they agree);
//   - the client authenticates with HTTP Basic, or with client_id and
//     client_secret fields in the body (never in the query string), not both;
//   - only KindAPI clients get tokens here.
//
// It answers 200 {"access_token","token_type":"Bearer","expires_in"}, or an
// RFC 6749 error: 400 unsupported_grant_type or invalid_request, 401
// invalid_client (with WWW-Authenticate: Basic), 405 for a method other than
// POST, 500 server_error. Bodies over 64 KiB are refused. Responses carry
// Cache-Control: no-store.
func (a *Authority) TokenHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("Pragma", "no-cache")
		if r.Method != http.MethodPost {
			methodNotAllowed(w, http.MethodPost)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxBodyLen)
		if err := r.ParseForm(); err != nil {
			desc := "malformed request"
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				desc = "request body too large"
			}
			a.refused(TokenRequest, RefusedInvalidRequest)
			writeOAuthError(w, http.StatusBadRequest, "invalid_request", desc)
			return
		}
		grants := r.Form["grant_type"]
		switch {
		case len(grants) == 0 || grants[0] == "":
			a.refused(TokenRequest, RefusedInvalidRequest)
			writeOAuthError(w, http.StatusBadRequest, "invalid_request", "missing grant_type")
			return
		case !allEqual(grants):
			a.refused(TokenRequest, RefusedInvalidRequest)
			writeOAuthError(w, http.StatusBadRequest, "invalid_request", "conflicting grant_type parameters")
			return
		case grants[0] != "client_credentials":
			a.refused(TokenRequest, RefusedUnsupportedType)
			writeOAuthError(w, http.StatusBadRequest, "unsupported_grant_type", "")
			return
		}
		id, secret, desc := clientCredentials(r)
		if desc != "" {
			a.refused(TokenRequest, RefusedInvalidRequest)
			writeOAuthError(w, http.StatusBadRequest, "invalid_request", desc)
			return
		}
		ctx := r.Context()
		c, err := a.Authenticate(ctx, KindAPI, id, secret)
		if errors.Is(err, ErrInvalidClient) {
			a.logger().InfoContext(ctx, "token request refused: client authentication failed", logattr.ClientID, truncate(id, 64))
			a.refused(TokenRequest, RefusedInvalidClient)
			writeOAuthError(w, http.StatusUnauthorized, "invalid_client", "")
			return
		}
		if err != nil {
			a.logger().ErrorContext(ctx, "token request failed", "err", err)
			a.refused(TokenRequest, RefusedServerError)
			writeOAuthError(w, http.StatusInternalServerError, "server_error", "")
			return
		}
		token, ttl, err := a.IssueAccessToken(ctx, c)
		if err != nil {
			a.logger().ErrorContext(ctx, "token request failed", logattr.ClientID, c.ID, "err", err)
			a.refused(TokenRequest, RefusedServerError)
			writeOAuthError(w, http.StatusInternalServerError, "server_error", "")
			return
		}
		a.logger().DebugContext(ctx, "access token issued", logattr.ClientID, c.ID)
		writeJSON(w, http.StatusOK, tokenResponse{AccessToken: token, TokenType: "Bearer", ExpiresIn: int64(ttl / time.Second)})
	})
}

// clientCredentials returns the client ID and secret of a token request, or a
// description of why the request is malformed. Missing credentials are not
// malformed: Authenticate refuses them.
func clientCredentials(r *http.Request) (id, secret, problem string) {
	formIDs, formSecrets := r.PostForm["client_id"], r.PostForm["client_secret"]
	if len(formIDs) > 1 || len(formSecrets) > 1 {
		return "", "", "repeated client credentials"
	}
	basicID, basicSecret, basic := r.BasicAuth()
	if r.Header.Get("Authorization") != "" && !basic {
		return "", "", "unsupported authorization header"
	}
	if basic {
		if len(formSecrets) > 0 {
			return "", "", "more than one client authentication method"
		}
		if len(formIDs) > 0 && formIDs[0] != basicID {
			return "", "", "client_id does not match the authorization header"
		}
		return basicID, basicSecret, ""
	}
	if len(formIDs) == 1 {
		id = formIDs[0]
	}
	if len(formSecrets) == 1 {
		secret = formSecrets[0]
	}
	return id, secret, ""
}

func allEqual(v []string) bool {
	for _, s := range v[1:] {
		if s != v[0] {
			return false
		}
	}
	return true
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// JWKSHandler serves the public signing keys as a JSON Web Key Set (see JWKS)
// to GET and HEAD requests.
func (a *Authority) JWKSHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			methodNotAllowed(w, "GET, HEAD")
			return
		}
		body, err := a.JWKS(r.Context())
		if err != nil {
			a.logger().ErrorContext(r.Context(), "serve jwks", "err", err)
			writeOAuthError(w, http.StatusInternalServerError, "server_error", "")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(http.StatusOK)
		if r.Method == http.MethodGet {
			w.Write(body)
		}
	})
}

// registerRequest is the body of an agent registration request: RFC 7591
// client metadata, of which only these fields are used, and the server ID
// the agent will link as (see RegisterAgentServer).
type registerRequest struct {
	SoftwareStatement string `json:"software_statement"`
	ClientName        string `json:"client_name"`
	ServerID          string `json:"server_id"`
}

// registerResponse is an RFC 7591 section 3.2.1 client information response.
type registerResponse struct {
	ClientID              string `json:"client_id"`
	ClientSecret          string `json:"client_secret"`
	ClientIDIssuedAt      int64  `json:"client_id_issued_at"`
	ClientSecretExpiresAt int64  `json:"client_secret_expires_at"` // 0: never
}

// RegisterAgentHandler serves agent registration (the broker mounts it on the
// agent port at /agent/register): POST with a JSON body
// {"software_statement": "...", "client_name": "...", "server_id": "..."}
// (server_id optional) answers
// 201 {"client_id","client_secret","client_id_issued_at","client_secret_expires_at":0};
// an agent that registers again for the same server_id before it ever
// linked gets the same client_id with a new secret (RegisterAgentServer).
// Errors are RFC 7591 ones: 400 invalid_software_statement for an unknown or
// deactivated statement (and, with an error_description saying so, for an
// expired or used-up one), 400 invalid_client_metadata for a body that is not
// such a JSON object (or exceeds 64 KiB) or a server_id of over 256 bytes or
// with control characters, 405 for other methods, 500
// server_error; past a limit of Registrations, 429 temporarily_unavailable
// with Retry-After; with Registrations.Concurrent registrations under way,
// 503 temporarily_unavailable with Retry-After at once (admission control:
// a storm of agents is told to come back instead of queueing until its
// requests time out). No answer or log line holds the statement.
func (a *Authority) RegisterAgentHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		if r.Method != http.MethodPost {
			methodNotAllowed(w, http.MethodPost)
			return
		}
		a.limOnce.Do(func() { a.limiter = newRegistrationLimiter(a.Registrations) })
		release, ok := a.limiter.admit()
		if !ok {
			secs := int64(registrationRetryAfter / time.Second)
			if n := a.limiter.shedLogDue(a.now()); n > 0 {
				a.logger().WarnContext(r.Context(), "agent registrations shed: too many at once; answered 503 with Retry-After (logged at most once a minute)",
					"shed", n, "concurrent", cap(a.limiter.slots), "retry_after_s", secs)
			}
			w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
			writeOAuthError(w, http.StatusServiceUnavailable, "temporarily_unavailable",
				fmt.Sprintf("too many agent registrations at once; retry in %d s", secs))
			return
		}
		defer release()
		if ok, wait := a.limiter.allow(r.RemoteAddr, a.now()); !ok {
			secs := int64((wait + time.Second - 1) / time.Second)
			a.logger().WarnContext(r.Context(), "agent registration refused: rate limit", logattr.Remote, r.RemoteAddr, "retry_after_s", secs)
			w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
			writeOAuthError(w, http.StatusTooManyRequests, "temporarily_unavailable",
				fmt.Sprintf("too many agent registrations; retry in %d s", secs))
			return
		}
		var req registerRequest
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBodyLen))
		if err := dec.Decode(&req); err != nil {
			writeOAuthError(w, http.StatusBadRequest, "invalid_client_metadata", "body is not a json object")
			return
		}
		if _, err := dec.Token(); err != io.EOF {
			writeOAuthError(w, http.StatusBadRequest, "invalid_client_metadata", "trailing data after json object")
			return
		}
		ctx := r.Context()
		id, secret, err := a.registerAgent(ctx, req.SoftwareStatement, req.ClientName, req.ServerID, r.RemoteAddr)
		switch {
		case errors.Is(err, ErrStatementExpired):
			writeOAuthError(w, http.StatusBadRequest, "invalid_software_statement", "software_statement has expired")
			return
		case errors.Is(err, ErrStatementUsedUp):
			writeOAuthError(w, http.StatusBadRequest, "invalid_software_statement", "software_statement has registered its maximum number of agents")
			return
		case errors.Is(err, ErrInvalidStatement):
			writeOAuthError(w, http.StatusBadRequest, "invalid_software_statement", "")
			return
		case errors.Is(err, errInvalidName):
			writeOAuthError(w, http.StatusBadRequest, "invalid_client_metadata", "invalid client_name")
			return
		case errors.Is(err, errInvalidServerID):
			writeOAuthError(w, http.StatusBadRequest, "invalid_client_metadata", "invalid server_id: at most 256 bytes of UTF-8 without control characters")
			return
		case err != nil:
			a.logger().ErrorContext(ctx, "agent registration failed", "err", err)
			writeOAuthError(w, http.StatusInternalServerError, "server_error", "")
			return
		}
		writeJSON(w, http.StatusCreated, registerResponse{
			ClientID:         id,
			ClientSecret:     secret,
			ClientIDIssuedAt: a.now().Unix(),
		})
	})
}
