package main

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/berth-dev/berth/internal/pki"
	"github.com/berth-dev/berth/internal/properties"
	"github.com/berth-dev/berth/internal/webhook"
)

// Config is the broker's configuration: the keys of the reference broker's
// session-manager-broker.properties that berth uses, plus berth's own, each as
// a typed field. docs/config.md describes every key. Precedence is
// DefaultConfig < the file (LoadConfig) < flags (set by the caller, who then
// calls Validate).
type Config struct {
	// ClientPort is client-to-broker-connector-https-port: the REST API and
	// OAuth2 token endpoint. 0 picks a free port.
	ClientPort int
	// ClientBindHost is client-to-broker-connector-bind-host.
	ClientBindHost string
	// ClientCertFile and ClientKeyFile are
	// client-to-broker-connector-certificate-file and
	// client-to-broker-connector-private-key-file (PEM). Empty: the broker
	// issues a certificate from its own CA.
	ClientCertFile string
	ClientKeyFile  string

	// AgentPort is agent-to-broker-connector-https-port: agents and DCV
	// server token verification. 0 picks a free port.
	AgentPort int
	// AgentBindHost is agent-to-broker-connector-bind-host.
	AgentBindHost string
	// AgentCertFile and AgentKeyFile are
	// agent-to-broker-connector-certificate-file and
	// agent-to-broker-connector-private-key-file (PEM). Empty: the broker
	// issues a certificate from its own CA.
	AgentCertFile string
	AgentKeyFile  string

	// EnableConnectionGateway is enable-gateway: serve the DCV Connection
	// Gateway's session resolver (internal/cgresolver). The Connection* names
	// are berth's for the reference's gateway-* keys; the agents' web gateway
	// is another thing (WebGatewayCASubtrees).
	EnableConnectionGateway bool
	// ConnectionGatewayPort is gateway-to-broker-connector-https-port. 0
	// picks a free port.
	ConnectionGatewayPort int
	// ConnectionGatewayBindHost is gateway-to-broker-connector-bind-host.
	ConnectionGatewayBindHost string
	// ConnectionGatewayCertFile and ConnectionGatewayKeyFile are
	// gateway-to-broker-connector-certificate-file and
	// gateway-to-broker-connector-private-key-file (PEM; berth's
	// replacement for the reference's key store). Empty: the broker issues a
	// certificate from its own CA.
	ConnectionGatewayCertFile string
	ConnectionGatewayKeyFile  string
	// ConnectionGatewayTLSClientAuth is enable-tls-client-auth-gateway:
	// require a client certificate from the Connection Gateway.
	ConnectionGatewayTLSClientAuth bool
	// ConnectionGatewayTrustStoreFile and ConnectionGatewayTrustStorePass are
	// gateway-to-broker-connector-trust-store-file and -trust-store-pass:
	// the CAs that sign gateway client certificates.
	ConnectionGatewayTrustStoreFile string
	ConnectionGatewayTrustStorePass string

	// MetricsPort is metrics-port: the HTTPS port of the Prometheus metrics
	// listener; MetricsOff (the default, an empty value in the file) means no
	// such listener, 0 any free port.
	MetricsPort int
	// MetricsBindHost is metrics-bind-host.
	MetricsBindHost string

	// ClientMaxConns and ClientMaxConnsPerAddr are
	// client-to-broker-connector-max-connections and
	// client-to-broker-connector-max-connections-per-address: how many
	// connections the client API holds at once, in all and from one client
	// network (an IPv4 address, or an IPv6 /64); 0 is no bound. Connections
	// over either bound are closed on accept.
	ClientMaxConns        int
	ClientMaxConnsPerAddr int
	// AgentMaxConns and AgentMaxConnsPerAddr are the same bounds of the
	// agent connector (agent-to-broker-connector-max-connections and
	// -max-connections-per-address). Every agent holds one connection, and a
	// fleet behind one NAT or load balancer shares one address, so the
	// per-address bound must stay above the fleet's size there.
	AgentMaxConns        int
	AgentMaxConnsPerAddr int
	// ConnectionGatewayMaxConns and ConnectionGatewayMaxConnsPerAddr are the
	// same bounds of the Connection Gateway resolver
	// (gateway-to-broker-connector-max-connections and
	// -max-connections-per-address).
	ConnectionGatewayMaxConns        int
	ConnectionGatewayMaxConnsPerAddr int
	// RequestHeaderTimeout is connector-request-header-timeout-seconds: on
	// every listener, a new connection must finish its TLS handshake, and a
	// request its header, within this time.
	RequestHeaderTimeout time.Duration
	// RequestReadTimeout is connector-request-read-timeout-seconds: a
	// request, header and body, must arrive within this time of its first
	// byte. WebSockets (agent links) are not bound by it.
	RequestReadTimeout time.Duration
	// IdleTimeout is connector-idle-timeout-seconds: a kept-alive connection
	// with no request for this long is closed.
	IdleTimeout time.Duration

	// DCVVerifierAllowed is dcv-token-verifier-allowed-addresses: who may
	// call the DCV token verifier, a comma-separated list of IP addresses,
	// CIDR networks and the word "servers" (the addresses of the broker's
	// DCV servers: those of live agent links, and those the session's server
	// reports). Empty: nobody.
	DCVVerifierAllowed string
	// DCVVerifierRate is dcv-token-verifier-rate-limit: verifications per
	// second from one caller address (bursts of twice as many); 0 is no
	// limit.
	DCVVerifierRate int

	// WorkingPath is session-manager-working-path: the state directory
	// (database, keys, certificates).
	WorkingPath string
	// PersistenceDB is persistence-db: "sqlite" or "postgresql".
	PersistenceDB string
	// PersistenceDSN is persistence-dsn: for sqlite a file path, empty
	// meaning WorkingPath/berth.db; for postgresql a connection string
	// (required).
	PersistenceDSN string
	// BrokerID is broker-id: this broker's name among brokers sharing one
	// database. Empty means the host name (DefaultConfig fills it in).
	BrokerID string
	// CertificateNames is certificate-names: extra DNS names and IP
	// addresses, comma-separated, for the certificates the broker issues
	// itself (a load balancer's name in front of several brokers).
	CertificateNames string
	// WebGatewayCASubtrees is web-gateway-ca-permitted-subtrees: the DNS
	// domains and address ranges, comma-separated, that the web gateway CA
	// may certify (its RFC 5280 name constraints). Empty means
	// pki.DefaultConstraints.
	WebGatewayCASubtrees string

	// EnableAuthorization is enable-authorization: the client API requires
	// a bearer token.
	EnableAuthorization bool
	// EnableAuthorizationServer is enable-authorization-server: the broker
	// issues OAuth2 access tokens itself and accepts them. Either way, the
	// API accepts the tokens of the external authorization servers
	// registered with register-auth-server.
	EnableAuthorizationServer bool
	// AuthServerCABundleFile is auth-server-ca-bundle-file: PEM
	// certificates trusted, besides the system roots, for fetching the key
	// sets of registered external authorization servers. Empty: the system
	// roots only.
	AuthServerCABundleFile string
	// EnableAgentAuthorization is enable-agent-authorization: agents must
	// authenticate.
	EnableAgentAuthorization bool
	// AccessTokenDuration is access-token-duration-minutes: lifetime of the
	// access tokens the broker issues.
	AccessTokenDuration time.Duration
	// ConnectTokenDuration is connect-session-token-duration-minutes:
	// lifetime of a session ConnectionToken.
	ConnectTokenDuration time.Duration
	// RegistrationsPerMinute is agent-registrations-per-minute: how
	// many agent registrations this broker takes a minute, with bursts of as
	// many (0: no limit). The default lets a fleet of 10,000 register at
	// once; admission control (oauth.RegistrationLimits.Concurrent) is what
	// keeps such a storm from swamping the broker.
	RegistrationsPerMinute int
	// RegistrationsPerAddress is
	// agent-registrations-per-minute-per-address: the same from one remote
	// address (0: no limit).
	RegistrationsPerAddress int
	// UnlinkedAgentTimeout is
	// seconds-before-deleting-unlinked-agent-clients: how long an agent
	// client may stay without ever linking before it is deleted (0: never).
	UnlinkedAgentTimeout time.Duration

	// ScreenshotMaxWidth and ScreenshotMaxHeight are
	// session-screenshot-max-width and session-screenshot-max-height, in
	// pixels.
	ScreenshotMaxWidth  int
	ScreenshotMaxHeight int
	// ScreenshotFormat is session-screenshot-format: "png" or "jpeg".
	ScreenshotFormat string

	// QueueMaxSize is create-sessions-queue-max-size: how many queued
	// CreateSessions requests may wait.
	QueueMaxSize int
	// QueueMaxTime is create-sessions-queue-max-time-seconds: how long a
	// queued request waits before it fails.
	QueueMaxTime time.Duration
	// Retries is create-sessions-number-of-retries-on-failure: how many
	// other servers a failed create is retried on; 0 means no retry.
	Retries int
	// DeleteSessionDuration is delete-session-duration-hours (or the older
	// delete-session-duration-seconds): how long DELETED sessions stay
	// visible; 0 purges them at once.
	DeleteSessionDuration time.Duration
	// AuditRetention is audit-retention-days: how long audit records are
	// kept (the leader purges older ones hourly, keeping the chain
	// verifiable); 0 keeps them forever.
	AuditRetention time.Duration
	// AuditAPIClients is audit-api-clients: the API client IDs that may
	// read GET /berth/v1/audit (comma-separated); empty: every API client
	// of the broker's authorization server.
	AuditAPIClients string
	// WebhookWorkers is webhook-workers: how many webhooks the leader
	// delivers to at once (docs/webhooks.md).
	WebhookWorkers int
	// WebhookTimeout is webhook-timeout-seconds: the time limit of one
	// delivery (connect, TLS, answer and the first 64 KiB of its body).
	WebhookTimeout time.Duration
	// WebhookRetry is webhook-retry-hours: how long a failing delivery is
	// retried before its webhook is disabled.
	WebhookRetry time.Duration
	// WebhookRate is webhook-max-deliveries-per-second: the deliveries of
	// all webhooks together, per second, at most.
	WebhookRate int
	// AutorunMaxArgs is autorun-file-arguments-max-size: the most
	// AutorunFileArguments a request may carry.
	AutorunMaxArgs int
	// AutorunMaxArgLength is autorun-file-arguments-max-argument-length:
	// the longest such argument, in characters.
	AutorunMaxArgLength int

	// AgentHeartbeatTimeout is agent-heartbeat-timeout-seconds: a server
	// whose agent sent nothing for this long is UNREACHABLE_AGENT.
	AgentHeartbeatTimeout time.Duration
	// AgentMaxUpdatesPerSecond is agent-max-updates-per-second: past
	// this many updates a second at the base interval (a third of the
	// heartbeat timeout), the fleet's update interval and heartbeat timeout
	// grow with it (broker.Config.MaxUpdateRate); 0: no cap.
	AgentMaxUpdatesPerSecond float64
	// UnreachableServerTimeout is
	// seconds-before-deleting-unreachable-dcv-server: how long an
	// unreachable server is kept before it is forgotten.
	UnreachableServerTimeout time.Duration
	// UnreachableSessionsTimeout is
	// seconds-before-deleting-sessions-unreachable-server: how long the
	// sessions of an unreachable server are kept before they are deleted.
	UnreachableSessionsTimeout time.Duration
	// AgentCertValidity is agent-certificate-validity-hours: the lifetime
	// of the gateway certificates the broker issues to agents.
	AgentCertValidity time.Duration

	// EnableAPIYAML is enable-api-yaml: serve /dcv-session-manager-api.yaml.
	EnableAPIYAML bool
	// LogLevel is log-level: "debug", "info", "warn" or "error".
	LogLevel string
	// LogFormat is log-format: "auto" (text on a terminal, else JSON),
	// "json" or "text".
	LogFormat string
	// LogDirectory is log-directory: where broker.log is written; empty
	// means standard error (the journal under systemd).
	LogDirectory string
	// LogGroup is log-group: a group that may read broker.log (0640);
	// empty: the broker's user only (0600).
	LogGroup string
	// LogMaxSizeMB is log-max-size-mb: broker.log is rotated when it grows
	// past this many megabytes.
	LogMaxSizeMB int
	// LogMaxAgeDays is log-max-age-days: rotated files older than this are
	// removed.
	LogMaxAgeDays int
	// LogMaxBackups is log-max-backups: at most this many rotated files are
	// kept.
	LogMaxBackups int
	// LogRotation is log-rotation: "daily" (also start a new file every day,
	// at midnight UTC) or "size" (only by size).
	LogRotation string

	// PortalEnabled is portal-enabled: serve the web portal at /portal/ on
	// the client connector (internal/portal).
	PortalEnabled bool
	// PortalOIDCIssuer is portal-oidc-issuer: the identity provider's
	// issuer URL (its discovery document is ISSUER/.well-known/openid-configuration).
	// Empty: users sign in with portal links only.
	PortalOIDCIssuer string
	// PortalOIDCClientID, PortalOIDCClientSecret and
	// PortalOIDCClientSecretFile are portal-oidc-client-id,
	// portal-oidc-client-secret and portal-oidc-client-secret-file: the
	// portal's client at the IdP (the secret, or a file holding it; neither
	// for a public client, which PKCE protects).
	PortalOIDCClientID         string
	PortalOIDCClientSecret     string
	PortalOIDCClientSecretFile string
	// PortalOIDCScopes is portal-oidc-scopes: the scopes asked for,
	// separated by spaces or commas; it must hold openid.
	PortalOIDCScopes string
	// PortalOIDCCABundleFile is portal-oidc-ca-bundle-file: PEM CAs trusted
	// for the IdP besides the system roots.
	PortalOIDCCABundleFile string
	// PortalUserClaim is portal-user-claim: the ID token claim that names
	// the OS user.
	PortalUserClaim string
	// PortalUserClaimPattern is portal-user-claim-pattern: a regular
	// expression with one group that the claim must match; the group is the
	// user name. Empty: the claim as it is.
	PortalUserClaimPattern string
	// PortalGroupsClaim is portal-groups-claim: the claim listing the
	// user's groups.
	PortalGroupsClaim string
	// PortalAdminGroup is portal-admin-group: members of this group are the
	// portal's admins.
	PortalAdminGroup string
	// PortalSessionLifetime is portal-session-minutes: how long a portal
	// sign-in lasts.
	PortalSessionLifetime time.Duration
	// PortalExternalURL is portal-external-url: the portal's base URL as
	// browsers reach it (https://HOST[:PORT]), for the IdP's redirect and
	// portal links. Empty: taken from each request's Host.
	PortalExternalURL string

	// The session lifetime policies (docs/lifetimes.md); 0 is off.
	// SessionDisconnectedTimeout is session-disconnected-timeout-minutes,
	// SessionIdleTimeout session-idle-timeout-minutes (fractions allowed).
	SessionDisconnectedTimeout, SessionIdleTimeout float64
	// SessionMaxLifetime is session-max-lifetime-hours, SessionMaxExtension
	// session-max-extension-hours (fractions allowed).
	SessionMaxLifetime, SessionMaxExtension float64
	// SessionWarningMinutes is session-warning-minutes: the comma list of
	// minutes before a policy acts at which clients are warned ("" none).
	SessionWarningMinutes string
	// SessionExtensionDefault is session-extension-default-hours: the
	// extension asked for without a length.
	SessionExtensionDefault float64
	// SessionPolicyInterval is session-policy-interval-seconds: how often
	// the leader broker runs the policies (fractions allowed).
	SessionPolicyInterval float64
	// ScalingIdleServerMinutes is scaling-idle-server-minutes: how long an
	// open server has had no session before it is reported idle;
	// ScalingInterval is scaling-interval-seconds: how often the scaling
	// signals are checked (docs/autoscaling.md; fractions allowed).
	ScalingIdleServerMinutes, ScalingInterval float64
	// EventRetentionHours is event-retention-hours: how long events are
	// kept (docs/events.md; fractions allowed).
	EventRetentionHours float64

	// The quotas (docs/quotas.md); 0 is none. SessionMaxSessionsPerUser is
	// session-max-sessions-per-user, SessionMaxGPUsPerUser
	// session-max-gpus-per-user: each owner's concurrent sessions and GPUs.
	SessionMaxSessionsPerUser, SessionMaxGPUsPerUser int
	// SessionGroupsFile is session-groups-file: which users are in which
	// group (/etc/group format); SessionGroupLimitsFile is
	// session-group-limits-file: the limits of groups (TOML). Empty: none.
	SessionGroupsFile, SessionGroupLimitsFile string
}

