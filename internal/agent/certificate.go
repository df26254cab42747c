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
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/pki"
)

// Gateway certificate files kept in the agent's state directory.
const (
	gatewayCertFile = "gateway.pem"
	gatewayKeyFile  = "gateway.key"
)

// GatewayCertificate returns a server certificate for the agent's web
// gateway, issued by the broker's CA for names (host names and IP addresses): it reuses
// the one in StateDir while it covers names and is not due for renewal
// (pki.RenewTime: a third of its life left), and otherwise registers if
// needed and asks the broker to sign a new key (POST /agent/certificate with
// the agent's client credentials). The returned certificate has Leaf set.
func (a *Agent) GatewayCertificate(ctx context.Context, names []string) (tls.Certificate, error) {
	return a.gatewayCertificate(ctx, names, false)
}

// gatewayCertificate is GatewayCertificate; force skips the stored
// certificate.
func (a *Agent) gatewayCertificate(ctx context.Context, names []string, force bool) (tls.Certificate, error) {
	if !force {
		if c, err := loadGatewayCert(a.StateDir, names, time.Now()); err == nil {
			return c, nil
		}
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
		c, err := tls.X509KeyPair(cert.certPEM, cert.keyPEM)
		if err != nil {
			lastErr = fmt.Errorf("broker sent an unusable certificate: %w", err)
			continue
		}
		if err := cert.save(a.StateDir); err != nil {
			return tls.Certificate{}, err
		}
		return c, nil
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
// is not due for renewal.
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
	if !now.Before(pki.RenewTime(c.Leaf)) {
		return c, errors.New("gateway certificate: due for renewal")
	}
	for _, n := range names {
		if err := c.Leaf.VerifyHostname(n); err != nil {
			return c, err
		}
	}
	return c, nil
}

// DefaultCertCheckInterval is how often RenewGatewayCertificate compares the
// certificate with the host's names when Agent.CertCheckInterval is 0.
const DefaultCertCheckInterval = time.Minute

// Bounds of the retry delay after a failed renewal (jittered, doubling).
const (
	renewRetryMin = 2 * time.Second
	renewRetryMax = 5 * time.Minute
)

// RenewGatewayCertificate keeps the broker-issued certificate in h current
// until ctx ends. It asks the broker for a new one, as GatewayCertificate
// does (registering if needed), and puts it in h when the current one is due
// for renewal (pki.RenewTime: a third of its lifetime left), or as soon as it
// no longer covers every name that names returns (the host's address
// changed; names is read every CertCheckInterval). A failed request is
// logged and retried after a jittered delay that doubles from 2 s up to
// 5 min, while h keeps serving the current certificate. Nothing else is
// touched: servers that take their certificate from h.GetCertificate serve
// the new one from their next handshake, connections already made stay up,
// and the broker link is not involved. Each attempt goes to
// Metrics.CertificateRenewal. It returns nil when ctx ends.
func (a *Agent) RenewGatewayCertificate(ctx context.Context, h *pki.Holder, names func() []string) error {
	log := a.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "agent")
	check := a.CertCheckInterval
	if check <= 0 {
		check = DefaultCertCheckInterval
	}
	m := a.metrics()
	retry := renewRetryMin
	for {
		var want []string
		var why string
		for why == "" {
			want = names()
			due := pki.RenewTime(h.Leaf())
			switch missing := uncovered(h.Leaf(), want); {
			case !time.Now().Before(due):
				why = "a third of its lifetime is left"
			case missing != "":
				why = fmt.Sprintf("it does not cover %q", missing)
			default:
				if !sleep(ctx, min(time.Until(due), check)) {
					return nil
				}
			}
		}
		old := h.Leaf()
		c, err := a.gatewayCertificate(ctx, want, true)
		if err == nil && !pki.RenewTime(c.Leaf).After(time.Now()) {
			// Taking it would ask again at once, and again.
			err = fmt.Errorf("the broker issued a certificate already due for renewal (valid until %s)", c.Leaf.NotAfter.UTC().Format(time.RFC3339))
		}
		if ctx.Err() != nil {
			return nil
		}
		m.CertificateRenewal(err)
		if err != nil {
			d := retry/2 + mrand.N(retry/2)
			retry = min(retry*2, renewRetryMax)
			log.Warn("cannot renew the web gateway certificate; keeping the current one", "why", why,
				"err", err, "not_after", old.NotAfter.UTC().Format(time.RFC3339), "retry_in", d.Round(time.Millisecond))
			if !sleep(ctx, d) {
				return nil
			}
			continue // still due: ask again at once
		}
		h.Set(c)
		retry = renewRetryMin
		log.Info("web gateway certificate renewed", "why", why, "not_after", c.Leaf.NotAfter.UTC().Format(time.RFC3339),
			"renew_at", pki.RenewTime(c.Leaf).UTC().Format(time.RFC3339))
	}
}

// uncovered returns the first of names that leaf does not cover, or "".
func uncovered(leaf *x509.Certificate, names []string) string {
	for _, n := range names {
		if leaf.VerifyHostname(n) != nil {
			return n
		}
	}
	return ""
}
