package pki_test

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"testing"
	"testing/synctest"
	"time"

	"github.com/berth-dev/berth/internal/pki"
)

func TestRenewTime(t *testing.T) {
	base := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name                string
		notBefore, notAfter time.Time
		want                time.Time
	}{
		// pki backdates NotBefore by 5 minutes: the lifetime starts after.
		{"issued here for 90 days", base.Add(-5 * time.Minute), base.Add(90 * 24 * time.Hour), base.Add(60 * 24 * time.Hour)},
		{"issued here for 3 seconds", base.Add(-5 * time.Minute), base.Add(3 * time.Second), base.Add(2 * time.Second)},
		// Shorter than the backdating: the whole span counts.
		{"lifetime under 5 minutes", base, base.Add(3 * time.Minute), base.Add(2 * time.Minute)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := pki.RenewTime(&x509.Certificate{NotBefore: tt.notBefore, NotAfter: tt.notAfter})
			if !got.Equal(tt.want) {
				t.Errorf("RenewTime = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestLoadOrIssueFor_ShortValidity runs on the synctest clock: the stored
// certificate is reused until two thirds of its 3 s lifetime have passed,
// and issued again from then on.
func TestLoadOrIssueFor_ShortValidity(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ca, _ := MustCA(t) // valid from the bubble's start
		dir := t.TempDir()
		names := []string{"127.0.0.1"}
		first, err := pki.LoadOrIssueFor(dir, "short", ca, names, 3*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if got := time.Until(first.Leaf.NotAfter); got > 3*time.Second || got < 2*time.Second {
			t.Fatalf("validity left = %v, want about 3s", got)
		}
		renew := pki.RenewTime(first.Leaf)
		time.Sleep(time.Until(renew) - time.Millisecond)
		same, err := pki.LoadOrIssueFor(dir, "short", ca, names, 3*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if !same.Leaf.Equal(first.Leaf) {
			t.Fatal("a certificate not yet due was issued again")
		}
		time.Sleep(time.Millisecond)
		next, err := pki.LoadOrIssueFor(dir, "short", ca, names, 3*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if next.Leaf.Equal(first.Leaf) {
			t.Fatal("a certificate past two thirds of its lifetime was not issued again")
		}
	})
}

// TestHolder_Set serves a certificate through a Holder, replaces it, and
// checks that a new handshake sees the new one while a connection made
// before keeps working.
func TestHolder_Set(t *testing.T) {
	ca, _ := MustCA(t)
	issue := func() tls.Certificate {
		certPEM, keyPEM, err := ca.Issue([]string{"127.0.0.1"}, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		c, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	first, second := issue(), issue()
	h := pki.NewHolder(first)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{GetCertificate: h.GetCertificate})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { // echo
				defer c.Close()
				buf := make([]byte, 1)
				for {
					if _, err := c.Read(buf); err != nil {
						return
					}
					if _, err := c.Write(buf); err != nil {
						return
					}
				}
			}()
		}
	}()
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	dial := func() *tls.Conn {
		c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: pool})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	echo := func(c net.Conn) {
		t.Helper()
		if _, err := c.Write([]byte{'x'}); err != nil {
			t.Fatalf("write: %v", err)
		}
		buf := make([]byte, 1)
		if _, err := c.Read(buf); err != nil {
			t.Fatalf("read: %v", err)
		}
	}
	old := dial()
	defer old.Close()
	echo(old)
	if got := old.ConnectionState().PeerCertificates[0]; !got.Equal(first.Leaf) {
		t.Fatal("first handshake did not see the first certificate")
	}
	h.Set(second)
	if !h.Leaf().Equal(second.Leaf) {
		t.Fatal("Leaf is not the certificate set")
	}
	c := dial()
	defer c.Close()
	if got := c.ConnectionState().PeerCertificates[0]; !got.Equal(second.Leaf) {
		t.Error("a handshake after Set did not see the new certificate")
	}
	echo(old) // the connection made before still works
}

func TestFilePair(t *testing.T) {
	ca, _ := MustCA(t)
	dir := t.TempDir()
	p := &pki.FilePair{CertFile: filepath.Join(dir, "c.pem"), KeyFile: filepath.Join(dir, "c.key")}
	if !p.Changed() {
		t.Error("Changed is false before the files exist")
	}
	if _, err := p.Load(); err == nil {
		t.Fatal("Load of missing files succeeded")
	}
	write := func(validity time.Duration) (certPEM, keyPEM []byte) {
		certPEM, keyPEM, err := ca.Issue([]string{"localhost"}, validity)
		if err != nil {
			t.Fatal(err)
		}
		mustWrite(t, p.CertFile, string(certPEM))
		mustWrite(t, p.KeyFile, string(keyPEM))
		return certPEM, keyPEM
	}
	write(time.Hour)
	first, err := p.Load()
	if err != nil {
		t.Fatal(err)
	}
	if p.Changed() {
		t.Error("Changed right after Load")
	}

	// Replace the certificate first and the key later, as a renewal may.
	certPEM, keyPEM, err := ca.Issue([]string{"localhost"}, 2*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	mustWrite(t, p.CertFile, string(certPEM))
	if !p.Changed() {
		t.Fatal("Changed is false after the certificate file was replaced")
	}
	if _, err := p.Load(); err == nil {
		t.Fatal("Load of a certificate with another's key succeeded")
	}
	if !p.Changed() {
		t.Fatal("Changed is false after a failed Load")
	}
	mustWrite(t, p.KeyFile, string(keyPEM))
	second, err := p.Load()
	if err != nil {
		t.Fatal(err)
	}
	if second.Leaf.Equal(first.Leaf) {
		t.Error("Load returned the old certificate")
	}
	if p.Changed() {
		t.Error("Changed after a good Load")
	}

	// A link that moves to other files (certbot's live/ names) is a change.
	other := filepath.Join(dir, "archive")
	if err := os.Mkdir(other, 0o700); err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, _ = ca.Issue([]string{"localhost"}, 3*time.Hour)
	mustWrite(t, filepath.Join(other, "c.pem"), string(certPEM))
	mustWrite(t, filepath.Join(other, "c.key"), string(keyPEM))
	for _, f := range []string{"c.pem", "c.key"} {
		tmp := filepath.Join(dir, f+".new")
		if err := os.Symlink(filepath.Join(other, f), tmp); err != nil {
			t.Skipf("symlink: %v", err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, f)); err != nil {
			t.Fatal(err)
		}
	}
	if !p.Changed() {
		t.Fatal("Changed is false after the files became links to others")
	}
	third, err := p.Load()
	if err != nil {
		t.Fatal(err)
	}
	if third.Leaf.Equal(second.Leaf) {
		t.Error("Load through the links returned the old certificate")
	}
}

// TestFilePair_Reload: Reload sets the holder only when the files changed and
// load; a half-replaced pair leaves the holder as it was.
func TestFilePair_Reload(t *testing.T) {
	ca, _ := MustCA(t)
	dir := t.TempDir()
	p := &pki.FilePair{CertFile: filepath.Join(dir, "c.pem"), KeyFile: filepath.Join(dir, "c.key")}
	issue := func() (string, string) {
		c, k, err := ca.Issue([]string{"localhost"}, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return string(c), string(k)
	}
	c1, k1 := issue()
	mustWrite(t, p.CertFile, c1)
	mustWrite(t, p.KeyFile, k1)
	first, err := p.Load()
	if err != nil {
		t.Fatal(err)
	}
	h := pki.NewHolder(first)
	if ok, err := p.Reload(h); ok || err != nil {
		t.Fatalf("Reload of unchanged files: %v %v", ok, err)
	}
	c2, k2 := issue()
	mustWrite(t, p.CertFile, c2)
	if ok, err := p.Reload(h); ok || err == nil || !h.Leaf().Equal(first.Leaf) {
		t.Fatalf("Reload of a half-replaced pair: %v %v", ok, err)
	}
	mustWrite(t, p.KeyFile, k2)
	if ok, err := p.Reload(h); !ok || err != nil || h.Leaf().Equal(first.Leaf) {
		t.Fatalf("Reload of a replaced pair: %v %v", ok, err)
	}
}
