package pki

import (
	"crypto"
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

// CSR is a certificate request whose signature verified.
type CSR struct {
	// PublicKey is the key to certify.
	PublicKey crypto.PublicKey
	// Names are the DNS names and IP addresses asked for, normalized
	// (lower case, canonical addresses without zones), without duplicates,
	// in the request's order: DNS names, then addresses.
	Names []string
}

// ParseCSR parses a PEM certificate request and checks its signature and
// names: at least one, at most MaxCSRNames, each a DNS name or an IP
// address.
func ParseCSR(csrPEM []byte) (*CSR, error) {
	block, _ := pem.Decode(csrPEM)
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return nil, errors.New("not a PEM CERTIFICATE REQUEST")
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, err
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("signature: %w", err)
	}
	if len(csr.EmailAddresses) > 0 || len(csr.URIs) > 0 {
		return nil, errors.New("e-mail addresses and URIs cannot be certified")
	}
	names := append([]string(nil), csr.DNSNames...)
	for _, ip := range csr.IPAddresses {
		names = append(names, ip.String())
	}
	switch {
	case len(names) == 0:
		return nil, errors.New("names no host")
	case len(names) > MaxCSRNames:
		return nil, fmt.Errorf("%d names exceed the limit of %d", len(names), MaxCSRNames)
	}
	dns, ips, err := splitNames(names)
	if err != nil {
		return nil, err
	}
	out := &CSR{PublicKey: csr.PublicKey, Names: dns}
	for _, ip := range ips {
		out.Names = append(out.Names, normalizeName(ip.String()))
	}
	return out, nil
}

// SignCSR issues a server certificate for the public key and every name of
// a PEM certificate request (see ParseCSR), valid for validity (capped at
// the CA's own expiry). It returns the certificate as PEM.
func (ca *CA) SignCSR(csrPEM []byte, validity time.Duration) ([]byte, error) {
	csr, err := ParseCSR(csrPEM)
	if err != nil {
		return nil, fmt.Errorf("sign request: %w", err)
	}
	return ca.SignServer(csr.PublicKey, csr.Names, csr.Names[0], validity)
}

// SignServer issues a server certificate (ServerAuth only) for pub and
// names (DNS names and IP addresses), with commonName as the subject's
// common name, valid for validity (capped at the CA's own expiry). It
// returns the certificate as PEM.
func (ca *CA) SignServer(pub crypto.PublicKey, names []string, commonName string, validity time.Duration) ([]byte, error) {
	if ca == nil || ca.Cert == nil || ca.Key == nil {
		return nil, errors.New("sign request: ca is not loaded")
	}
	if validity <= 0 {
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
		Subject:               pkix.Name{CommonName: normalizeName(commonName), Organization: []string{"berth"}},
		NotBefore:             now.Add(-backdate),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              dns,
		IPAddresses:           ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("sign request: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemCertificate, Bytes: der}), nil
}