// MetricsOff is Config.MetricsPort when no metrics listener is configured.
const MetricsOff = -1

// DefaultAgentMaxUpdatesPerSecond is agent-max-updates-per-second's
// default: 10,000 agents report every 50 s (2,000 and fewer every 10 s).
const DefaultAgentMaxUpdatesPerSecond = 200

// DefaultConfig returns the configuration the broker runs with when its
// file sets nothing. BrokerID is the host name.
func DefaultConfig() Config {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "berth-broker"
	}
	return Config{
		ClientPort:                       8443,
		ClientBindHost:                   "0.0.0.0",
		AgentPort:                        8445,
		AgentBindHost:                    "0.0.0.0",
		EnableConnectionGateway:          false,
		ConnectionGatewayPort:            8447,
		ConnectionGatewayBindHost:        "0.0.0.0",
		MetricsPort:                      MetricsOff,
		MetricsBindHost:                  "127.0.0.1",
		ClientMaxConns:                   4096,
		ClientMaxConnsPerAddr:            512,
		AgentMaxConns:                    20000,
		AgentMaxConnsPerAddr:             10000,
		ConnectionGatewayMaxConns:        1024,
		ConnectionGatewayMaxConnsPerAddr: 256,
		RequestHeaderTimeout:             10 * time.Second,
		RequestReadTimeout:               30 * time.Second,
		IdleTimeout:                      120 * time.Second,
		DCVVerifierAllowed:               "servers",
		DCVVerifierRate:                  20,
		WorkingPath:                      "/var/lib/berth",
		PersistenceDB:                    "sqlite",
		BrokerID:                         host,
		EnableAuthorization:              true,
		EnableAuthorizationServer:        true,
		EnableAgentAuthorization:         true,
		AccessTokenDuration:              60 * time.Minute,
		ConnectTokenDuration:             60 * time.Minute,
		RegistrationsPerMinute:           30000,
		RegistrationsPerAddress:          30,
		UnlinkedAgentTimeout:             24 * time.Hour,
		ScreenshotMaxWidth:               160,
		ScreenshotMaxHeight:              100,
		ScreenshotFormat:                 "png",
		QueueMaxSize:                     1000,
		QueueMaxTime:                     1800 * time.Second,
		Retries:                          2,
		DeleteSessionDuration:            time.Hour,
		AuditRetention:                   365 * 24 * time.Hour,
		WebhookWorkers:                   webhook.DefaultWorkers,
		WebhookTimeout:                   10 * time.Second,
		WebhookRetry:                     24 * time.Hour,
		WebhookRate:                      100,
		AutorunMaxArgs:                   50,
		AutorunMaxArgLength:              150,
		AgentHeartbeatTimeout:            30 * time.Second,
		AgentMaxUpdatesPerSecond:         DefaultAgentMaxUpdatesPerSecond,
		UnreachableServerTimeout:         900 * time.Second,
		UnreachableSessionsTimeout:       900 * time.Second,
		AgentCertValidity:                2160 * time.Hour,
		EnableAPIYAML:                    true,
		LogLevel:                         "info",
		LogFormat:                        "auto",
		LogMaxSizeMB:                     100,
		LogMaxAgeDays:                    14,
		LogMaxBackups:                    10,
		LogRotation:                      "daily",
		PortalEnabled:                    true,
		PortalOIDCScopes:                 "openid profile",
		PortalUserClaim:                  "preferred_username",
		PortalGroupsClaim:                "groups",
		PortalSessionLifetime:            480 * time.Minute,
		SessionWarningMinutes:            "15,2",
		SessionExtensionDefault:          1,
		SessionPolicyInterval:            5,
		ScalingIdleServerMinutes:         30,
		ScalingInterval:                  30,
		EventRetentionHours:              168,
	}
}

