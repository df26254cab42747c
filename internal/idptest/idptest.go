// Package idptest runs a real external OAuth2 authorization server for tests:
// Ory Hydra v2, built from the pinned tools module tools/hydra (Binary caches
// the build), started with `hydra serve all` on loopback with an in-memory
// database, its public (issuer) endpoint on HTTPS with a certificate from a
// CA made for the test, its admin endpoint on plain HTTP. Tests register
// client-credentials clients with it, fetch RS256 JWT access tokens with or
// without an audience, restart it (a new signing key set: dsn memory makes
// new keys at each start) and stop it. StartOIDC runs it as an OpenID
// Connect provider for the authorization code flow (with PKCE), with a
// login page of this package that signs in test users with their groups.
// BERTH_TEST_IDP=off skips the tests that use it.
package idptest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Bounds of the waits.
const (
	readyTimeout = 60 * time.Second // exec → /health/ready and the JWKS answer
	stopTimeout  = 20 * time.Second // SIGTERM → exit, then SIGKILL
	callTimeout  = 15 * time.Second // one admin or token call
)

// Options change what Start runs.
type Options struct {
	// TokenTTL is the access tokens' lifetime (1 h).
	TokenTTL time.Duration
}

// Server is a running Hydra. Its fields do not change across Restart: the
// same ports, issuer and certificate.
type Server struct {
	// Issuer is the issuer URL, https://127.0.0.1:PORT/ (the "iss" of the
	// tokens is this URL).
	Issuer string
	// TokenURL is the token endpoint, Issuer + oauth2/token.
	TokenURL string
	// JWKSURL is the endpoint of the keys that sign the tokens, Issuer +
	// .well-known/jwks.json, what an API server registers.
	JWKSURL string
	// AdminURL is the admin API, http://127.0.0.1:PORT.
	AdminURL string
	// CAFile is the PEM certificate of the test CA that issued the public
	// endpoint's certificate (for 127.0.0.1 and localhost).
	CAFile string
	// HTTP trusts CAFile only.
	HTTP *http.Client
	// Dir holds the configuration, the certificate and the log.
	Dir string
	// Log is the path of Hydra's log (JSON lines, every start appended).
	Log string
	// StartTimes holds, for each start, the time from exec to ready.
	StartTimes []time.Duration

	bin, conf string
	proc      *exec.Cmd
	done      chan struct{}
}

// Client is a client registered with the server.
type Client struct {
	ID, Secret string
}

// Start builds Hydra if needed (see Binary), starts it on free loopback
// ports and waits until it is ready. It is stopped when tb ends; its log's
// end is logged if tb failed.
func Start(tb testing.TB, opts Options) *Server {
	tb.Helper()
	return start(tb, opts, nil)
}

// start is Start; configure, if not nil, may add to Hydra's configuration
// before it is written (StartOIDC's login and consent URLs).
func start(tb testing.TB, opts Options, configure func(s *Server, conf map[string]any)) *Server {
	tb.Helper()
	bin := Binary(tb)
	if opts.TokenTTL == 0 {
		opts.TokenTTL = time.Hour
	}
	s := &Server{Dir: tb.TempDir(), bin: bin}
	s.Log = filepath.Join(s.Dir, "hydra.log")
	s.conf = filepath.Join(s.Dir, "hydra.json")
	s.CAFile = filepath.Join(s.Dir, "ca.pem")
	certFile, keyFile := filepath.Join(s.Dir, "tls.pem"), filepath.Join(s.Dir, "tls.key")
	pool, err := writeCertificates(s.CAFile, certFile, keyFile)
	if err != nil {
		tb.Fatalf("idptest: %v", err)
	}
	s.HTTP = httpClient(pool)
	public, admin := freePort(tb), freePort(tb)
	s.Issuer = fmt.Sprintf("https://127.0.0.1:%d/", public)
	s.TokenURL = s.Issuer + "oauth2/token"
	s.JWKSURL = s.Issuer + ".well-known/jwks.json"
	s.AdminURL = fmt.Sprintf("http://127.0.0.1:%d", admin)
	secret := make([]byte, 24)
	rand.Read(secret)
	tls := map[string]any{"enabled": true, "cert": map[string]any{"path": certFile}, "key": map[string]any{"path": keyFile}}
	conf := map[string]any{
		"dsn": "memory",
		"serve": map[string]any{
			"public": map[string]any{"host": "127.0.0.1", "port": public, "tls": tls},
			"admin":  map[string]any{"host": "127.0.0.1", "port": admin},
		},
		"urls":       map[string]any{"self": map[string]any{"issuer": s.Issuer}},
		"secrets":    map[string]any{"system": []string{hex.EncodeToString(secret)}},
		"strategies": map[string]any{"access_token": "jwt"},
		"ttl":        map[string]any{"access_token": opts.TokenTTL.String()},
		"log":        map[string]any{"level": "info", "format": "json"},
	}
	if configure != nil {
		configure(s, conf)
	}
	b, err := json.MarshalIndent(conf, "", "  ")
	if err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(s.conf, b, 0o600); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if tb.Failed() {
			tb.Logf("idptest: last lines of Hydra's log %s:\n%s", s.Log, tail(s.Log, 30))
		}
	})
	tb.Cleanup(func() { s.Stop(tb) })
	s.start(tb)
	return s
}

