package main

import (
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"sort"
)

// configFileName is the reference CLI's configuration file name.
const configFileName = "dcvsmcli.conf"

// systemConfigFile is read when no other dcvsmcli.conf is found (the
// berth-cli package installs it). A variable so that tests can move it.
var systemConfigFile = "/etc/berth/dcvsmcli.conf"

// setting is one value that a global option, an environment variable or the
// configuration file can give. Precedence: option > environment > file > default.
type setting struct {
	name    string // key in settings.values, and the option name when option is true
	option  bool   // whether a global option sets it (credentials never do)
	isBool  bool
	env     string
	section string
	key     string
	def     string
	help    string // option help; a `WORD` in it names the value
}

// settingTable lists every setting; the order is the help order.
func settingTable() []setting {
	return []setting{
		{name: "broker-url", option: true, env: "BERTH_BROKER_URL", section: "broker", key: "url",
			help: "broker API base `URL`, e.g. https://broker:8443"},
		{name: "auth-server-url", option: true, env: "BERTH_AUTH_SERVER_URL", section: "authentication", key: "auth-server-url",
			help: "OAuth2 token endpoint `URL` (default: the broker URL + /oauth2/token)"},
		{name: "ca-bundle", option: true, env: "BERTH_CA_BUNDLE", section: "security", key: "ca-bundle",
			help: "PEM `FILE` of the CA certificates to trust for the broker (default: the system's)"},
		{name: "no-verify-ssl", option: true, isBool: true, env: "BERTH_NO_VERIFY_SSL", section: "security", key: "no-verify-ssl",
			help: "do not verify the broker's TLS certificate (testing only)"},
		{name: "output", option: true, env: "BERTH_OUTPUT", section: "output", key: "output-format", def: "json",
			help: "output `FORMAT`: json or table (default json)"},
		{name: "debug", option: true, isBool: true, env: "BERTH_DEBUG", section: "output", key: "debug",
			help: "log each request to stderr (never tokens or passwords)"},
		{name: "client-id", env: "BERTH_CLIENT_ID", section: "authentication", key: "client-id"},
		{name: "client-password", env: "BERTH_CLIENT_PASSWORD", section: "authentication", key: "client-password"},
	}
}

// settings are the resolved global settings.
type settings struct {
	BrokerURL, AuthURL, CABundle string
	NoVerifySSL, Debug           bool
	Output                       string
	ClientID, ClientPassword     string
	// ConfFile is the configuration file read, "" when none.
	ConfFile string
	// Source says where each setting came from: "--name", "$ENV", "FILE:LINE" or "default".
	Source map[string]string
}

// settingFlag records a global option's value so resolution knows it was given.
type settingFlag struct {
	name   string
	isBool bool
	set    map[string]string
}

func (f *settingFlag) String() string {
	if f == nil || f.set == nil {
		return ""
	}
	return f.set[f.name]
}

// Set records the value; booleans are checked here so a typo is a usage error.
func (f *settingFlag) Set(s string) error {
	if f.isBool {
		if _, err := parseBool(s); err != nil {
			return err
		}
	}
	if f.name == "output" {
		c := &choiceValue{choices: []string{"json", "table"}}
		if err := c.Set(s); err != nil {
			return err
		}
		s = c.v
	}
	f.set[f.name] = s
	return nil
}

// IsBoolFlag lets --debug and --no-verify-ssl go without a value.
func (f *settingFlag) IsBoolFlag() bool { return f.isBool }

// globalFlags registers the global options (except --version) on fs; values go
// into c.flagValues, so they work before or after the command name.
func (c *cli) globalFlags(fs *flag.FlagSet) {
	fs.Var(&settingFlag{name: "conf", set: c.flagValues}, "conf", "read settings from `FILE` (default: $XDG_CONFIG_HOME/dcvsmcli.conf, then dcvsmcli.conf beside berth, then /etc/berth/dcvsmcli.conf)")
	for _, s := range settingTable() {
		if !s.option {
			continue
		}
		fs.Var(&settingFlag{name: s.name, isBool: s.isBool, set: c.flagValues}, s.name, s.help)
	}
}

// globalNames is the set of global option names, to hide them in command help.
func globalNames() map[string]bool {
	m := map[string]bool{"conf": true}
	for _, s := range settingTable() {
		if s.option {
			m[s.name] = true
		}
	}
	return m
}

// findConfig returns the configuration file to read: conf when given (it must
// exist), else the first that exists of $XDG_CONFIG_HOME/dcvsmcli.conf (or
// ~/.config/dcvsmcli.conf when XDG_CONFIG_HOME is unset), dcvsmcli.conf beside
// the binary, and conf/dcvsmcli.conf beside the binary (the reference bundle's
// layout). It returns "" when there is none.
func findConfig(conf string, env map[string]string, exe string) (string, error) {
	if conf != "" {
		st, err := os.Stat(conf)
		if err != nil {
			return "", usagef("--conf %s: %s; pass an existing %s", conf, fsReason(err), configFileName)
		}
		if st.IsDir() {
			return "", usagef("--conf %s: is a directory; pass the path of a %s file", conf, configFileName)
		}
		return conf, nil
	}
	var candidates []string
	if x := env["XDG_CONFIG_HOME"]; x != "" {
		candidates = append(candidates, filepath.Join(x, configFileName))
	} else if h := env["HOME"]; h != "" {
		candidates = append(candidates, filepath.Join(h, ".config", configFileName))
	}
	if exe != "" {
		dir := filepath.Dir(exe)
		candidates = append(candidates, filepath.Join(dir, configFileName), filepath.Join(dir, "conf", configFileName))
	}
	// The berth-cli package's system-wide file.
	candidates = append(candidates, systemConfigFile)
	for _, p := range candidates {
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, nil
		}
	}
	return "", nil
}