// ConfigError is one problem with the broker configuration.
type ConfigError struct {
	// File is the configuration file; empty when the problem was found by
	// Validate in a Config that did not come from a file.
	File string
	// Line is the 1-based line in File; 0 when the key is not in the file
	// or the problem concerns the whole file.
	Line int
	// Key is the key concerned; empty for a problem of the whole file.
	Key string
	// Msg says what is wrong; it names the key when there is one.
	Msg string

	// near is a key whose line to report when Key is not in the file
	// (persistence-db for a missing persistence-dsn).
	near string
}

// Error implements error: "config FILE:LINE: MSG".
func (e *ConfigError) Error() string {
	loc := ""
	switch {
	case e.File != "" && e.Line > 0:
		loc = fmt.Sprintf(" %s:%d", e.File, e.Line)
	case e.File != "":
		loc = " " + e.File
	}
	return "config" + loc + ": " + e.Msg
}

// LoadConfig reads the properties file at path over DefaultConfig and
// validates the result. Values may use ${VAR} to take text from the
// environment ("$${" stands for a literal "${"); an unset variable is an
// error. warn, which may be nil, is called once for each reference key that
// berth accepts but ignores, saying why. Unknown keys, duplicate keys and
// bad values are errors; the error joins one *ConfigError per problem, in
// line order.
func LoadConfig(path string, warn func(key, msg string)) (Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return Config{}, fmt.Errorf("read config: %w", err)
	}
	defer f.Close()
	return loadConfig(f, path, os.LookupEnv, warn)
}

