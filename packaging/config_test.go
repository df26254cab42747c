package packaging_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// repoRoot returns the directory holding go.mod.
func repoRoot(tb testing.TB) string {
	tb.Helper()
	dir, err := os.Getwd()
	if err != nil {
		tb.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			tb.Fatal("go.mod not found")
		}
		dir = parent
	}
}

// goBin returns the go command.
func goBin(tb testing.TB) string {
	tb.Helper()
	p, err := exec.LookPath("go")
	if err != nil {
		tb.Skip("go command not in PATH")
	}
	return p
}

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

// MustBuild builds the three binaries of this tree once per test run and
// returns the path of name.
func MustBuild(tb testing.TB, name string) string {
	tb.Helper()
	gobin := goBin(tb)
	root := repoRoot(tb)
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "berth-packaging-bin-")
		if buildErr != nil {
			return
		}
		cmd := exec.Command(gobin, "build", "-o", buildDir+string(filepath.Separator), "./cmd/berth-broker", "./cmd/berth-agent", "./cmd/berth")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = &buildError{err: err, out: out}
		}
	})
	if buildErr != nil {
		tb.Fatalf("go build: %v", buildErr)
	}
	return filepath.Join(buildDir, name)
}

type buildError struct {
	err error
	out []byte
}

func (e *buildError) Error() string { return e.err.Error() + "\n" + string(e.out) }

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// entry is one commented-out key of a shipped configuration file.
type entry struct {
	key   string // "key", or "table.key" under a [table]
	value string // the default written after '='
	line  int
}

var (
	entryRE   = regexp.MustCompile(`^#([a-z][a-z0-9_-]*) =(?: (.*))?$`)
	sectionRE = regexp.MustCompile(`^\[([a-z]+)\]$`)
)

// shippedEntries reads the "#key = default" lines of a shipped file; keys
// under a [table] line are "table.key".
func shippedEntries(tb testing.TB, name string) []entry {
	tb.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot(tb), "packaging", name))
	if err != nil {
		tb.Fatal(err)
	}
	var out []entry
	section := ""
	for i, line := range strings.Split(string(data), "\n") {
		if m := sectionRE.FindStringSubmatch(line); m != nil {
			section = m[1] + "."
			continue
		}
		if m := entryRE.FindStringSubmatch(line); m != nil {
			out = append(out, entry{key: section + m[1], value: m[2], line: i + 1})
		}
	}
	if len(out) == 0 {
		tb.Fatalf("%s: no #key = value lines", name)
	}
	return out
}

// docsRow is one row of a key table in docs/.
type docsRow struct {
	key, def string
}

var backtickRE = regexp.MustCompile("`([^`]*)`")

// docsKeyTables reads the tables of a markdown file whose header is
// header: the first backticked text of the cell at keyCol is the key,
// prefixed with "table." under a heading that names a `[table]`; the cell
// at defCol (-1: none) is its default.
func docsKeyTables(tb testing.TB, name, header string, keyCol, defCol int) []docsRow {
	tb.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot(tb), "docs", name))
	if err != nil {
		tb.Fatal(err)
	}
	var rows []docsRow
	prefix := ""
	inTable := false
	headingTableRE := regexp.MustCompile("`\\[([a-z]+)\\]`")
	for _, line := range strings.Split(string(data), "\n") {
		trimmed := strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(trimmed, "#"):
			prefix = ""
			if m := headingTableRE.FindStringSubmatch(trimmed); m != nil {
				prefix = m[1] + "."
			}
			inTable = false
		case trimmed == header:
			inTable = true
		case inTable && strings.HasPrefix(trimmed, "|"):
			cells := strings.Split(strings.Trim(trimmed, "|"), "|")
			if strings.HasPrefix(strings.TrimSpace(cells[0]), "---") {
				continue
			}
			m := backtickRE.FindStringSubmatch(cells[keyCol])
			if m == nil {
				tb.Fatalf("docs/%s: no key in row %q", name, trimmed)
			}
			r := docsRow{key: prefix + m[1]}
			if defCol >= 0 {
				r.def = strings.TrimSpace(cells[defCol])
			}
			rows = append(rows, r)
		default:
			inTable = false
		}
	}
	if len(rows) == 0 {
		tb.Fatalf("docs/%s: no table with header %q", name, header)
	}
	return rows
}

