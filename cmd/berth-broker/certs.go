package main

import (
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/berth-dev/berth/internal/oauth"
	"github.com/berth-dev/berth/internal/pki"
)

// gatewayCertValidity is the lifetime of certificates issued to agents' web
// gateways; agents renew them well before they expire.
const gatewayCertValidity = 90 * 24 * time.Hour

// certificateHandler serves POST /agent/certificate on the agent port: a
// registered agent (HTTP Basic agent client credentials) sends a PEM
// certificate request and gets a server certificate signed by the broker's CA,
// for its web gateway. Only registered agents are served, so the handler is off
// when agent authorization is.
func certificateHandler(auth *oauth.Authority, ca *pki.CA, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, secret, ok := r.BasicAuth()
		if !ok {
			w.Header().Set("WWW-Authenticate", `Basic realm="berth agents"`)
			http.Error(w, "agent client credentials are required", http.StatusUnauthorized)
			return
		}
		client, err := auth.Authenticate(r.Context(), oauth.KindAgent, id, secret)
		if err != nil {
			http.Error(w, "invalid agent client credentials", http.StatusUnauthorized)
			return
		}
		csr, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 16<<10))
		if err != nil {
			http.Error(w, "certificate request: larger than 16 KiB", http.StatusRequestEntityTooLarge)
			return
		}
		cert, err := ca.SignCSR(csr, gatewayCertValidity)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		log.Info("issued gateway certificate", "agent_id", client.ID)
		w.Header().Set("Content-Type", "application/x-pem-file")
		_, _ = w.Write(append(cert, ca.CertPEM...))
	})
}
