package pki

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
)

// Holder holds a listener's certificate and lets it be replaced while the
// listener runs: TLS handshakes after Set get the new certificate, and
// connections already made keep going. Give GetCertificate to the
// listener's tls.Config. It is safe for concurrent use.
type Holder struct {
	cur atomic.Pointer[tls.Certificate]
}

// NewHolder returns a Holder serving c. c.Leaf must be set (tls.X509KeyPair
// and LoadOrIssue set it).
func NewHolder(c tls.Certificate) *Holder {
	h := &Holder{}
	h.Set(c)
	return h
}

// Set makes c the certificate of new handshakes. c.Leaf must be set.
func (h *Holder) Set(c tls.Certificate) { h.cur.Store(&c) }

// Certificate returns the certificate served now.
func (h *Holder) Certificate() *tls.Certificate { return h.cur.Load() }

// Leaf returns the parsed leaf of the certificate served now.
func (h *Holder) Leaf() *x509.Certificate { return h.cur.Load().Leaf }

// GetCertificate implements tls.Config.GetCertificate.
func (h *Holder) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return h.cur.Load(), nil
}

// FilePair is a PEM certificate chain and its private key in two files that
// their owner may replace at any time (certbot, a configuration manager):
// Changed tells when to Load them again.
type FilePair struct {
	CertFile, KeyFile string

	loaded [2][]byte // the files' contents at the last good Load
}

// Load reads and parses both files. It returns an error if either cannot be
// read, they do not parse or the key does not match the certificate (as
// while one of them is being replaced); Changed stays true until a Load
// succeeds.
func (p *FilePair) Load() (tls.Certificate, error) {
	data, err := p.read()
	if err != nil {
		return tls.Certificate{}, err
	}
	c, err := tls.X509KeyPair(data[0], data[1])
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("load certificate %s: %w", p.CertFile, err)
	}
	if c.Leaf == nil {
		return tls.Certificate{}, errors.New("load certificate " + p.CertFile + ": no leaf")
	}
	p.loaded = data
	return c, nil
}

// Changed reports whether either file's content differs from what the last
// successful Load read. A file that cannot be read counts as changed. (The
// files are small: comparing them is cheaper than trusting modification
// times, which some file systems keep to the second.)
func (p *FilePair) Changed() bool {
	data, err := p.read()
	return err != nil || !bytes.Equal(data[0], p.loaded[0]) || !bytes.Equal(data[1], p.loaded[1])
}

// Reload loads the files into h when their content changed since the last
// good Load, and reports whether h now holds a new certificate. A pair that
// changed but does not load (one file replaced and not yet the other) leaves
// h as it was and returns the error.
func (p *FilePair) Reload(h *Holder) (bool, error) {
	if !p.Changed() {
		return false, nil
	}
	c, err := p.Load()
	if err != nil {
		return false, err
	}
	h.Set(c)
	return true, nil
}

// read returns the contents of both files; it follows links (certbot's
// live/ names point into archive/).
func (p *FilePair) read() ([2][]byte, error) {
	var out [2][]byte
	for i, f := range []string{p.CertFile, p.KeyFile} {
		b, err := os.ReadFile(f)
		if err != nil {
			return out, fmt.Errorf("load certificate: %w", err)
		}
		out[i] = b
	}
	return out, nil
}
