package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// constrainedCARenewBefore is the remaining validity below which
// ConstrainedCA makes a new certificate for the same key.
const constrainedCARenewBefore = 365 * 24 * time.Hour

// NewKeyPEM returns a new ECDSA P-256 private key, PKCS#8 PEM encoded.
func NewKeyPEM() ([]byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	return encodeKey(key)
}

// LoadOrCreateKeyFile returns the PEM private key in path, creating a new
// ECDSA P-256 key there (mode 0600, directory 0700) when the file does not
// exist.
func LoadOrCreateKeyFile(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err == nil {
		if _, err := parseKey(data); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return data, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if data, err = NewKeyPEM(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	if err := writeFile(path, data, 0o600); err != nil {
		return nil, fmt.Errorf("write %s: %w", path, err)
	}
	return data, nil
}

// ConstrainedCA returns a name-constrained CA (RFC 5280 name constraints,
// marked critical) for the private key keyPEM: it may sign server
// certificates only, with no intermediate below it, for names that c
// permits. The certificate in certFile is reused when it is of that key,
// carries exactly c and is valid for at least another year; otherwise a new
// one, valid for 10 years, is written there (mode 0644) and changed is true.
//
// The certificate's subject is derived from the key, so certificates made
// for one key by several brokers (or before and after a change of c) are
// interchangeable issuers: a leaf signed under one verifies against any of
// them, subject to the constraints of the one the verifier trusts.
func ConstrainedCA(keyPEM []byte, certFile string, c Constraints) (ca *CA, changed bool, err error) {
	key, err := parseKey(keyPEM)
	if err != nil {
		return nil, false, fmt.Errorf("ca key: %w", err)
	}
	if certPEM, err := os.ReadFile(certFile); err == nil {
		if ca, err := parseCA(certPEM, keyPEM); err == nil {
			have, ok := ConstraintsOf(ca.Cert)
			if ok && have.Equal(c) && time.Until(ca.Cert.NotAfter) > constrainedCARenewBefore {
				return ca, false, nil
			}
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, false, err
	}
	certPEM, err := newConstrainedCACert(key, c)
	if err != nil {
		return nil, false, err
	}
	if err := os.MkdirAll(filepath.Dir(certFile), 0o700); err != nil {
		return nil, false, err
	}
	if err := writeFile(certFile, certPEM, 0o644); err != nil {
		return nil, false, fmt.Errorf("write %s: %w", certFile, err)
	}
	ca, err = parseCA(certPEM, keyPEM)
	return ca, true, err
}

// newConstrainedCACert makes the self-signed certificate of a
// name-constrained CA for key.
func newConstrainedCACert(key crypto.Signer, c Constraints) ([]byte, error) {
	spki, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return nil, fmt.Errorf("marshal ca public key: %w", err)
	}
	// The subject key ID as Go derives it (RFC 5280 4.2.1.2 method 1),
	// computed here so that the subject can name it.
	var info struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(spki, &info); err != nil {
		return nil, fmt.Errorf("parse ca public key: %w", err)
	}
	ski := sha1.Sum(info.PublicKey.Bytes)
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject: pkix.Name{
			CommonName:   "berth web gateway CA " + hex.EncodeToString(ski[:4]),
			Organization: []string{"berth"},
		},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
		SubjectKeyId:          ski[:],
	}
	c.apply(tmpl)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("create ca certificate: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemCertificate, Bytes: der}), nil
}

// KeyID returns the hex subject key ID of ca's certificate: what the
// authority key ID of every certificate it issues names.
func (ca *CA) KeyID() string { return hex.EncodeToString(ca.Cert.SubjectKeyId) }
