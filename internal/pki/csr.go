package pki

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"time"
)

// MaxCSRNames caps the names one certificate request may ask for.
const MaxCSRNames = 32

// SignCSR issues a server certificate for the public key and names (DNS names
// and IP addresses) of a PEM certificate request, valid for validity (capped at
// the CA's own expiry). The request's signature must verify. It returns the
// certificate as PEM.
func (ca *CA) SignCSR(csrPEM []byte, validity time.Duration) ([]byte, error) {
	if ca == nil || ca.Cert == nil || ca.Key == nil {
		return nil, errors.New("sign request: ca is not loaded")
	}
	block, _ := pem.Decode(csrPEM)
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return nil, errors.New("sign request: not a PEM CERTIFICATE REQUEST")
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("sign request: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("sign request: signature: %w", err)
	}
	names := append([]string(nil), csr.DNSNames...)
	for _, ip := range csr.IPAddresses {
		names = append(names, ip.String())
	}
	switch {
	case len(names) == 0:
		return nil, errors.New("sign request: names no host")
	case len(names) > MaxCSRNames:
		return nil, fmt.Errorf("sign request: %d names exceed the limit of %d", len(names), MaxCSRNames)
	case validity <= 0:
		return nil, fmt.Errorf("sign request: validity %v is not positive", validity)
	}
	dns, ips, err := splitNames(names)
	if err != nil {
		return nil, fmt.Errorf("sign request: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	notAfter := now.Add(validity)
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: normalizeName(names[0]), Organization: []string{"berth"}},
		NotBefore:             now.Add(-backdate),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              dns,
		IPAddresses:           ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, csr.PublicKey, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("sign request: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemCertificate, Bytes: der}), nil
}
