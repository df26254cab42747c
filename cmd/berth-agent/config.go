package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
	"github.com/berth-dev/berth/internal/account"
	"github.com/berth-dev/berth/internal/driver/vnc"
	"github.com/berth-dev/berth/internal/logging"
	"github.com/berth-dev/berth/internal/login"
	"github.com/berth-dev/berth/internal/netlimit"
	"github.com/berth-dev/berth/internal/pki"
)

// ConfigVersion is the configuration file format this agent reads: the
// reference agent's `version = '0.1'`.
const ConfigVersion = "0.1"

// Config is the agent's configuration file (TOML): the keys of the reference
// agent's agent.conf plus berth's own (agent.driver, agent.state_dir, the
// [vnc], [metrics] and [account] tables, some [log] keys). docs/agent-config.md
// describes every key. Precedence is
// DefaultConfig < the file (LoadConfig) < flags (set by the caller, who then
// calls Validate); today the only flag is --config.
type Config struct {
	// Version is the file format version; "" is taken as ConfigVersion.
	Version string `toml:"version"`
	// Agent is the [agent] table.
	Agent AgentConfig `toml:"agent"`
	// Log is the [log] table.
	Log LogConfig `toml:"log"`
	// VNC is the [vnc] table, for the vnc driver.
	VNC VNCConfig `toml:"vnc"`
	// Metrics is the [metrics] table (berth's own): the Prometheus endpoint.
	Metrics MetricsConfig `toml:"metrics"`
	// Account is the [account] table (berth's own): who may own a session.
	Account AccountConfig `toml:"account"`
	// Activity is the [activity] table (berth's own): how sessions' input
	// is reported.
	Activity ActivityConfig `toml:"activity"`
}

// ActivityConfig is the [activity] table: the report of the sessions' last
// keyboard or pointer input (LastInputTime), which the broker's idle policy
// (session-idle-timeout-minutes) uses.
type ActivityConfig struct {
	// IntervalSeconds is how often the vnc driver reads its sessions' X
	// idle time, and the least time between two changes of a session's
	// reported last input (1 or more).
	IntervalSeconds int `toml:"interval_seconds"`
}

// AgentConfig is the [agent] table.
type AgentConfig struct {
	// BrokerHost is the broker's host name or IP, or a comma-separated list
	// of them for failover; an entry may carry its own port ("host:8445",
	// "[::1]:8445"). Required.
	BrokerHost string `toml:"broker_host"`
	// BrokerPort is the broker's agent port for entries without one.
	BrokerPort int `toml:"broker_port"`
	// CAFile is a PEM bundle that verifies the broker's certificate when
	// TLSStrict; empty means the system roots.
	CAFile string `toml:"ca_file"`
	// TLSStrict verifies the broker's certificate; false accepts any.
	TLSStrict bool `toml:"tls_strict"`
	// TagsFolder holds *.toml tag files; a missing folder means no tags.
	TagsFolder string `toml:"tags_folder"`
	// InitFolder holds the scripts that CreateSessions' InitFile names.
	InitFolder string `toml:"init_folder"`
	// AutorunFolder holds the files that CreateSessions' AutorunFile names.
	AutorunFolder string `toml:"autorun_folder"`
	// MaxVirtualSessions bounds the virtual sessions on the host; 0 means
	// unlimited.
	MaxVirtualSessions int `toml:"max_virtual_sessions"`
	// MaxConcurrentSessionsPerUser bounds one user's sessions on the host; 0
	// means unlimited.
	MaxConcurrentSessionsPerUser int `toml:"max_concurrent_sessions_per_user"`
	// BrokerUpdateInterval is the longest time, in seconds, between two
	// reports to the broker (the broker may ask for a shorter one).
	BrokerUpdateInterval int `toml:"broker_update_interval"`
	// updateIntervalSet tells whether the file sets broker_update_interval;
	// unset, the agent follows the interval the broker asks for, longer or
	// shorter than the default (a large fleet's broker asks for less).
	updateIntervalSet bool
	// SoftwareStatementPath is a file with the software statement the agent
	// registers with; empty means none (the broker must then run with
	// enable-agent-authorization = false, or credentials must be stored).
	SoftwareStatementPath string `toml:"software_statement_path"`
	// DCVRoot is the dcv command, for the dcv driver.
	DCVRoot string `toml:"dcv_root"`
	// EnableQueryLoggedInUsers reports the host's logged-in users.
	EnableQueryLoggedInUsers bool `toml:"enable_query_logged_in_users"`
	// PreferredNetworkInterface names the interface whose address the agent
	// reports as the host's IP (Server.Ip, the endpoints); empty means the
	// default route's interface.
	PreferredNetworkInterface string `toml:"preferred_network_interface"`
	// Driver names the session driver (berth's key): see drivers.
	Driver string `toml:"driver"`
	// StateDir keeps the server ID and the agent credentials (berth's key).
	StateDir string `toml:"state_dir"`
}

