package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestDefaultConfig(t *testing.T) {
	c := DefaultConfig()
	want := Config{
		Version: "0.1",
		Agent: AgentConfig{
			BrokerPort: 8445, TLSStrict: true,
			TagsFolder: "/etc/berth/agent/tags", InitFolder: "/var/lib/berth/agent/init", AutorunFolder: "/var/lib/berth/agent/autorun",
			BrokerUpdateInterval: 30, DCVRoot: "/usr/bin/dcv", EnableQueryLoggedInUsers: true,
			Driver: "vnc", StateDir: "/var/lib/berth/agent",
		},
		Log:      LogConfig{Level: "info", Rotation: "daily", MaxSizeMB: 100, MaxAgeDays: 14, MaxBackups: 10, Format: "auto"},
		VNC:      VNCConfig{WebPort: 8444, WebBindHost: "0.0.0.0", NoVNCPath: "/usr/share/novnc", GatewayMaxConnections: 1024, GatewayMaxConnectionsPerAddress: 256},
		Metrics:  MetricsConfig{BindHost: "127.0.0.1"},
		Account:  AccountConfig{RequireValidShell: true, RefuseLocked: true, RefuseExpired: true, PAM: "auto", PAMService: "berth"},
		Activity: ActivityConfig{IntervalSeconds: 30},
	}
	if diff := cmp.Diff(want, c, cmp.AllowUnexported(AgentConfig{})); diff != "" {
		t.Errorf("DefaultConfig (-want +got):\n%s", diff)
	}
	// The defaults lack only the broker.
	err := c.Validate()
	if err == nil || len(unjoin(err)) != 1 || !strings.Contains(err.Error(), "agent.broker_host: is required") {
		t.Errorf("Validate(DefaultConfig()) = %v, want only agent.broker_host missing", err)
	}
	c.Agent.BrokerHost = "broker"
	if err := c.Validate(); err != nil {
		t.Errorf("Validate with a broker: %v", err)
	}
}