// docsDefault returns the value a docs default cell stands for, and false
// when the cell is prose ("the host name", "(required)").
func docsDefault(cell string) (string, bool) {
	switch {
	case strings.HasPrefix(cell, "(unset"), strings.HasPrefix(cell, "(none"):
		return "", true
	case strings.HasPrefix(cell, "`"):
		v := backtickRE.FindStringSubmatch(cell)[1]
		if strings.Contains(v, "<") {
			return "", false
		}
		return unquote(v), true
	}
	return "", false
}

// unquote strips TOML single quotes.
func unquote(v string) string {
	if len(v) >= 2 && v[0] == '\'' && v[len(v)-1] == '\'' {
		return v[1 : len(v)-1]
	}
	return v
}

// parseGo parses a file of the repository.
func parseGo(tb testing.TB, rel string) *ast.File {
	tb.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), filepath.Join(repoRoot(tb), rel), nil, 0)
	if err != nil {
		tb.Fatal(err)
	}
	return f
}

var kebabRE = regexp.MustCompile(`^[a-z][a-z0-9]*(-[a-z0-9]+)+$`)

// brokerSourceKeys returns the keys configKeys() in cmd/berth-broker lists:
// the kebab-case string literals passed first to the key constructors.
func brokerSourceKeys(tb testing.TB) []string {
	tb.Helper()
	f := parseGo(tb, "cmd/berth-broker/config.go")
	var keys []string
	for _, d := range f.Decls {
		fn, ok := d.(*ast.FuncDecl)
		if !ok || fn.Name.Name != "configKeys" {
			continue
		}
		ast.Inspect(fn.Body, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok || len(call.Args) == 0 {
				return true
			}
			lit, ok := call.Args[0].(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				return true
			}
			if s, err := strconv.Unquote(lit.Value); err == nil && kebabRE.MatchString(s) && !slices.Contains(keys, s) {
				keys = append(keys, s)
			}
			return true
		})
	}
	if len(keys) < 20 {
		tb.Fatalf("cmd/berth-broker/config.go: found only %d keys in configKeys: %v", len(keys), keys)
	}
	return keys
}

// agentSourceKeys returns the TOML keys of cmd/berth-agent's Config, walking
// its nested table structs.
func agentSourceKeys(tb testing.TB) []string {
	tb.Helper()
	f := parseGo(tb, "cmd/berth-agent/config.go")
	structs := map[string]*ast.StructType{}
	ast.Inspect(f, func(n ast.Node) bool {
		if ts, ok := n.(*ast.TypeSpec); ok {
			if st, ok := ts.Type.(*ast.StructType); ok {
				structs[ts.Name.Name] = st
			}
		}
		return true
	})
	var keys []string
	var walk func(st *ast.StructType, prefix string)
	walk = func(st *ast.StructType, prefix string) {
		for _, field := range st.Fields.List {
			if field.Tag == nil {
				continue
			}
			tag, _ := strconv.Unquote(field.Tag.Value)
			name, _, _ := strings.Cut(reflect.StructTag(tag).Get("toml"), ",")
			if name == "" || name == "-" {
				continue
			}
			if id, ok := field.Type.(*ast.Ident); ok && structs[id.Name] != nil {
				walk(structs[id.Name], prefix+name+".")
				continue
			}
			keys = append(keys, prefix+name)
		}
	}
	root := structs["Config"]
	if root == nil {
		tb.Fatal("cmd/berth-agent/config.go: no type Config")
	}
	walk(root, "")
	return keys
}