// LogConfig is the [log] table.
type LogConfig struct {
	// Level is trace, debug, info, warn (warning) or error.
	Level string `toml:"level"`
	// Directory, when set, receives agent.log in addition to stderr.
	Directory string `toml:"directory"`
	// Rotation is when agent.log starts anew: daily, hourly (and at
	// MaxSizeMB) or size (at MaxSizeMB only).
	Rotation string `toml:"rotation"`
	// MaxSizeMB rotates agent.log when it grows past this size.
	MaxSizeMB int `toml:"max_size_mb"`
	// MaxAgeDays removes rotated files older than this.
	MaxAgeDays int `toml:"max_age_days"`
	// MaxBackups keeps at most this many rotated files.
	MaxBackups int `toml:"max_backups"`
	// Format is auto (text on a terminal, JSON otherwise), json or text.
	Format string `toml:"format"`
}

// VNCConfig is the [vnc] table (berth's own), read by the vnc driver.
type VNCConfig struct {
	// WebPort is the port of the web gateway (noVNC).
	WebPort int `toml:"web_port"`
	// WebBindHost is the address the web gateway listens on.
	WebBindHost string `toml:"web_bind_host"`
	// NoVNCPath is the directory of the noVNC web client.
	NoVNCPath string `toml:"novnc_path"`
	// CertFile and KeyFile are the web gateway's PEM certificate and key;
	// both or neither.
	CertFile string `toml:"cert_file"`
	KeyFile  string `toml:"key_file"`
	// GatewayMaxConnections and GatewayMaxConnectionsPerAddress bound the
	// connections the web gateway holds at once, in all and from one client
	// network (an IPv4 address or an IPv6 /64); 0 is no bound. Connections
	// over them are closed on accept.
	GatewayMaxConnections           int `toml:"gateway_max_connections"`
	GatewayMaxConnectionsPerAddress int `toml:"gateway_max_connections_per_address"`
	// DesktopCommand is what a session whose request names no InitFile runs
	// as its desktop (vnc.Config.DesktopCommand): a command line split into
	// words at white space and run without a shell; "-" runs nothing; empty
	// runs the host's desktop session as a display manager would.
	DesktopCommand string `toml:"desktop_command"`
	// FileMaxUploadMB bounds a file uploaded through the session page's
	// files panel, in MiB (gateway.Config.MaxUploadBytes); 0 means the
	// gateway's default, 1024.
	FileMaxUploadMB int `toml:"file_max_upload_mb"`
}

// gatewayLimits are the web gateway's connection limits (gateway.Config:
// negative for no bound).
func (v *VNCConfig) gatewayLimits() netlimit.Limits {
	none := func(n int) int {
		if n == 0 {
			return -1
		}
		return n
	}
	return netlimit.Limits{Max: none(v.GatewayMaxConnections), MaxPerAddr: none(v.GatewayMaxConnectionsPerAddress)}
}

// MetricsConfig is the [metrics] table (berth's own): Prometheus metrics
// served over HTTPS at /metrics.
type MetricsConfig struct {
	// Port is the metrics listener's port; 0 serves no metrics.
	Port int `toml:"port"`
	// BindHost is the address the metrics listener listens on.
	BindHost string `toml:"bind_host"`
	// CertFile and KeyFile are the listener's PEM certificate and key; both
	// or neither. Neither: the web gateway's certificate (vnc driver), else
	// one issued by a CA of the agent's own in StateDir/metrics-ca.
	CertFile string `toml:"cert_file"`
	KeyFile  string `toml:"key_file"`
}