// loadConfig is LoadConfig over a reader and an environment.
func loadConfig(r io.Reader, name string, lookupEnv func(string) (string, bool), warn func(key, msg string)) (Config, error) {
	entries, err := properties.Parse(r)
	if err != nil {
		var se *properties.SyntaxError
		if errors.As(err, &se) {
			return Config{}, &ConfigError{File: name, Line: se.Line, Msg: se.Msg}
		}
		return Config{}, fmt.Errorf("read config %s: %w", name, err)
	}
	c := DefaultConfig()
	var errs []*ConfigError
	fail := func(line int, key, msg string) {
		errs = append(errs, &ConfigError{File: name, Line: line, Key: key, Msg: msg})
	}
	lines := make(map[string]int) // key → line where it is set
	for _, e := range entries {
		if first, ok := lines[e.Key]; ok {
			fail(e.Line, e.Key, fmt.Sprintf("duplicate key %q (first set on line %d)", e.Key, first))
			continue
		}
		lines[e.Key] = e.Line
		if why, ok := ignoredConfigKey(e.Key); ok {
			if warn != nil {
				warn(e.Key, why)
			}
			continue
		}
		k, ok := configKeyByName(e.Key)
		if !ok {
			msg := fmt.Sprintf("unknown key %q", e.Key)
			if s := suggestConfigKey(e.Key); s != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", s)
			}
			fail(e.Line, e.Key, msg)
			continue
		}
		v, msg := expandConfigValue(e.Value, lookupEnv)
		if msg == "" {
			msg = k.set(&c, v)
		}
		if msg != "" {
			fail(e.Line, e.Key, e.Key+": "+msg)
			continue
		}
		if k.warn != "" && warn != nil {
			warn(e.Key, k.warn)
		}
	}
	hours, hasHours := lines["delete-session-duration-hours"]
	seconds, hasSeconds := lines["delete-session-duration-seconds"]
	if hasHours && hasSeconds {
		fail(max(hours, seconds), "delete-session-duration-seconds",
			fmt.Sprintf("delete-session-duration-seconds and delete-session-duration-hours are both set (lines %d and %d); keep one",
				min(hours, seconds), max(hours, seconds)))
	}
	if err := c.Validate(); err != nil {
		// Values that failed above were not stored; what is left are the
		// rules between keys. A key already reported is not reported again.
		for _, ve := range validationErrors(err) {
			if slices.ContainsFunc(errs, func(e *ConfigError) bool { return e.Key == ve.Key }) {
				continue
			}
			ve.File = name
			if l, ok := lines[ve.Key]; ok {
				ve.Line = l
			} else {
				ve.Line = lines[ve.near]
			}
			errs = append(errs, ve)
		}
	}
	if len(errs) == 0 {
		return c, nil
	}
	slices.SortStableFunc(errs, func(a, b *ConfigError) int {
		if (a.Line == 0) != (b.Line == 0) {
			return cmp.Compare(b.Line, a.Line) // problems without a line last
		}
		return cmp.Compare(a.Line, b.Line)
	})
	joined := make([]error, len(errs))
	for i, e := range errs {
		joined[i] = e
	}
	return Config{}, errors.Join(joined...)
}

// validationErrors unpacks what Validate returns.
func validationErrors(err error) []*ConfigError {
	if err == nil {
		return nil
	}
	var out []*ConfigError
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			out = append(out, validationErrors(e)...)
		}
		return out
	}
	var ce *ConfigError
	if errors.As(err, &ce) {
		return []*ConfigError{ce}
	}
	return []*ConfigError{{Msg: err.Error()}}
}

// Validate checks every field and the rules between fields. It returns nil
// or the join of one *ConfigError per problem, each naming its key.
func (c *Config) Validate() error {
	var errs []error
	failNear := func(key, near, msg string) {
		errs = append(errs, &ConfigError{Key: key, Msg: key + ": " + msg, near: near})
	}
	fail := func(key, msg string) { failNear(key, "", msg) }
	for _, k := range configKeys() {
		if k.valid != nil && !k.legacy && !k.valid(c) {
			near := ""
			if k.name == "delete-session-duration-hours" {
				near = "delete-session-duration-seconds"
			}
			failNear(k.name, near, fmt.Sprintf("%q is not %s", k.show(c), k.rule))
		}
	}
	pairs := []struct {
		cert, key         string
		certFile, keyFile string
	}{
		{"client-to-broker-connector-certificate-file", "client-to-broker-connector-private-key-file", c.ClientCertFile, c.ClientKeyFile},
		{"agent-to-broker-connector-certificate-file", "agent-to-broker-connector-private-key-file", c.AgentCertFile, c.AgentKeyFile},
		{"gateway-to-broker-connector-certificate-file", "gateway-to-broker-connector-private-key-file", c.ConnectionGatewayCertFile, c.ConnectionGatewayKeyFile},
	}
	for _, p := range pairs {
		switch {
		case p.certFile != "" && p.keyFile == "":
			failNear(p.key, p.cert, "required when "+p.cert+" is set")
		case p.certFile == "" && p.keyFile != "":
			failNear(p.cert, p.key, "required when "+p.key+" is set")
		}
	}
	if c.PersistenceDB == "postgresql" && c.PersistenceDSN == "" {
		failNear("persistence-dsn", "persistence-db", "required when persistence-db is postgresql (for example postgres://berth@db.example.com/berth)")
	}
	if c.EnableConnectionGateway && c.ConnectionGatewayTLSClientAuth && c.ConnectionGatewayTrustStoreFile == "" {
		failNear("gateway-to-broker-connector-trust-store-file", "enable-tls-client-auth-gateway", "required when enable-tls-client-auth-gateway is true")
	}
	if c.PortalOIDCIssuer != "" && c.PortalOIDCClientID == "" {
		failNear("portal-oidc-client-id", "portal-oidc-issuer", "required when portal-oidc-issuer is set (the portal's client ID at the identity provider)")
	}
	if c.PortalOIDCClientSecret != "" && c.PortalOIDCClientSecretFile != "" {
		failNear("portal-oidc-client-secret-file", "portal-oidc-client-secret", "portal-oidc-client-secret is set too; keep one")
	}
	if c.RequestReadTimeout > 0 && c.RequestReadTimeout < c.RequestHeaderTimeout {
		failNear("connector-request-read-timeout-seconds", "connector-request-header-timeout-seconds",
			fmt.Sprintf("must be at least connector-request-header-timeout-seconds (%d): it bounds the header too", c.RequestHeaderTimeout/time.Second))
	}
	type port struct {
		key  string
		port int
	}
	ports := []port{{"client-to-broker-connector-https-port", c.ClientPort}, {"agent-to-broker-connector-https-port", c.AgentPort}}
	if c.EnableConnectionGateway {
		ports = append(ports, port{"gateway-to-broker-connector-https-port", c.ConnectionGatewayPort})
	}
	if c.MetricsPort != MetricsOff {
		ports = append(ports, port{"metrics-port", c.MetricsPort})
	}
	for i, p := range ports {
		for _, q := range ports[:i] {
			if p.port != 0 && p.port == q.port {
				fail(p.key, fmt.Sprintf("port %d is already used by %s", p.port, q.key))
			}
		}
	}
	return errors.Join(errs...)
}

