package agent

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Gateway certificate files kept in the agent's state directory.
const (
	gatewayCertFile = "gateway.pem"
	gatewayKeyFile  = "gateway.key"
)

// GatewayCertificate returns a server certificate for the agent's web gateway,
// issued by the broker's CA for names (host names and IP addresses): it reuses
// the one in StateDir while it covers names and has more than a third of its
// life left, and otherwise registers if needed and asks the broker to sign a
// new key (POST /agent/certificate with the agent's client credentials).
func (a *Agent) GatewayCertificate(ctx context.Context, names []string) (tls.Certificate, error) {
	if c, err := loadGatewayCert(a.StateDir, names, time.Now()); err == nil {
		return c, nil
	}
	eps, err := a.check()
	if err != nil {
		return tls.Certificate{}, err
	}
	tr := &http.Transport{TLSClientConfig: a.TLSConfig.Clone(), TLSHandshakeTimeout: dialTimeout}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	creds, _ := loadCredentials(a.StateDir)
	var lastErr error
	for _, ep := range eps {
		if creds == nil {
			if a.SoftwareStatement == "" {
				return tls.Certificate{}, errors.New("gateway certificate: no agent credentials and no software statement; set the certificate files in the config")
			}
			c, err := register(ctx, hc, ep.register, a.SoftwareStatement, clientName(a.ServerID))
			if err != nil {
				lastErr = err
				continue
			}
			if err := saveCredentials(a.StateDir, c); err != nil {
				return tls.Certificate{}, err
			}
			creds = c
		}
		cert, err := requestGatewayCert(ctx, hc, strings.TrimSuffix(ep.register, "/register")+"/certificate", creds, names)
		if err != nil {
			lastErr = err
			continue
		}
		if err := cert.save(a.StateDir); err != nil {
			return tls.Certificate{}, err
		}
		return tls.X509KeyPair(cert.certPEM, cert.keyPEM)
	}
	return tls.Certificate{}, fmt.Errorf("gateway certificate: %w", lastErr)
}

type issuedCert struct{ certPEM, keyPEM []byte }

func (c issuedCert) save(dir string) error {
	if err := writeFileAtomic(dir, gatewayKeyFile, c.keyPEM); err != nil {
		return err
	}
	return writeFileAtomic(dir, gatewayCertFile, c.certPEM)
}

func requestGatewayCert(ctx context.Context, hc *http.Client, url string, creds *credentials, names []string) (issuedCert, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return issuedCert{}, err
	}
	tmpl := &x509.CertificateRequest{}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if n != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		return issuedCert{}, fmt.Errorf("certificate request: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})))
	if err != nil {
		return issuedCert{}, err
	}
	req.SetBasicAuth(creds.ClientID, creds.ClientSecret)
	resp, err := hc.Do(req)
	if err != nil {
		return issuedCert{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return issuedCert{}, err
	}
	if resp.StatusCode != http.StatusOK {
		return issuedCert{}, fmt.Errorf("broker answered %s: %.200s", resp.Status, strings.TrimSpace(string(body)))
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return issuedCert{}, err
	}
	return issuedCert{certPEM: body, keyPEM: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})}, nil
}

// loadGatewayCert returns the stored gateway certificate if it covers names and
// has more than a third of its lifetime left.
func loadGatewayCert(dir string, names []string, now time.Time) (tls.Certificate, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, gatewayCertFile))
	if err != nil {
		return tls.Certificate{}, err
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, gatewayKeyFile))
	if err != nil {
		return tls.Certificate{}, err
	}
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return c, err
	}
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		return c, err
	}
	life := leaf.NotAfter.Sub(leaf.NotBefore)
	if leaf.NotAfter.Sub(now) < life/3 {
		return c, errors.New("gateway certificate: due for renewal")
	}
	for _, n := range names {
		if err := leaf.VerifyHostname(n); err != nil {
			return c, err
		}
	}
	c.Leaf = leaf
	return c, nil
}