// AccountConfig is the [account] table (berth's own): the account policy a
// session's owner must pass before the driver starts anything as them
// (package account), and the PAM login session of the vnc driver's
// desktops (package login).
type AccountConfig struct {
	// MinUID is the lowest user ID that may own a session; 0 takes UID_MIN
	// from /etc/login.defs (1000 when it has none).
	MinUID int `toml:"min_uid"`
	// RequireValidShell refuses owners whose login shell is not in
	// /etc/shells or is a nologin or false program.
	RequireValidShell bool `toml:"require_valid_shell"`
	// RefuseLocked refuses owners whose password is locked in /etc/shadow.
	RefuseLocked bool `toml:"refuse_locked"`
	// RefuseExpired refuses expired accounts and accounts disabled for
	// password inactivity.
	RefuseExpired bool `toml:"refuse_expired"`
	// AllowGroups, when not empty, admits only members of one of them.
	AllowGroups []string `toml:"allow_groups"`
	// DenyGroups refuses members of any of them.
	DenyGroups []string `toml:"deny_groups"`
	// PAM is auto, off or required: whether the vnc driver starts each
	// desktop in a PAM login session of PAMService.
	PAM string `toml:"pam"`
	// PAMService is the PAM service (a file in /etc/pam.d).
	PAMService string `toml:"pam_service"`
}

// Policy returns the account policy of the table.
func (a *AccountConfig) Policy() account.Policy {
	return account.Policy{
		MinUID:            a.MinUID,
		RequireValidShell: a.RequireValidShell,
		RefuseLocked:      a.RefuseLocked,
		RefuseExpired:     a.RefuseExpired,
		AllowGroups:       a.AllowGroups,
		DenyGroups:        a.DenyGroups,
	}
}

// DefaultConfig returns the defaults of every key; BrokerHost has none.
func DefaultConfig() Config {
	return Config{
		Version: ConfigVersion,
		Agent: AgentConfig{
			BrokerPort:               8445,
			TLSStrict:                true,
			TagsFolder:               "/etc/berth/agent/tags",
			InitFolder:               "/var/lib/berth/agent/init",
			AutorunFolder:            "/var/lib/berth/agent/autorun",
			BrokerUpdateInterval:     30,
			DCVRoot:                  "/usr/bin/dcv",
			EnableQueryLoggedInUsers: true,
			Driver:                   "vnc",
			StateDir:                 "/var/lib/berth/agent",
		},
		Log: LogConfig{Level: "info", Rotation: "daily", MaxSizeMB: 100, MaxAgeDays: 14, MaxBackups: 10, Format: "auto"},
		VNC: VNCConfig{
			WebPort:                         8444,
			WebBindHost:                     "0.0.0.0",
			NoVNCPath:                       "/usr/share/novnc",
			GatewayMaxConnections:           1024,
			GatewayMaxConnectionsPerAddress: 256,
		},
		Metrics:  MetricsConfig{BindHost: "127.0.0.1"},
		Activity: ActivityConfig{IntervalSeconds: 30},
		Account: AccountConfig{
			RequireValidShell: true,
			RefuseLocked:      true,
			RefuseExpired:     true,
			PAM:               "auto",
			PAMService:        "berth",
		},
	}
}

// ConfigError is one problem in the configuration.
type ConfigError struct {
	// File is the configuration file; empty when Validate found the problem
	// outside LoadConfig.
	File string
	// Key is the key concerned ("agent.broker_port"); empty for a problem of
	// the whole file.
	Key string
	// Msg says what is wrong; it starts with the key when there is one.
	Msg string
}

// Error implements error: "config FILE: MSG".
func (e *ConfigError) Error() string {
	if e.File == "" {
		return "config: " + e.Msg
	}
	return "config " + e.File + ": " + e.Msg
}

// LoadConfig reads the TOML file at path over DefaultConfig and validates the
// result. Unknown keys and bad values are errors; the error joins one
// *ConfigError per problem, each naming its key.
func LoadConfig(path string) (Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return Config{}, fmt.Errorf("read config: %w", err)
	}
	defer f.Close()
	return loadConfig(f, path)
}