// configKey describes one key of the file.
type configKey struct {
	name string
	// rule says what a valid value is: "%q is not " + rule.
	rule string
	// parse stores the text of a value in the Config; it returns what is
	// wrong with the text, or "" when it could be read.
	parse func(c *Config, v string) string
	// valid checks the field's value (nil: any value that parses is).
	valid func(c *Config) bool
	// show writes the field's value as the file would.
	show func(c *Config) string
	// warn, when set, is passed to the warn callback whenever the key is set.
	warn string
	// legacy marks another spelling of a key: Validate checks the field
	// under the current spelling only.
	legacy bool
}

func legacyKey(k configKey) configKey { k.legacy = true; return k }

func warnKey(k configKey, warn string) configKey { k.warn = warn; return k }

// set parses v into c and checks it. On failure c is left unchanged.
func (k configKey) set(c *Config, v string) string {
	old := *c
	msg := k.parse(c, v)
	if msg == "" && k.valid != nil && !k.valid(c) {
		msg = fmt.Sprintf("%q is not %s", v, k.rule)
	}
	if msg != "" {
		*c = old
	}
	return msg
}

const portRule = "a port number (1-65535, or 0 for any free port)"

func portKey(name string, field func(*Config) *int) configKey {
	return intKey(name, portRule, func(n int) bool { return n >= 0 && n <= 65535 }, field)
}

// optionalPortKey is a port key whose empty value (stored as MetricsOff)
// turns its listener off.
func optionalPortKey(name string, field func(*Config) *int) configKey {
	const rule = "a port number (1-65535, 0 for any free port, or empty for none)"
	k := intKey(name, rule, func(n int) bool { return n == MetricsOff || n >= 0 && n <= 65535 }, field)
	parse := k.parse
	k.parse = func(c *Config, v string) string {
		if v == "" {
			*field(c) = MetricsOff
			return ""
		}
		if v == strconv.Itoa(MetricsOff) {
			return fmt.Sprintf("%q is not %s", v, rule)
		}
		return parse(c, v)
	}
	k.show = func(c *Config) string {
		if *field(c) == MetricsOff {
			return ""
		}
		return strconv.Itoa(*field(c))
	}
	return k
}

// atLeastKey is a key whose value is a whole number of at least least.
func atLeastKey(name string, least int, field func(*Config) *int) configKey {
	rule := fmt.Sprintf("a whole number (at least %d)", least)
	if least == 0 {
		rule = "a whole number (0 or more)"
	}
	return intKey(name, rule, func(n int) bool { return n >= least }, field)
}

func intKey(name, rule string, valid func(int) bool, field func(*Config) *int) configKey {
	return configKey{
		name: name,
		rule: rule,
		parse: func(c *Config, v string) string {
			n, err := strconv.Atoi(v)
			if err != nil {
				return fmt.Sprintf("%q is not %s", v, rule)
			}
			*field(c) = n
			return ""
		},
		valid: func(c *Config) bool { return valid(*field(c)) },
		show:  func(c *Config) string { return strconv.Itoa(*field(c)) },
	}
}

// durationKey is a key whose value is a whole number of units.
func durationKey(name string, unit time.Duration, unitName string, least int64, field func(*Config) *time.Duration) configKey {
	rule := fmt.Sprintf("a whole number of %s (at least %d)", unitName, least)
	if least == 0 {
		rule = fmt.Sprintf("a whole number of %s (0 or more)", unitName)
	}
	k := configKey{name: name, rule: rule}
	k.parse = func(c *Config, v string) string {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return fmt.Sprintf("%q is not %s", v, k.rule)
		}
		if n > int64(math.MaxInt64/unit) || n < int64(math.MinInt64/unit) {
			return fmt.Sprintf("%q is too large", v)
		}
		*field(c) = time.Duration(n) * unit
		return ""
	}
	k.valid = func(c *Config) bool { return *field(c) >= time.Duration(least)*unit }
	k.show = func(c *Config) string {
		d := *field(c)
		if d%unit != 0 {
			return d.String()
		}
		return strconv.FormatInt(int64(d/unit), 10)
	}
	return k
}

func boolKey(name string, field func(*Config) *bool) configKey {
	k := configKey{name: name, rule: "a boolean (true or false)"}
	k.parse = func(c *Config, v string) string {
		switch {
		case strings.EqualFold(v, "true"):
			*field(c) = true
		case strings.EqualFold(v, "false"):
			*field(c) = false
		default:
			return fmt.Sprintf("%q is not %s", v, k.rule)
		}
		return ""
	}
	k.show = func(c *Config) string { return strconv.FormatBool(*field(c)) }
	return k
}

// stringKey is a key with a text value; valid may be nil.
func stringKey(name, rule string, valid func(string) bool, field func(*Config) *string) configKey {
	k := configKey{name: name, rule: rule}
	k.parse = func(c *Config, v string) string { *field(c) = v; return "" }
	if valid != nil {
		k.valid = func(c *Config) bool { return valid(*field(c)) }
	}
	k.show = func(c *Config) string { return *field(c) }
	return k
}

func enumKey(name string, field func(*Config) *string, values ...string) configKey {
	rule := "one of " + strings.Join(values, ", ")
	return stringKey(name, rule, func(s string) bool { return slices.Contains(values, s) }, field)
}

// validBindHost accepts an IP address or a host name.
func validBindHost(s string) bool {
	if net.ParseIP(s) != nil {
		return true
	}
	if s == "" || len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for _, r := range label {
			if !(r == '-' || r == '_' || r < unicode.MaxASCII && (unicode.IsLetter(r) || unicode.IsDigit(r))) {
				return false
			}
		}
	}
	return true
}

// validBrokerID accepts up to 128 printable characters without spaces; empty
// means the host name.
// validNameList accepts a comma-separated list of host names and IP
// addresses (empty: none).
func validNameList(s string) bool {
	for _, n := range strings.Split(s, ",") {
		if n = strings.TrimSpace(n); n != "" && !validBindHost(n) {
			return false
		}
	}
	return true
}

// validSubtrees reports whether s is a list of permitted subtrees.
func validSubtrees(s string) bool {
	_, err := pki.ParseConstraints(strings.Split(s, ","))
	return err == nil
}

// webGatewayCAConstraints returns the web gateway CA's permitted subtrees:
// web-gateway-ca-permitted-subtrees, or the defaults when it is empty.
func (c *Config) webGatewayCAConstraints() pki.Constraints {
	if strings.TrimSpace(c.WebGatewayCASubtrees) == "" {
		return pki.DefaultConstraints()
	}
	cons, _ := pki.ParseConstraints(strings.Split(c.WebGatewayCASubtrees, ","))
	return cons
}

// verifierServers is the word of dcv-token-verifier-allowed-addresses that
// stands for the addresses of the broker's DCV servers.
const verifierServers = "servers"

// validVerifierAllowed accepts what dcvVerifierAllowed can read.
func validVerifierAllowed(s string) bool {
	_, _, err := parseVerifierAllowed(s)
	return err == nil
}

