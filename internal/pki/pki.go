// Package pki keeps berth's private certificate authority: a self-signed ECDSA
// P-256 CA stored as two PEM files, and the leaf certificates it issues for the
// broker's listeners (client, agent and gateway connectors) and for mutual TLS.
//
// Files are written atomically (temporary file, then rename). Private keys are
// written with mode 0600 and the directories that hold them with mode 0700.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"
)

const (
	caCertFile = "ca.pem"
	caKeyFile  = "ca.key"

	// caValidity is how long a new CA is valid.
	caValidity = 10 * 365 * 24 * time.Hour
	// LeafValidity is how long LoadOrIssue's certificates are valid.
	LeafValidity = 365 * 24 * time.Hour
	// renewBefore is the remaining validity below which LoadOrIssue
	// re-issues a certificate even before its RenewTime (a third of the
	// validity when that is shorter).
	renewBefore = 30 * 24 * time.Hour
	// backdate is subtracted from NotBefore to tolerate clock skew between hosts.
	backdate = 5 * time.Minute

	pemCertificate = "CERTIFICATE"
	pemPrivateKey  = "PRIVATE KEY"
)

// CA is a certificate authority: its certificate, its signing key and the
// certificate in PEM form (what clients put in their trust store).
type CA struct {
	Cert    *x509.Certificate
	Key     crypto.Signer
	CertPEM []byte
}

// LoadOrCreateCA loads dir/ca.pem and dir/ca.key, or creates them if neither
// exists: an ECDSA P-256 CA valid for 10 years. dir is created with mode 0700
// and the key file is written with mode 0600. It returns an error if only one of
// the two files exists, if they do not parse, if the key does not match the
// certificate or if the certificate is not a CA.
func LoadOrCreateCA(dir string) (*CA, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create ca directory: %w", err)
	}
	certPath := filepath.Join(dir, caCertFile)
	keyPath := filepath.Join(dir, caKeyFile)
	certPEM, certErr := os.ReadFile(certPath)
	keyPEM, keyErr := os.ReadFile(keyPath)
	switch {
	case certErr == nil && keyErr == nil:
		ca, err := parseCA(certPEM, keyPEM)
		if err != nil {
			return nil, fmt.Errorf("load ca from %s: %w", dir, err)
		}
		return ca, nil
	case errors.Is(certErr, fs.ErrNotExist) && errors.Is(keyErr, fs.ErrNotExist):
		return createCA(dir)
	case certErr != nil && !errors.Is(certErr, fs.ErrNotExist):
		return nil, fmt.Errorf("read ca certificate: %w", certErr)
	case keyErr != nil && !errors.Is(keyErr, fs.ErrNotExist):
		return nil, fmt.Errorf("read ca key: %w", keyErr)
	default:
		// Never overwrite half a CA: the missing half may be restored from a
		// backup, and a new CA would invalidate every certificate issued so far.
		return nil, fmt.Errorf("load ca from %s: only one of %s and %s exists", dir, caCertFile, caKeyFile)
	}
}

func createCA(dir string) (*CA, error) {
	certPEM, keyPEM, err := NewCAPEM()
	if err != nil {
		return nil, err
	}
	// Key first: a crash in between leaves a lone key, which LoadOrCreateCA
	// reports instead of silently replacing.
	if err := writeFile(filepath.Join(dir, caKeyFile), keyPEM, 0o600); err != nil {
		return nil, fmt.Errorf("write ca key: %w", err)
	}
	if err := writeFile(filepath.Join(dir, caCertFile), certPEM, 0o644); err != nil {
		return nil, fmt.Errorf("write ca certificate: %w", err)
	}
	return parseCA(certPEM, keyPEM)
}

// NewCAPEM generates a new CA, an ECDSA P-256 key and a self-signed
// certificate valid for 10 years, and returns both PEM encoded without
// writing them anywhere (brokers sharing a database keep their CA there).
func NewCAPEM() (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate ca key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	name := "berth CA"
	if host, err := os.Hostname(); err == nil && host != "" {
		name += " " + host
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name, Organization: []string{"berth"}},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
		// SubjectKeyId is derived from the public key by CreateCertificate.
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("create ca certificate: %w", err)
	}
	if keyPEM, err = encodeKey(key); err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemCertificate, Bytes: der}), keyPEM, nil
}

// ParseCA parses a CA certificate and its key, both PEM encoded, and checks
// that the certificate is a CA and the key matches it.
func ParseCA(certPEM, keyPEM []byte) (*CA, error) { return parseCA(certPEM, keyPEM) }

// ReadCAFiles returns the PEM of dir/ca.pem and dir/ca.key; ok is false
// unless both exist.
func ReadCAFiles(dir string) (certPEM, keyPEM []byte, ok bool, err error) {
	certPEM, certErr := os.ReadFile(filepath.Join(dir, caCertFile))
	keyPEM, keyErr := os.ReadFile(filepath.Join(dir, caKeyFile))
	switch {
	case certErr == nil && keyErr == nil:
		return certPEM, keyPEM, true, nil
	case certErr != nil && !errors.Is(certErr, fs.ErrNotExist):
		return nil, nil, false, certErr
	case keyErr != nil && !errors.Is(keyErr, fs.ErrNotExist):
		return nil, nil, false, keyErr
	}
	return nil, nil, false, nil
}

