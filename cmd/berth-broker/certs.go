package main

import (
	"context"
	"crypto/tls"
	"log/slog"
	"sync"
	"time"

	"github.com/berth-dev/berth/internal/pki"
)

// defaultCertCheck is how often the broker checks its listener certificates:
// whether the one it issued itself is due for renewal, and whether configured
// certificate files changed on disk.
const defaultCertCheck = time.Minute

// issuedCertName is the file name (in the working path, .pem and .key) of
// the certificate the broker issues itself for the listeners that have no
// configured certificate files.
const issuedCertName = "broker"

// certManager keeps the broker's listener certificates current without
// restarting a listener: each listener serves its certificate through a
// pki.Holder (tls.Config.GetCertificate), and check replaces what is due.
// TLS connections already made, such as agent links, keep going.
type certManager struct {
	dir      string
	ca       *pki.CA
	names    func() []string // the names of an issued certificate
	validity time.Duration   // the lifetime of an issued certificate
	log      *slog.Logger

	mu        sync.Mutex
	issued    *pki.Holder            // shared by listeners without files; nil until one needs it
	files     []*fileCert            // listeners with configured files
	listeners map[string]*pki.Holder // by listener name, for metrics
}

// fileCert is a listener certificate kept in files that an operator renews.
type fileCert struct {
	listener string
	pair     *pki.FilePair
	holder   *pki.Holder
	lastErr  string // the last reload error logged, to log each once
}

// holder returns the Holder of listener: the certificate in certFile and
// keyFile, or, when they are empty, the one the broker issues from its CA.
func (cm *certManager) holder(listener, certFile, keyFile string) (*pki.Holder, error) {
	cm.mu.Lock()
	defer cm.mu.Unlock()
	if cm.listeners == nil {
		cm.listeners = make(map[string]*pki.Holder)
	}
	if certFile != "" {
		pair := &pki.FilePair{CertFile: certFile, KeyFile: keyFile}
		c, err := pair.Load()
		if err != nil {
			return nil, err
		}
		h := pki.NewHolder(c)
		cm.files = append(cm.files, &fileCert{listener: listener, pair: pair, holder: h})
		cm.listeners[listener] = h
		return h, nil
	}
	if cm.issued == nil {
		c, err := pki.LoadOrIssueFor(cm.dir, issuedCertName, cm.ca, cm.names(), cm.validity)
		if err != nil {
			return nil, err
		}
		cm.issued = pki.NewHolder(c)
	}
	cm.listeners[listener] = cm.issued
	return cm.issued, nil
}

// check renews the issued certificate once two thirds of its lifetime have
// passed, and reloads configured files that changed. A failure is logged and
// tried again on the next check; the listener keeps its certificate.
func (cm *certManager) check(now time.Time) {
	cm.mu.Lock()
	defer cm.mu.Unlock()
	if h := cm.issued; h != nil && !now.Before(pki.RenewTime(h.Leaf())) {
		c, err := pki.LoadOrIssueFor(cm.dir, issuedCertName, cm.ca, cm.names(), cm.validity)
		switch {
		case err != nil:
			cm.log.Warn("renew the broker's certificate; trying again at the next check", "err", err,
				"not_after", h.Leaf().NotAfter)
		case !c.Leaf.Equal(h.Leaf()):
			h.Set(c)
			cm.log.Info("renewed the broker's certificate", "serial", c.Leaf.SerialNumber.Text(16),
				"not_after", c.Leaf.NotAfter)
		}
	}
	for _, f := range cm.files {
		reloaded, err := f.pair.Reload(f.holder)
		if err != nil {
			// Often one file is replaced before the other: the next check
			// sees both.
			if msg := err.Error(); msg != f.lastErr {
				f.lastErr = msg
				cm.log.Warn("reload a changed certificate; keeping the current one", "listener", f.listener, "err", err)
			}
			continue
		}
		if reloaded {
			f.lastErr = ""
			cm.log.Info("reloaded a changed certificate", "listener", f.listener, "file", f.pair.CertFile,
				"not_after", f.holder.Leaf().NotAfter)
		}
	}
}

// run checks every interval until ctx is done.
func (cm *certManager) run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			cm.check(now)
		}
	}
}

// expiry returns the NotAfter of each listener's certificate.
func (cm *certManager) expiry() map[string]time.Time {
	cm.mu.Lock()
	defer cm.mu.Unlock()
	out := make(map[string]time.Time, len(cm.listeners))
	for l, h := range cm.listeners {
		out[l] = h.Leaf().NotAfter
	}
	return out
}

// serverTLS returns the tls.Config of a listener serving h's certificate.
func serverTLS(h *pki.Holder) *tls.Config {
	return &tls.Config{GetCertificate: h.GetCertificate, MinVersion: tls.VersionTLS12}
}
