package agent_test

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/agent"
	"github.com/berth-dev/berth/internal/agentmetrics"
	"github.com/berth-dev/berth/internal/agentproto"
	"github.com/berth-dev/berth/internal/driver/sim"
	"github.com/berth-dev/berth/internal/pki"
	"github.com/berth-dev/berth/internal/poll"
)

// mustCA returns a new CA, as a broker has.
func mustCA(t *testing.T) *pki.CA {
	t.Helper()
	certPEM, keyPEM, err := pki.NewCAPEM()
	if err != nil {
		t.Fatal(err)
	}
	ca, err := pki.ParseCA(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// verifyGatewayCert checks that a certificate chains to ca and covers names.
func verifyGatewayCert(t *testing.T, leaf *x509.Certificate, ca *pki.CA, names []string) {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	for _, n := range names {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: n, CurrentTime: leaf.NotBefore.Add(time.Minute)}); err != nil {
			t.Errorf("certificate for %s: %v", n, err)
		}
	}
}

func TestAgent_GatewayCertificate_Stored(t *testing.T) {
	ca := mustCA(t)
	fb := mustStartBroker(t, &fakeBroker{statement: "stmt", auth: true, ca: ca, certValidity: time.Hour})
	dir := t.TempDir()
	a := &agent.Agent{BrokerURLs: []string{fb.url}, TLSConfig: fb.tls, ServerID: "srv-1", StateDir: dir, SoftwareStatement: "stmt", Driver: sim.New()}
	names := []string{"localhost", "127.0.0.1", "desk01.example.com"}
	c1, err := a.GatewayCertificate(context.Background(), names)
	if err != nil {
		t.Fatal(err)
	}
	verifyGatewayCert(t, c1.Leaf, ca, names)
	// Stored and reused while it covers the names and is not due.
	c2, err := a.GatewayCertificate(context.Background(), names)
	if err != nil || c2.Leaf.SerialNumber.Cmp(c1.Leaf.SerialNumber) != 0 {
		t.Errorf("second call: %v, serial %v want %v", err, c2.Leaf.SerialNumber, c1.Leaf.SerialNumber)
	}
	// A new name needs a new certificate.
	c3, err := a.GatewayCertificate(context.Background(), append(names, "10.0.0.9"))
	if err != nil || c3.Leaf.SerialNumber.Cmp(c1.Leaf.SerialNumber) == 0 {
		t.Errorf("new name: %v, same serial", err)
	}
	fb.mu.Lock()
	issued := fb.certificates
	fb.mu.Unlock()
	if issued != 2 {
		t.Errorf("%d certificates issued, want 2", issued)
	}
	if fi, err := os.Stat(filepath.Join(dir, "gateway.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("gateway.key: %v %v", fi, err)
	}
}

// TestAgent_RenewGatewayCertificate: with certificates valid for 3 s, the
// agent renews the gateway certificate each time a third of its life is left,
// keeps the current one through a failed request and retries with backoff,
// stores each new one, and its broker link carries on untouched throughout.
func TestAgent_RenewGatewayCertificate(t *testing.T) {
	t.Parallel() // it mostly waits on real time: overlap it with the others that do
	ca := mustCA(t)
	fb := mustStartBroker(t, &fakeBroker{statement: "stmt", auth: true, ca: ca, certValidity: 3 * time.Second})
	dir := t.TempDir()
	m := agentmetrics.New(agentmetrics.Options{Driver: "sim"})
	a := &agent.Agent{BrokerURLs: []string{fb.url}, TLSConfig: fb.tls, StateDir: dir, SoftwareStatement: "stmt", Metrics: m}
	mustRunAgent(t, a)
	bc := fb.next(t) // registered, and the link is up

	names := []string{"localhost", "127.0.0.1"}
	cert, err := a.GatewayCertificate(context.Background(), names)
	if err != nil {
		t.Fatal(err)
	}
	h := pki.NewHolder(cert)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.RenewGatewayCertificate(ctx, h, func() []string { return names }) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("RenewGatewayCertificate: %v", err)
		}
	}()

	serials := []*big.Int{h.Leaf().SerialNumber}
	prevNotAfter := h.Leaf().NotAfter
	waitRenewed := func() {
		t.Helper()
		last := serials[len(serials)-1]
		poll.Until(t, 15*time.Second, fmt.Sprintf("renewal %d", len(serials)), func() bool {
			return h.Leaf().SerialNumber.Cmp(last) != 0
		})
		leaf := h.Leaf()
		verifyGatewayCert(t, leaf, ca, names)
		// A new certificate, issued at the renewal: it outlives the one it
		// replaced (which the renewal did a third of its life early).
		if !leaf.NotAfter.After(prevNotAfter) {
			t.Errorf("renewed certificate ends %v, not after the one it replaced (%v)", leaf.NotAfter, prevNotAfter)
		}
		prevNotAfter = leaf.NotAfter
		stored, err := os.ReadFile(filepath.Join(dir, "gateway.pem"))
		if err != nil {
			t.Fatal(err)
		}
		if got, err := x509.ParseCertificate(pemBlock(t, stored)); err != nil || got.SerialNumber.Cmp(leaf.SerialNumber) != 0 {
			t.Errorf("gateway.pem holds another certificate: %v", err)
		}
		serials = append(serials, leaf.SerialNumber)
	}
	start := time.Now()
	waitRenewed()
	waitRenewed()
	if el := time.Since(start); el < 3*time.Second {
		t.Errorf("two renewals of 3 s certificates in %v: renewing too early", el)
	}

	// The broker fails the next request: the current certificate stays, and
	// a later attempt succeeds.
	fb.certFailures.Store(1)
	waitMetric(t, m, "berth_agent_gateway_certificate_renewals_total", 1, "result", "failed")
	if h.Leaf().SerialNumber.Cmp(serials[len(serials)-1]) != 0 {
		t.Error("the certificate changed on a failed renewal")
	}
	waitRenewed()
	waitMetric(t, m, "berth_agent_gateway_certificate_renewals_total", 3, "result", "ok")

	// The broker link was never touched: one dial, and it still answers.
	if _, dials := fb.counts(); dials != 1 {
		t.Errorf("%d dials: the link dropped during renewals", dials)
	}
	if r := bc.command(t, "1", &agentproto.Command{Kind: agentproto.KindDelete, SessionID: "x"}); !r.OK {
		t.Errorf("command after renewals: %+v", r)
	}
}

