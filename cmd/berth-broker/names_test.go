package main

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestNamesSayWhichGateway: the broker deals with two gateways, the DCV
// Connection Gateway that its resolver answers (internal/cgresolver, the
// gateway-* keys) and the agents' web gateways whose certificates its web
// gateway CA signs. Every name this package declares that mentions a gateway
// says which one: ConnectionGateway or WebGateway (any case), or it is the
// resolver's.
func TestNamesSayWhichGateway(t *testing.T) {
	for _, bad := range ambiguousGatewayNames(t, ".") {
		t.Errorf("%s: %q does not say which gateway (ConnectionGateway, WebGateway or Resolver)", bad.pos, bad.name)
	}
}

type declaredName struct {
	pos  token.Position
	name string
}

// ambiguousGatewayNames returns the names declared in the non-test Go files
// of dir (functions, methods, types, fields, constants and variables) that
// mention a gateway without saying which.
func ambiguousGatewayNames(t *testing.T, dir string) []declaredName {
	t.Helper()
	fset := token.NewFileSet()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []declaredName
	files := 0
	check := func(id *ast.Ident) {
		if id == nil {
			return
		}
		n := strings.ToLower(id.Name)
		if strings.Contains(n, "gateway") && !strings.Contains(n, "connectiongateway") &&
			!strings.Contains(n, "webgateway") && !strings.Contains(n, "resolver") {
			out = append(out, declaredName{fset.Position(id.Pos()), id.Name})
		}
	}
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".go") || strings.HasSuffix(e.Name(), "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, filepath.Join(dir, e.Name()), nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		files++
		ast.Inspect(f, func(n ast.Node) bool {
			switch d := n.(type) {
			case *ast.FuncDecl:
				check(d.Name)
			case *ast.TypeSpec:
				check(d.Name)
			case *ast.ValueSpec:
				for _, id := range d.Names {
					check(id)
				}
			case *ast.Field:
				for _, id := range d.Names {
					check(id)
				}
			}
			return true
		})
	}
	if files == 0 {
		t.Fatal("no Go files read")
	}
	return out
}
