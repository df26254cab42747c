package pki_test

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/pki"
)

// MustCA creates a CA in a temporary directory and returns it with the directory.
func MustCA(tb testing.TB) (*pki.CA, string) {
	tb.Helper()
	dir := filepath.Join(tb.TempDir(), "pki")
	ca, err := pki.LoadOrCreateCA(dir)
	if err != nil {
		tb.Fatalf("LoadOrCreateCA: %v", err)
	}
	return ca, dir
}

func TestLoadOrCreateCA_Reload(t *testing.T) {
	ca, dir := MustCA(t)
	if !ca.Cert.IsCA {
		t.Fatal("CA certificate is not a CA")
	}
	if got := ca.Cert.NotAfter.Sub(ca.Cert.NotBefore); got < 9*365*24*time.Hour {
		t.Errorf("CA validity = %v, want about 10 years", got)
	}
	if ca.Cert.PublicKeyAlgorithm != x509.ECDSA {
		t.Errorf("CA key algorithm = %v, want ECDSA", ca.Cert.PublicKeyAlgorithm)
	}
	again, err := pki.LoadOrCreateCA(dir)
	if err != nil {
		t.Fatalf("reload: %v", err)
	}
	if !again.Cert.Equal(ca.Cert) {
		t.Error("reloaded CA certificate differs from the created one")
	}
	if string(again.CertPEM) != string(ca.CertPEM) {
		t.Error("reloaded CertPEM differs")
	}
}

func TestLoadOrCreateCA_FileModes(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("unix permissions")
	}
	_, dir := MustCA(t)
	tests := []struct {
		path string
		want os.FileMode
	}{
		{dir, 0o700 | os.ModeDir},
		{filepath.Join(dir, "ca.key"), 0o600},
		{filepath.Join(dir, "ca.pem"), 0o644},
	}
	for _, tt := range tests {
		fi, err := os.Stat(tt.path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != tt.want {
			t.Errorf("mode of %s = %v, want %v", filepath.Base(tt.path), fi.Mode(), tt.want)
		}
	}
}

func TestLoadOrCreateCA_Broken(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, dir string)
	}{
		{"only key", func(t *testing.T, dir string) { mustRemove(t, filepath.Join(dir, "ca.pem")) }},
		{"only cert", func(t *testing.T, dir string) { mustRemove(t, filepath.Join(dir, "ca.key")) }},
		{"garbage cert", func(t *testing.T, dir string) { mustWrite(t, filepath.Join(dir, "ca.pem"), "junk") }},
		{"mismatched key", func(t *testing.T, dir string) {
			_, other := MustCA(t)
			data, err := os.ReadFile(filepath.Join(other, "ca.key"))
			if err != nil {
				t.Fatal(err)
			}
			mustWrite(t, filepath.Join(dir, "ca.key"), string(data))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, dir := MustCA(t)
			tt.setup(t, dir)
			if _, err := pki.LoadOrCreateCA(dir); err == nil {
				t.Fatal("LoadOrCreateCA succeeded, want error")
			}
		})
	}
}

func TestCA_Issue_Verifies(t *testing.T) {
	ca, _ := MustCA(t)
	certPEM, keyPEM, err := ca.Issue([]string{"localhost", "127.0.0.1", "broker.example.com", "::1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.CertPEM)
	for _, name := range []string{"localhost", "127.0.0.1", "broker.example.com", "::1"} {
		for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
			_, err := pair.Leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: roots, KeyUsages: []x509.ExtKeyUsage{usage}})
			if err != nil {
				t.Errorf("verify %s for usage %v: %v", name, usage, err)
			}
		}
	}
	if _, err := pair.Leaf.Verify(x509.VerifyOptions{DNSName: "other.example.com", Roots: roots}); err == nil {
		t.Error("leaf verifies for a name it does not cover")
	}
	if pair.Leaf.IsCA {
		t.Error("leaf is a CA")
	}
}

func TestCA_Issue_Errors(t *testing.T) {
	ca, _ := MustCA(t)
	tests := []struct {
		name     string
		names    []string
		validity time.Duration
	}{
		{"no names", nil, time.Hour},
		{"empty name", []string{"localhost", " "}, time.Hour},
		{"port in name", []string{"localhost:8443"}, time.Hour},
		{"zero validity", []string{"localhost"}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, _, err := ca.Issue(tt.names, tt.validity); err == nil {
				t.Fatal("Issue succeeded, want error")
			}
		})
	}
}