// fsReason is the short reason of a file-system error.
func fsReason(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "no such file"
	case errors.Is(err, fs.ErrPermission):
		return "permission denied"
	}
	return err.Error()
}

// loadConfig reads and parses the configuration file at path ("" for none).
// Unknown sections and keys are reported through warn, not refused, so a file
// written for a newer reference CLI still works.
func loadConfig(path string, warn func(string)) (*iniFile, error) {
	if path == "" {
		return nil, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, usagef("configuration file %s: %s; fix it or pass --conf FILE", path, fsReason(err))
	}
	f, err := parseINI(data)
	if err != nil {
		var ie *iniError
		if errors.As(err, &ie) {
			return nil, usagef("%s:%d: %s; fix the file or pass --conf FILE", path, ie.Line, ie.Msg)
		}
		return nil, usagef("%s: %v", path, err)
	}
	known := map[string][]string{}
	for _, s := range settingTable() {
		known[s.section] = append(known[s.section], s.key)
	}
	for _, sec := range f.order {
		keys, ok := known[sec]
		if !ok {
			names := make([]string, 0, len(known))
			for k := range known {
				names = append(names, k)
			}
			sort.Strings(names)
			msg := fmt.Sprintf("%s: unknown section [%s] ignored", path, sec)
			if s := closest(sec, names); s != "" {
				msg += fmt.Sprintf(" (did you mean [%s]?)", s)
			}
			warn(msg)
			continue
		}
		for _, k := range f.sections[sec].order {
			if !contains(keys, k) {
				msg := fmt.Sprintf("%s:%d: unknown key %q in [%s] ignored", path, f.sections[sec].keys[k].line, k, sec)
				if s := closest(k, keys); s != "" {
					msg += fmt.Sprintf(" (did you mean %q?)", s)
				}
				warn(msg)
			}
		}
	}
	return f, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// resolveSettings applies option > environment > file > default for every
// setting and checks the values.
func resolveSettings(flags map[string]string, env map[string]string, file *iniFile, confPath string) (*settings, error) {
	vals := map[string]string{}
	src := map[string]string{}
	for _, s := range settingTable() {
		if v, ok := flags[s.name]; ok && s.option {
			vals[s.name], src[s.name] = v, "--"+s.name
			continue
		}
		if v, ok := env[s.env]; ok && v != "" {
			vals[s.name], src[s.name] = v, "$"+s.env
			continue
		}
		if v, ok := file.get(s.section, s.key); ok {
			val := v.value
			if s.name == "ca-bundle" && val != "" && !filepath.IsAbs(val) {
				// A relative CA bundle in the file is relative to the file.
				val = filepath.Join(filepath.Dir(confPath), val)
			}
			vals[s.name], src[s.name] = val, fmt.Sprintf("%s:%d", confPath, v.line)
			continue
		}
		vals[s.name], src[s.name] = s.def, "default"
	}
	st := &settings{
		BrokerURL:      vals["broker-url"],
		AuthURL:        vals["auth-server-url"],
		CABundle:       vals["ca-bundle"],
		ClientID:       vals["client-id"],
		ClientPassword: vals["client-password"],
		ConfFile:       confPath,
		Source:         src,
	}
	var err error
	for _, b := range []struct {
		name string
		dst  *bool
	}{{"no-verify-ssl", &st.NoVerifySSL}, {"debug", &st.Debug}} {
		if vals[b.name] == "" {
			continue
		}
		if *b.dst, err = parseBool(vals[b.name]); err != nil {
			return nil, usagef("%s %q (from %s): %v", b.name, vals[b.name], src[b.name], err)
		}
	}
	out := &choiceValue{choices: []string{"json", "table"}}
	if err := out.Set(vals["output"]); err != nil {
		return nil, usagef("output format %q (from %s): %v", vals["output"], src["output"], err)
	}
	st.Output = out.v
	if st.BrokerURL == "" {
		return nil, usagef("no broker URL: pass --broker-url https://HOST:8443, set BERTH_BROKER_URL or url in [broker] of %s", configFileName)
	}
	if err := checkURL(st.BrokerURL); err != nil {
		return nil, usagef("broker URL %q (from %s): %v", st.BrokerURL, src["broker-url"], err)
	}
	if st.AuthURL != "" {
		if err := checkURL(st.AuthURL); err != nil {
			return nil, usagef("auth server URL %q (from %s): %v", st.AuthURL, src["auth-server-url"], err)
		}
	}
	return st, nil
}

// checkURL requires an absolute http(s) URL with a host.
func checkURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return errors.New("not an https:// URL with a host; use e.g. https://broker.example.com:8443")
	}
	return nil
}