// cliSourceKeys returns "section.key" of every setting in cmd/berth's
// settingTable.
func cliSourceKeys(tb testing.TB) []string {
	tb.Helper()
	f := parseGo(tb, "cmd/berth/settings.go")
	var keys []string
	ast.Inspect(f, func(n ast.Node) bool {
		cl, ok := n.(*ast.CompositeLit)
		if !ok {
			return true
		}
		fields := map[string]string{}
		for _, e := range cl.Elts {
			kv, ok := e.(*ast.KeyValueExpr)
			if !ok {
				continue
			}
			k, ok1 := kv.Key.(*ast.Ident)
			lit, ok2 := kv.Value.(*ast.BasicLit)
			if ok1 && ok2 && lit.Kind == token.STRING {
				fields[k.Name], _ = strconv.Unquote(lit.Value)
			}
		}
		if fields["section"] != "" && fields["key"] != "" {
			keys = append(keys, fields["section"]+"."+fields["key"])
		}
		return true
	})
	if len(keys) == 0 {
		tb.Fatal("cmd/berth/settings.go: no settings found")
	}
	return keys
}

// checkKeys fails for a key of want missing from the shipped entries.
func checkKeys(t *testing.T, file, from string, entries []entry, want []string) {
	t.Helper()
	have := map[string]bool{}
	for _, e := range entries {
		have[e.key] = true
	}
	for _, k := range want {
		if !have[k] {
			t.Errorf("packaging/%s lacks %q (listed in %s): add it, commented out with its default", file, k, from)
		}
	}
}

// checkKnown fails for a shipped key that the program does not read, and for
// a key listed twice.
func checkKnown(t *testing.T, file, from string, entries []entry, known []string) {
	t.Helper()
	seen := map[string]bool{}
	for _, e := range entries {
		if !slices.Contains(known, e.key) {
			t.Errorf("packaging/%s:%d: %q is not a key of %s", file, e.line, e.key, from)
		}
		if seen[e.key] {
			t.Errorf("packaging/%s:%d: %q is listed twice", file, e.line, e.key)
		}
		seen[e.key] = true
	}
}

// checkDefaults fails where a shipped default differs from the docs'.
func checkDefaults(t *testing.T, file string, entries []entry, rows []docsRow) {
	t.Helper()
	shipped := map[string]entry{}
	for _, e := range entries {
		shipped[e.key] = e
	}
	for _, r := range rows {
		want, ok := docsDefault(r.def)
		e, have := shipped[r.key]
		if !ok || !have {
			continue
		}
		if got := unquote(e.value); got != want {
			t.Errorf("packaging/%s:%d: %s = %q, but the docs give the default %s", file, e.line, r.key, got, r.def)
		}
	}
}

func rowKeys(rows []docsRow) []string {
	keys := make([]string, len(rows))
	for i, r := range rows {
		keys[i] = r.key
	}
	return keys
}

const docsKeyHeader = "| Key | Default | Meaning |"

func TestBrokerProperties_Keys(t *testing.T) {
	entries := shippedEntries(t, "broker.properties")
	rows := docsKeyTables(t, "config.md", docsKeyHeader, 0, 1)
	src := brokerSourceKeys(t)
	checkKeys(t, "broker.properties", "docs/config.md", entries, rowKeys(rows))
	checkKeys(t, "broker.properties", "configKeys in cmd/berth-broker/config.go", entries, src)
	checkKnown(t, "broker.properties", "configKeys in cmd/berth-broker/config.go", entries, src)
	checkDefaults(t, "broker.properties", entries, rows)
}

func TestAgentConf_Keys(t *testing.T) {
	entries := shippedEntries(t, "agent.conf")
	rows := docsKeyTables(t, "agent-config.md", docsKeyHeader, 0, 1)
	src := agentSourceKeys(t)
	checkKeys(t, "agent.conf", "docs/agent-config.md", entries, rowKeys(rows))
	checkKeys(t, "agent.conf", "Config in cmd/berth-agent/config.go", entries, src)
	checkKnown(t, "agent.conf", "Config in cmd/berth-agent/config.go", entries, src)
	checkDefaults(t, "agent.conf", entries, rows)
}

func TestDcvsmcliConf_Keys(t *testing.T) {
	entries := shippedEntries(t, "dcvsmcli.conf")
	rows := docsKeyTables(t, "cli.md", "| Setting | Option | Environment | dcvsmcli.conf |", 3, -1)
	iniRE := regexp.MustCompile(`^\[([a-z]+)\] ([a-z-]+)$`)
	var docs []string
	for _, r := range rows {
		m := iniRE.FindStringSubmatch(r.key)
		if m == nil {
			t.Fatalf("docs/cli.md: %q is not \"[section] key\"", r.key)
		}
		docs = append(docs, m[1]+"."+m[2])
	}
	src := cliSourceKeys(t)
	checkKeys(t, "dcvsmcli.conf", "docs/cli.md", entries, docs)
	checkKeys(t, "dcvsmcli.conf", "settingTable in cmd/berth/settings.go", entries, src)
	checkKnown(t, "dcvsmcli.conf", "settingTable in cmd/berth/settings.go", entries, src)
}

