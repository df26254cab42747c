package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/oauth"
	"github.com/berth-dev/berth/internal/pki"
)

// store is what the broker keeps its state in: internal/sqlite or
// internal/postgres.
type store interface {
	broker.Store
	oauth.Store
}

// caSetting names the store setting that holds the CA shared by the brokers
// of a cluster (its certificate and key, PEM encoded).
const caSetting = "ca"

// loadCA returns the broker's certificate authority, the CA of its own
// listeners (not of the agents' web gateways: see loadWebGatewayCA). A single
// broker on SQLite keeps it in its working path (ca.pem, ca.key). Brokers
// sharing a PostgreSQL database share one CA kept in the database, so that
// agents and clients trust every broker: the
// first broker to start stores its CA (the working path's, if it has one, or
// a new one), and the others take it; each writes the CA certificate to
// ca.pem in its working path for local agents and clients.
func (m *Main) loadCA(ctx context.Context) (*pki.CA, error) {
	dir := m.Config.WorkingPath
	if m.Config.PersistenceDB != "postgresql" {
		return pki.LoadOrCreateCA(dir)
	}
	certPEM, keyPEM, local, err := pki.ReadCAFiles(dir)
	if err != nil {
		return nil, err
	}
	if !local {
		if certPEM, keyPEM, err = pki.NewCAPEM(); err != nil {
			return nil, err
		}
	}
	v, err := m.store.Setting(ctx, caSetting, string(certPEM)+string(keyPEM))
	if err != nil {
		return nil, fmt.Errorf("read the cluster's CA from the store: %w", err)
	}
	i := strings.Index(v, "-----END CERTIFICATE-----")
	if i < 0 {
		return nil, errors.New("the store's CA setting holds no certificate")
	}
	i += len("-----END CERTIFICATE-----\n")
	i = min(i, len(v))
	shared, sharedKey := []byte(v[:i]), []byte(v[i:])
	ca, err := pki.ParseCA(shared, sharedKey)
	if err != nil {
		return nil, fmt.Errorf("the store's CA: %w", err)
	}
	if local && !bytes.Equal(bytes.TrimSpace(certPEM), bytes.TrimSpace(shared)) {
		return nil, fmt.Errorf("%s holds ca.pem and ca.key of another CA than the brokers sharing persistence-dsn: remove both files to use the cluster's CA", dir)
	}
	if !local {
		if err := pki.WriteCACert(dir, shared); err != nil {
			return nil, fmt.Errorf("write ca.pem: %w", err)
		}
	}
	return ca, nil
}

// Files and setting of the web gateway CA.
const (
	webGatewayCACertFile = "gateway-ca.pem"
	webGatewayCAKeyFile  = "gateway-ca.key"
	// webGatewayCAKeySetting names the store setting that holds the web
	// gateway CA's key, shared by the brokers of a cluster.
	webGatewayCAKeySetting = "gateway-ca-key"
)

// loadWebGatewayCA returns the web gateway CA: the CA that signs the agents'
// web gateway certificates, which browsers trust. It is separate from the
// broker's own CA and name-constrained to web-gateway-ca-permitted-subtrees
// (pki.ConstrainedCA). Its key is gateway-ca.key in the working path on
// SQLite, and a setting shared by every broker on PostgreSQL; its
// certificate, gateway-ca.pem in the working path, is made again for the
// same key when the permitted subtrees change, so that agents keep their
// certificates and browsers that trust the old one keep trusting the names
// both permit. A deployment of an earlier release, which had only ca.pem,
// gets its gateway CA on its first start.
func (m *Main) loadWebGatewayCA(ctx context.Context) (*pki.CA, error) {
	dir := m.Config.WorkingPath
	keyFile := filepath.Join(dir, webGatewayCAKeyFile)
	var keyPEM []byte
	var err error
	if m.Config.PersistenceDB != "postgresql" {
		keyPEM, err = pki.LoadOrCreateKeyFile(keyFile)
	} else {
		var fresh []byte
		if fresh, err = pki.NewKeyPEM(); err != nil {
			return nil, err
		}
		var v string
		if v, err = m.store.Setting(ctx, webGatewayCAKeySetting, string(fresh)); err != nil {
			return nil, fmt.Errorf("read the cluster's web gateway CA from the store: %w", err)
		}
		keyPEM = []byte(v)
	}
	if err != nil {
		return nil, err
	}
	cons := m.Config.webGatewayCAConstraints()
	ca, changed, err := pki.ConstrainedCA(keyPEM, filepath.Join(dir, webGatewayCACertFile), cons)
	if err != nil {
		return nil, err
	}
	if changed {
		m.Logger.Info("web gateway CA certificate written; browsers trust this one, never ca.pem",
			"file", filepath.Join(dir, webGatewayCACertFile), "permitted", cons.String(), "key_id", ca.KeyID())
	}
	return ca, nil
}

// clusterAddress says where this broker runs, for the message that refuses
// a second broker started with the same broker-id: its host, ports and
// process.
func (m *Main) clusterAddress() string {
	host, _ := os.Hostname()
	c := &m.Config
	return fmt.Sprintf("host %s (client port %d, agent port %d, pid %d)", host, c.ClientPort, c.AgentPort, os.Getpid())
}

// locateAgent tells the cluster node which broker holds a server's agent link.
func (m *Main) locateAgent(ctx context.Context, serverID string) (string, error) {
	srv, err := m.store.GetServer(ctx, serverID)
	if err != nil {
		return "", err
	}
	if srv.LastSeen.IsZero() {
		return "", nil
	}
	return srv.BrokerID, nil
}