// loadConfig is LoadConfig over a reader.
func loadConfig(r io.Reader, name string) (Config, error) {
	c := DefaultConfig()
	md, err := toml.NewDecoder(r).Decode(&c)
	if err != nil {
		// The TOML errors name the line and the last key.
		return Config{}, &ConfigError{File: name, Msg: strings.TrimPrefix(err.Error(), "toml: ")}
	}
	c.Agent.updateIntervalSet = md.IsDefined("agent", "broker_update_interval")
	var errs []error
	var reported []string
	for _, k := range md.Undecoded() {
		key := k.String()
		if slices.ContainsFunc(reported, func(p string) bool { return strings.HasPrefix(key, p+".") }) {
			continue // inside an unknown table already reported
		}
		reported = append(reported, key)
		msg := fmt.Sprintf("unknown key %q", key)
		if s := suggestKey(key); s != "" {
			msg += fmt.Sprintf(" (did you mean %q?)", s)
		}
		errs = append(errs, &ConfigError{File: name, Key: key, Msg: msg})
	}
	if err := c.Validate(); err != nil {
		for _, e := range unjoin(err) {
			var ce *ConfigError
			if errors.As(e, &ce) {
				ce.File = name
			}
			errs = append(errs, e)
		}
	}
	if len(errs) > 0 {
		return Config{}, errors.Join(errs...)
	}
	return c, nil
}