// uncommented returns the shipped file with every "#key = value" line turned
// into a setting, except the keys in keep (left commented), and with the
// values of set in place of the shipped ones.
func uncommented(tb testing.TB, name string, keep []string, set map[string]string) []byte {
	tb.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot(tb), "packaging", name))
	if err != nil {
		tb.Fatal(err)
	}
	var b bytes.Buffer
	sc := bufio.NewScanner(bytes.NewReader(data))
	section := ""
	for sc.Scan() {
		line := sc.Text()
		if m := sectionRE.FindStringSubmatch(line); m != nil {
			section = m[1] + "."
		}
		if m := entryRE.FindStringSubmatch(line); m != nil && !slices.Contains(keep, section+m[1]) {
			v := m[2]
			if s, ok := set[section+m[1]]; ok {
				v = s
			}
			line = m[1] + " = " + v
		}
		b.WriteString(line + "\n")
	}
	return b.Bytes()
}

// run runs a command with a timeout and returns its stdout, stderr and exit
// code (-1 when it could not run).
func run(tb testing.TB, timeout time.Duration, name string, args ...string) (string, string, int) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ctx.Err() != nil {
			tb.Fatalf("%s %s: %v (stderr: %s)", name, strings.Join(args, " "), err, stderr.String())
		}
		code = ee.ExitCode()
	}
	return stdout.String(), stderr.String(), code
}

// writeFile writes data to dir/name and returns the path.
func writeFile(tb testing.TB, dir, name string, data []byte) string {
	tb.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		tb.Fatal(err)
	}
	return p
}

// TestBrokerProperties_Loads runs the real broker's admin command
// describe-api-clients, which loads the configuration and opens the store,
// on the shipped file and on the shipped file with every default uncommented.
func TestBrokerProperties_Loads(t *testing.T) {
	bin := MustBuild(t, "berth-broker")
	shipped, err := os.ReadFile(filepath.Join(repoRoot(t), "packaging", "broker.properties"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		file func(dir string) []byte
		// warnings are the keys the broker may warn about.
		warnings []string
	}{
		{"shipped", func(dir string) []byte {
			// Only the working path moves, so that the test leaves /var/lib alone.
			return append(slices.Clone(shipped), []byte("session-manager-working-path = "+dir+"\n")...)
		}, nil},
		{"uncommented", func(dir string) []byte {
			// delete-session-duration-seconds is the other spelling of
			// delete-session-duration-hours: setting both is an error.
			return uncommented(t, "broker.properties", []string{"delete-session-duration-seconds"},
				map[string]string{"session-manager-working-path": dir})
		}, []string{"enable-persistence"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			conf := writeFile(t, dir, "broker.properties", tc.file(filepath.Join(dir, "state")))
			stdout, stderr, code := run(t, time.Minute, bin, "describe-api-clients", "--config", conf)
			if code != 0 {
				t.Fatalf("berth-broker describe-api-clients --config %s: exit %d\n%s%s", conf, code, stdout, stderr)
			}
			for _, line := range strings.Split(strings.TrimSpace(stderr), "\n") {
				if line == "" {
					continue
				}
				ok := false
				for _, k := range tc.warnings {
					ok = ok || strings.HasPrefix(line, "berth-broker: warning: "+k+":")
				}
				if !ok {
					t.Errorf("unexpected output on stderr: %s", line)
				}
			}
		})
	}
}

// TestAgentConf_Loads runs the real agent on the shipped file, and on it with
// every default uncommented: the only complaint may be the missing
// broker_host, which has no default.
func TestAgentConf_Loads(t *testing.T) {
	bin := MustBuild(t, "berth-agent")
	shipped, err := os.ReadFile(filepath.Join(repoRoot(t), "packaging", "agent.conf"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"shipped", shipped},
		{"uncommented", uncommented(t, "agent.conf", []string{"agent.broker_host"}, nil)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conf := writeFile(t, t.TempDir(), "agent.conf", tc.data)
			_, stderr, code := run(t, 30*time.Second, bin, "--config", conf)
			want := "berth-agent: config " + conf + ": agent.broker_host: is required"
			if code != 1 || !strings.HasPrefix(stderr, want) || strings.Count(stderr, "\n") != 1 {
				t.Fatalf("berth-agent --config %s: exit %d, stderr:\n%s\nwant exit 1 and one line starting %q", conf, code, stderr, want)
			}
		})
	}
}

