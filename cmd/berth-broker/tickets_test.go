package main

import (
	"crypto/tls"
	"io"
	"net/http"
	"path/filepath"
	"testing"

	"github.com/berth-dev/berth/internal/pki"
)

// TestBroker_TLSResumesAcrossRestart restarts the broker and checks that a
// client (as an agent relinking) resumes the TLS session it had with the
// broker before, on the agent and the client connector: the session ticket
// keys derive from a secret kept in the store.
func TestBroker_TLSResumesAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	b := MustRunMain(t, dir, nil)
	pool, err := pki.LoadPool(filepath.Join(dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	cache := tls.NewLRUClientSessionCache(8)
	// get asks addr for /health on a new connection and returns whether its
	// TLS session was resumed.
	get := func(addr string) bool {
		t.Helper()
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", ClientSessionCache: cache}}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr}).Get("https://" + addr + "/health")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.TLS == nil {
			t.Fatal("no TLS state")
		}
		return resp.TLS.DidResume
	}
	for _, addr := range []string{b.AgentAddr(), b.ClientAddr()} {
		get(addr)
	}
	b.Close()

	b2 := MustRunMain(t, dir, nil)
	for name, addr := range map[string]string{"agent": b2.AgentAddr(), "client": b2.ClientAddr()} {
		if !get(addr) {
			t.Errorf("%s connector: the TLS session was not resumed after the restart", name)
		}
	}
}