// parseVerifierAllowed reads dcv-token-verifier-allowed-addresses: whether
// it lists servers, and its networks (an address is a /32 or /128).
func parseVerifierAllowed(s string) (servers bool, nets []netip.Prefix, err error) {
	for e := range strings.SplitSeq(s, ",") {
		e = strings.TrimSpace(e)
		switch {
		case e == "":
		case strings.EqualFold(e, verifierServers):
			servers = true
		case strings.Contains(e, "/"):
			p, err := netip.ParsePrefix(e)
			if err != nil {
				return false, nil, fmt.Errorf("%q is not a CIDR network", e)
			}
			nets = append(nets, p.Masked())
		default:
			a, err := netip.ParseAddr(e)
			if err != nil {
				return false, nil, fmt.Errorf("%q is not an IP address", e)
			}
			nets = append(nets, netip.PrefixFrom(a, a.BitLen()))
		}
	}
	return servers, nets, nil
}

// validGroup accepts a group name or numeric ID as groupadd would (empty:
// none); whether the group exists is checked when the log opens.
func validGroup(s string) bool {
	if len(s) > 64 {
		return false
	}
	for i, r := range s {
		if !(r == '_' || r == '-' && i > 0 || r == '.' || r == '$' && i == len(s)-1 ||
			'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9') {
			return false
		}
	}
	return true
}

// certificateNames returns the names of certificate-names.
func (c *Config) certificateNames() []string {
	var out []string
	for _, n := range strings.Split(c.CertificateNames, ",") {
		if n = strings.TrimSpace(n); n != "" {
			out = append(out, n)
		}
	}
	return out
}

func validBrokerID(s string) bool {
	return len(s) <= 128 && strings.IndexFunc(s, func(r rune) bool { return !unicode.IsGraphic(r) || unicode.IsSpace(r) }) < 0
}