// TestDcvsmcliConf_Loads runs the real CLI with the shipped file, every
// default uncommented and the broker URL pointing to a closed port: berth
// must read every key (--debug says where each setting came from), warn about
// none, and fail only to reach the broker.
func TestDcvsmcliConf_Loads(t *testing.T) {
	bin := MustBuild(t, "berth")
	entries := shippedEntries(t, "dcvsmcli.conf")
	conf := writeFile(t, t.TempDir(), "dcvsmcli.conf",
		uncommented(t, "dcvsmcli.conf", nil, map[string]string{"broker.url": "https://127.0.0.1:1"}))
	_, stderr, _ := run(t, 30*time.Second, bin, "--conf", conf, "--debug", "describe-servers")
	if strings.Contains(stderr, "warning") || !strings.Contains(stderr, "cannot reach https://127.0.0.1:1") {
		t.Fatalf("berth --conf %s: stderr:\n%s", conf, stderr)
	}
	// Every key but debug (given by --debug) comes from the file.
	if n := strings.Count(stderr, "(from "+conf+":"); n != len(entries)-1 {
		t.Errorf("%d settings came from %s, want %d; stderr:\n%s", n, conf, len(entries)-1, stderr)
	}
}

// unitDirectives reads a unit file into directive -> values (in order).
func unitDirectives(tb testing.TB, name string) map[string][]string {
	tb.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot(tb), "packaging", name))
	if err != nil {
		tb.Fatal(err)
	}
	d := map[string][]string{}
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' || line[0] == '[' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			tb.Fatalf("packaging/%s: bad line %q", name, line)
		}
		d[k] = append(d[k], v)
	}
	return d
}

func TestBrokerUnit_Directives(t *testing.T) {
	d := unitDirectives(t, "berth-broker.service")
	for k, want := range map[string]string{
		"ExecStart":               "/usr/bin/berth-broker --config /etc/berth/broker.properties",
		"User":                    "berth",
		"Group":                   "berth",
		"StateDirectory":          "berth",
		"LogsDirectory":           "berth",
		"ConfigurationDirectory":  "berth",
		"Restart":                 "on-failure",
		"NoNewPrivileges":         "yes",
		"ProtectSystem":           "strict",
		"ProtectHome":             "yes",
		"PrivateTmp":              "yes",
		"PrivateDevices":          "yes",
		"ProtectKernelTunables":   "yes",
		"ProtectKernelModules":    "yes",
		"ProtectKernelLogs":       "yes",
		"ProtectControlGroups":    "yes",
		"RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
		"RestrictNamespaces":      "yes",
		"LockPersonality":         "yes",
		"MemoryDenyWriteExecute":  "yes",
		"SystemCallArchitectures": "native",
		"CapabilityBoundingSet":   "",
		"AmbientCapabilities":     "",
	} {
		if got := d[k]; !slices.Equal(got, []string{want}) {
			t.Errorf("berth-broker.service: %s=%q, want %q", k, got, want)
		}
	}
}