// WriteCACert writes the CA certificate to dir/ca.pem (mode 0644), for the
// local agents and CLI to trust.
func WriteCACert(dir string, certPEM []byte) error {
	return writeFile(filepath.Join(dir, caCertFile), certPEM, 0o644)
}

func parseCA(certPEM, keyPEM []byte) (*CA, error) {
	cert, err := parseCertificate(certPEM)
	if err != nil {
		return nil, err
	}
	if !cert.IsCA || !cert.BasicConstraintsValid {
		return nil, errors.New("certificate is not a ca")
	}
	key, err := parseKey(keyPEM)
	if err != nil {
		return nil, err
	}
	if !publicKeysEqual(key.Public(), cert.PublicKey) {
		return nil, errors.New("ca key does not match ca certificate")
	}
	return &CA{Cert: cert, Key: key, CertPEM: certPEM}, nil
}

// Issue returns a new leaf certificate and its private key, both PEM encoded,
// for names: DNS names and IP addresses (IPv6 zones are dropped) in any order.
// The certificate is valid for validity (capped at the CA's own expiry) for
// both server and client authentication. The first name is the subject's
// common name.
func (ca *CA) Issue(names []string, validity time.Duration) (certPEM, keyPEM []byte, err error) {
	if ca == nil || ca.Cert == nil || ca.Key == nil {
		return nil, nil, errors.New("issue certificate: ca is not loaded")
	}
	if validity <= 0 {
		return nil, nil, fmt.Errorf("issue certificate: validity %v is not positive", validity)
	}
	dns, ips, err := splitNames(names)
	if err != nil {
		return nil, nil, fmt.Errorf("issue certificate: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	notAfter := now.Add(validity)
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter
	}
	cn := ""
	if len(names) > 0 {
		cn = normalizeName(names[0])
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"berth"}},
		NotBefore:             now.Add(-backdate),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		DNSNames:              dns,
		IPAddresses:           ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("create certificate: %w", err)
	}
	keyPEM, err = encodeKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemCertificate, Bytes: der}), keyPEM, nil
}

// LoadOrIssue returns the certificate in dir/<name>.pem and dir/<name>.key if
// both exist, it was signed by ca, it covers every one of names and it is not
// yet due for renewal: before its RenewTime, and valid for at least another
// 30 days. Otherwise it issues a new one valid for LeafValidity, writes it
// there (key mode 0600, dir created with mode 0700) and returns it. The
// returned certificate has Leaf set.
func LoadOrIssue(dir, name string, ca *CA, names []string) (tls.Certificate, error) {
	return LoadOrIssueFor(dir, name, ca, names, LeafValidity)
}

