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

// maxMainMethodLines bounds a method of Main: Run is a list of named steps,
// each step a short method, and the logic lives in internal packages.
const maxMainMethodLines = 50

// TestMainMethodsShort fails for a method of Main longer than
// maxMainMethodLines (Run, before it was split into steps, was 184).
func TestMainMethodsShort(t *testing.T) {
	fset := token.NewFileSet()
	entries, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	methods := 0
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".go") || strings.HasSuffix(e.Name(), "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, filepath.Join(".", e.Name()), nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			fn, ok := d.(*ast.FuncDecl)
			if !ok || fn.Recv == nil || !isMain(fn.Recv.List[0].Type) {
				continue
			}
			methods++
			start, end := fset.Position(fn.Pos()), fset.Position(fn.End())
			if n := end.Line - start.Line + 1; n > maxMainMethodLines {
				t.Errorf("%s: Main.%s is %d lines, more than %d: split it into named steps", start, fn.Name.Name, n, maxMainMethodLines)
			}
		}
	}
	if methods == 0 {
		t.Fatal("no methods of Main found")
	}
}

// isMain reports whether a receiver type is Main or *Main.
func isMain(x ast.Expr) bool {
	if s, ok := x.(*ast.StarExpr); ok {
		x = s.X
	}
	id, ok := x.(*ast.Ident)
	return ok && id.Name == "Main"
}
