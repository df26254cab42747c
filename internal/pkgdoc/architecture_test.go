package pkgdoc

import (
	"bufio"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/berth-dev/berth"

// externalNames are the names the architecture table gives the modules
// berth depends on, with the import path prefix each stands for.
var externalNames = map[string]string{
	"pgx":            "github.com/jackc/pgx/",
	"golang-jwt":     "github.com/golang-jwt/jwt/",
	"x/time/rate":    "golang.org/x/time/rate",
	"x/sys":          "golang.org/x/sys/",
	"x/image":        "golang.org/x/image/",
	"lumberjack":     "gopkg.in/natefinch/lumberjack.v2",
	"prometheus":     "github.com/prometheus/",
	"websocket":      "github.com/coder/websocket",
	"xgb":            "github.com/jezek/xgb",
	"toml":           "github.com/BurntSushi/toml",
	"kin-openapi":    "github.com/getkin/kin-openapi/",
	"go-cmp":         "github.com/google/go-cmp/",
	"modernc sqlite": "modernc.org/sqlite",
}

// archRow is one row of the package table in docs/architecture.md.
type archRow struct {
	pattern string   // "internal/broker", "cmd/*"
	names   []string // what it may import
	stdOnly bool     // "std lib only"
	test    bool     // "test only": non-test files hold only the package doc
	all     bool     // "everything"
}

// readArchTable reads the package table of docs/architecture.md. In the
// "may import" column, names in backquotes are packages of the module
// (`broker`, `driver/vnc`, `api`) or the external names above; names in
// parentheses are remarks, not imports.
func readArchTable(t *testing.T, file string) []archRow {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var rows []archRow
	inTable := false
	quoted := regexp.MustCompile("`([^`]+)`")
	remark := regexp.MustCompile(`\([^)]*\)`)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "| package | what it provides | may import |") {
			inTable = true
			continue
		}
		if !inTable {
			continue
		}
		if !strings.HasPrefix(line, "|") {
			break
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		if len(cells) != 3 || strings.HasPrefix(strings.TrimSpace(cells[0]), "---") {
			continue
		}
		pkg := quoted.FindStringSubmatch(cells[0])
		if pkg == nil {
			t.Errorf("docs/architecture.md: row %q names no package in backquotes", line)
			continue
		}
		r := archRow{pattern: pkg[1]}
		imports := strings.TrimSpace(cells[2])
		r.stdOnly = strings.Contains(imports, "std lib only")
		r.test = imports == "test only"
		r.all = imports == "everything"
		for _, m := range quoted.FindAllStringSubmatch(remark.ReplaceAllString(imports, ""), -1) {
			r.names = append(r.names, m[1])
		}
		rows = append(rows, r)
	}
	if len(rows) == 0 {
		t.Fatal("docs/architecture.md: no package table")
	}
	return rows
}

// TestArchitectureTable checks the package table of docs/architecture.md
// against the code, so that it cannot drift: every package of the module
// has a row, every row a package, and each row's "may import" column names
// exactly the module's packages and the external modules that the
// package's non-test files import.
func TestArchitectureTable(t *testing.T) {
	root := repoRoot(t)
	rows := readArchTable(t, filepath.Join(root, "docs", "architecture.md"))
	cmd := exec.Command("go", "list", "-f", "{{.ImportPath}}|{{join .Imports \" \"}}", "./...")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	used := make([]bool, len(rows))
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		parts := strings.Split(line, "|")
		rel := strings.TrimPrefix(strings.TrimPrefix(parts[0], module), "/")
		if rel == "" {
			continue
		}
		i := slices.IndexFunc(rows, func(r archRow) bool { ok, _ := path.Match(r.pattern, rel); return ok })
		if i < 0 {
			t.Errorf("docs/architecture.md: package %s has no row", rel)
			continue
		}
		used[i] = true
		r := rows[i]
		var imports []string
		if parts[1] != "" {
			imports = strings.Fields(parts[1])
		}
		switch {
		case r.all:
			continue
		case r.test:
			// Its non-test files, if any, hold only the package's doc.
			if len(imports) > 0 {
				t.Errorf("docs/architecture.md: %s is test only, but its non-test files import %v", rel, imports)
			}
			continue
		}
		if msg := checkImports(r, imports); msg != "" {
			t.Errorf("docs/architecture.md: %s: %s", rel, msg)
		}
	}
	for i, r := range rows {
		if !used[i] {
			t.Errorf("docs/architecture.md: row %s matches no package", r.pattern)
		}
	}
}

// checkImports returns what is wrong with row r for a package importing
// imports, or "".
func checkImports(r archRow, imports []string) string {
	var problems []string
	listed := map[string]bool{}
	for _, imp := range imports {
		name, ok := importName(imp)
		if !ok {
			continue // the standard library
		}
		if r.stdOnly {
			problems = append(problems, "says std lib only, but imports "+imp)
			continue
		}
		if !slices.Contains(r.names, name) {
			problems = append(problems, "imports "+imp+" (`"+name+"`), which the row does not list")
		}
		listed[name] = true
	}
	for _, n := range r.names {
		if !listed[n] {
			problems = append(problems, "lists `"+n+"`, which it does not import")
		}
	}
	return strings.Join(problems, "; ")
}

// importName returns the table's name for an import path: the path inside
// the module for its packages (internal/ dropped), the external name for
// the known modules, the path itself for others. ok is false for the
// standard library.
func importName(imp string) (name string, ok bool) {
	if rel, ok := strings.CutPrefix(imp, module+"/"); ok {
		return strings.TrimPrefix(rel, "internal/"), true
	}
	first, _, _ := strings.Cut(imp, "/")
	if !strings.Contains(first, ".") {
		return "", false
	}
	for n, prefix := range externalNames {
		if strings.HasPrefix(imp, prefix) || imp == strings.TrimSuffix(prefix, "/") {
			return n, true
		}
	}
	return imp, true
}

func TestCheckImports(t *testing.T) {
	tests := []struct {
		name    string
		row     archRow
		imports []string
		want    string
	}{
		{"exact", archRow{names: []string{"broker", "pgx"}}, []string{"context", module + "/internal/broker", "github.com/jackc/pgx/v5/pgxpool"}, ""},
		{"unlisted", archRow{names: []string{"broker"}}, []string{module + "/internal/oauth"}, "imports " + module + "/internal/oauth (`oauth`), which the row does not list; lists `broker`, which it does not import"},
		{"std only", archRow{stdOnly: true}, []string{"net/http", "golang.org/x/sys/unix"}, "says std lib only, but imports golang.org/x/sys/unix"},
		{"api", archRow{names: []string{"api"}}, []string{module + "/api"}, ""},
		{"unknown module", archRow{names: []string{"example.com/x"}}, []string{"example.com/x"}, ""},
	}
	for _, tt := range tests {
		if got := checkImports(tt.row, tt.imports); got != tt.want {
			t.Errorf("%s: checkImports = %q, want %q", tt.name, got, tt.want)
		}
	}
}
