package main

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"time"

	"github.com/berth-dev/berth/internal/agent"
	"github.com/berth-dev/berth/internal/agentproto"
	"github.com/berth-dev/berth/internal/pki"
)

// certFileCheck is how often configured certificate files are looked at.
var certFileCheck = 10 * time.Second

// localCACheck is how often the certificate from the agent's own CA is
// checked: due for renewal, or not covering the host's names.
var localCACheck = time.Minute

// metricsCADir is the directory in agent.state_dir of the CA the agent
// creates for its metrics listener when nothing else gives a certificate.
const metricsCADir = "metrics-ca"

// hostNames are the names a certificate of the agent's own CA covers:
// localhost, the loopback address, the host name and the reported IP, from
// a new probe.
func (m *Main) hostNames(ctx context.Context, extra ...string) []string {
	r := m.Prober.Report(ctx)
	return namesOf(r.Hostname, r.IP, extra...)
}

// reportedNames are the names by which a host report names the host: its
// host name, DNS name and IP. They are all that the broker certifies for the
// web gateway.
func reportedNames(r agentproto.HostReport) []string {
	var names []string
	for _, n := range []string{r.Hostname, r.DNSName, r.IP} {
		if n != "" && !isWildcard(n) && !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	return names
}

// linkWait bounds how long the agent waits at start for its first broker
// link before it asks the broker for a web gateway certificate.
var linkWait = 2 * time.Minute

// namesOf is hostNames for a host name and an IP, plus extra names.
func namesOf(hostname, ip string, extra ...string) []string {
	names := []string{"localhost", "127.0.0.1"}
	for _, n := range append([]string{hostname, ip}, extra...) {
		if n != "" && !isWildcard(n) && !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	return names
}

// currentNames returns the names of the last host report the agent sent, or
// start before the first.
func (m *Main) currentNames(start []string) func() []string {
	return func() []string {
		if p := m.reportNames.Load(); p != nil {
			return *p
		}
		return start
	}
}

// webGatewayCertificate returns the holder of the web gateway's certificate and
// starts what keeps it current until runCtx ends: vnc.cert_file and
// vnc.key_file, re-read when they change, or else a certificate issued by
// the broker's CA, renewed from the broker once a third of its life is left.
func (m *Main) webGatewayCertificate(ctx, runCtx context.Context, ag *agent.Agent) (*pki.Holder, error) {
	v := &m.Config.VNC
	if v.CertFile != "" {
		h, err := m.watchedFiles(runCtx, v.CertFile, v.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("vnc.cert_file: %w", err)
		}
		return h, nil
	}
	// The broker certifies the names this host reported on its link: a
	// stored certificate that still covers them serves at once, a new one
	// waits for the link.
	r, err := m.report(ctx)
	if err != nil {
		return nil, err
	}
	names := reportedNames(r)
	cert, err := ag.StoredGatewayCertificate(names)
	if err != nil {
		wctx, cancel := context.WithTimeout(ctx, linkWait)
		err = ag.WaitLinked(wctx)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("web gateway certificate (or set vnc.cert_file and vnc.key_file): no broker link within %s: %w", linkWait, err)
		}
		names = m.currentNames(names)()
		if cert, err = ag.GatewayCertificate(ctx, names); err != nil {
			return nil, fmt.Errorf("web gateway certificate (or set vnc.cert_file and vnc.key_file): %w", err)
		}
	}
	h := pki.NewHolder(cert)
	m.background(func() { ag.RenewGatewayCertificate(runCtx, h, m.currentNames(names)) })
	return h, nil
}

// watchedFiles loads a PEM certificate and key into a holder and reloads
// them whenever they change, until ctx ends. A pair that does not load (one
// file replaced and not yet the other) keeps the current certificate and is
// tried again at the next check.
func (m *Main) watchedFiles(ctx context.Context, certFile, keyFile string) (*pki.Holder, error) {
	pair := &pki.FilePair{CertFile: certFile, KeyFile: keyFile}
	cert, err := pair.Load()
	if err != nil {
		return nil, err
	}
	h := pki.NewHolder(cert)
	log := m.Logger.With("cert_file", certFile)
	m.background(func() {
		t := time.NewTicker(certFileCheck)
		defer t.Stop()
		failing := false
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			reloaded, err := pair.Reload(h)
			if err != nil {
				if !failing {
					log.Warn("certificate files changed but do not load; keeping the current certificate", "err", err)
				}
				failing = true
				continue
			}
			if reloaded {
				failing = false
				log.Info("certificate files reloaded", "not_after", h.Leaf().NotAfter.UTC().Format(time.RFC3339))
			}
		}
	})
	return h, nil
}

// localCertificate returns a holder of a certificate for the host's names
// (and extra) issued by a CA of the agent's own in
// agent.state_dir/metrics-ca (ca.pem is what scrapers trust), and re-issues
// it once due or once it no longer covers the host's names (checked every
// localCACheck), until ctx ends.
func (m *Main) localCertificate(ctx context.Context, extra ...string) (*pki.Holder, error) {
	names := m.hostNames(ctx, extra...)
	dir := filepath.Join(m.Config.Agent.StateDir, metricsCADir)
	ca, err := pki.LoadOrCreateCA(dir)
	if err != nil {
		return nil, err
	}
	cert, err := pki.LoadOrIssue(dir, "metrics", ca, names)
	if err != nil {
		return nil, err
	}
	h := pki.NewHolder(cert)
	log := m.Logger.With("ca", filepath.Join(dir, "ca.pem"))
	m.background(func() {
		t := time.NewTicker(localCACheck)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			now := m.currentNames(names)()
			c, err := pki.LoadOrIssue(dir, "metrics", ca, namesOf("", "", append(slices.Clone(now), extra...)...))
			if err != nil {
				log.Warn("cannot renew the metrics certificate; keeping the current one", "err", err)
				continue
			}
			if c.Leaf.SerialNumber.Cmp(h.Leaf().SerialNumber) != 0 {
				h.Set(c)
				log.Info("metrics certificate renewed", "not_after", c.Leaf.NotAfter.UTC().Format(time.RFC3339))
			}
		}
	})
	return h, nil
}

// background runs f in a goroutine that Close waits for; f must return once
// the run context is done.
func (m *Main) background(f func()) {
	m.bg.Add(1)
	go func() {
		defer m.bg.Done()
		f()
	}()
}