// LoadOrIssueFor is LoadOrIssue with the validity of a new certificate; a
// certificate left with less than a third of validity is renewed even when
// that is more than 30 days.
func LoadOrIssueFor(dir, name string, ca *CA, names []string, validity time.Duration) (tls.Certificate, error) {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, `/\`) {
		return tls.Certificate{}, fmt.Errorf("load certificate: invalid name %q", name)
	}
	if ca == nil || ca.Cert == nil {
		return tls.Certificate{}, errors.New("load certificate: ca is not loaded")
	}
	if _, _, err := splitNames(names); err != nil {
		return tls.Certificate{}, fmt.Errorf("load certificate %s: %w", name, err)
	}
	certPath := filepath.Join(dir, name+".pem")
	keyPath := filepath.Join(dir, name+".key")
	certPEM, certErr := os.ReadFile(certPath)
	keyPEM, keyErr := os.ReadFile(keyPath)
	for _, err := range []error{certErr, keyErr} {
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return tls.Certificate{}, fmt.Errorf("load certificate %s: %w", name, err)
		}
	}
	if certErr == nil && keyErr == nil {
		if c, err := tls.X509KeyPair(certPEM, keyPEM); err == nil && usable(c.Leaf, ca, names, time.Now(), min(renewBefore, validity/3)) {
			return c, nil
		}
	}
	certPEM, keyPEM, err := ca.Issue(names, validity)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("issue certificate %s: %w", name, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return tls.Certificate{}, fmt.Errorf("create certificate directory: %w", err)
	}
	if err := writeFile(keyPath, keyPEM, 0o600); err != nil {
		return tls.Certificate{}, fmt.Errorf("write key %s: %w", name, err)
	}
	if err := writeFile(certPath, certPEM, 0o644); err != nil {
		return tls.Certificate{}, fmt.Errorf("write certificate %s: %w", name, err)
	}
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("load issued certificate %s: %w", name, err)
	}
	return c, nil
}

// RenewTime returns when a certificate should be replaced: once two thirds
// of its lifetime have passed, so that a renewal that fails has the last
// third to succeed. The lifetime of a certificate that this package issued
// starts when it was issued, not at its NotBefore, which is set back a few
// minutes for clock skew.
func RenewTime(leaf *x509.Certificate) time.Time {
	start := leaf.NotBefore
	if s := start.Add(backdate); s.Before(leaf.NotAfter) {
		start = s
	}
	return start.Add(leaf.NotAfter.Sub(start) * 2 / 3)
}

// usable reports whether leaf chains to ca, covers names and is not yet due
// for renewal at now: before its RenewTime and valid for at least another
// left.
func usable(leaf *x509.Certificate, ca *CA, names []string, now time.Time, left time.Duration) bool {
	if leaf == nil || !now.Before(RenewTime(leaf)) || leaf.NotAfter.Sub(now) < left {
		return false
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	_, err := leaf.Verify(x509.VerifyOptions{
		Roots:       roots,
		CurrentTime: now,
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return false
	}
	for _, n := range names {
		if leaf.VerifyHostname(normalizeName(n)) != nil {
			return false
		}
	}
	return true
}

// HostNames returns the names a server certificate for this host should
// cover: the host name, "localhost", every address of every interface that is
// up, 127.0.0.1 and ::1, without duplicates. Interfaces that cannot be listed
// are skipped.
func HostNames() []string {
	var names []string
	seen := map[string]bool{}
	add := func(n string) {
		n = normalizeName(n)
		if n != "" && !seen[n] {
			seen[n] = true
			names = append(names, n)
		}
	}
	if h, err := os.Hostname(); err == nil {
		add(h)
	}
	add("localhost")
	if ifaces, err := net.Interfaces(); err == nil {
		for _, ifc := range ifaces {
			if ifc.Flags&net.FlagUp == 0 {
				continue
			}
			addrs, err := ifc.Addrs()
			if err != nil {
				continue
			}
			for _, a := range addrs {
				switch v := a.(type) {
				case *net.IPNet:
					add(v.IP.String())
				case *net.IPAddr:
					add(v.IP.String())
				}
			}
		}
	}
	add("127.0.0.1")
	add("::1")
	return names
}

// LoadPool reads a PEM bundle into a certificate pool. Blocks other than
// certificates are ignored; it returns an error if a certificate does not parse
// or the file holds none.
func LoadPool(file string) (*x509.CertPool, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("load certificate pool: %w", err)
	}
	pool := x509.NewCertPool()
	n := 0
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != pemCertificate {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("load certificate pool %s: %w", file, err)
		}
		pool.AddCert(c)
		n++
	}
	if n == 0 {
		return nil, fmt.Errorf("load certificate pool %s: no certificate found", file)
	}
	return pool, nil
}

// NormalizeName returns the form in which certificates carry a name: an IP
// address in its canonical form without a zone, any other name trimmed,
// without a trailing dot and lower-cased.
func NormalizeName(n string) string { return normalizeName(n) }

// normalizeName trims n and, for an IP address, drops any zone and returns its
// canonical form. Other names are lower-cased.
func normalizeName(n string) string {
	n = strings.TrimSpace(n)
	if a, err := netip.ParseAddr(n); err == nil {
		return a.WithZone("").Unmap().String()
	}
	return strings.ToLower(strings.TrimSuffix(n, "."))
}

// splitNames sorts names into DNS names and IP addresses, dropping duplicates.
func splitNames(names []string) (dns []string, ips []net.IP, err error) {
	seen := map[string]bool{}
	for _, raw := range names {
		n := normalizeName(raw)
		if n == "" {
			return nil, nil, errors.New("empty name")
		}
		if seen[n] {
			continue
		}
		seen[n] = true
		if a, err := netip.ParseAddr(n); err == nil {
			ips = append(ips, net.IP(a.AsSlice()))
			continue
		}
		if strings.ContainsAny(n, " /\\@:") {
			return nil, nil, fmt.Errorf("invalid name %q", raw)
		}
		dns = append(dns, n)
	}
	if len(seen) == 0 {
		return nil, nil, errors.New("no names")
	}
	return dns, ips, nil
}

func parseCertificate(certPEM []byte) (*x509.Certificate, error) {
	b, _ := pem.Decode(certPEM)
	if b == nil || b.Type != pemCertificate {
		return nil, errors.New("no certificate pem block")
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse certificate: %w", err)
	}
	return c, nil
}

// parseKey accepts PKCS#8 ("PRIVATE KEY") and SEC 1 ("EC PRIVATE KEY") keys.
func parseKey(keyPEM []byte) (crypto.Signer, error) {
	b, _ := pem.Decode(keyPEM)
	if b == nil {
		return nil, errors.New("no private key pem block")
	}
	var (
		k   any
		err error
	)
	switch b.Type {
	case pemPrivateKey:
		k, err = x509.ParsePKCS8PrivateKey(b.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(b.Bytes)
	default:
		return nil, fmt.Errorf("unsupported private key pem block %q", b.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("parse private key: %w", err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("private key of type %T cannot sign", k)
	}
	return s, nil
}

func encodeKey(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("marshal private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemPrivateKey, Bytes: der}), nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	ea, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ea.Equal(b)
}

func randomSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("generate serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}

// writeFile writes data to path atomically with the given mode: a reader sees
// the old file or the new one, never a partial one.
func writeFile(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op once renamed
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