// TestCA_Issue_TLS runs a real TLS handshake with mutual authentication.
func TestCA_Issue_TLS(t *testing.T) {
	ca, dir := MustCA(t)
	server, err := pki.LoadOrIssue(dir, "server", ca, []string{"localhost", "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	client, err := pki.LoadOrIssue(dir, "client", ca, []string{"agent-1"})
	if err != nil {
		t.Fatal(err)
	}
	pool, err := pki.LoadPool(filepath.Join(dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{server},
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		done <- c.(*tls.Conn).Handshake()
	}()
	conn, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{
		RootCAs:      pool,
		ServerName:   "127.0.0.1",
		Certificates: []tls.Certificate{client},
	})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	if err := conn.Handshake(); err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	conn.Close()
	if err := <-done; err != nil {
		t.Fatalf("server handshake: %v", err)
	}
}

func TestLoadOrIssue(t *testing.T) {
	ca, _ := MustCA(t)
	certDir := filepath.Join(t.TempDir(), "certs")
	names := []string{"localhost", "127.0.0.1"}
	first, err := pki.LoadOrIssue(certDir, "broker", ca, names)
	if err != nil {
		t.Fatal(err)
	}
	if first.Leaf == nil {
		t.Fatal("Leaf not set")
	}
	if got := time.Until(first.Leaf.NotAfter); got < 364*24*time.Hour {
		t.Errorf("validity left = %v, want about a year", got)
	}

	same, err := pki.LoadOrIssue(certDir, "broker", ca, []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	if !same.Leaf.Equal(first.Leaf) {
		t.Error("certificate re-issued although it covers a subset of its names")
	}

	more, err := pki.LoadOrIssue(certDir, "broker", ca, append(names, "broker.example.com"))
	if err != nil {
		t.Fatal(err)
	}
	if more.Leaf.Equal(first.Leaf) {
		t.Fatal("certificate not re-issued for a new name")
	}
	if err := more.Leaf.VerifyHostname("broker.example.com"); err != nil {
		t.Errorf("re-issued certificate: %v", err)
	}
	reloaded, err := pki.LoadOrIssue(certDir, "broker", ca, append(names, "broker.example.com"))
	if err != nil {
		t.Fatal(err)
	}
	if !reloaded.Leaf.Equal(more.Leaf) {
		t.Error("re-issued certificate was not written")
	}

	// A new CA invalidates the certificate.
	otherCA, err := pki.LoadOrCreateCA(filepath.Join(t.TempDir(), "other"))
	if err != nil {
		t.Fatal(err)
	}
	other, err := pki.LoadOrIssue(certDir, "broker", otherCA, names)
	if err != nil {
		t.Fatal(err)
	}
	if other.Leaf.CheckSignatureFrom(otherCA.Cert) != nil {
		t.Error("certificate not re-issued by the new CA")
	}

	// About to expire: re-issue.
	certPEM, keyPEM, err := ca.Issue(names, 10*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	mustWrite(t, filepath.Join(certDir, "broker.pem"), string(certPEM))
	mustWrite(t, filepath.Join(certDir, "broker.key"), string(keyPEM))
	renewed, err := pki.LoadOrIssue(certDir, "broker", ca, names)
	if err != nil {
		t.Fatal(err)
	}
	if time.Until(renewed.Leaf.NotAfter) < 300*24*time.Hour {
		t.Error("certificate close to expiry not renewed")
	}

	if runtime.GOOS != "windows" {
		for file, want := range map[string]os.FileMode{"broker.key": 0o600, "broker.pem": 0o644} {
			fi, err := os.Stat(filepath.Join(certDir, file))
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode() != want {
				t.Errorf("mode of %s = %v, want %v", file, fi.Mode(), want)
			}
		}
		fi, err := os.Stat(certDir)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o700 {
			t.Errorf("mode of certificate dir = %v, want 0700", fi.Mode().Perm())
		}
	}
}

func TestLoadOrIssue_BadName(t *testing.T) {
	ca, dir := MustCA(t)
	for _, name := range []string{"", "..", "a/b", `a\b`} {
		if _, err := pki.LoadOrIssue(dir, name, ca, []string{"localhost"}); err == nil {
			t.Errorf("LoadOrIssue(%q) succeeded, want error", name)
		}
	}
}

func TestHostNames(t *testing.T) {
	names := pki.HostNames()
	for _, want := range []string{"localhost", "127.0.0.1", "::1"} {
		if !slices.Contains(names, want) {
			t.Errorf("HostNames() = %v, missing %s", names, want)
		}
	}
	seen := map[string]bool{}
	for _, n := range names {
		if seen[n] {
			t.Errorf("duplicate name %s", n)
		}
		seen[n] = true
	}
	// The result must be usable as is.
	ca, _ := MustCA(t)
	if _, _, err := ca.Issue(names, time.Hour); err != nil {
		t.Errorf("Issue(HostNames()): %v", err)
	}
}

func TestLoadPool(t *testing.T) {
	ca, dir := MustCA(t)
	certPEM, keyPEM, err := ca.Issue([]string{"localhost"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	tests := []struct {
		name    string
		content string
		wantErr bool
	}{
		{"ca", string(ca.CertPEM), false},
		{"bundle with key", string(keyPEM) + string(certPEM) + string(ca.CertPEM), false},
		{"only key", string(keyPEM), true},
		{"empty", "", true},
		{"bad certificate", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := filepath.Join(tmp, tt.name+".pem")
			mustWrite(t, file, tt.content)
			pool, err := pki.LoadPool(file)
			if (err != nil) != tt.wantErr {
				t.Fatalf("LoadPool err = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			leaf, err := tls.X509KeyPair(certPEM, keyPEM)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := leaf.Leaf.Verify(x509.VerifyOptions{DNSName: "localhost", Roots: pool}); err != nil {
				t.Errorf("leaf does not verify against the pool: %v", err)
			}
		})
	}
	if _, err := pki.LoadPool(filepath.Join(dir, "missing.pem")); err == nil {
		t.Error("LoadPool of a missing file succeeded")
	}
}

func mustWrite(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func mustRemove(t *testing.T, path string) {
	t.Helper()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
}
