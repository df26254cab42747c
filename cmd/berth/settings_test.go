package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestResolveSettings checks the precedence option > environment > file > default
// for every setting.
func TestResolveSettings(t *testing.T) {
	file, err := parseINI([]byte(`[output]
output-format = table
debug = false
[security]
no-verify-ssl = no
ca-bundle = certs/ca.pem
[authentication]
auth-server-url = https://file/oauth2/token
client-id = file-id
client-password = file-pw
[broker]
url = https://file:8443
`))
	if err != nil {
		t.Fatal(err)
	}
	conf := "/etc/berth/dcvsmcli.conf"
	type want struct {
		broker, auth, ca, output, id, pw string
		noVerify, debug                  bool
	}
	tests := []struct {
		name  string
		flags map[string]string
		env   map[string]string
		file  *iniFile
		want  want
		src   map[string]string
	}{
		{name: "defaults", flags: map[string]string{"broker-url": "https://flag"},
			want: want{broker: "https://flag", output: "json"},
			src:  map[string]string{"output": "default", "client-id": "default", "debug": "default"}},
		{name: "file", file: file,
			want: want{broker: "https://file:8443", auth: "https://file/oauth2/token", ca: "/etc/berth/certs/ca.pem", output: "table", id: "file-id", pw: "file-pw"},
			src:  map[string]string{"broker-url": conf + ":12", "output": conf + ":2", "client-password": conf + ":10"}},
		{name: "environment over file", file: file,
			env: map[string]string{"BERTH_BROKER_URL": "https://env", "BERTH_AUTH_SERVER_URL": "https://env/token", "BERTH_CA_BUNDLE": "env.pem",
				"BERTH_NO_VERIFY_SSL": "true", "BERTH_OUTPUT": "JSON", "BERTH_DEBUG": "1", "BERTH_CLIENT_ID": "env-id", "BERTH_CLIENT_PASSWORD": "env-pw"},
			want: want{broker: "https://env", auth: "https://env/token", ca: "env.pem", output: "json", id: "env-id", pw: "env-pw", noVerify: true, debug: true},
			src:  map[string]string{"broker-url": "$BERTH_BROKER_URL", "client-id": "$BERTH_CLIENT_ID"}},
		{name: "empty environment values do not count", file: file,
			env:  map[string]string{"BERTH_BROKER_URL": "", "BERTH_CLIENT_ID": ""},
			want: want{broker: "https://file:8443", auth: "https://file/oauth2/token", ca: "/etc/berth/certs/ca.pem", output: "table", id: "file-id", pw: "file-pw"}},
		{name: "options over environment and file", file: file,
			flags: map[string]string{"broker-url": "https://flag", "auth-server-url": "https://flag/token", "ca-bundle": "flag.pem",
				"no-verify-ssl": "false", "output": "json", "debug": "true"},
			env:  map[string]string{"BERTH_BROKER_URL": "https://env", "BERTH_NO_VERIFY_SSL": "true", "BERTH_OUTPUT": "table", "BERTH_CLIENT_ID": "env-id"},
			want: want{broker: "https://flag", auth: "https://flag/token", ca: "flag.pem", output: "json", id: "env-id", pw: "file-pw", debug: true},
			src:  map[string]string{"broker-url": "--broker-url", "no-verify-ssl": "--no-verify-ssl", "client-id": "$BERTH_CLIENT_ID", "client-password": conf + ":10"}},
		{name: "credentials are never options", file: file,
			flags: map[string]string{"client-id": "flag-id", "client-password": "flag-pw"},
			want:  want{broker: "https://file:8443", auth: "https://file/oauth2/token", ca: "/etc/berth/certs/ca.pem", output: "table", id: "file-id", pw: "file-pw"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.flags == nil {
				tt.flags = map[string]string{}
			}
			st, err := resolveSettings(tt.flags, tt.env, tt.file, conf)
			if err != nil {
				t.Fatal(err)
			}
			got := want{st.BrokerURL, st.AuthURL, st.CABundle, st.Output, st.ClientID, st.ClientPassword, st.NoVerifySSL, st.Debug}
			if got != tt.want {
				t.Errorf("settings = %+v\nwant       %+v", got, tt.want)
			}
			for k, v := range tt.src {
				if st.Source[k] != v {
					t.Errorf("source of %s = %q, want %q", k, st.Source[k], v)
				}
			}
		})
	}
}

