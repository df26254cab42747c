package agent

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
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
// gateway, issued by the broker's web gateway CA for names (the host's
// reported names and addresses): it reuses the one in StateDir while it is
// not due for renewal (pki.RenewTime: a third of its life left) and covers
// every name its CA may certify, and otherwise asks the broker to sign a new
// key (POST /agent/certificate?server_id=ServerID with the client
// credentials of the running link, else the stored ones, else after
// registering). The broker certifies only names this server reported on
// its link, so call it once the agent has linked (WaitLinked); it leaves
// out names its CA may not certify. The returned certificate has Leaf set,
// and its chain holds the CA certificate.
func (a *Agent) GatewayCertificate(ctx context.Context, names []string) (tls.Certificate, error) {
	return a.gatewayCertificate(ctx, names, false)
}

// StoredGatewayCertificate returns the gateway certificate kept in
// StateDir if it is not due for renewal and covers every one of names that
// its CA may certify; it needs no broker. Otherwise it returns an error
// saying why.
func (a *Agent) StoredGatewayCertificate(names []string) (tls.Certificate, error) {
	return loadGatewayCert(a.StateDir, names, time.Now())
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
	// The credentials of the running link, else stored ones: the broker
	// certifies the names that this agent's server reported on its link.
	creds := a.state().creds.Load()
	if creds == nil {
		creds, _ = loadCredentials(a.StateDir)
	}
	var lastErr error
	for _, ep := range eps {
		if creds == nil {
			if a.SoftwareStatement == "" {
				return tls.Certificate{}, errors.New("gateway certificate: no agent credentials and no software statement; set the certificate files in the config")
			}
			c, err := register(ctx, hc, ep.register, a.SoftwareStatement, clientName(a.ServerID), a.ServerID)
			if err != nil {
				lastErr = err
				continue
			}
			if err := saveCredentials(a.StateDir, c); err != nil {
				return tls.Certificate{}, err
			}
			creds = c
		}
		u := strings.TrimSuffix(ep.register, "/register") + "/certificate?server_id=" + url.QueryEscape(a.ServerID)
		cert, err := requestGatewayCert(ctx, hc, u, creds, names)
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
	if n := uncovered(&c, names, nil); n != "" {
		return c, fmt.Errorf("gateway certificate: does not cover %q", n)
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
	st := a.state()
	retry := renewRetryMin
	var omitted []string // names the broker left out of the last certificate it issued
	for {
		var want []string
		var why string
		for why == "" {
			want = names()
			due := pki.RenewTime(h.Leaf())
			switch missing := uncovered(h.Certificate(), want, omitted); {
			case !time.Now().Before(due):
				why = "a third of its lifetime is left"
			case !issuedBy(h.Leaf(), a.GatewayCAKeyID()):
				why = "another CA than the broker's web gateway CA issued it"
			case missing != "":
				why = fmt.Sprintf("it does not cover %q", missing)
			default:
				t := time.NewTimer(min(time.Until(due), check))
				select {
				case <-ctx.Done():
					t.Stop()
					return nil
				case <-st.caChanged:
				case <-t.C:
				}
				t.Stop()
			}
		}
		old := h.Leaf()
		c, err := a.gatewayCertificate(ctx, want, true)
		if err == nil && !pki.RenewTime(c.Leaf).After(time.Now()) {
			// Taking it would ask again at once, and again.
			err = fmt.Errorf("the broker issued a certificate already due for renewal (valid until %s)", c.Leaf.NotAfter.UTC().Format(time.RFC3339))
		}
		if err == nil && !issuedBy(c.Leaf, a.GatewayCAKeyID()) {
			err = fmt.Errorf("the broker issued a certificate of CA %x, not of the web gateway CA %s that it named", c.Leaf.AuthorityKeyId, a.GatewayCAKeyID())
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
		omitted = omitted[:0]
		for _, n := range want {
			if c.Leaf.VerifyHostname(n) != nil {
				omitted = append(omitted, n)
			}
		}
		retry = renewRetryMin
		log.Info("web gateway certificate renewed", "why", why, "not_after", c.Leaf.NotAfter.UTC().Format(time.RFC3339),
			"renew_at", pki.RenewTime(c.Leaf).UTC().Format(time.RFC3339))
	}
}

// uncovered returns the first of names that c's leaf does not cover and the
// broker could certify, or "": names that the constraints of the issuing CA
// (the chain's second certificate) do not permit, and names in omitted (the
// broker left them out when last asked), do not count.
func uncovered(c *tls.Certificate, names, omitted []string) string {
	var cons *pki.Constraints
	if len(c.Certificate) > 1 {
		if ca, err := x509.ParseCertificate(c.Certificate[1]); err == nil {
			if cc, ok := pki.ConstraintsOf(ca); ok {
				cons = &cc
			}
		}
	}
	for _, n := range names {
		if c.Leaf.VerifyHostname(n) == nil || slices.Contains(omitted, n) || (cons != nil && !cons.Permits(n)) {
			continue
		}
		return n
	}
	return ""
}

// issuedBy reports whether leaf names keyID (hex) as its authority key ID;
// an empty keyID matches any.
func issuedBy(leaf *x509.Certificate, keyID string) bool {
	return keyID == "" || hex.EncodeToString(leaf.AuthorityKeyId) == keyID
}