// unjoin returns the errors inside an errors.Join.
func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// Validate checks every value. It reads CAFile (when TLSStrict) and
// SoftwareStatementPath, so that a file the agent cannot use stops start-up.
// It returns nil or the join of one *ConfigError per problem, in key order.
func (c *Config) Validate() error {
	var errs []error
	fail := func(key, format string, args ...any) {
		errs = append(errs, &ConfigError{Key: key, Msg: key + ": " + fmt.Sprintf(format, args...)})
	}
	if c.Version != "" && c.Version != ConfigVersion {
		fail("version", "%q is not supported (want '%s')", c.Version, ConfigVersion)
	}

	a := &c.Agent
	if strings.TrimSpace(a.BrokerHost) == "" {
		fail("agent.broker_host", "is required (the broker's host name or IP)")
	} else if _, err := brokerAddrs(a.BrokerHost, 8445); err != nil {
		fail("agent.broker_host", "%v", err)
	}
	if !validPort(a.BrokerPort) {
		fail("agent.broker_port", "%d is not a port (1-65535)", a.BrokerPort)
	}
	if a.TLSStrict && a.CAFile != "" {
		if _, err := pki.LoadPool(a.CAFile); err != nil {
			fail("agent.ca_file", "%v", err)
		}
	}
	if a.MaxVirtualSessions < 0 {
		fail("agent.max_virtual_sessions", "%d is negative (0 means unlimited)", a.MaxVirtualSessions)
	}
	if a.MaxConcurrentSessionsPerUser < 0 {
		fail("agent.max_concurrent_sessions_per_user", "%d is negative (0 means unlimited)", a.MaxConcurrentSessionsPerUser)
	}
	if a.BrokerUpdateInterval < 1 || a.BrokerUpdateInterval > 86400 {
		fail("agent.broker_update_interval", "%d is not a number of seconds from 1 to 86400", a.BrokerUpdateInterval)
	}
	if a.SoftwareStatementPath != "" {
		if _, err := readSoftwareStatement(a.SoftwareStatementPath); err != nil {
			fail("agent.software_statement_path", "%v", err)
		}
	}
	if _, ok := drivers[a.Driver]; !ok {
		if slices.Contains(plannedDrivers, a.Driver) {
			fail("agent.driver", "driver %q is not available in this build yet", a.Driver)
		} else {
			fail("agent.driver", "unknown driver %q (want one of %s)", a.Driver, strings.Join(driverNames(), ", "))
		}
	}
	if a.Driver == "dcv" && strings.TrimSpace(a.DCVRoot) == "" {
		fail("agent.dcv_root", "is required with driver dcv (the dcv command, e.g. /usr/bin/dcv)")
	}
	if a.StateDir == "" {
		fail("agent.state_dir", "is required (where the server ID and agent credentials are kept)")
	}
	if n := a.PreferredNetworkInterface; n != "" && !validInterfaceName(n) {
		fail("agent.preferred_network_interface", "%q is not a network interface name (at most 15 characters, no '/', ':' or spaces)", n)
	}

	l := &c.Log
	if _, err := logging.ParseLevel(l.Level); err != nil {
		fail("log.level", "%q is not one of trace, debug, info, warn, error", l.Level)
	}
	if _, ok := rotations[strings.ToLower(l.Rotation)]; !ok {
		fail("log.rotation", "%q is not one of daily, hourly, size", l.Rotation)
	}
	if l.MaxSizeMB < 1 || l.MaxSizeMB > 1<<20 {
		fail("log.max_size_mb", "%d is not a size from 1 to 1048576 MB", l.MaxSizeMB)
	}
	if l.MaxAgeDays < 1 {
		fail("log.max_age_days", "%d is not a number of days (1 or more)", l.MaxAgeDays)
	}
	if l.MaxBackups < 1 {
		fail("log.max_backups", "%d is not a number of files (1 or more)", l.MaxBackups)
	}
	switch strings.ToLower(l.Format) {
	case "auto", "json", "text":
	default:
		fail("log.format", "%q is not one of auto, json, text", l.Format)
	}

	v := &c.VNC
	if !validPort(v.WebPort) {
		fail("vnc.web_port", "%d is not a port (1-65535)", v.WebPort)
	}
	if !validBindHost(v.WebBindHost) {
		fail("vnc.web_bind_host", "%q is not an IP address or host name", v.WebBindHost)
	}
	switch {
	case v.CertFile != "" && v.KeyFile == "":
		fail("vnc.key_file", "is required with vnc.cert_file (set both or neither)")
	case v.CertFile == "" && v.KeyFile != "":
		fail("vnc.cert_file", "is required with vnc.key_file (set both or neither)")
	}
	if v.GatewayMaxConnections < 0 {
		fail("vnc.gateway_max_connections", "%d is not a number of connections (0 or more; 0: no limit)", v.GatewayMaxConnections)
	}
	if v.GatewayMaxConnectionsPerAddress < 0 {
		fail("vnc.gateway_max_connections_per_address", "%d is not a number of connections (0 or more; 0: no limit)", v.GatewayMaxConnectionsPerAddress)
	}
	if _, err := vnc.ParseDesktopCommand(v.DesktopCommand); err != nil {
		fail("vnc.desktop_command", "%q %v", v.DesktopCommand, err)
	}
	if v.FileMaxUploadMB < 0 || v.FileMaxUploadMB > 1<<20 {
		fail("vnc.file_max_upload_mb", "%d is not a size in MiB (0 to 1048576; 0: the default, 1024)", v.FileMaxUploadMB)
	}

	if n := c.Activity.IntervalSeconds; n < 1 || n > 86400 {
		fail("activity.interval_seconds", "%d is not a number of seconds from 1 to 86400", n)
	}

	mc := &c.Metrics
	if mc.Port != 0 && !validPort(mc.Port) {
		fail("metrics.port", "%d is not a port (1-65535, or 0 for no metrics)", mc.Port)
	}
	if !validBindHost(mc.BindHost) {
		fail("metrics.bind_host", "%q is not an IP address or host name", mc.BindHost)
	}
	switch {
	case mc.CertFile != "" && mc.KeyFile == "":
		fail("metrics.key_file", "is required with metrics.cert_file (set both or neither)")
	case mc.CertFile == "" && mc.KeyFile != "":
		fail("metrics.cert_file", "is required with metrics.key_file (set both or neither)")
	}
	if mc.Port != 0 && c.Agent.Driver == "vnc" && mc.Port == v.WebPort && (mc.BindHost == v.WebBindHost || isWildcard(mc.BindHost) || isWildcard(v.WebBindHost)) {
		fail("metrics.port", "%d is vnc.web_port too", mc.Port)
	}

	ac := &c.Account
	if ac.MinUID < 0 || ac.MinUID > 1<<31-2 {
		fail("account.min_uid", "%d is not a user ID (0 takes UID_MIN from /etc/login.defs)", ac.MinUID)
	}
	for _, g := range []struct {
		key   string
		names []string
	}{{"account.allow_groups", ac.AllowGroups}, {"account.deny_groups", ac.DenyGroups}} {
		for _, n := range g.names {
			if !validGroupName(n) {
				fail(g.key, "%q is not a group name", n)
			}
		}
	}
	switch ac.PAM {
	case "auto", "off", "required":
	default:
		fail("account.pam", "%q is not one of auto, off, required", ac.PAM)
	}
	if err := login.CheckServiceName(ac.PAMService); err != nil {
		fail("account.pam_service", "%v", err)
	}
	return errors.Join(errs...)
}