// TestFindConfig checks the lookup order: --conf, $XDG_CONFIG_HOME (or
// ~/.config), beside the binary, conf/ beside the binary, the system file.
func TestFindConfig(t *testing.T) {
	root := t.TempDir()
	defer func(old string) { systemConfigFile = old }(systemConfigFile)
	systemConfigFile = filepath.Join(root, "none", "system.conf")
	mk := func(p string) string {
		p = filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("[broker]\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	explicit := mk("explicit.conf")
	xdg := mk("xdg/dcvsmcli.conf")
	home := mk("home/.config/dcvsmcli.conf")
	beside := mk("bin/dcvsmcli.conf")
	bundled := mk("bin2/conf/dcvsmcli.conf")
	exe := filepath.Join(root, "bin", "berth")
	exe2 := filepath.Join(root, "bin2", "berth")
	tests := []struct {
		name string
		conf string
		env  map[string]string
		exe  string
		want string
	}{
		{"--conf first", explicit, map[string]string{"XDG_CONFIG_HOME": filepath.Join(root, "xdg")}, exe, explicit},
		{"XDG_CONFIG_HOME", "", map[string]string{"XDG_CONFIG_HOME": filepath.Join(root, "xdg"), "HOME": filepath.Join(root, "home")}, exe, xdg},
		{"~/.config when XDG_CONFIG_HOME is unset", "", map[string]string{"HOME": filepath.Join(root, "home")}, exe, home},
		{"XDG_CONFIG_HOME without the file", "", map[string]string{"XDG_CONFIG_HOME": filepath.Join(root, "none"), "HOME": filepath.Join(root, "home")}, exe, beside},
		{"beside the binary", "", map[string]string{}, exe, beside},
		{"conf/ beside the binary", "", map[string]string{}, exe2, bundled},
		{"none", "", map[string]string{"HOME": filepath.Join(root, "none")}, filepath.Join(root, "none", "berth"), ""},
		{"the system file last", "", map[string]string{"HOME": filepath.Join(root, "none")}, filepath.Join(root, "none", "berth"), "SYSTEM"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.want == "SYSTEM" {
				systemConfigFile = mk("etc/berth/dcvsmcli.conf")
				tt.want = systemConfigFile
			}
			got, err := findConfig(tt.conf, tt.env, tt.exe)
			if err != nil || got != tt.want {
				t.Errorf("findConfig = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

// TestRun_ConfigFile runs berth with everything in dcvsmcli.conf, then checks
// that the environment and options win over it.
func TestRun_ConfigFile(t *testing.T) {
	fb := newFakeBroker(t)
	fb.answer("/describeServers", 200, `{"RequestId":"r","Servers":[{"Id":"s1","Hostname":"h1","Availability":"AVAILABLE"}]}`)
	xdg := t.TempDir()
	conf := "[output]\noutput-format = table\n[security]\nca-bundle = " + fb.CAFile +
		"\n[authentication]\nclient-id = " + fakeClientID + "\nclient-password = " + fakeClientSecret +
		"\n[broker]\nurl = " + fb.URL + "\n[extra]\nk = v\n"
	if err := os.WriteFile(filepath.Join(xdg, "dcvsmcli.conf"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{"XDG_CONFIG_HOME=" + xdg}
	out, stderr, code := runCLI(t, env, "describe-servers")
	if code != 0 || !strings.HasPrefix(out, "ID ") || !strings.Contains(out, "h1") {
		t.Fatalf("config file run: exit %d, out %q, err %q", code, out, stderr)
	}
	if want := "berth: warning: " + filepath.Join(xdg, "dcvsmcli.conf") + ": unknown section [extra] ignored\n"; stderr != want {
		t.Errorf("stderr = %q, want %q", stderr, want)
	}
	// Environment over file.
	out, _, _ = runCLI(t, append(env, "BERTH_OUTPUT=json"), "describe-servers")
	if !strings.HasPrefix(out, "{") {
		t.Errorf("BERTH_OUTPUT=json did not win over the file: %q", out)
	}
	// Option over environment.
	out, _, _ = runCLI(t, append(env, "BERTH_OUTPUT=json"), "describe-servers", "--output", "table")
	if !strings.HasPrefix(out, "ID ") {
		t.Errorf("--output table did not win over BERTH_OUTPUT: %q", out)
	}
	// A wrong broker URL in the environment wins over the right one in the file.
	_, stderr, code = runCLI(t, append(env, "BERTH_BROKER_URL=https://127.0.0.1:1"), "describe-servers")
	if code != 2 || !strings.Contains(stderr, "127.0.0.1:1 (--broker-url)") {
		t.Errorf("BERTH_BROKER_URL did not win: exit %d, %q", code, stderr)
	}
	// A malformed file is bad usage, with its line.
	bad := filepath.Join(t.TempDir(), "bad.conf")
	os.WriteFile(bad, []byte("[broker]\nurl\n"), 0o600)
	_, stderr, code = runCLI(t, env, "--conf", bad, "describe-servers")
	if want := "berth: describe-servers: " + bad + ":2: expected key = value, got \"url\"; fix the file or pass --conf FILE\n"; code != 2 || stderr != want {
		t.Errorf("malformed file: exit %d, %q, want %q", code, stderr, want)
	}
}

func TestLoadConfig_Warnings(t *testing.T) {
	p := filepath.Join(t.TempDir(), "dcvsmcli.conf")
	os.WriteFile(p, []byte("[broker]\nurl = https://b\nurls = x\n[Broker]\n"), 0o600)
	var warns []string
	if _, err := loadConfig(p, func(s string) { warns = append(warns, s) }); err != nil {
		t.Fatal(err)
	}
	want := []string{
		p + `:3: unknown key "urls" in [broker] ignored (did you mean "url"?)`,
		p + ": unknown section [Broker] ignored (did you mean [broker]?)",
	}
	if strings.Join(warns, "\n") != strings.Join(want, "\n") {
		t.Errorf("warnings =\n%s\nwant\n%s", strings.Join(warns, "\n"), strings.Join(want, "\n"))
	}
}
