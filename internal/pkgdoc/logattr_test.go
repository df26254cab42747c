package pkgdoc

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/logattr"
)

// TestLogAttributes fails for a log call of the module's non-test code
// whose attribute key is a string that logattr names (write logattr.ServerID,
// not "server_id") or a synonym of one ("host_id"): a thing has one name in
// every log.
func TestLogAttributes(t *testing.T) {
	root := repoRoot(t)
	names := map[string]string{}
	for _, n := range []string{logattr.SessionID, logattr.ServerID, logattr.AgentID, logattr.ClientID,
		logattr.BrokerID, logattr.Owner, logattr.User, logattr.Remote} {
		names[n] = n
	}
	for syn, n := range logattr.Synonyms {
		names[syn] = n
	}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if n := d.Name(); path != root && (strings.HasPrefix(n, ".") || n == "testdata" || n == "bin" || n == "run" || n == "node_modules") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") || strings.Contains(path, filepath.Join("internal", "logattr")) {
			return nil
		}
		fset := token.NewFileSet()
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		for _, k := range logKeys(f) {
			if want, ok := names[strings.ToLower(k.name)]; ok {
				t.Errorf("%s: log attribute %q: use logattr's %q", fset.Position(k.pos), k.name, want)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestLogKeys(t *testing.T) {
	tests := []struct {
		src  string
		want string
	}{
		{`log.Info("msg", "host_id", id, "err", err)`, "host_id,err"},
		{`log.InfoContext(ctx, "msg", "session_id", id)`, "session_id"},
		{`log.With("component", "agent", "server_id", id)`, "component,server_id"},
		{`log.Warn("msg", slog.String("a", v), "b", w)`, "b,a"},
		{`log.Log(ctx, slog.LevelInfo, "msg", "owner", o)`, "owner"},
		{`fmt.Println("host_id", x)`, ""},
		{`log.Info("host_id")`, ""},
	}
	for _, tt := range tests {
		f, err := parser.ParseFile(token.NewFileSet(), "x.go", "package x\nfunc f() {\n"+tt.src+"\n}\n", 0)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, k := range logKeys(f) {
			got = append(got, k.name)
		}
		if strings.Join(got, ",") != tt.want {
			t.Errorf("logKeys(%s) = %v, want %s", tt.src, got, tt.want)
		}
	}
}

type logKey struct {
	pos  token.Pos
	name string
}

// logKeys returns the attribute keys written as strings in f's log calls:
// the methods of a slog.Logger (Debug, Info, Warn, Error, their Context
// forms, Log and With) and slog's attribute constructors. As slog does, a
// non-string argument where a key is expected is an attribute of its own.
func logKeys(f *ast.File) []logKey {
	var out []logKey
	ast.Inspect(f, func(n ast.Node) bool {
		call, ok := n.(*ast.CallExpr)
		if !ok {
			return true
		}
		sel, ok := call.Fun.(*ast.SelectorExpr)
		if !ok {
			return true
		}
		first := -1
		if id, ok := sel.X.(*ast.Ident); ok && id.Name == "slog" {
			switch sel.Sel.Name {
			case "String", "Int", "Int64", "Uint64", "Float64", "Bool", "Duration", "Time", "Any", "Group":
				if len(call.Args) > 0 {
					if s, ok := stringLit(call.Args[0]); ok {
						out = append(out, logKey{call.Args[0].Pos(), s})
					}
				}
			}
			return true
		}
		switch sel.Sel.Name {
		case "Debug", "Info", "Warn", "Error":
			first = 1
		case "DebugContext", "InfoContext", "WarnContext", "ErrorContext":
			first = 2
		case "Log":
			first = 3
		case "With":
			first = 0
		default:
			return true
		}
		for i := first; i < len(call.Args); {
			if s, ok := stringLit(call.Args[i]); ok {
				out = append(out, logKey{call.Args[i].Pos(), s})
				i += 2
			} else {
				i++
			}
		}
		return true
	})
	return out
}

func stringLit(e ast.Expr) (string, bool) {
	b, ok := e.(*ast.BasicLit)
	if !ok || b.Kind != token.STRING {
		return "", false
	}
	s, err := strconv.Unquote(b.Value)
	return s, err == nil
}
