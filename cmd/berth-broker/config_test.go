package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// updateConfigGolden rewrites testdata/config-errors.golden:
//
//	go test -run TestLoadConfig_Errors ./cmd/berth-broker/ -update-config
var updateConfigGolden = flag.Bool("update-config", false, "rewrite testdata/config-errors.golden")

// configTestEnv is the environment the config tests expand ${VAR} from.
var configTestEnv = map[string]string{
	"BERTH_TEST_DB_PASSWORD": "s3cret",
	"BERTH_TEST_TRUST_PASS":  "changeit",
	"BERTH_TEST_EMPTY":       "",
	"BERTH_TEST_PORT":        "9443",
}

func lookupConfigTestEnv(name string) (string, bool) {
	v, ok := configTestEnv[name]
	return v, ok
}

// loadConfigText loads text as the file "broker.properties" and returns the
// config, the warned keys in order, and the error.
func loadConfigText(t *testing.T, text string) (Config, []string, error) {
	t.Helper()
	var warned []string
	c, err := loadConfig(strings.NewReader(text), "broker.properties", lookupConfigTestEnv, func(key, msg string) {
		if msg == "" {
			t.Errorf("warning for %s has no message", key)
		}
		warned = append(warned, key)
	})
	return c, warned, err
}

func TestDefaultConfig(t *testing.T) {
	c := DefaultConfig()
	if err := c.Validate(); err != nil {
		t.Fatalf("DefaultConfig().Validate() = %v", err)
	}
	host, _ := os.Hostname()
	checks := []struct {
		key       string
		got, want any
	}{
		{"client-to-broker-connector-https-port", c.ClientPort, 8443},
		{"client-to-broker-connector-bind-host", c.ClientBindHost, "0.0.0.0"},
		{"agent-to-broker-connector-https-port", c.AgentPort, 8445},
		{"agent-to-broker-connector-bind-host", c.AgentBindHost, "0.0.0.0"},
		{"session-manager-working-path", c.WorkingPath, "/var/lib/berth"},
		{"enable-authorization", c.EnableAuthorization, true},
		{"enable-authorization-server", c.EnableAuthorizationServer, true},
		{"enable-agent-authorization", c.EnableAgentAuthorization, true},
		{"session-screenshot-max-width", c.ScreenshotMaxWidth, 160},
		{"session-screenshot-max-height", c.ScreenshotMaxHeight, 100},
		{"session-screenshot-format", c.ScreenshotFormat, "png"},
		{"create-sessions-queue-max-size", c.QueueMaxSize, 1000},
		{"create-sessions-queue-max-time-seconds", c.QueueMaxTime, 30 * time.Minute},
		{"create-sessions-number-of-retries-on-failure", c.Retries, 2},
		{"delete-session-duration-hours", c.DeleteSessionDuration, time.Hour},
		{"webhook-workers", c.WebhookWorkers, 32},
		{"webhook-timeout-seconds", c.WebhookTimeout, 10 * time.Second},
		{"webhook-retry-hours", c.WebhookRetry, 24 * time.Hour},
		{"webhook-max-deliveries-per-second", c.WebhookRate, 100},
		{"audit-retention-days", c.AuditRetention, 365 * 24 * time.Hour},
		{"audit-api-clients", c.AuditAPIClients, ""},
		{"connect-session-token-duration-minutes", c.ConnectTokenDuration, time.Hour},
		{"seconds-before-deleting-unreachable-dcv-server", c.UnreachableServerTimeout, 15 * time.Minute},
		{"seconds-before-deleting-sessions-unreachable-server", c.UnreachableSessionsTimeout, 15 * time.Minute},
		{"autorun-file-arguments-max-size", c.AutorunMaxArgs, 50},
		{"autorun-file-arguments-max-argument-length", c.AutorunMaxArgLength, 150},
		{"enable-api-yaml", c.EnableAPIYAML, true},
		{"enable-gateway", c.EnableConnectionGateway, false},
		{"gateway-to-broker-connector-https-port", c.ConnectionGatewayPort, 8447},
		{"gateway-to-broker-connector-bind-host", c.ConnectionGatewayBindHost, "0.0.0.0"},
		{"enable-tls-client-auth-gateway", c.ConnectionGatewayTLSClientAuth, false},
		{"gateway-to-broker-connector-trust-store-file", c.ConnectionGatewayTrustStoreFile, ""},
		{"persistence-db", c.PersistenceDB, "sqlite"},
		{"persistence-dsn", c.PersistenceDSN, ""},
		{"access-token-duration-minutes", c.AccessTokenDuration, time.Hour},
		{"agent-heartbeat-timeout-seconds", c.AgentHeartbeatTimeout, 30 * time.Second},
		{"agent-max-updates-per-second", c.AgentMaxUpdatesPerSecond, 200.0},
		{"client-to-broker-connector-certificate-file", c.ClientCertFile, ""},
		{"agent-to-broker-connector-certificate-file", c.AgentCertFile, ""},
		{"log-level", c.LogLevel, "info"},
		{"log-format", c.LogFormat, "auto"},
		{"metrics-port", c.MetricsPort, MetricsOff},
		{"metrics-bind-host", c.MetricsBindHost, "127.0.0.1"},
		{"agent-certificate-validity-hours", c.AgentCertValidity, 90 * 24 * time.Hour},
		{"log-directory", c.LogDirectory, ""},
		{"log-group", c.LogGroup, ""},
		{"agent-registrations-per-minute", c.RegistrationsPerMinute, 30000},
		{"agent-registrations-per-minute-per-address", c.RegistrationsPerAddress, 30},
		{"seconds-before-deleting-unlinked-agent-clients", c.UnlinkedAgentTimeout, 24 * time.Hour},
		{"log-max-size-mb", c.LogMaxSizeMB, 100},
		{"log-max-age-days", c.LogMaxAgeDays, 14},
		{"log-max-backups", c.LogMaxBackups, 10},
		{"log-rotation", c.LogRotation, "daily"},
		{"broker-id", c.BrokerID, cmpOr(host, "berth-broker")},
	}
	for _, ck := range checks {
		if ck.got != ck.want {
			t.Errorf("default %s = %v, want %v", ck.key, ck.got, ck.want)
		}
	}
	empty, _, err := loadConfigText(t, "# nothing\n")
	if err != nil {
		t.Fatalf("load empty file: %v", err)
	}
	if !reflect.DeepEqual(empty, c) {
		t.Errorf("empty file: got %+v, want the defaults %+v", empty, c)
	}
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func TestLoadConfig_ReferenceFile(t *testing.T) {
	var warned []string
	c, err := LoadConfig(filepath.Join("testdata", "reference-default.properties"), func(key, msg string) {
		warned = append(warned, key)
		if msg == "" {
			t.Errorf("warning for %s has no message", key)
		}
	})
	if err != nil {
		t.Fatalf("LoadConfig: %v", err)
	}
	want := DefaultConfig()
	want.WorkingPath = "/var/lib/dcvsmbroker"
	want.ConnectionGatewayTrustStoreFile = "/etc/dcv-session-manager-broker/truststore.jks"
	want.ConnectionGatewayTrustStorePass = "changeit"
	if !reflect.DeepEqual(c, want) {
		t.Errorf("LoadConfig:\n got %+v\nwant %+v", c, want)
	}
	wantWarned := []string{
		"broker-java-home",
		"enable-persistence",
		"dynamodb-region", "dynamodb-table-rcu", "dynamodb-table-wcu", "dynamodb-table-name-prefix",
		"jdbc-connection-url", "jdbc-user", "jdbc-password",
		"client-to-broker-connector-key-store-file", "client-to-broker-connector-key-store-pass",
		"agent-to-broker-connector-key-store-file", "agent-to-broker-connector-key-store-pass",
		"gateway-to-broker-connector-key-store-file", "gateway-to-broker-connector-key-store-pass",
		"broker-to-broker-port", "cli-to-broker-port", "broker-to-broker-bind-host",
		"broker-to-broker-discovery-port", "broker-to-broker-discovery-addresses",
		"broker-to-broker-discovery-multicast-port", "broker-to-broker-discovery-aws-region",
		"broker-to-broker-discovery-aws-alb-target-group-arn", "broker-to-broker-distributed-memory-max-size-mb",
		"broker-to-broker-key-store-file", "broker-to-broker-key-store-pass",
		"broker-to-broker-connection-login", "broker-to-broker-connection-pass",
		"enable-cloud-watch-metrics", "cloud-watch-region", "metrics-fleet-name-dimension",
	}
	if !slices.Equal(warned, wantWarned) {
		t.Errorf("warned keys:\n got %q\nwant %q", warned, wantWarned)
	}
}

func TestLoadConfig_BerthFile(t *testing.T) {
	for name, v := range configTestEnv {
		t.Setenv(name, v)
	}
	var warned []string
	c, err := LoadConfig(filepath.Join("testdata", "berth-full.properties"), func(key, msg string) { warned = append(warned, key) })
	if err != nil {
		t.Fatalf("LoadConfig: %v", err)
	}
	if len(warned) != 0 {
		t.Errorf("warned about %q", warned)
	}
	want := Config{
		ClientPort:                       9443,
		ClientBindHost:                   "127.0.0.1",
		ClientCertFile:                   "/etc/berth/client.pem",
		ClientKeyFile:                    "/etc/berth/client.key",
		AgentPort:                        9445,
		AgentBindHost:                    "::",
		AgentCertFile:                    "/etc/berth/agent.pem",
		AgentKeyFile:                     "/etc/berth/agent.key",
		EnableConnectionGateway:          true,
		ConnectionGatewayPort:            9447,
		ConnectionGatewayBindHost:        "broker.example.com",
		ConnectionGatewayCertFile:        "/etc/berth/gateway.pem",
		ConnectionGatewayKeyFile:         "/etc/berth/gateway.key",
		ConnectionGatewayTLSClientAuth:   true,
		ConnectionGatewayTrustStoreFile:  "/etc/berth/gateway-ca.pem",
		ConnectionGatewayTrustStorePass:  "changeit",
		MetricsPort:                      9448,
		MetricsBindHost:                  "0.0.0.0",
		ClientMaxConns:                   100,
		ClientMaxConnsPerAddr:            10,
		AgentMaxConns:                    200,
		AgentMaxConnsPerAddr:             20,
		ConnectionGatewayMaxConns:        30,
		ConnectionGatewayMaxConnsPerAddr: 3,
		RequestHeaderTimeout:             5 * time.Second,
		RequestReadTimeout:               20 * time.Second,
		IdleTimeout:                      time.Minute,
		DCVVerifierAllowed:               "servers,10.0.0.0/8",
		DCVVerifierRate:                  5,
		WorkingPath:                      "/srv/berth",
		PersistenceDB:                    "postgresql",
		PersistenceDSN:                   "postgres://berth:s3cret@db.example.com/berth?sslmode=verify-full",
		BrokerID:                         "broker-1",
		CertificateNames:                 "broker.example.com,10.0.0.5",
		WebGatewayCASubtrees:             "fleet.example.com, 10.20.0.0/16",
		EnableAuthorization:              false,
		EnableAuthorizationServer:        false,
		AuthServerCABundleFile:           "/etc/berth/idp-ca.pem",
		EnableAgentAuthorization:         false,
		AccessTokenDuration:              15 * time.Minute,
		ConnectTokenDuration:             5 * time.Minute,
		RegistrationsPerMinute:           100,
		RegistrationsPerAddress:          0,
		UnlinkedAgentTimeout:             time.Hour,
		ScreenshotMaxWidth:               320,
		ScreenshotMaxHeight:              200,
		ScreenshotFormat:                 "jpeg",
		QueueMaxSize:                     10,
		QueueMaxTime:                     time.Minute,
		Retries:                          0,
		DeleteSessionDuration:            0,
		AuditRetention:                   30 * 24 * time.Hour,
		AuditAPIClients:                  "c-1, c-2",
		WebhookWorkers:                   4,
		WebhookTimeout:                   5 * time.Second,
		WebhookRetry:                     48 * time.Hour,
		WebhookRate:                      50,
		AutorunMaxArgs:                   5,
		AutorunMaxArgLength:              20,
		AgentHeartbeatTimeout:            10 * time.Second,
		AgentMaxUpdatesPerSecond:         500,
		UnreachableServerTimeout:         time.Minute,
		UnreachableSessionsTimeout:       2 * time.Minute,
		AgentCertValidity:                720 * time.Hour,
		EnableAPIYAML:                    false,
		LogLevel:                         "debug",
		LogFormat:                        "json",
		LogDirectory:                     "/var/log/berth",
		LogGroup:                         "adm",
		LogMaxSizeMB:                     50,
		LogMaxAgeDays:                    30,
		LogMaxBackups:                    5,
		LogRotation:                      "size",
		PortalEnabled:                    false,
		PortalOIDCIssuer:                 "https://idp.example.com/realms/berth",
		PortalOIDCClientID:               "berth-portal",
		PortalOIDCClientSecret:           "portal-s3cret",
		PortalOIDCScopes:                 "openid profile email groups",
		PortalOIDCCABundleFile:           "/etc/berth/idp-ca.pem",
		PortalUserClaim:                  "email",
		PortalUserClaimPattern:           `^([^@]+)@example\.com$`,
		PortalGroupsClaim:                "roles",
		PortalAdminGroup:                 "berth-admins",
		PortalSessionLifetime:            time.Hour,
		PortalExternalURL:                "https://broker.example.com:9443",
		SessionDisconnectedTimeout:       30,
		SessionIdleTimeout:               20,
		SessionMaxLifetime:               8,
		SessionMaxExtension:              4,
		SessionWarningMinutes:            "10,1",
		SessionExtensionDefault:          2,
		SessionPolicyInterval:            2.5,
		ScalingIdleServerMinutes:         45,
		EventRetentionHours:              72,
		ScalingInterval:                  15,
		SessionMaxSessionsPerUser:        4,
		SessionMaxGPUsPerUser:            2,
		SessionGroupsFile:                "/etc/berth/groups",
		SessionGroupLimitsFile:           "/etc/berth/group-limits.toml",
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("LoadConfig:\n got %+v\nwant %+v", c, want)
	}
	// Every field is set away from its default, so a key that does not
	// reach its field shows up here.
	def, got := reflect.ValueOf(DefaultConfig()), reflect.ValueOf(c)
	for i := range def.NumField() {
		name := def.Type().Field(i).Name
		if name == "Retries" || name == "DeleteSessionDuration" || name == "EnableConnectionGateway" || name == "ConnectionGatewayTLSClientAuth" {
			continue // the file sets these to values a default can also have
		}
		if name == "PortalOIDCClientSecretFile" {
			continue // not with portal-oidc-client-secret: TestLoadConfig_Portal sets it
		}
		if def.Field(i).Interface() == got.Field(i).Interface() {
			t.Errorf("testdata/berth-full.properties leaves %s at its default", name)
		}
	}
}

func TestLoadConfig_Values(t *testing.T) {
	tests := []struct {
		name string
		text string
		edit func(*Config)
	}{
		{"colon and spaces", "client-to-broker-connector-https-port: 9000", func(c *Config) { c.ClientPort = 9000 }},
		{"port zero picks a free port", "client-to-broker-connector-https-port = 0\nagent-to-broker-connector-https-port = 0", func(c *Config) { c.ClientPort, c.AgentPort = 0, 0 }},
		{"trailing whitespace", "session-screenshot-format = jpeg   \t", func(c *Config) { c.ScreenshotFormat = "jpeg" }},
		{"boolean case", "enable-authorization = FALSE\nenable-api-yaml = True", func(c *Config) { c.EnableAuthorization, c.EnableAPIYAML = false, true }},
		{"older delete duration in seconds", "delete-session-duration-seconds = 5400", func(c *Config) { c.DeleteSessionDuration = 90 * time.Minute }},
		{"delete duration zero", "delete-session-duration-hours=0", func(c *Config) { c.DeleteSessionDuration = 0 }},
		{"retries zero", "create-sessions-number-of-retries-on-failure = 0", func(c *Config) { c.Retries = 0 }},
		{"env expansion", "client-to-broker-connector-https-port = ${BERTH_TEST_PORT}", func(c *Config) { c.ClientPort = 9443 }},
		{"env in the middle", "session-manager-working-path = /srv/${BERTH_TEST_DB_PASSWORD}/x", func(c *Config) { c.WorkingPath = "/srv/s3cret/x" }},
		{"empty env", "persistence-dsn = ${BERTH_TEST_EMPTY}", func(c *Config) { c.PersistenceDSN = "" }},
		{"literal ${", "persistence-dsn = a$${b}", func(c *Config) { c.PersistenceDSN = "a${b}" }},
		{"lone dollars stay", "persistence-dsn = pa$$w$rd$", func(c *Config) { c.PersistenceDSN = "pa$$w$rd$" }},
		{"empty broker id", "broker-id =", func(c *Config) { c.BrokerID = "" }},
		{"certificate names", "certificate-names = broker.example.com, 10.0.0.5,::1", func(c *Config) { c.CertificateNames = "broker.example.com, 10.0.0.5,::1" }},
		{"permitted subtrees", "web-gateway-ca-permitted-subtrees = .fleet.example, 10.0.0.0/8, fd00::/8", func(c *Config) { c.WebGatewayCASubtrees = ".fleet.example, 10.0.0.0/8, fd00::/8" }},
		{"ipv6 bind host", "client-to-broker-connector-bind-host = ::1", func(c *Config) { c.ClientBindHost = "::1" }},
		{"same port when gateway off", "gateway-to-broker-connector-https-port = 8443", func(c *Config) { c.ConnectionGatewayPort = 8443 }},
		{"client auth without trust store when gateway off", "enable-tls-client-auth-gateway = true", func(c *Config) { c.ConnectionGatewayTLSClientAuth = true }},
		{"metrics on a free port", "metrics-port = 0", func(c *Config) { c.MetricsPort = 0 }},
		{"metrics off when empty", "metrics-port =", func(c *Config) { c.MetricsPort = MetricsOff }},
		{"metrics beside the gateway's default port when the gateway is off", "metrics-port = 8447", func(c *Config) { c.MetricsPort = 8447 }},
		{"log rotation by size", "log-rotation = size\nlog-directory = /var/log/berth", func(c *Config) { c.LogRotation, c.LogDirectory = "size", "/var/log/berth" }},
		{"line continuation", "session-manager-working-path = /srv/\\\n    berth", func(c *Config) { c.WorkingPath = "/srv/berth" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, warned, err := loadConfigText(t, tt.text)
			if err != nil {
				t.Fatalf("load: %v", err)
			}
			if len(warned) != 0 {
				t.Errorf("warned about %q", warned)
			}
			want := DefaultConfig()
			tt.edit(&want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("load %q:\n got %+v\nwant %+v", tt.text, got, want)
			}
		})
	}
}

// configErrorCases are the inputs of the error golden file.
var configErrorCases = []struct{ name, text string }{
	{"not a port", "\n\nclient-to-broker-connector-https-port = abc"},
	{"port out of range", "agent-to-broker-connector-https-port = 70000"},
	{"negative port", "gateway-to-broker-connector-https-port = -1"},
	{"unknown key", "# c\nclient-to-broker-connector-http-port = 8443"},
	{"unknown key far from any", "frobnicate = yes"},
	{"duplicate key", "log-level = info\nlog-level = debug"},
	{"duplicate ignored key", "dynamodb-region = a\ndynamodb-region = b"},
	{"not a boolean", "enable-authorization = yes"},
	{"not a number", "session-screenshot-max-width = wide"},
	{"zero width", "session-screenshot-max-width = 0"},
	{"bad format", "session-screenshot-format = gif"},
	{"format is case-sensitive", "session-screenshot-format = PNG"},
	{"queue size zero", "create-sessions-queue-max-size = 0"},
	{"queue time zero", "create-sessions-queue-max-time-seconds = 0"},
	{"negative retries", "create-sessions-number-of-retries-on-failure = -1"},
	{"fractional hours", "delete-session-duration-hours = 1.5"},
	{"negative seconds", "delete-session-duration-seconds = -5"},
	{"both delete durations", "delete-session-duration-hours = 1\n\ndelete-session-duration-seconds = 3600"},
	{"duration too large", "connect-session-token-duration-minutes = 999999999999999999"},
	{"token duration zero", "connect-session-token-duration-minutes = 0"},
	{"heartbeat zero", "agent-heartbeat-timeout-seconds = 0"},
	{"autorun zero", "autorun-file-arguments-max-size = 0\nautorun-file-arguments-max-argument-length = 0"},
	{"dynamodb", "persistence-db = dynamodb"},
	{"mysql", "persistence-db = mysql"},
	{"unknown db", "persistence-db = oracle"},
	{"postgresql without dsn", "persistence-db = postgresql"},
	{"log level", "log-level = verbose"},
	{"log format", "log-format = xml"},
	{"empty working path", "session-manager-working-path ="},
	{"bad bind host", "client-to-broker-connector-bind-host = http://0.0.0.0"},
	{"broker id with space", "broker-id = my broker"},
	{"certificate name with a scheme", "certificate-names = broker.example.com,https://lb"},
	{"permitted subtree with a wildcard", "web-gateway-ca-permitted-subtrees = *.fleet.example"},
	{"permitted subtree with a bad range", "web-gateway-ca-permitted-subtrees = 10.0.0.0/40"},
	{"certificate name with a space", "certificate-names = broker example"},
	{"unset variable", "persistence-dsn = postgres://u:${BERTH_TEST_UNSET}@h/db"},
	{"unterminated variable", "persistence-dsn = ${BERTH_TEST_DB_PASSWORD"},
	{"bad variable name", "persistence-dsn = ${1X}"},
	{"certificate without key", "client-to-broker-connector-certificate-file = /c.pem"},
	{"key without certificate", "agent-to-broker-connector-private-key-file = /a.key"},
	{"same ports", "agent-to-broker-connector-https-port = 8443"},
	{"same ports with gateway", "enable-gateway = true\ngateway-to-broker-connector-https-port = 8445"},
	{"client auth without trust store", "enable-gateway = true\nenable-tls-client-auth-gateway = true"},
	{"metrics port not a number", "metrics-port = on"},
	{"metrics port minus one", "metrics-port = -1"},
	{"metrics port out of range", "metrics-port = 65536"},
	{"metrics port taken", "metrics-port = 8445"},
	{"metrics bind host", "metrics-bind-host = localhost:9000"},
	{"agent certificate validity zero", "agent-certificate-validity-hours = 0"},
	{"log sizes zero", "log-max-size-mb = 0\nlog-max-age-days = 0\nlog-max-backups = 0"},
	{"log rotation", "log-rotation = weekly"},
	{"malformed escape", "a = b\nlog-level = \\u12"},
	{"invalid utf-8", "log-level = \xff"},
	{"several problems in line order", "log-format = xml\nunknown = 1\nlog-level = loud\nlog-format = text"},
}

func TestLoadConfig_Errors(t *testing.T) {
	var golden strings.Builder
	golden.WriteString("# Error messages of LoadConfig, one case per block (go test -run TestLoadConfig_Errors -update-config).\n")
	for _, tc := range configErrorCases {
		t.Run(tc.name, func(t *testing.T) {
			c, _, err := loadConfigText(t, tc.text)
			if err == nil {
				t.Fatalf("load %q: no error", tc.text)
			}
			if !reflect.DeepEqual(c, Config{}) {
				t.Errorf("load %q: returned a config with the error", tc.text)
			}
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Errorf("load %q: %v is not a *ConfigError", tc.text, err)
			}
			fmt.Fprintf(&golden, "\n## %s\n%s\n", tc.name, err)
		})
	}
	path := filepath.Join("testdata", "config-errors.golden")
	if *updateConfigGolden {
		if err := os.WriteFile(path, []byte(golden.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update-config to create it)", err)
	}
	if got := golden.String(); got != string(want) {
		t.Errorf("error messages differ from %s (run with -update-config and review the diff):\n%s", path, diffLines(string(want), got))
	}
}

// diffLines lists the lines that differ between want and got.
func diffLines(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	for i := range max(len(w), len(g)) {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			fmt.Fprintf(&b, "line %d:\n- %s\n+ %s\n", i+1, wl, gl)
		}
	}
	return b.String()
}

