package main

import (
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// fakeBroker is a small TLS server that speaks the broker's token endpoint and
// API with canned answers, for tests of option handling and output. The real
// broker is exercised by e2e_test.go.
type fakeBroker struct {
	*httptest.Server
	// CAFile is a PEM file that trusts the server.
	CAFile string

	mu sync.Mutex
	// answers maps an API path ("/describeSessions") to a function returning
	// the status and raw JSON body; paths without one answer 404.
	answers map[string]func(body []byte) (int, string)
	// requests records the API calls: path and body.
	requests []fakeRequest
	tokens   int
}

type fakeRequest struct {
	Method, Path string
	Body         string
	Query        string // the raw query, for berth's GET /berth/v1/ routes
}

const (
	fakeClientID     = "cli-id"
	fakeClientSecret = "cli-secret"
	fakeToken        = "tok-123"
)

// newFakeBroker starts a fake broker; it closes with the test.
func newFakeBroker(t *testing.T) *fakeBroker {
	t.Helper()
	fb := &fakeBroker{answers: map[string]func([]byte) (int, string){}}
	fb.Server = httptest.NewUnstartedServer(http.HandlerFunc(fb.serve))
	fb.Config.ErrorLog = log.New(io.Discard, "", 0)
	fb.StartTLS()
	t.Cleanup(fb.Close)
	fb.CAFile = filepath.Join(t.TempDir(), "ca.pem")
	block := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: fb.Certificate().Raw})
	if err := os.WriteFile(fb.CAFile, block, 0o600); err != nil {
		t.Fatal(err)
	}
	return fb
}

// answer sets a fixed answer for path.
func (fb *fakeBroker) answer(path string, status int, body string) {
	fb.answerFunc(path, func([]byte) (int, string) { return status, body })
}

func (fb *fakeBroker) answerFunc(path string, f func(body []byte) (int, string)) {
	fb.mu.Lock()
	defer fb.mu.Unlock()
	fb.answers[path] = f
}

// calls returns the recorded API requests.
func (fb *fakeBroker) calls() []fakeRequest {
	fb.mu.Lock()
	defer fb.mu.Unlock()
	return append([]fakeRequest(nil), fb.requests...)
}

func (fb *fakeBroker) serve(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	if r.URL.Path == "/oauth2/token" {
		id, secret, ok := r.BasicAuth()
		if !ok || id != fakeClientID || secret != fakeClientSecret || r.URL.Query().Get("grant_type") != "client_credentials" {
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `{"error":"invalid_client"}`)
			return
		}
		fb.mu.Lock()
		fb.tokens++
		fb.mu.Unlock()
		io.WriteString(w, `{"access_token":"`+fakeToken+`","token_type":"Bearer","expires_in":3600}`)
		return
	}
	known := map[string]bool{"/describeSessions": true, "/describeServers": true, "/createSessions": true, "/deleteSessions": true,
		"/sessionPermissions": true, "/getSessionScreenshots": true, "/openServers": true, "/closeServers": true}
	if !known[r.URL.Path] && !strings.HasPrefix(r.URL.Path, "/sessionConnectionData/") && !strings.HasPrefix(r.URL.Path, "/berth/v1/") {
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, `{"error":"no such API"}`)
		return
	}
	if r.Header.Get("Authorization") != "Bearer "+fakeToken {
		w.WriteHeader(http.StatusUnauthorized)
		io.WriteString(w, `{"error":"No authorization header"}`)
		return
	}
	body, _ := io.ReadAll(r.Body)
	path := r.URL.Path
	if strings.HasPrefix(path, "/sessionConnectionData/") {
		path = "/sessionConnectionData"
	}
	fb.mu.Lock()
	fb.requests = append(fb.requests, fakeRequest{Method: r.Method, Path: r.URL.Path, Body: string(body), Query: r.URL.RawQuery})
	f := fb.answers[path]
	fb.mu.Unlock()
	if f == nil {
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, `{"error":"no such API"}`)
		return
	}
	status, out := f(body)
	w.WriteHeader(status)
	io.WriteString(w, out)
}

// env returns an environment that points berth at the fake broker with valid
// credentials and no configuration file.
func (fb *fakeBroker) env(t *testing.T, extra ...string) []string {
	dir := t.TempDir()
	return append([]string{
		"HOME=" + dir, "XDG_CONFIG_HOME=" + dir,
		"BERTH_BROKER_URL=" + fb.URL, "BERTH_CA_BUNDLE=" + fb.CAFile,
		"BERTH_CLIENT_ID=" + fakeClientID, "BERTH_CLIENT_PASSWORD=" + fakeClientSecret,
	}, extra...)
}

// mustJSON encodes v.
func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// b64 encodes s in standard base64.
func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
