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
)

// TestSelfContained fails if a Go file of the module (tests included) names
// a path outside the repository: the shared/ folder that sits beside some
// checkouts, or a relative path whose ".." steps climb above the repository
// root from the file's directory, as a string literal or as filepath.Join
// (or path.Join) arguments. A clone in an empty folder must build and pass
// its tests.
func TestSelfContained(t *testing.T) {
	root := repoRoot(t)
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			name := d.Name()
			if path != root && (strings.HasPrefix(name, ".") || name == "bin" || name == "run" || name == "node_modules") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") {
			return nil
		}
		rel, _ := filepath.Rel(root, filepath.Dir(path))
		fset := token.NewFileSet()
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		for _, p := range outsidePaths(f, depth(rel)) {
			t.Errorf("%s: refers to %s, outside the repository", fset.Position(p.pos), p.text)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestOutsidePaths checks the detector on the forms it must catch and the
// ones it must let through.
func TestOutsidePaths(t *testing.T) {
	tests := []struct {
		name  string
		src   string
		depth int
		want  int
	}{
		{"shared folder", `x := "` + sharedDir + `/reference/api.yaml"`, 2, 1},
		{"shared reference anywhere", `x := "` + sharedRef + `/api.yaml"`, 2, 1},
		{"climbs above the root", `x := "../../../etc/x"`, 2, 1},
		{"stays inside", `x := "../../api/openapi.yaml"`, 2, 0},
		{"join climbs above", `x := filepath.Join("..", "..", "..", "x")`, 2, 1},
		{"join stays inside", `x := filepath.Join("..", "..", "testdata")`, 2, 0},
		{"path.Join climbs", `x := path.Join("../..", "x")`, 1, 1},
		{"dotdot in a message", `x := "names like .. are refused"`, 0, 0},
		{"testdata", `x := "testdata/a.yaml"`, 3, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := parser.ParseFile(token.NewFileSet(), "x.go", "package x\nfunc f() {\n"+tt.src+"\n_ = x\n}\n", 0)
			if err != nil {
				t.Fatal(err)
			}
			if got := outsidePaths(f, tt.depth); len(got) != tt.want {
				t.Errorf("outsidePaths(%s) found %d, want %d: %v", tt.src, len(got), tt.want, got)
			}
		})
	}
}

// The names of the folder beside some checkouts, spelled so that this file
// does not name them itself.
const (
	sharedDir = ".." + "/shared"
	sharedRef = "shared" + "/reference"
)

type outsidePath struct {
	pos  token.Pos
	text string
}

// depth is how many directories rel lies below the repository root.
func depth(rel string) int {
	if rel == "." || rel == "" {
		return 0
	}
	return strings.Count(filepath.ToSlash(rel), "/") + 1
}

// outsidePaths returns the literals and Join calls of f that lead outside a
// repository whose root is depth directories above f's.
func outsidePaths(f *ast.File, depth int) []outsidePath {
	var out []outsidePath
	ast.Inspect(f, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.CallExpr:
			if !isJoin(n.Fun) {
				return true
			}
			var parts []string
			for _, a := range n.Args {
				s, ok := literal(a)
				if !ok {
					break
				}
				parts = append(parts, s)
			}
			if climbs(strings.Join(parts, "/"), depth) {
				out = append(out, outsidePath{n.Pos(), "filepath.Join(" + strings.Join(parts, ", ") + ")"})
				return false
			}
		case *ast.BasicLit:
			s, ok := literal(n)
			if !ok {
				return true
			}
			if strings.Contains(s, sharedRef) || strings.Contains(s, sharedDir) || climbs(s, depth) {
				out = append(out, outsidePath{n.Pos(), strconv.Quote(s)})
			}
		}
		return true
	})
	return out
}

// climbs reports whether the relative path p, read from a directory depth
// levels below the root, leaves the root.
func climbs(p string, depth int) bool {
	if !strings.HasPrefix(p, "..") {
		return false
	}
	level := depth
	for _, el := range strings.Split(filepath.ToSlash(p), "/") {
		switch el {
		case "", ".":
		case "..":
			level--
			if level < 0 {
				return true
			}
		default:
			level++
		}
	}
	return false
}

func literal(e ast.Expr) (string, bool) {
	b, ok := e.(*ast.BasicLit)
	if !ok || b.Kind != token.STRING {
		return "", false
	}
	s, err := strconv.Unquote(b.Value)
	return s, err == nil
}

func isJoin(fun ast.Expr) bool {
	sel, ok := fun.(*ast.SelectorExpr)
	if !ok || sel.Sel.Name != "Join" {
		return false
	}
	id, ok := sel.X.(*ast.Ident)
	return ok && (id.Name == "filepath" || id.Name == "path")
}