func TestLoadConfig_ErrorFields(t *testing.T) {
	tests := []struct {
		text     string
		wantLine int
		wantKey  string
	}{
		{"\n\nclient-to-broker-connector-https-port = abc", 3, "client-to-broker-connector-https-port"},
		{"a = 1", 1, "a"},
		{"\npersistence-db = postgresql", 2, "persistence-dsn"},
		{"delete-session-duration-seconds = 1\ndelete-session-duration-hours = 1", 2, "delete-session-duration-seconds"},
		{"\nagent-to-broker-connector-https-port = 8443", 2, "agent-to-broker-connector-https-port"},
		{"log-level = \\u1", 1, ""},
	}
	for _, tt := range tests {
		_, _, err := loadConfigText(t, tt.text)
		var ce *ConfigError
		if !errors.As(err, &ce) {
			t.Errorf("load %q: %v is not a *ConfigError", tt.text, err)
			continue
		}
		if ce.File != "broker.properties" || ce.Line != tt.wantLine || ce.Key != tt.wantKey {
			t.Errorf("load %q: got %s:%d key %q, want line %d key %q", tt.text, ce.File, ce.Line, ce.Key, tt.wantLine, tt.wantKey)
		}
	}
}

func TestLoadConfig_MissingFile(t *testing.T) {
	_, err := LoadConfig(filepath.Join(t.TempDir(), "absent.properties"), nil)
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("LoadConfig of a missing file: %v, want os.ErrNotExist", err)
	}
}