// start runs `hydra serve all` and waits until both endpoints answer.
func (s *Server) start(tb testing.TB) {
	tb.Helper()
	f, err := os.OpenFile(s.Log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	// --sqa-opt-out: no telemetry (it would try to reach the internet). No
	// --dev: the issuer is HTTPS, as in production.
	cmd := exec.Command(s.bin, "serve", "all", "--sqa-opt-out", "-c", s.conf)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	begin := time.Now()
	if err := cmd.Start(); err != nil {
		tb.Fatalf("idptest: start Hydra: %v", err)
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		close(done)
	}()
	s.proc, s.done = cmd, done
	deadline := begin.Add(readyTimeout)
	for wait := time.Millisecond; ; wait = min(2*wait, 50*time.Millisecond) {
		select {
		case <-done:
			tb.Fatalf("idptest: Hydra exited at start (%v):\n%s", cmd.ProcessState, tail(s.Log, 30))
		default:
		}
		err := s.ready()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			tb.Fatalf("idptest: Hydra not ready within %s: %v\n%s", readyTimeout, err, tail(s.Log, 30))
		}
		time.Sleep(wait)
	}
	took := time.Since(begin)
	s.StartTimes = append(s.StartTimes, took)
	tb.Logf("idptest: Hydra ready in %s (issuer %s, admin %s)", took.Round(time.Millisecond), s.Issuer, s.AdminURL)
}

// readyRequestTimeout bounds one readiness request. Hydra generates its
// signing keys on the first JWKS request, inside a transaction that a
// cancelled request rolls back; on a loaded machine that takes seconds, and
// a short timeout would cancel every attempt and restart the generation.
const readyRequestTimeout = 30 * time.Second

// ready checks the admin health endpoint and the public JWKS (over TLS).
func (s *Server) ready() error {
	ctx, cancel := context.WithTimeout(context.Background(), readyRequestTimeout)
	defer cancel()
	for _, u := range []string{s.AdminURL + "/health/ready", s.JWKSURL} {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return err
		}
		resp, err := s.HTTP.Do(req)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s", u, resp.Status)
		}
	}
	return nil
}

// Running says whether the Hydra process is running.
func (s *Server) Running() bool {
	if s.done == nil {
		return false
	}
	select {
	case <-s.done:
		return false
	default:
		return true
	}
}

// Stop ends Hydra with SIGTERM (SIGKILL after 20 s) and waits for it. Its
// ports are then closed: an API server that fetches the JWKS gets connection
// refused.
func (s *Server) Stop(tb testing.TB) {
	tb.Helper()
	if !s.Running() {
		return
	}
	syscall.Kill(-s.proc.Process.Pid, syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(stopTimeout):
		tb.Errorf("idptest: Hydra did not stop within %s of SIGTERM; killing it", stopTimeout)
		syscall.Kill(-s.proc.Process.Pid, syscall.SIGKILL)
		<-s.done
	}
}

// Restart stops Hydra and starts it again on the same ports with the same
// configuration. Its database is in memory: the restarted server has new
// signing keys (new kids) and no clients.
func (s *Server) Restart(tb testing.TB) {
	tb.Helper()
	s.Stop(tb)
	s.start(tb)
}

// RegisterClient registers a confidential client for the client credentials
// grant (client_secret_basic) that may ask for the given audiences, and
// returns its credentials.
func (s *Server) RegisterClient(tb testing.TB, audience ...string) Client {
	tb.Helper()
	if audience == nil {
		audience = []string{}
	}
	body, err := json.Marshal(map[string]any{
		"client_name":                "berth-test",
		"grant_types":                []string{"client_credentials"},
		"response_types":             []string{"token"},
		"audience":                   audience,
		"token_endpoint_auth_method": "client_secret_basic",
	})
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.AdminURL+"/admin/clients", bytes.NewReader(body))
	if err != nil {
		tb.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	var out struct {
		ID     string `json:"client_id"`
		Secret string `json:"client_secret"`
	}
	if err := s.do(req, http.StatusCreated, &out); err != nil {
		tb.Fatalf("idptest: register a client: %v", err)
	}
	if out.ID == "" || out.Secret == "" {
		tb.Fatalf("idptest: register a client: the answer holds no client_id or client_secret")
	}
	return Client{ID: out.ID, Secret: out.Secret}
}

