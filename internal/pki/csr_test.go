package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"net"
	"strings"
	"testing"
	"time"
)

func TestCA_SignCSR(t *testing.T) {
	ca, err := LoadOrCreateCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		DNSNames: []string{"desk1.example"}, IPAddresses: []net.IP{net.ParseIP("10.1.2.3")},
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	csr := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	certPEM, err := ca.SignCSR(csr, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(certPEM)
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	for _, name := range []string{"desk1.example", "10.1.2.3"} {
		if _, err := cert.Verify(x509.VerifyOptions{DNSName: name, Roots: pool}); err != nil {
			t.Errorf("verify %s: %v", name, err)
		}
	}
	if cert.NotAfter.Sub(cert.NotBefore) > time.Hour+10*time.Minute {
		t.Errorf("validity %v", cert.NotAfter.Sub(cert.NotBefore))
	}

	for _, tc := range []struct {
		name string
		csr  []byte
		want string
	}{
		{"not pem", []byte("hello"), "PEM"},
		{"tampered", tamper(csr), "sign request"},
		{"no names", mustCSR(t, key, nil), "names no host"},
	} {
		if _, err := ca.SignCSR(tc.csr, time.Hour); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.want)
		}
	}
}

func mustCSR(t *testing.T, key *ecdsa.PrivateKey, names []string) []byte {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: names}, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func tamper(csrPEM []byte) []byte {
	block, _ := pem.Decode(csrPEM)
	b := append([]byte(nil), block.Bytes...)
	b[len(b)/2] ^= 0xff
	return pem.EncodeToMemory(&pem.Block{Type: block.Type, Bytes: b})
}
