package listencert

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/pki"
	"github.com/berth-dev/berth/internal/poll"
)

// logBuffer collects log lines for assertions.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) count(s string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Count(b.buf.String(), s)
}

func newCA(t *testing.T) *pki.CA {
	t.Helper()
	ca, err := pki.LoadOrCreateCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func newManager(t *testing.T, ca *pki.CA, validity time.Duration) (*Manager, string, *logBuffer) {
	t.Helper()
	dir := t.TempDir()
	logs := &logBuffer{}
	m := New(Config{Dir: dir, CA: ca, Names: func() []string { return []string{"broker.example", "127.0.0.1"} },
		Validity: validity, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	return m, dir, logs
}

// served returns the certificate a TLS handshake with ServerTLS(h) presents,
// verified against ca for name.
func served(t *testing.T, h *pki.Holder, ca *pki.CA, name string) *x509.Certificate {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", ServerTLS(h))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			_ = c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: roots, ServerName: name})
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	defer c.Close()
	if v := c.ConnectionState().Version; v < tls.VersionTLS12 {
		t.Errorf("TLS version %x", v)
	}
	return c.ConnectionState().PeerCertificates[0]
}

// TestManager_Issued: the listeners without files share one certificate from
// the CA, for the configured names, kept in the directory and taken again by
// the next start while it is good.
func TestManager_Issued(t *testing.T) {
	ca := newCA(t)
	m, dir, _ := newManager(t, ca, time.Hour)
	a, err := m.Holder("client", "", "")
	if err != nil {
		t.Fatal(err)
	}
	b, err := m.Holder("agent", "", "")
	if err != nil {
		t.Fatal(err)
	}
	if a != b {
		t.Fatal("two listeners without files got different holders")
	}
	leaf := served(t, a, ca, "broker.example")
	if left := time.Until(leaf.NotAfter); left > time.Hour || left < 59*time.Minute {
		t.Errorf("issued for another %v, want 1h", left)
	}
	if _, err := tls.LoadX509KeyPair(filepath.Join(dir, IssuedName+".pem"), filepath.Join(dir, IssuedName+".key")); err != nil {
		t.Fatalf("the issued certificate is not kept in the directory: %v", err)
	}
	exp := m.Expiry()
	if len(exp) != 2 || !exp["client"].Equal(leaf.NotAfter) || !exp["agent"].Equal(leaf.NotAfter) {
		t.Errorf("Expiry = %v, want client and agent at %v", exp, leaf.NotAfter)
	}

	// A restart takes the certificate on disk.
	again := New(Config{Dir: dir, CA: ca, Names: m.Names, Validity: time.Hour})
	h, err := again.Holder("client", "", "")
	if err != nil {
		t.Fatal(err)
	}
	if !h.Leaf().Equal(leaf) {
		t.Error("a second manager on the same directory issued another certificate")
	}
}

// TestManager_Renewal: Check leaves the issued certificate alone before its
// renewal time and replaces it, on disk and in the holder, after; a failed
// renewal keeps the current certificate and is tried again.
func TestManager_Renewal(t *testing.T) {
	ca := newCA(t)
	m, dir, logs := newManager(t, ca, 3*time.Second)
	h, err := m.Holder("client", "", "")
	if err != nil {
		t.Fatal(err)
	}
	first := h.Leaf()
	m.Check(time.Now())
	if !h.Leaf().Equal(first) {
		t.Fatal("renewed before the renewal time")
	}

	// Wait (in real time: the CA checks it) for the renewal time.
	renewAt := pki.RenewTime(first)
	poll.Until(t, 10*time.Second, "the renewal time", func() bool { return !time.Now().Before(renewAt) })

	// The certificate file cannot be written: the renewal fails and the
	// holder keeps the first.
	pem := filepath.Join(dir, IssuedName+".pem")
	if err := os.Remove(pem); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(pem, 0o700); err != nil {
		t.Fatal(err)
	}
	m.Check(time.Now())
	if !h.Leaf().Equal(first) || logs.count("renew the broker's certificate; trying again") != 1 {
		t.Fatalf("after a failed renewal: serial %v (first %v), logs %q", h.Leaf().SerialNumber, first.SerialNumber, logs.buf.String())
	}

	if err := os.Remove(pem); err != nil {
		t.Fatal(err)
	}
	m.Check(time.Now())
	renewed := served(t, h, ca, "127.0.0.1")
	if renewed.Equal(first) || !renewed.NotAfter.After(first.NotAfter) {
		t.Fatalf("not renewed: expires %v, the first %v", renewed.NotAfter, first.NotAfter)
	}
	onDisk, err := tls.LoadX509KeyPair(pem, filepath.Join(dir, IssuedName+".key"))
	if err != nil || !onDisk.Leaf.Equal(renewed) {
		t.Fatalf("the renewed certificate is not the one on disk: %v", err)
	}
	if got := m.Expiry()["client"]; !got.Equal(renewed.NotAfter) {
		t.Errorf("Expiry = %v, want %v", got, renewed.NotAfter)
	}
	if logs.count("renewed the broker's certificate") != 1 {
		t.Errorf("logs: %q", logs.buf.String())
	}
}

// TestManager_FilesReloaded: a listener with files serves them; a pair
// replaced half (the certificate, not yet its key) is not taken and its
// error is logged once; the whole new pair is.
func TestManager_FilesReloaded(t *testing.T) {
	ca := newCA(t)
	m, _, logs := newManager(t, ca, time.Hour)
	fileDir := t.TempDir()
	certFile, keyFile := filepath.Join(fileDir, "client.pem"), filepath.Join(fileDir, "client.key")
	issue := func() ([]byte, []byte) {
		certPEM, keyPEM, err := ca.Issue([]string{"files.example"}, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return certPEM, keyPEM
	}
	write := func(f string, data []byte) {
		t.Helper()
		if err := os.WriteFile(f+".tmp", data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(f+".tmp", f); err != nil {
			t.Fatal(err)
		}
	}
	cert1, key1 := issue()
	write(certFile, cert1)
	write(keyFile, key1)
	h, err := m.Holder("client", certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	first := served(t, h, ca, "files.example")

	cert2, key2 := issue()
	write(certFile, cert2)
	for range 3 {
		m.Check(time.Now())
	}
	if !h.Leaf().Equal(first) {
		t.Fatal("took a certificate whose key was not yet replaced")
	}
	if n := logs.count("reload a changed certificate; keeping the current one"); n != 1 {
		t.Errorf("the half-replaced pair was logged %d times over 3 checks, want once", n)
	}

	write(keyFile, key2)
	m.Check(time.Now())
	second := served(t, h, ca, "files.example")
	if second.Equal(first) {
		t.Fatal("the replaced pair was not taken")
	}
	if !m.Expiry()["client"].Equal(second.NotAfter) {
		t.Errorf("Expiry = %v", m.Expiry())
	}
	if logs.count("reloaded a changed certificate") != 1 {
		t.Errorf("logs: %q", logs.buf.String())
	}

	// The listeners without files are not affected.
	own, err := m.Holder("agent", "", "")
	if err != nil {
		t.Fatal(err)
	}
	if own == h || own.Leaf().Equal(second) {
		t.Error("a listener without files serves the configured certificate")
	}
}

// TestManager_BadFiles: files that do not make a pair are refused at start.
func TestManager_BadFiles(t *testing.T) {
	ca := newCA(t)
	m, _, _ := newManager(t, ca, time.Hour)
	dir := t.TempDir()
	cert1, _, err := ca.Issue([]string{"a.example"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	_, key2, err := ca.Issue([]string{"a.example"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, "c.pem"), filepath.Join(dir, "c.key")
	for f, data := range map[string][]byte{certFile: cert1, keyFile: key2} {
		if err := os.WriteFile(f, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct{ name, cert, key string }{
		{"key of another certificate", certFile, keyFile},
		{"missing key", certFile, filepath.Join(dir, "none.key")},
	} {
		if _, err := m.Holder("client", tc.cert, tc.key); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
	if len(m.Expiry()) != 0 {
		t.Errorf("refused listeners in Expiry: %v", m.Expiry())
	}
}