// pemBlock returns the DER of the first PEM block.
func pemBlock(t *testing.T, data []byte) []byte {
	t.Helper()
	b, _ := pem.Decode(data)
	if b == nil {
		t.Fatal("no PEM block")
	}
	return b.Bytes
}

// TestAgent_RenewGatewayCertificate_NewName: a certificate that no longer
// covers the host's names (its address changed) is renewed at once, long
// before it is due.
func TestAgent_RenewGatewayCertificate_NewName(t *testing.T) {
	ca := mustCA(t)
	fb := mustStartBroker(t, &fakeBroker{statement: "stmt", auth: true, ca: ca, certValidity: time.Hour})
	a := &agent.Agent{BrokerURLs: []string{fb.url}, TLSConfig: fb.tls, ServerID: "srv-1", StateDir: t.TempDir(),
		SoftwareStatement: "stmt", Driver: sim.New(), CertCheckInterval: 20 * time.Millisecond}
	var names atomic.Pointer[[]string]
	names.Store(&[]string{"localhost", "10.0.0.5"})
	cert, err := a.GatewayCertificate(context.Background(), *names.Load())
	if err != nil {
		t.Fatal(err)
	}
	h := pki.NewHolder(cert)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var checks atomic.Int32 // each check of the certificate reads the names first
	go func() {
		defer close(done)
		a.RenewGatewayCertificate(ctx, h, func() []string { checks.Add(1); return *names.Load() })
	}()
	defer func() { cancel(); <-done }()
	// A renewal decided in a check is in h before the next check reads the
	// names: after the third read, the first two checks renewed nothing.
	poll.Until(t, 10*time.Second, "three checks", func() bool { return checks.Load() >= 3 })
	if h.Leaf().SerialNumber.Cmp(cert.Leaf.SerialNumber) != 0 {
		t.Fatal("renewed a certificate that is neither due nor missing a name")
	}
	names.Store(&[]string{"localhost", "10.0.0.7"})
	poll.Until(t, 10*time.Second, "a certificate for the new address", func() bool {
		return h.Leaf().VerifyHostname("10.0.0.7") == nil
	})
	verifyGatewayCert(t, h.Leaf(), ca, []string{"localhost", "10.0.0.7"})
}