// validGroupName accepts what /etc/group and directory services can name
// ("desktop-users", `CORP\domain users`): 1 to 256 bytes without ':', ',',
// control characters or surrounding spaces.
func validGroupName(n string) bool {
	if n == "" || len(n) > 256 || strings.TrimSpace(n) != n {
		return false
	}
	for _, r := range n {
		if r == ':' || r == ',' || r < ' ' || r == 0x7f {
			return false
		}
	}
	return true
}

// brokerAddrs splits broker_host into host:port addresses: a comma-separated
// list whose entries are "host", "host:port", "[v6]", "[v6]:port" or a bare
// IPv6 address, port defaulting to defPort.
func brokerAddrs(list string, defPort int) ([]string, error) {
	var out []string
	for _, e := range strings.Split(list, ",") {
		e = strings.TrimSpace(e)
		if e == "" {
			return nil, fmt.Errorf("%q has an empty entry", list)
		}
		if strings.Contains(e, "://") || strings.ContainsAny(e, "/ \t?#@") {
			return nil, fmt.Errorf("%q is not a host name or IP address (no scheme or path)", e)
		}
		host, port := e, strconv.Itoa(defPort)
		switch {
		case strings.HasPrefix(e, "["):
			h, p, err := net.SplitHostPort(e)
			if err != nil {
				if !strings.HasSuffix(e, "]") { // "[v6]" without a port
					return nil, fmt.Errorf("%q is not a host name or IP address", e)
				}
				h, p = e[1:len(e)-1], port
			}
			if net.ParseIP(h) == nil {
				return nil, fmt.Errorf("%q: brackets hold an IPv6 address", e)
			}
			host, port = h, p
		case strings.Count(e, ":") == 1:
			h, p, err := net.SplitHostPort(e)
			if err != nil {
				return nil, fmt.Errorf("%q: %v", e, err)
			}
			host, port = h, p
		}
		if n, err := strconv.Atoi(port); err != nil || !validPort(n) {
			return nil, fmt.Errorf("%q: %q is not a port (1-65535)", e, port)
		}
		if !validBindHost(host) || host == "0.0.0.0" || host == "::" {
			return nil, fmt.Errorf("%q is not a host name or IP address", e)
		}
		out = append(out, net.JoinHostPort(host, port))
	}
	return out, nil
}

func validPort(p int) bool { return p >= 1 && p <= 65535 }

// isWildcard reports whether a bind host means every address.
func isWildcard(h string) bool {
	ip := net.ParseIP(h)
	return ip != nil && ip.IsUnspecified()
}

// validInterfaceName accepts what Linux accepts as a network interface name
// (dev_valid_name): 1 to 15 bytes, not "." or "..", no '/', ':' or spaces.
func validInterfaceName(n string) bool {
	if n == "" || len(n) > 15 || n == "." || n == ".." {
		return false
	}
	for _, r := range n {
		if r == '/' || r == ':' || r <= ' ' || r == 0x7f {
			return false
		}
	}
	return true
}

// validBindHost accepts an IP address or a DNS name.
func validBindHost(h string) bool {
	if h == "" {
		return false
	}
	if net.ParseIP(h) != nil {
		return true
	}
	if len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(strings.TrimSuffix(h, "."), ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return false
			}
		}
	}
	return true
}

// readSoftwareStatement reads a software statement file.
func readSoftwareStatement(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	s := strings.TrimSpace(string(data))
	if s == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	return s, nil
}

// configKeys returns every key the file may hold ("agent.broker_host"), from
// Config's toml tags.
func configKeys() []string {
	var keys []string
	var walk func(t reflect.Type, prefix string)
	walk = func(t reflect.Type, prefix string) {
		for f := range t.Fields() {
			if !f.IsExported() {
				continue // no key: what the loader notes about the file
			}
			name := prefix + f.Tag.Get("toml")
			if f.Type.Kind() == reflect.Struct {
				keys = append(keys, name)
				walk(f.Type, name+".")
				continue
			}
			keys = append(keys, name)
		}
	}
	walk(reflect.TypeFor[Config](), "")
	return keys
}

// suggestKey returns the known key closest to an unknown one, if close enough
// to be a typo, or "".
func suggestKey(key string) string {
	best, bestD := "", 3
	for _, k := range configKeys() {
		if d := editDistance(key, k); d < bestD {
			best, bestD = k, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b.
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
