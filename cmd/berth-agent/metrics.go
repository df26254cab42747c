package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/netlimit"
	"github.com/berth-dev/berth/internal/pki"
)

// startMetrics serves /metrics over HTTPS on metrics.bind_host:metrics.port
// until Close, with metrics.cert_file (re-read when it changes), else the web
// gateway's certificate (gw, renewed with it), else one from the agent's own
// CA in agent.state_dir/metrics-ca.
func (m *Main) startMetrics(ctx, runCtx context.Context, gw *pki.Holder) error {
	mc := &m.Config.Metrics
	var h *pki.Holder
	var err error
	source := "gateway"
	switch {
	case mc.CertFile != "":
		source = "files"
		if h, err = m.watchedFiles(runCtx, mc.CertFile, mc.KeyFile); err != nil {
			return fmt.Errorf("metrics.cert_file: %w", err)
		}
	case gw != nil:
		h = gw
	default:
		source = "agent CA"
		if h, err = m.localCertificate(runCtx, mc.BindHost); err != nil {
			return fmt.Errorf("metrics certificate: %w", err)
		}
	}
	expiring := h // the certificate users meet: the gateway's, else this listener's
	if gw != nil {
		expiring = gw
	}
	m.metrics.CertificateExpiry(func() time.Time { return expiring.Leaf().NotAfter })

	raw, err := net.Listen("tcp", net.JoinHostPort(mc.BindHost, strconv.Itoa(mc.Port)))
	if err != nil {
		return fmt.Errorf("metrics.port: %w", err)
	}
	ln := netlimit.Wrap(raw, metricsLimits, netlimit.Options{Name: "metrics", Logger: m.Logger})
	m.metricsAddr = ln.Addr().String()
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.metrics.Handler())
	m.metricsSrv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          log.New(debugWriter{m.Logger}, "", 0),
		TLSConfig:         &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: h.GetCertificate},
	}
	srv := m.metricsSrv
	m.Logger.Info("metrics listening", "addr", "https://"+m.metricsAddr+"/metrics", "certificate", source)
	m.background(func() {
		if err := srv.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			m.Logger.Error("metrics listener stopped", "err", err)
		}
	})
	return nil
}

// metricsLimits bound the metrics listener's connections: scrapers are few.
var metricsLimits = netlimit.Limits{Max: 64, MaxPerAddr: 16}

// stopMetrics shuts the metrics listener down.
func (m *Main) stopMetrics() {
	if m.metricsSrv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := m.metricsSrv.Shutdown(ctx); err != nil {
		m.metricsSrv.Close()
	}
	m.metricsSrv = nil
}

// MetricsAddr is the metrics listener's address (host:port), once Run has
// returned nil with metrics.port set.
func (m *Main) MetricsAddr() string { return m.metricsAddr }

// debugWriter turns http.Server's error log (TLS handshake noise) into debug
// lines.
type debugWriter struct{ l *slog.Logger }

func (w debugWriter) Write(p []byte) (int, error) {
	w.l.Debug(strings.TrimSpace(string(p)))
	return len(p), nil
}