// broker_update_interval unset: the agent follows the broker's interval
// (0); set, even to the default 30, it keeps its own.
func TestLoadConfig_UpdateInterval(t *testing.T) {
	for _, tc := range []struct {
		name, line string
		want       time.Duration
	}{
		{"unset", "", 0},
		{"set to the default", "broker_update_interval = 30\n", 30 * time.Second},
		{"set", "broker_update_interval = 5\n", 5 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := loadConfig(strings.NewReader("[agent]\nbroker_host = 'b'\n"+tc.line), "agent.conf")
			if err != nil {
				t.Fatal(err)
			}
			if got := c.Agent.updateInterval(); got != tc.want {
				t.Errorf("updateInterval() = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestLoadConfig_Minimal(t *testing.T) {
	c, err := loadConfig(strings.NewReader("version = '0.1'\n[agent]\nbroker_host = 'broker.example.com'\n"), "agent.conf")
	if err != nil {
		t.Fatal(err)
	}
	want := DefaultConfig()
	want.Agent.BrokerHost = "broker.example.com"
	if diff := cmp.Diff(want, c, cmp.AllowUnexported(AgentConfig{})); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	// No version key is read as 0.1.
	if _, err := loadConfig(strings.NewReader("[agent]\nbroker_host = 'b'\n"), "agent.conf"); err != nil {
		t.Errorf("without version: %v", err)
	}
}

func TestLoadConfig_Full(t *testing.T) {
	c, err := LoadConfig("testdata/agent-full.conf")
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		Version: "0.1",
		Agent: AgentConfig{
			BrokerHost: "broker1.example.com,broker2.example.com:9445", BrokerPort: 8446,
			CAFile: "testdata/ca.pem", TLSStrict: true,
			TagsFolder:         "/etc/dcv-session-manager-agent/tags/",
			InitFolder:         "/var/lib/dcv-session-manager-agent/init",
			AutorunFolder:      "/var/lib/dcv-session-manager-agent/autorun/",
			MaxVirtualSessions: 4, MaxConcurrentSessionsPerUser: 1, BrokerUpdateInterval: 15, updateIntervalSet: true,
			SoftwareStatementPath: "testdata/software-statement", DCVRoot: "/usr/bin/dcv",
			EnableQueryLoggedInUsers: false, PreferredNetworkInterface: "eth0", Driver: "sim", StateDir: "/var/lib/berth/agent-test",
		},
		Log: LogConfig{Level: "debug", Directory: "/var/log/dcv-session-manager-agent/", Rotation: "hourly", MaxSizeMB: 50, MaxAgeDays: 7, MaxBackups: 24, Format: "json"},
		VNC: VNCConfig{WebPort: 9443, WebBindHost: "127.0.0.1", NoVNCPath: "/opt/novnc", CertFile: "/etc/berth/vnc.pem", KeyFile: "/etc/berth/vnc.key",
			GatewayMaxConnections: 100, GatewayMaxConnectionsPerAddress: 0, DesktopCommand: "/usr/bin/openbox --sm-disable", FileMaxUploadMB: 256},
		Metrics: MetricsConfig{Port: 9464, BindHost: "0.0.0.0", CertFile: "/etc/berth/metrics.pem", KeyFile: "/etc/berth/metrics.key"},
		Account: AccountConfig{
			MinUID: 5000, RequireValidShell: false, RefuseLocked: true, RefuseExpired: false,
			AllowGroups: []string{"desktop-users", "CORP\\vdi users"}, DenyGroups: []string{"no-desktop"},
			PAM: "required", PAMService: "berth-desktop",
		},
		Activity: ActivityConfig{IntervalSeconds: 10},
	}
	if diff := cmp.Diff(want, c, cmp.AllowUnexported(AgentConfig{})); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	// Every key of Config is in the full file, so the file stays a complete
	// example as keys are added.
	data := string(mustRead(t, "testdata/agent-full.conf"))
	for _, k := range configKeys() {
		name := k[strings.LastIndex(k, ".")+1:]
		if !strings.Contains(k, ".") {
			name = k
		}
		if !strings.Contains(data, "\n"+name+" = ") && !strings.Contains(data, "["+name+"]") {
			t.Errorf("testdata/agent-full.conf lacks key %s", k)
		}
	}
}

func TestLoadConfig_Errors(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	mustWrite(t, empty, "\n")
	notPEM := filepath.Join(dir, "not.pem")
	mustWrite(t, notPEM, "hello")
	const broker = "[agent]\nbroker_host = 'b'\n"
	tests := []struct {
		name, conf string
		want       []string // each must appear in the error
	}{
		{"no broker", "version = '0.1'\n", []string{"agent.broker_host: is required"}},
		{"version", "version = '0.2'\n" + broker, []string{`version: "0.2" is not supported`}},
		{"version type", "version = 0.1\n" + broker, []string{`"version"`, "incompatible types"}},
		{"port range", broker + "broker_port = 70000\n", []string{"agent.broker_port: 70000 is not a port"}},
		{"port zero", broker + "broker_port = 0\n", []string{"agent.broker_port: 0 is not a port"}},
		{"port type", broker + "broker_port = '8445'\n", []string{`"agent.broker_port"`, "incompatible types"}},
		{"broker host scheme", "[agent]\nbroker_host = 'wss://b:8445'\n", []string{"agent.broker_host:", "no scheme"}},
		{"broker host empty entry", "[agent]\nbroker_host = 'a,,b'\n", []string{"agent.broker_host:", "empty entry"}},
		{"broker host port", "[agent]\nbroker_host = 'a:99999'\n", []string{"agent.broker_host:", "is not a port"}},
		{"broker host name", "[agent]\nbroker_host = 'bad_host!'\n", []string{"agent.broker_host:", "not a host name"}},
		{"negative sessions", broker + "max_virtual_sessions = -1\n", []string{"agent.max_virtual_sessions: -1 is negative"}},
		{"negative per user", broker + "max_concurrent_sessions_per_user = -2\n", []string{"agent.max_concurrent_sessions_per_user: -2 is negative"}},
		{"interval", broker + "broker_update_interval = 0\n", []string{"agent.broker_update_interval: 0 is not"}},
		{"ca file missing", broker + "ca_file = '" + filepath.Join(dir, "nope.pem") + "'\n", []string{"agent.ca_file:", "no such file"}},
		{"ca file not pem", broker + "ca_file = '" + notPEM + "'\n", []string{"agent.ca_file:", "no certificate"}},
		{"statement missing", broker + "software_statement_path = '" + filepath.Join(dir, "nope") + "'\n", []string{"agent.software_statement_path:", "no such file"}},
		{"statement empty", broker + "software_statement_path = '" + empty + "'\n", []string{"agent.software_statement_path:", "is empty"}},
		{"dcv root", broker + "driver = 'dcv'\ndcv_root = ''\n", []string{"agent.dcv_root: is required with driver dcv"}},
		{"driver unknown", broker + "driver = 'kvm'\n", []string{`agent.driver: unknown driver "kvm" (want one of dcv, sim, vnc)`}},
		{"state dir", broker + "state_dir = ''\n", []string{"agent.state_dir: is required"}},
		{"log level", broker + "[log]\nlevel = 'loud'\n", []string{`log.level: "loud" is not one of`}},
		{"log rotation", broker + "[log]\nrotation = 'weekly'\n", []string{`log.rotation: "weekly" is not one of daily, hourly, size`}},
		{"log size", broker + "[log]\nmax_size_mb = 0\n", []string{"log.max_size_mb: 0 is not a size"}},
		{"log age", broker + "[log]\nmax_age_days = -1\n", []string{"log.max_age_days: -1 is not"}},
		{"log backups", broker + "[log]\nmax_backups = 0\n", []string{"log.max_backups: 0 is not"}},
		{"log format", broker + "[log]\nformat = 'xml'\n", []string{`log.format: "xml" is not one of auto, json, text`}},
		{"vnc port", broker + "[vnc]\nweb_port = -1\n", []string{"vnc.web_port: -1 is not a port"}},
		{"vnc bind", broker + "[vnc]\nweb_bind_host = 'not a host'\n", []string{`vnc.web_bind_host: "not a host"`}},
		{"vnc cert alone", broker + "[vnc]\ncert_file = '/c.pem'\n", []string{"vnc.key_file: is required with vnc.cert_file"}},
		{"vnc key alone", broker + "[vnc]\nkey_file = '/c.key'\n", []string{"vnc.cert_file: is required with vnc.key_file"}},
		{"gateway limit", broker + "[vnc]\ngateway_max_connections = -1\n", []string{"vnc.gateway_max_connections: -1 is not a number of connections"}},
		{"desktop command with a shell", broker + "[vnc]\ndesktop_command = 'openbox & xterm'\n", []string{`vnc.desktop_command: "openbox & xterm" holds '&'`, "without a shell"}},
		{"desktop command relative", broker + "[vnc]\ndesktop_command = 'bin/openbox'\n", []string{`vnc.desktop_command: "bin/openbox" names program "bin/openbox", neither an absolute path nor a name in the session PATH`}},
		{"activity interval zero", broker + "[activity]\ninterval_seconds = 0\n", []string{"activity.interval_seconds: 0 is not a number of seconds from 1 to 86400"}},
		{"activity interval negative", broker + "[activity]\ninterval_seconds = -30\n", []string{"activity.interval_seconds: -30 is not a number of seconds"}},
		{"gateway per-address limit", broker + "[vnc]\ngateway_max_connections_per_address = -2\n", []string{"vnc.gateway_max_connections_per_address: -2 is not a number of connections"}},
		{"metrics port", broker + "[metrics]\nport = 70000\n", []string{"metrics.port: 70000 is not a port (1-65535, or 0 for no metrics)"}},
		{"metrics bind", broker + "[metrics]\nport = 9464\nbind_host = 'a b'\n", []string{`metrics.bind_host: "a b" is not an IP address or host name`}},
		{"metrics cert alone", broker + "[metrics]\ncert_file = '/m.pem'\n", []string{"metrics.key_file: is required with metrics.cert_file"}},
		{"metrics key alone", broker + "[metrics]\nkey_file = '/m.key'\n", []string{"metrics.cert_file: is required with metrics.key_file"}},
		{"metrics on the gateway port", broker + "driver = 'vnc'\n[metrics]\nport = 8444\n", []string{"metrics.port: 8444 is vnc.web_port too"}},
		{"account min uid", broker + "[account]\nmin_uid = -1\n", []string{"account.min_uid: -1 is not a user ID"}},
		{"account pam", broker + "[account]\npam = 'yes'\n", []string{`account.pam: "yes" is not one of auto, off, required`}},
		{"account pam service", broker + "[account]\npam_service = '../passwd'\n", []string{`account.pam_service: "../passwd" is not a PAM service name`}},
		{"account allow group", broker + "[account]\nallow_groups = ['ok', 'a:b']\n", []string{`account.allow_groups: "a:b" is not a group name`}},
		{"account deny group", broker + "[account]\ndeny_groups = ['']\n", []string{`account.deny_groups: "" is not a group name`}},
		{"account shell type", broker + "[account]\nrequire_valid_shell = 'yes'\n", []string{`"account.require_valid_shell"`, "incompatible types"}},
		{"account unknown key", broker + "[account]\nmin_gid = 5\n", []string{`unknown key "account.min_gid" (did you mean "account.min_uid"?)`}},
		{"unknown key", broker + "broker_prot = 8445\n", []string{`unknown key "agent.broker_prot" (did you mean "agent.broker_port"?)`}},
		{"unknown table", broker + "[dcv]\nfoo = 1\nbar = 2\n", []string{`unknown key "dcv"`}},
		{"unknown top-level key", "brokerhost = 'x'\n" + broker, []string{`unknown key "brokerhost"`}},
		{"interface with slash", broker + "preferred_network_interface = 'eth0/1'\n", []string{`agent.preferred_network_interface: "eth0/1" is not a network interface name`}},
		{"interface too long", broker + "preferred_network_interface = 'enp0s31f6-very-long'\n", []string{"agent.preferred_network_interface:", "at most 15"}},
		{"interface dots", broker + "preferred_network_interface = '..'\n", []string{"agent.preferred_network_interface:"}},
		{"interface space", broker + "preferred_network_interface = 'eth 0'\n", []string{"agent.preferred_network_interface:"}},
		{"duplicate key", broker + "broker_host = 'c'\n", []string{"agent.broker_host", "already been defined"}},
		{"syntax", "[agent\n", []string{"config agent.conf: line 2: expected"}},
		{"several", "[agent]\nbroker_port = 0\nmax_virtual_sessions = -1\n", []string{"agent.broker_host:", "agent.broker_port:", "agent.max_virtual_sessions:"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := loadConfig(strings.NewReader(tt.conf), "agent.conf")
			if err == nil {
				t.Fatalf("no error for:\n%s", tt.conf)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if !strings.HasPrefix(err.Error(), "config agent.conf: ") {
				t.Errorf("error %q does not name the file", err)
			}
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Errorf("error %T is no *ConfigError", err)
			}
		})
	}
	t.Run("unknown table reported once", func(t *testing.T) {
		_, err := loadConfig(strings.NewReader(broker+"[dcv]\nfoo = 1\nbar = 2\n"), "agent.conf")
		if n := strings.Count(err.Error(), "unknown key"); n != 1 {
			t.Errorf("%d unknown-key errors, want 1: %v", n, err)
		}
	})
	t.Run("tls_strict off skips the ca file", func(t *testing.T) {
		conf := broker + "tls_strict = false\nca_file = '" + filepath.Join(dir, "nope.pem") + "'\n"
		if _, err := loadConfig(strings.NewReader(conf), "agent.conf"); err != nil {
			t.Error(err)
		}
	})
}

func TestBrokerAddrs(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want []string
	}{
		{"broker", []string{"broker:8445"}},
		{"b1, b2:9000 ,10.0.0.5", []string{"b1:8445", "b2:9000", "10.0.0.5:8445"}},
		{"[::1]:9000,[fe80::1],2001:db8::7", []string{"[::1]:9000", "[fe80::1]:8445", "[2001:db8::7]:8445"}},
		{"broker.example.com.", []string{"broker.example.com.:8445"}},
	} {
		got, err := brokerAddrs(tt.in, 8445)
		if err != nil {
			t.Errorf("brokerAddrs(%q): %v", tt.in, err)
			continue
		}
		if !cmp.Equal(tt.want, got) {
			t.Errorf("brokerAddrs(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	for _, bad := range []string{"", ",", "https://b", "b/path", "b:0", "b:x", "0.0.0.0", "[::1", "[b]:80", "user@b", "b c"} {
		if got, err := brokerAddrs(bad, 8445); err == nil {
			t.Errorf("brokerAddrs(%q) = %q, want an error", bad, got)
		}
	}
}

func mustRead(tb testing.TB, name string) []byte {
	tb.Helper()
	data, err := os.ReadFile(name)
	if err != nil {
		tb.Fatal(err)
	}
	return data
}

func mustWrite(tb testing.TB, name, data string) {
	tb.Helper()
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(name, []byte(data), 0o644); err != nil {
		tb.Fatal(err)
	}
}