func TestLoadConfig_Environment(t *testing.T) {
	path := filepath.Join(t.TempDir(), "broker.properties")
	if err := os.WriteFile(path, []byte("persistence-db = postgresql\npersistence-dsn = ${BERTH_CONFIG_TEST_DSN}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("BERTH_CONFIG_TEST_DSN", "postgres://db/berth")
	c, err := LoadConfig(path, nil)
	if err != nil {
		t.Fatalf("LoadConfig: %v", err)
	}
	if c.PersistenceDSN != "postgres://db/berth" {
		t.Errorf("PersistenceDSN = %q", c.PersistenceDSN)
	}
	os.Unsetenv("BERTH_CONFIG_TEST_DSN")
	_, err = LoadConfig(path, nil)
	want := fmt.Sprintf("config %s:2: persistence-dsn: environment variable BERTH_CONFIG_TEST_DSN is not set", path)
	if err == nil || err.Error() != want {
		t.Errorf("LoadConfig with the variable unset: %v, want %s", err, want)
	}
}

func TestConfig_Validate(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Config)
		want []string
	}{
		{"defaults", func(*Config) {}, nil},
		{"flag-style durations need not be whole units", func(c *Config) { c.DeleteSessionDuration = 90 * time.Minute; c.QueueMaxTime = 1500 * time.Millisecond }, nil},
		{"ports", func(c *Config) { c.ClientPort, c.AgentPort = -1, 65536 }, []string{
			`config: client-to-broker-connector-https-port: "-1" is not a port number (1-65535, or 0 for any free port)`,
			`config: agent-to-broker-connector-https-port: "65536" is not a port number (1-65535, or 0 for any free port)`,
		}},
		{"durations", func(c *Config) {
			c.AgentHeartbeatTimeout = 0
			c.DeleteSessionDuration = -time.Hour
			c.QueueMaxTime = 500 * time.Millisecond
		}, []string{
			`config: create-sessions-queue-max-time-seconds: "500ms" is not a whole number of seconds (at least 1)`,
			`config: delete-session-duration-hours: "-1" is not a whole number of hours (0 or more)`,
			`config: agent-heartbeat-timeout-seconds: "0" is not a whole number of seconds (at least 1)`,
		}},
		{"enums", func(c *Config) { c.LogLevel, c.PersistenceDB = "", "mysql" }, []string{
			`config: persistence-db: "mysql" is not one of sqlite, postgresql`,
			`config: log-level: "" is not one of debug, info, warn, error`,
		}},
		{"gateway ports clash only when enabled", func(c *Config) { c.ConnectionGatewayPort = 8443 }, nil},
		{"free ports never clash", func(c *Config) {
			c.ClientPort, c.AgentPort, c.EnableConnectionGateway, c.ConnectionGatewayPort = 0, 0, true, 0
		}, nil},
		{"gateway cert without key", func(c *Config) { c.ConnectionGatewayCertFile = "/g.pem" }, []string{
			`config: gateway-to-broker-connector-private-key-file: required when gateway-to-broker-connector-certificate-file is set`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			tt.edit(&c)
			var got []string
			for _, e := range validationErrors(c.Validate()) {
				got = append(got, e.Error())
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("Validate:\n got %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestConfig_Validate_Zero(t *testing.T) {
	var c Config
	if err := c.Validate(); err == nil {
		t.Error("Validate of a zero Config: no error")
	}
}

func TestConfig_DocumentedKeys(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "config.md"))
	if err != nil {
		t.Skipf("docs/config.md: %v", err)
	}
	for _, k := range configKeys() {
		if !strings.Contains(string(doc), "`"+k.name+"`") {
			t.Errorf("docs/config.md does not document `%s`", k.name)
		}
	}
	for _, k := range []string{"broker-java-home", "broker-to-broker-*", "cli-to-broker-port", "dynamodb-*", "jdbc-connection-url",
		"jdbc-user", "jdbc-password", "enable-cloud-watch-metrics", "cloud-watch-region", "metrics-fleet-name-dimension", "*-key-store-file", "*-key-store-pass"} {
		if !strings.Contains(string(doc), "`"+k+"`") {
			t.Errorf("docs/config.md does not list the ignored key `%s`", k)
		}
	}
}

func TestExpandConfigValue(t *testing.T) {
	tests := []struct{ in, want, wantErr string }{
		{"plain", "plain", ""},
		{"${BERTH_TEST_PORT}", "9443", ""},
		{"${BERTH_TEST_PORT}${BERTH_TEST_PORT}", "94439443", ""},
		{"a$${b}${BERTH_TEST_PORT}", "a${b}9443", ""},
		{"$$$${x}", "$$${x}", ""},
		{"${}", "", `"" is not a valid environment variable name`},
		{"${A-B}", "", `"A-B" is not a valid environment variable name`},
		{"x${A", "", `"${A" has ${ without a closing }`},
		{"${NOPE_BERTH}", "", "environment variable NOPE_BERTH is not set"},
	}
	for _, tt := range tests {
		got, msg := expandConfigValue(tt.in, lookupConfigTestEnv)
		if got != tt.want || msg != tt.wantErr {
			t.Errorf("expandConfigValue(%q) = %q, %q; want %q, %q", tt.in, got, msg, tt.want, tt.wantErr)
		}
	}
}

func FuzzLoadConfig(f *testing.F) {
	for _, s := range []string{
		"client-to-broker-connector-https-port = 8443\n",
		"persistence-dsn = ${BERTH_TEST_DB_PASSWORD}$${x}\n",
		"delete-session-duration-seconds = 5\ndelete-session-duration-hours = 1\n",
		"broker-to-broker-port = 1\nx = 2\nlog-level = \\u0064ebug\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		c, err := loadConfig(strings.NewReader(text), "f", lookupConfigTestEnv, func(string, string) {})
		if err != nil {
			for _, e := range validationErrors(err) {
				if e.File != "f" {
					t.Fatalf("error %q does not name the file", e)
				}
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("loaded config does not validate: %v", err)
		}
	})
}

// TestConfig_ConnectionLimits covers the keys of the listeners' limits and
// of the DCV token verifier: defaults, values, and refusals naming the key.
func TestConfig_ConnectionLimits(t *testing.T) {
	d := DefaultConfig()
	for _, tc := range []struct {
		key       string
		got, want any
	}{
		{"client-to-broker-connector-max-connections", d.ClientMaxConns, 4096},
		{"client-to-broker-connector-max-connections-per-address", d.ClientMaxConnsPerAddr, 512},
		{"agent-to-broker-connector-max-connections", d.AgentMaxConns, 20000},
		{"agent-to-broker-connector-max-connections-per-address", d.AgentMaxConnsPerAddr, 10000},
		{"gateway-to-broker-connector-max-connections", d.ConnectionGatewayMaxConns, 1024},
		{"gateway-to-broker-connector-max-connections-per-address", d.ConnectionGatewayMaxConnsPerAddr, 256},
		{"connector-request-header-timeout-seconds", d.RequestHeaderTimeout, 10 * time.Second},
		{"connector-request-read-timeout-seconds", d.RequestReadTimeout, 30 * time.Second},
		{"connector-idle-timeout-seconds", d.IdleTimeout, 2 * time.Minute},
		{"dcv-token-verifier-allowed-addresses", d.DCVVerifierAllowed, "servers"},
		{"dcv-token-verifier-rate-limit", d.DCVVerifierRate, 20},
	} {
		if tc.got != tc.want {
			t.Errorf("default %s = %v, want %v", tc.key, tc.got, tc.want)
		}
	}

	c, _, err := loadConfigText(t, `client-to-broker-connector-max-connections = 0
client-to-broker-connector-max-connections-per-address = 7
agent-to-broker-connector-max-connections = 50000
agent-to-broker-connector-max-connections-per-address = 0
gateway-to-broker-connector-max-connections = 10
gateway-to-broker-connector-max-connections-per-address = 2
connector-request-header-timeout-seconds = 5
connector-request-read-timeout-seconds = 5
connector-idle-timeout-seconds = 30
dcv-token-verifier-allowed-addresses = servers, 10.1.0.0/16 ,192.0.2.9, 2001:db8::/32
dcv-token-verifier-rate-limit = 0
`)
	if err != nil {
		t.Fatal(err)
	}
	if c.ClientMaxConns != 0 || c.ClientMaxConnsPerAddr != 7 || c.AgentMaxConns != 50000 || c.AgentMaxConnsPerAddr != 0 ||
		c.ConnectionGatewayMaxConns != 10 || c.ConnectionGatewayMaxConnsPerAddr != 2 || c.RequestHeaderTimeout != 5*time.Second ||
		c.RequestReadTimeout != 5*time.Second || c.IdleTimeout != 30*time.Second || c.DCVVerifierRate != 0 {
		t.Errorf("loaded %+v", c)
	}
	servers, nets, err := parseVerifierAllowed(c.DCVVerifierAllowed)
	if err != nil || !servers || fmt.Sprint(nets) != "[10.1.0.0/16 192.0.2.9/32 2001:db8::/32]" {
		t.Errorf("parseVerifierAllowed = %v, %v, %v", servers, nets, err)
	}
	if servers, nets, err := parseVerifierAllowed(""); err != nil || servers || len(nets) != 0 {
		t.Errorf("empty list: %v, %v, %v", servers, nets, err)
	}

	for _, tc := range []struct{ text, want string }{
		{"client-to-broker-connector-max-connections = -1", `client-to-broker-connector-max-connections: "-1" is not a whole number (0 or more)`},
		{"agent-to-broker-connector-max-connections-per-address = many", `agent-to-broker-connector-max-connections-per-address: "many" is not a whole number (0 or more)`},
		{"connector-request-header-timeout-seconds = 0", `connector-request-header-timeout-seconds: "0" is not a whole number of seconds (at least 1)`},
		{"connector-idle-timeout-seconds = 1.5", `connector-idle-timeout-seconds: "1.5" is not a whole number of seconds (at least 1)`},
		{"connector-request-read-timeout-seconds = 5", "connector-request-read-timeout-seconds: must be at least connector-request-header-timeout-seconds (10): it bounds the header too"},
		{"dcv-token-verifier-allowed-addresses = servers, 10.0.0.0/33", `dcv-token-verifier-allowed-addresses: "servers, 10.0.0.0/33" is not a comma-separated list of IP addresses, CIDR networks and the word servers`},
		{"dcv-token-verifier-allowed-addresses = dcv-1.example.com", `dcv-token-verifier-allowed-addresses: "dcv-1.example.com" is not a comma-separated list of IP addresses, CIDR networks and the word servers`},
		{"dcv-token-verifier-rate-limit = -5", `dcv-token-verifier-rate-limit: "-5" is not a whole number (0 or more)`},
	} {
		_, _, err := loadConfigText(t, tc.text+"\n")
		if err == nil || !strings.Contains(err.Error(), "broker.properties:1: "+tc.want) {
			t.Errorf("%s: error %v, want %q", tc.text, err, tc.want)
		}
	}
}