func TestAgentUnit_Directives(t *testing.T) {
	d := unitDirectives(t, "berth-agent.service")
	for k, want := range map[string]string{
		"ExecStart":     "/usr/bin/berth-agent --config /etc/berth/agent.conf",
		"Restart":       "on-failure",
		"ProtectSystem": "full",
		// Sessions outlive the agent and are re-adopted.
		"KillMode": "process",
	} {
		if got := d[k]; !slices.Equal(got, []string{want}) {
			t.Errorf("berth-agent.service: %s=%q, want %q", k, got, want)
		}
	}
	// Root, able to become users, writing /home, /run/user, /tmp/.X11-unix.
	for _, k := range []string{"User", "NoNewPrivileges", "ProtectHome", "PrivateTmp", "PrivateDevices", "DynamicUser"} {
		if v, ok := d[k]; ok {
			t.Errorf("berth-agent.service sets %s=%v: sessions (children of the agent) would inherit it", k, v)
		}
	}
	caps := strings.Fields(strings.Join(d["CapabilityBoundingSet"], " "))
	slices.Sort(caps)
	want := []string{"CAP_AUDIT_CONTROL", "CAP_AUDIT_WRITE", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_KILL",
		"CAP_NET_BIND_SERVICE", "CAP_SETGID", "CAP_SETUID", "CAP_SYS_PTRACE", "CAP_SYS_RESOURCE"}
	if !slices.Equal(caps, want) {
		t.Errorf("berth-agent.service: CapabilityBoundingSet %v, want %v", caps, want)
	}
}

// TestUnits_Verify runs systemd-analyze verify on the units, with ExecStart
// pointed to an existing program when berth is not installed here.
func TestUnits_Verify(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("no systemd-analyze")
	}
	dir := t.TempDir()
	var units []string
	for _, name := range []string{"berth-broker", "berth-agent"} {
		data, err := os.ReadFile(filepath.Join(repoRoot(t), "packaging", name+".service"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat("/usr/bin/" + name); err != nil {
			data = bytes.ReplaceAll(data, []byte("/usr/bin/"+name), []byte("/bin/true"))
		}
		units = append(units, writeFile(t, dir, name+".service", data))
	}
	stdout, stderr, code := run(t, time.Minute, sa, append([]string{"verify"}, units...)...)
	if code != 0 || strings.TrimSpace(stdout+stderr) != "" {
		t.Fatalf("systemd-analyze verify: exit %d\n%s%s", code, stdout, stderr)
	}
}

func TestDebVersion(t *testing.T) {
	script := filepath.Join(repoRoot(t), "packaging", "debversion.sh")
	for _, tc := range []struct{ in, want string }{
		{"v1.2.3", "1.2.3"},
		{"1.2.3", "1.2.3"},
		{"v1.2.3-dirty", "1.2.3+dirty"},
		{"v1.2.3-rc1", "1.2.3~rc1"},
		{"v1.2.3-4-gabc1234", "1.2.3+git4.abc1234"},
		{"v1.2.3-rc1-4-gabc1234-dirty", "1.2.3~rc1+git4.abc1234.dirty"},
		{"abc1234", "0.0.0~gitabc1234"},
		{"3c72f4a-dirty", "0.0.0~git3c72f4a+dirty"},
		{"1234567", "0.0.0~git1234567"},
		{"dev", "0.0.0~dev"},
		{"", "0.0.0~dev"},
		{"release_x/y", "0.0.0~release.x.y"},
	} {
		stdout, stderr, code := run(t, 10*time.Second, "sh", script, tc.in)
		if got := strings.TrimSpace(stdout); code != 0 || got != tc.want {
			t.Errorf("debversion.sh %q = %q (exit %d, %s), want %q", tc.in, got, code, stderr, tc.want)
		}
		if dpkg, err := exec.LookPath("dpkg"); err == nil {
			if _, stderr, code := run(t, 10*time.Second, dpkg, "--validate-version", tc.want); code != 0 {
				t.Errorf("%q is not a Debian version: %s", tc.want, stderr)
			}
		}
	}
	// Versions must sort as the commits do.
	if dpkg, err := exec.LookPath("dpkg"); err == nil {
		order := []string{"0.0.0~gitabc1234", "0.0.0~gitabc1234+dirty", "1.2.3~rc1", "1.2.3", "1.2.3+dirty", "1.2.3+git4.abc1234", "1.2.4"}
		for i := 1; i < len(order); i++ {
			if _, _, code := run(t, 10*time.Second, dpkg, "--compare-versions", order[i-1], "lt", order[i]); code != 0 {
				t.Errorf("dpkg sorts %q after %q", order[i-1], order[i])
			}
		}
	}
}