// configKeys lists every key the broker reads, in docs/config.md order.
func configKeys() []configKey {
	persistenceDB := enumKey("persistence-db", func(c *Config) *string { return &c.PersistenceDB }, "sqlite", "postgresql")
	parseDB := persistenceDB.parse
	persistenceDB.parse = func(c *Config, v string) string {
		switch v {
		case "dynamodb", "mysql":
			return fmt.Sprintf("%q is not supported: berth stores its state in sqlite (one broker) or postgresql (several brokers)", v)
		}
		return parseDB(c, v)
	}
	const hostRule = "an IP address or host name"
	return []configKey{
		portKey("client-to-broker-connector-https-port", func(c *Config) *int { return &c.ClientPort }),
		stringKey("client-to-broker-connector-bind-host", hostRule, validBindHost, func(c *Config) *string { return &c.ClientBindHost }),
		stringKey("client-to-broker-connector-certificate-file", "", nil, func(c *Config) *string { return &c.ClientCertFile }),
		stringKey("client-to-broker-connector-private-key-file", "", nil, func(c *Config) *string { return &c.ClientKeyFile }),
		portKey("agent-to-broker-connector-https-port", func(c *Config) *int { return &c.AgentPort }),
		stringKey("agent-to-broker-connector-bind-host", hostRule, validBindHost, func(c *Config) *string { return &c.AgentBindHost }),
		stringKey("agent-to-broker-connector-certificate-file", "", nil, func(c *Config) *string { return &c.AgentCertFile }),
		stringKey("agent-to-broker-connector-private-key-file", "", nil, func(c *Config) *string { return &c.AgentKeyFile }),
		boolKey("enable-gateway", func(c *Config) *bool { return &c.EnableConnectionGateway }),
		portKey("gateway-to-broker-connector-https-port", func(c *Config) *int { return &c.ConnectionGatewayPort }),
		stringKey("gateway-to-broker-connector-bind-host", hostRule, validBindHost, func(c *Config) *string { return &c.ConnectionGatewayBindHost }),
		stringKey("gateway-to-broker-connector-certificate-file", "", nil, func(c *Config) *string { return &c.ConnectionGatewayCertFile }),
		stringKey("gateway-to-broker-connector-private-key-file", "", nil, func(c *Config) *string { return &c.ConnectionGatewayKeyFile }),
		boolKey("enable-tls-client-auth-gateway", func(c *Config) *bool { return &c.ConnectionGatewayTLSClientAuth }),
		stringKey("gateway-to-broker-connector-trust-store-file", "", nil, func(c *Config) *string { return &c.ConnectionGatewayTrustStoreFile }),
		stringKey("gateway-to-broker-connector-trust-store-pass", "", nil, func(c *Config) *string { return &c.ConnectionGatewayTrustStorePass }),
		optionalPortKey("metrics-port", func(c *Config) *int { return &c.MetricsPort }),
		stringKey("metrics-bind-host", hostRule, validBindHost, func(c *Config) *string { return &c.MetricsBindHost }),
		atLeastKey("client-to-broker-connector-max-connections", 0, func(c *Config) *int { return &c.ClientMaxConns }),
		atLeastKey("client-to-broker-connector-max-connections-per-address", 0, func(c *Config) *int { return &c.ClientMaxConnsPerAddr }),
		atLeastKey("agent-to-broker-connector-max-connections", 0, func(c *Config) *int { return &c.AgentMaxConns }),
		atLeastKey("agent-to-broker-connector-max-connections-per-address", 0, func(c *Config) *int { return &c.AgentMaxConnsPerAddr }),
		atLeastKey("gateway-to-broker-connector-max-connections", 0, func(c *Config) *int { return &c.ConnectionGatewayMaxConns }),
		atLeastKey("gateway-to-broker-connector-max-connections-per-address", 0, func(c *Config) *int { return &c.ConnectionGatewayMaxConnsPerAddr }),
		durationKey("connector-request-header-timeout-seconds", time.Second, "seconds", 1, func(c *Config) *time.Duration { return &c.RequestHeaderTimeout }),
		durationKey("connector-request-read-timeout-seconds", time.Second, "seconds", 1, func(c *Config) *time.Duration { return &c.RequestReadTimeout }),
		durationKey("connector-idle-timeout-seconds", time.Second, "seconds", 1, func(c *Config) *time.Duration { return &c.IdleTimeout }),
		stringKey("dcv-token-verifier-allowed-addresses", "a comma-separated list of IP addresses, CIDR networks and the word servers",
			validVerifierAllowed, func(c *Config) *string { return &c.DCVVerifierAllowed }),
		atLeastKey("dcv-token-verifier-rate-limit", 0, func(c *Config) *int { return &c.DCVVerifierRate }),

		stringKey("session-manager-working-path", "a directory path", func(s string) bool { return s != "" }, func(c *Config) *string { return &c.WorkingPath }),
		persistenceDB,
		stringKey("persistence-dsn", "", nil, func(c *Config) *string { return &c.PersistenceDSN }),
		warnKey(boolKey("enable-persistence", func(*Config) *bool { return new(bool) }),
			"berth always persists its state (see persistence-db); enable-persistence is implied and ignored"),
		stringKey("broker-id", "an identifier (up to 128 characters, no spaces)", validBrokerID, func(c *Config) *string { return &c.BrokerID }),
		stringKey("certificate-names", "a comma-separated list of host names and IP addresses", validNameList, func(c *Config) *string { return &c.CertificateNames }),
		stringKey("web-gateway-ca-permitted-subtrees", "a comma-separated list of DNS domains, CIDR ranges and IP addresses", validSubtrees, func(c *Config) *string { return &c.WebGatewayCASubtrees }),

		boolKey("enable-authorization", func(c *Config) *bool { return &c.EnableAuthorization }),
		boolKey("enable-authorization-server", func(c *Config) *bool { return &c.EnableAuthorizationServer }),
		stringKey("auth-server-ca-bundle-file", "", nil, func(c *Config) *string { return &c.AuthServerCABundleFile }),
		boolKey("enable-agent-authorization", func(c *Config) *bool { return &c.EnableAgentAuthorization }),
		durationKey("access-token-duration-minutes", time.Minute, "minutes", 1, func(c *Config) *time.Duration { return &c.AccessTokenDuration }),
		durationKey("connect-session-token-duration-minutes", time.Minute, "minutes", 1, func(c *Config) *time.Duration { return &c.ConnectTokenDuration }),
		atLeastKey("agent-registrations-per-minute", 0, func(c *Config) *int { return &c.RegistrationsPerMinute }),
		atLeastKey("agent-registrations-per-minute-per-address", 0, func(c *Config) *int { return &c.RegistrationsPerAddress }),
		durationKey("seconds-before-deleting-unlinked-agent-clients", time.Second, "seconds", 0, func(c *Config) *time.Duration { return &c.UnlinkedAgentTimeout }),

		atLeastKey("session-screenshot-max-width", 1, func(c *Config) *int { return &c.ScreenshotMaxWidth }),
		atLeastKey("session-screenshot-max-height", 1, func(c *Config) *int { return &c.ScreenshotMaxHeight }),
		enumKey("session-screenshot-format", func(c *Config) *string { return &c.ScreenshotFormat }, "png", "jpeg"),

		atLeastKey("create-sessions-queue-max-size", 1, func(c *Config) *int { return &c.QueueMaxSize }),
		durationKey("create-sessions-queue-max-time-seconds", time.Second, "seconds", 1, func(c *Config) *time.Duration { return &c.QueueMaxTime }),
		atLeastKey("create-sessions-number-of-retries-on-failure", 0, func(c *Config) *int { return &c.Retries }),
		durationKey("delete-session-duration-hours", time.Hour, "hours", 0, func(c *Config) *time.Duration { return &c.DeleteSessionDuration }),
		// The older spelling sets the same field; Validate checks it under
		// delete-session-duration-hours.
		legacyKey(durationKey("delete-session-duration-seconds", time.Second, "seconds", 0, func(c *Config) *time.Duration { return &c.DeleteSessionDuration })),
		durationKey("audit-retention-days", 24*time.Hour, "days", 0, func(c *Config) *time.Duration { return &c.AuditRetention }),
		stringKey("audit-api-clients", "a comma-separated list of API client IDs", nil, func(c *Config) *string { return &c.AuditAPIClients }),
		atLeastKey("webhook-workers", 1, func(c *Config) *int { return &c.WebhookWorkers }),
		durationKey("webhook-timeout-seconds", time.Second, "seconds", 1, func(c *Config) *time.Duration { return &c.WebhookTimeout }),
		durationKey("webhook-retry-hours", time.Hour, "hours", 1, func(c *Config) *time.Duration { return &c.WebhookRetry }),
		atLeastKey("webhook-max-deliveries-per-second", 1, func(c *Config) *int { return &c.WebhookRate }),
		atLeastKey("autorun-file-arguments-max-size", 1, func(c *Config) *int { return &c.AutorunMaxArgs }),
		atLeastKey("autorun-file-arguments-max-argument-length", 1, func(c *Config) *int { return &c.AutorunMaxArgLength }),

		durationKey("agent-heartbeat-timeout-seconds", time.Second, "seconds", 1, func(c *Config) *time.Duration { return &c.AgentHeartbeatTimeout }),
		numberKey("agent-max-updates-per-second", "updates a second", 0, func(c *Config) *float64 { return &c.AgentMaxUpdatesPerSecond }),
		durationKey("seconds-before-deleting-unreachable-dcv-server", time.Second, "seconds", 1, func(c *Config) *time.Duration { return &c.UnreachableServerTimeout }),
		durationKey("seconds-before-deleting-sessions-unreachable-server", time.Second, "seconds", 1, func(c *Config) *time.Duration { return &c.UnreachableSessionsTimeout }),
		durationKey("agent-certificate-validity-hours", time.Hour, "hours", 1, func(c *Config) *time.Duration { return &c.AgentCertValidity }),

		boolKey("enable-api-yaml", func(c *Config) *bool { return &c.EnableAPIYAML }),
		enumKey("log-level", func(c *Config) *string { return &c.LogLevel }, "debug", "info", "warn", "error"),
		enumKey("log-format", func(c *Config) *string { return &c.LogFormat }, "auto", "json", "text"),
		stringKey("log-directory", "", nil, func(c *Config) *string { return &c.LogDirectory }),
		stringKey("log-group", "a group name or numeric group ID", validGroup, func(c *Config) *string { return &c.LogGroup }),
		atLeastKey("log-max-size-mb", 1, func(c *Config) *int { return &c.LogMaxSizeMB }),
		atLeastKey("log-max-age-days", 1, func(c *Config) *int { return &c.LogMaxAgeDays }),
		atLeastKey("log-max-backups", 1, func(c *Config) *int { return &c.LogMaxBackups }),
		enumKey("log-rotation", func(c *Config) *string { return &c.LogRotation }, "daily", "size"),

		boolKey("portal-enabled", func(c *Config) *bool { return &c.PortalEnabled }),
		stringKey("portal-oidc-issuer", "an https URL (http only for a loopback host) without query or fragment", validIssuerURL, func(c *Config) *string { return &c.PortalOIDCIssuer }),
		stringKey("portal-oidc-client-id", "a client ID (up to 256 printable characters)", validClaimName, func(c *Config) *string { return &c.PortalOIDCClientID }),
		stringKey("portal-oidc-client-secret", "", nil, func(c *Config) *string { return &c.PortalOIDCClientSecret }),
		stringKey("portal-oidc-client-secret-file", "", nil, func(c *Config) *string { return &c.PortalOIDCClientSecretFile }),
		stringKey("portal-oidc-scopes", "a list of scopes, separated by spaces or commas, that holds openid", validScopes, func(c *Config) *string { return &c.PortalOIDCScopes }),
		stringKey("portal-oidc-ca-bundle-file", "", nil, func(c *Config) *string { return &c.PortalOIDCCABundleFile }),
		stringKey("portal-user-claim", "a claim name (1 to 256 printable characters)", func(s string) bool { return s != "" && validClaimName(s) }, func(c *Config) *string { return &c.PortalUserClaim }),
		stringKey("portal-user-claim-pattern", "a regular expression (RE2) with exactly one group", validClaimPattern, func(c *Config) *string { return &c.PortalUserClaimPattern }),
		stringKey("portal-groups-claim", "a claim name (1 to 256 printable characters)", func(s string) bool { return s != "" && validClaimName(s) }, func(c *Config) *string { return &c.PortalGroupsClaim }),
		stringKey("portal-admin-group", "a group name (up to 256 printable characters)", validClaimName, func(c *Config) *string { return &c.PortalAdminGroup }),
		durationKey("portal-session-minutes", time.Minute, "minutes", 5, func(c *Config) *time.Duration { return &c.PortalSessionLifetime }),
		stringKey("portal-external-url", "an https URL with a host and no path, query or fragment (https://broker.example.com:8443)", validExternalURL, func(c *Config) *string { return &c.PortalExternalURL }),

		numberKey("session-disconnected-timeout-minutes", "minutes", 0, func(c *Config) *float64 { return &c.SessionDisconnectedTimeout }),
		numberKey("session-idle-timeout-minutes", "minutes", 0, func(c *Config) *float64 { return &c.SessionIdleTimeout }),
		numberKey("session-max-lifetime-hours", "hours", 0, func(c *Config) *float64 { return &c.SessionMaxLifetime }),
		numberKey("session-max-extension-hours", "hours", 0, func(c *Config) *float64 { return &c.SessionMaxExtension }),
		stringKey("session-warning-minutes", "a comma-separated list of minutes greater than 0 (15,2), or empty for no warnings", validWarningMinutes, func(c *Config) *string { return &c.SessionWarningMinutes }),
		numberKey("session-extension-default-hours", "hours", 1.0/3600, func(c *Config) *float64 { return &c.SessionExtensionDefault }),
		numberKey("session-policy-interval-seconds", "seconds", 0.01, func(c *Config) *float64 { return &c.SessionPolicyInterval }),
		numberKey("scaling-idle-server-minutes", "minutes", 0.01, func(c *Config) *float64 { return &c.ScalingIdleServerMinutes }),
		numberKey("scaling-interval-seconds", "seconds", 0.01, func(c *Config) *float64 { return &c.ScalingInterval }),
		numberKey("event-retention-hours", "hours", 0.01, func(c *Config) *float64 { return &c.EventRetentionHours }),
		quotaKey("session-max-sessions-per-user", "sessions", func(c *Config) *int { return &c.SessionMaxSessionsPerUser }),
		quotaKey("session-max-gpus-per-user", "GPUs", func(c *Config) *int { return &c.SessionMaxGPUsPerUser }),
		stringKey("session-groups-file", "a file path (empty: none)", func(string) bool { return true }, func(c *Config) *string { return &c.SessionGroupsFile }),
		stringKey("session-group-limits-file", "a file path (empty: none)", func(string) bool { return true }, func(c *Config) *string { return &c.SessionGroupLimitsFile }),
	}
}

