// Package listencert keeps the broker's listener certificates current under
// running listeners. A listener with configured certificate files serves
// them and takes them again when an operator replaces both (certbot, a
// configuration manager); the listeners without files share one certificate
// that the broker issues itself from its CA, kept in its working path
// (broker.pem, broker.key) and renewed once two thirds of its lifetime have
// passed. Each listener serves its certificate through a pki.Holder
// (tls.Config.GetCertificate, see ServerTLS), so a replacement reaches new
// handshakes while TLS connections already made, such as agent links, keep
// going.
//
// These are the certificates of the broker's own listeners, which clients
// and agents verify with ca.pem; the agents' web gateway certificates come
// from another CA (internal/agentcert).
package listencert

import (
	"cmp"
	"context"
	"crypto/tls"
	"log/slog"
	"sync"
	"time"

	"github.com/berth-dev/berth/internal/pki"
)

// DefaultCheck is how often Run checks the certificates: whether the one the
// broker issued itself is due for renewal, and whether configured files
// changed on disk.
const DefaultCheck = time.Minute

// IssuedName is the file name (in Config.Dir, .pem and .key) of the
// certificate the broker issues itself for the listeners that have no
// configured certificate files.
const IssuedName = "broker"

// Config configures a Manager.
type Config struct {
	// Dir keeps the issued certificate (IssuedName).
	Dir string
	// CA issues the certificate of the listeners without files.
	CA *pki.CA
	// Names are the names the issued certificate covers; it is called
	// again at each renewal.
	Names func() []string
	// Validity is the lifetime of an issued certificate; 0 means
	// pki.LeafValidity.
	Validity time.Duration
	// Logger receives renewals, reloads and their failures; nil discards
	// them.
	Logger *slog.Logger
}

// Manager holds each listener's certificate and replaces what is due. It is
// safe for concurrent use.
type Manager struct {
	cfg Config

	mu        sync.Mutex
	issued    *pki.Holder            // shared by listeners without files; nil until one needs it
	files     []*fileCert            // listeners with configured files
	listeners map[string]*pki.Holder // by listener name, for Expiry
}

// fileCert is a listener certificate kept in files that an operator renews.
type fileCert struct {
	listener string
	pair     *pki.FilePair
	holder   *pki.Holder
	lastErr  string // the last reload error logged, to log each once
}

// New returns a Manager for cfg; it reads nothing until Holder.
func New(cfg Config) *Manager {
	cfg.Validity = cmp.Or(cfg.Validity, pki.LeafValidity)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Manager{cfg: cfg, listeners: make(map[string]*pki.Holder)}
}

// Names returns the names the issued certificate covers (Config.Names).
func (m *Manager) Names() []string { return m.cfg.Names() }

// Holder returns the Holder of listener: the certificate in certFile and
// keyFile, or, when they are empty, the one the broker issues from its CA
// (loaded from Config.Dir when it is still good), shared by every listener
// without files.
func (m *Manager) Holder(listener, certFile, keyFile string) (*pki.Holder, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if certFile != "" {
		pair := &pki.FilePair{CertFile: certFile, KeyFile: keyFile}
		c, err := pair.Load()
		if err != nil {
			return nil, err
		}
		h := pki.NewHolder(c)
		m.files = append(m.files, &fileCert{listener: listener, pair: pair, holder: h})
		m.listeners[listener] = h
		return h, nil
	}
	if m.issued == nil {
		c, err := pki.LoadOrIssueFor(m.cfg.Dir, IssuedName, m.cfg.CA, m.cfg.Names(), m.cfg.Validity)
		if err != nil {
			return nil, err
		}
		m.issued = pki.NewHolder(c)
	}
	m.listeners[listener] = m.issued
	return m.issued, nil
}

// Check renews the issued certificate once now is past its renewal time
// (pki.RenewTime), and reloads configured files that changed. A failure is
// logged and tried again on the next check; the listener keeps its
// certificate.
func (m *Manager) Check(now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	log := m.cfg.Logger
	if h := m.issued; h != nil && !now.Before(pki.RenewTime(h.Leaf())) {
		c, err := pki.LoadOrIssueFor(m.cfg.Dir, IssuedName, m.cfg.CA, m.cfg.Names(), m.cfg.Validity)
		switch {
		case err != nil:
			log.Warn("renew the broker's certificate; trying again at the next check", "err", err,
				"not_after", h.Leaf().NotAfter)
		case !c.Leaf.Equal(h.Leaf()):
			h.Set(c)
			log.Info("renewed the broker's certificate", "serial", c.Leaf.SerialNumber.Text(16),
				"not_after", c.Leaf.NotAfter)
		}
	}
	for _, f := range m.files {
		reloaded, err := f.pair.Reload(f.holder)
		if err != nil {
			// Often one file is replaced before the other: the next check
			// sees both.
			if msg := err.Error(); msg != f.lastErr {
				f.lastErr = msg
				log.Warn("reload a changed certificate; keeping the current one", "listener", f.listener, "err", err)
			}
			continue
		}
		if reloaded {
			f.lastErr = ""
			log.Info("reloaded a changed certificate", "listener", f.listener, "file", f.pair.CertFile,
				"not_after", f.holder.Leaf().NotAfter)
		}
	}
}

// Run checks every interval until ctx is done.
func (m *Manager) Run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			m.Check(now)
		}
	}
}

// Expiry returns the NotAfter of each listener's certificate, by listener
// name.
func (m *Manager) Expiry() map[string]time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]time.Time, len(m.listeners))
	for l, h := range m.listeners {
		out[l] = h.Leaf().NotAfter
	}
	return out
}

// ServerTLS returns the tls.Config of a listener serving h's certificate.
func ServerTLS(h *pki.Holder) *tls.Config {
	return &tls.Config{GetCertificate: h.GetCertificate, MinVersion: tls.VersionTLS12}
}
