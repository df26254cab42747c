package main

import (
	"crypto/tls"
	"fmt"
	"net/http"

	"github.com/berth-dev/berth/internal/cgresolver"
	"github.com/berth-dev/berth/internal/httpapi"
	"github.com/berth-dev/berth/internal/listencert"
	"github.com/berth-dev/berth/internal/netlimit"
	"github.com/berth-dev/berth/internal/pki"
)

// startResolver opens the gateway-to-broker connector (enable-gateway): an
// HTTPS listener that serves the DCV Connection Gateway's session resolver,
// with client certificates required when enable-tls-client-auth-gateway is
// set.
func (m *Main) startResolver() error {
	c := &m.Config
	cert, err := m.certs.Holder("gateway", c.ConnectionGatewayCertFile, c.ConnectionGatewayKeyFile)
	if err != nil {
		return err
	}
	cfg := listencert.ServerTLS(cert)
	if c.ConnectionGatewayTLSClientAuth {
		pool, err := pki.LoadPool(c.ConnectionGatewayTrustStoreFile)
		if err != nil {
			return fmt.Errorf("gateway-to-broker-connector-trust-store-file: %w (berth reads a PEM bundle of CA certificates; export a JKS trust store with keytool -exportcert -rfc)", err)
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	m.resolverLn, err = m.listenTLS("gateway", c.ConnectionGatewayBindHost, c.ConnectionGatewayPort,
		netlimit.Limits{Max: c.ConnectionGatewayMaxConns, MaxPerAddr: c.ConnectionGatewayMaxConnsPerAddr}, cfg)
	if err != nil {
		return fmt.Errorf("gateway-to-broker-connector: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("POST /resolveSession", cgresolver.Handler(m.svc, cgresolver.NewDNSMappings(c.WorkingPath, m.Logger), m.Logger))
	mux.Handle("GET /health", httpapi.HealthHandler(m.store))
	m.serve(m.resolverLn, mux)
	m.Logger.Info("connection gateway resolver started", "gateway_addr", m.resolverLn.Addr().String(),
		"tls_client_auth", c.ConnectionGatewayTLSClientAuth)
	return nil
}

// ResolverAddr is the Connection Gateway resolver listener's address, "" when
// enable-gateway is off.
func (m *Main) ResolverAddr() string {
	if m.resolverLn == nil {
		return ""
	}
	return m.resolverLn.Addr().String()
}