// validIssuerURL accepts an OIDC issuer: https, or http on a loopback host;
// a host; no query, fragment or user information (empty: none).
func validIssuerURL(s string) bool {
	if s == "" {
		return true
	}
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return false
	}
	switch u.Scheme {
	case "https":
		return true
	case "http":
		h := u.Hostname()
		ip := net.ParseIP(h)
		return h == "localhost" || ip != nil && ip.IsLoopback()
	}
	return false
}

// validExternalURL accepts the portal's base URL: https://HOST[:PORT] with
// at most a trailing slash (empty: none).
func validExternalURL(s string) bool {
	if s == "" {
		return true
	}
	u, err := url.Parse(s)
	return err == nil && u.Scheme == "https" && u.Host != "" && (u.Path == "" || u.Path == "/") &&
		u.RawQuery == "" && u.Fragment == "" && u.User == nil
}

// validClaimName accepts up to 256 printable characters without spaces.
func validClaimName(s string) bool {
	return len(s) <= 256 && strings.IndexFunc(s, func(r rune) bool { return !unicode.IsGraphic(r) || unicode.IsSpace(r) }) < 0
}

// portalScopes splits portal-oidc-scopes.
func portalScopes(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || unicode.IsSpace(r) })
}

// validScopes accepts a scope list that holds openid.
func validScopes(s string) bool {
	sc := portalScopes(s)
	return slices.Contains(sc, "openid") && !slices.ContainsFunc(sc, func(x string) bool { return !validClaimName(x) })
}

// validClaimPattern accepts a regular expression with exactly one group
// (empty: none).
func validClaimPattern(s string) bool {
	if s == "" {
		return true
	}
	re, err := regexp.Compile(s)
	return err == nil && re.NumSubexp() == 1
}

func configKeyByName(name string) (configKey, bool) {
	for _, k := range configKeys() {
		if k.name == name {
			return k, true
		}
	}
	return configKey{}, false
}

// ignoredConfigKey reports whether name is a reference broker key that berth
// accepts and ignores, and why.
func ignoredConfigKey(name string) (string, bool) {
	switch {
	case name == "broker-java-home":
		return "berth is not a Java program and needs no Java runtime", true
	case strings.HasPrefix(name, "broker-to-broker-"):
		return "berth brokers do not form a peer cluster; several brokers share state through persistence-db = postgresql", true
	case name == "cli-to-broker-port":
		return "berth's admin commands (berth-broker COMMAND) use the broker's store directly and need no port", true
	case strings.HasPrefix(name, "dynamodb-"):
		return "berth does not use DynamoDB; it stores its state in persistence-db (sqlite or postgresql)", true
	case name == "jdbc-connection-url" || name == "jdbc-user" || name == "jdbc-password":
		return "berth does not use JDBC; it uses persistence-db and persistence-dsn", true
	case name == "enable-cloud-watch-metrics" || name == "cloud-watch-region" || name == "metrics-fleet-name-dimension":
		return "berth does not publish CloudWatch metrics; set metrics-port for Prometheus metrics", true
	case strings.HasSuffix(name, "-key-store-file") || strings.HasSuffix(name, "-key-store-pass"):
		prefix := strings.TrimSuffix(strings.TrimSuffix(name, "-key-store-file"), "-key-store-pass")
		switch prefix {
		case "client-to-broker-connector", "agent-to-broker-connector", "gateway-to-broker-connector":
			return fmt.Sprintf("JKS key stores are not read; set %s-certificate-file and %s-private-key-file (PEM) instead", prefix, prefix), true
		}
		return "JKS key stores are not read; berth takes PEM certificate and private key files", true
	}
	return "", false
}

// expandConfigValue replaces ${NAME} with the environment variable NAME.
// "$${" is a literal "${"; any other '$' is literal. It returns what is
// wrong, or "".
func expandConfigValue(v string, lookupEnv func(string) (string, bool)) (string, string) {
	if !strings.Contains(v, "${") {
		return v, ""
	}
	var b strings.Builder
	for {
		i := strings.Index(v, "${")
		if i < 0 {
			b.WriteString(v)
			return b.String(), ""
		}
		if i > 0 && v[i-1] == '$' {
			b.WriteString(v[:i-1] + "${")
			v = v[i+2:]
			continue
		}
		b.WriteString(v[:i])
		end := strings.IndexByte(v[i:], '}')
		if end < 0 {
			return "", fmt.Sprintf("%q has ${ without a closing }", v[i:])
		}
		name := v[i+2 : i+end]
		if !validEnvName(name) {
			return "", fmt.Sprintf("%q is not a valid environment variable name", name)
		}
		val, ok := lookupEnv(name)
		if !ok {
			return "", fmt.Sprintf("environment variable %s is not set", name)
		}
		b.WriteString(val)
		v = v[i+end+1:]
	}
}

func validEnvName(s string) bool {
	if s == "" {
		return false
	}
	for i, r := range s {
		if !(r == '_' || 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || i > 0 && '0' <= r && r <= '9') {
			return false
		}
	}
	return true
}

// suggestConfigKey returns the known key closest to name, if it is close
// enough to be a typo.
func suggestConfigKey(name string) string {
	best, bestDist := "", len(name)/4+1
	if bestDist > 3 {
		bestDist = 3
	}
	for _, k := range configKeys() {
		if d := editDistance(name, k.name); d <= bestDist {
			best, bestDist = k.name, d-1
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