// Token fetches an access token for c with the client credentials grant
// (client_secret_basic, grant_type and audience in the form body) and fails
// tb if Hydra refuses. No audience gives a token whose "aud" is empty.
func (s *Server) Token(tb testing.TB, c Client, audience ...string) string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	tok, err := s.FetchToken(ctx, c, audience...)
	if err != nil {
		tb.Fatalf("idptest: %v", err)
	}
	return tok
}

// FetchToken is Token that returns Hydra's refusal as an error.
func (s *Server) FetchToken(ctx context.Context, c Client, audience ...string) (string, error) {
	form := url.Values{"grant_type": {"client_credentials"}}
	if len(audience) > 0 {
		form.Set("audience", strings.Join(audience, " "))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.TokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		return "", err
	}
	req.SetBasicAuth(url.QueryEscape(c.ID), url.QueryEscape(c.Secret))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	var out struct {
		AccessToken string `json:"access_token"`
	}
	if err := s.do(req, http.StatusOK, &out); err != nil {
		return "", fmt.Errorf("token for client %s (audience %q): %w", c.ID, audience, err)
	}
	if out.AccessToken == "" {
		return "", fmt.Errorf("token for client %s: the answer holds no access_token", c.ID)
	}
	return out.AccessToken, nil
}

// KeyIDs returns the kids of the keys the server publishes at JWKSURL.
func (s *Server) KeyIDs(tb testing.TB) []string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.JWKSURL, nil)
	if err != nil {
		tb.Fatal(err)
	}
	var set struct {
		Keys []struct {
			Kid string `json:"kid"`
		} `json:"keys"`
	}
	if err := s.do(req, http.StatusOK, &set); err != nil {
		tb.Fatalf("idptest: get the JWKS: %v", err)
	}
	var kids []string
	for _, k := range set.Keys {
		kids = append(kids, k.Kid)
	}
	return kids
}

// userAgent marks the requests of this package in Hydra's request log, so
// that JWKSRequests counts only the others.
const userAgent = "berth-idptest"

// JWKSRequests counts the GET requests for the JWKS that Hydra has answered
// since its first start, from its request log, leaving out this package's
// own (the readiness check, KeyIDs): how often API servers fetched its keys.
func (s *Server) JWKSRequests(tb testing.TB) int {
	tb.Helper()
	f, err := os.Open(s.Log)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	path := "/.well-known/jwks.json"
	n := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		var rec struct {
			Msg     string `json:"msg"`
			Request struct {
				Method  string `json:"method"`
				Path    string `json:"path"`
				Headers struct {
					UserAgent string `json:"user-agent"`
				} `json:"headers"`
			} `json:"http_request"`
		}
		if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Msg == "completed handling request" &&
			rec.Request.Method == http.MethodGet && rec.Request.Path == path && rec.Request.Headers.UserAgent != userAgent {
			n++
		}
	}
	return n
}

// do sends req and decodes a JSON answer with status want into out.
func (s *Server) do(req *http.Request, want int, out any) error {
	resp, err := s.HTTP.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != want {
		return fmt.Errorf("%s %s: %s: %s", req.Method, req.URL.Path, resp.Status, strings.TrimSpace(string(body)))
	}
	return json.Unmarshal(body, out)
}

// KeyID returns the "kid" of a JWT's header ("" if it has none or is not a
// JWT).
func KeyID(token string) string {
	head, _, ok := strings.Cut(token, ".")
	if !ok {
		return ""
	}
	b, err := base64.RawURLEncoding.DecodeString(head)
	if err != nil {
		return ""
	}
	var h struct {
		Kid string `json:"kid"`
	}
	json.Unmarshal(b, &h)
	return h.Kid
}

// Claims returns a JWT's claims, undecoded and unverified (nil if it is not
// a JWT).
func Claims(token string) map[string]any {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil
	}
	var c map[string]any
	if json.Unmarshal(b, &c) != nil {
		return nil
	}
	return c
}

// freePort returns a TCP port that was free on 127.0.0.1 a moment ago.
func freePort(tb testing.TB) int {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
