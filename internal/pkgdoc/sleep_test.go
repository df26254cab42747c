package pkgdoc

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
)

// TestNoSleepThenAssert fails for a test that sleeps a fixed time and then
// asserts, which passes or fails by the speed of the machine: a time.Sleep
// call statement whose next statement in the same block, after any
// assignments and declarations, is an assertion (a call of Error, Errorf,
// Fatal, Fatalf, Fail or FailNow on any receiver) or holds one (an if, for,
// switch, select or block with an assertion inside).
//
// Wait instead for the event itself (poll.Until with a deadline, a channel,
// a log line), or run pure timing logic (backoff, timeouts, expiry) under
// testing/synctest or with an injected clock. Sleeps in the function given
// to synctest.Test are let through: the bubble's clock is fake, so the
// sleep is exact and takes no time. A sleep that is part of the
// scenario, one that makes a client slow or spaces out requests and never
// one that waits for a result, is allowed by a comment on its line or the
// line above:
//
//	//sleep-ok: why the sleep is part of the scenario
func TestNoSleepThenAssert(t *testing.T) {
	root := repoRoot(t)
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			name := d.Name()
			if path != root && (strings.HasPrefix(name, ".") || name == "testdata" || name == "bin" || name == "run" || name == "node_modules") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		fset := token.NewFileSet()
		f, err := parser.ParseFile(fset, path, nil, parser.ParseComments|parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		for _, pos := range sleepsThenAssert(fset, f) {
			t.Errorf("%s: time.Sleep followed by an assertion: wait for the event (poll.Until), use testing/synctest or a clock, or mark a sleep that is part of the scenario with //sleep-ok: reason", fset.Position(pos))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// sleepOK is the comment that allows a sleep; a reason must follow it.
const sleepOK = "sleep-ok:"

// sleepsThenAssert returns the positions of the time.Sleep statements in f
// that are followed by an assertion and not allowed by a sleep-ok comment.
func sleepsThenAssert(fset *token.FileSet, f *ast.File) []token.Pos {
	allowed := map[int]bool{} // lines with a sleep-ok comment and a reason
	for _, cg := range f.Comments {
		for _, c := range cg.List {
			text := strings.TrimSpace(strings.TrimPrefix(c.Text, "//"))
			if reason, ok := strings.CutPrefix(text, sleepOK); ok && strings.TrimSpace(reason) != "" {
				allowed[fset.Position(c.Pos()).Line] = true
			}
		}
	}
	var bubbles []ast.Node // the functions given to synctest.Test
	ast.Inspect(f, func(n ast.Node) bool {
		if call, ok := n.(*ast.CallExpr); ok && isCall(call, "synctest", "Test") {
			for _, arg := range call.Args {
				if fl, ok := arg.(*ast.FuncLit); ok {
					bubbles = append(bubbles, fl)
				}
			}
		}
		return true
	})
	inBubble := func(pos token.Pos) bool {
		for _, b := range bubbles {
			if b.Pos() <= pos && pos < b.End() {
				return true
			}
		}
		return false
	}
	var found []token.Pos
	check := func(list []ast.Stmt) {
		for i, s := range list {
			if !isSleep(s) || inBubble(s.Pos()) {
				continue
			}
			line := fset.Position(s.Pos()).Line
			if allowed[line] || allowed[line-1] {
				continue
			}
			for _, next := range list[i+1:] {
				if _, ok := next.(*ast.AssignStmt); ok {
					continue
				}
				if _, ok := next.(*ast.DeclStmt); ok {
					continue
				}
				if asserts(next) {
					found = append(found, s.Pos())
				}
				break
			}
		}
	}
	ast.Inspect(f, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.BlockStmt:
			check(n.List)
		case *ast.CaseClause:
			check(n.Body)
		case *ast.CommClause:
			check(n.Body)
		}
		return true
	})
	return found
}

// isSleep says whether s is a time.Sleep(...) statement.
func isSleep(s ast.Stmt) bool {
	es, ok := s.(*ast.ExprStmt)
	if !ok {
		return false
	}
	call, ok := es.X.(*ast.CallExpr)
	return ok && isCall(call, "time", "Sleep")
}

// isCall says whether call calls pkg.name.
func isCall(call *ast.CallExpr, pkg, name string) bool {
	sel, ok := call.Fun.(*ast.SelectorExpr)
	if !ok || sel.Sel.Name != name {
		return false
	}
	id, ok := sel.X.(*ast.Ident)
	return ok && id.Name == pkg
}

// asserts says whether s is or holds (outside function literals) a call of
// a testing assertion: Error, Errorf, Fatal or Fatalf with arguments, Fail
// or FailNow without (so that err.Error() is not one).
func asserts(s ast.Stmt) bool {
	found := false
	ast.Inspect(s, func(n ast.Node) bool {
		if found {
			return false
		}
		switch n := n.(type) {
		case *ast.FuncLit:
			return false
		case *ast.CallExpr:
			sel, ok := n.Fun.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			switch sel.Sel.Name {
			case "Error", "Errorf", "Fatal", "Fatalf":
				found = len(n.Args) > 0
			case "Fail", "FailNow":
				found = len(n.Args) == 0
			}
		}
		return !found
	})
	return found
}

// TestSleepsThenAssert checks the detector on the forms it must catch and
// the ones it must let through.
func TestSleepsThenAssert(t *testing.T) {
	tests := []struct {
		name string
		body string
		want int
	}{
		{"sleep then Fatal", "time.Sleep(time.Second)\nt.Fatal(\"x\")", 1},
		{"sleep then if", "time.Sleep(time.Second)\nif n != 1 {\nt.Errorf(\"n = %d\", n)\n}", 1},
		{"sleep, read, then if", "time.Sleep(time.Second)\nn := count()\nvar m int\nif n != m {\nt.Fatalf(\"n = %d\", n)\n}", 1},
		{"sleep then a loop that asserts", "time.Sleep(time.Second)\nfor _, x := range xs {\nif x {\ntb.Error(x)\n}\n}", 1},
		{"sleep then else asserts", "time.Sleep(time.Second)\nif ok {\n} else {\nb.FailNow()\n}", 1},
		{"sleep in a case", "switch {\ncase ok:\ntime.Sleep(time.Second)\nt.Error(1)\n}", 1},
		{"sleep in a nested block", "for {\nif ok {\ntime.Sleep(time.Second)\nif bad {\nt.Fatal(1)\n}\n}\n}", 1},
		{"poll loop", "for !ok() {\nif late() {\nt.Fatal(1)\n}\ntime.Sleep(time.Millisecond)\n}", 0},
		{"sleep then an action", "time.Sleep(time.Second)\nconn.Close()\nif err != nil {\nt.Fatal(err)\n}", 0},
		{"sleep-ok above", "//sleep-ok: a slow client\ntime.Sleep(time.Second)\nt.Fatal(1)", 0},
		{"sleep-ok on the line", "time.Sleep(time.Second) //sleep-ok: a slow client\nt.Fatal(1)", 0},
		{"sleep-ok without a reason", "//sleep-ok:\ntime.Sleep(time.Second)\nt.Fatal(1)", 1},
		{"err.Error() is no assertion", "time.Sleep(time.Second)\nif err.Error() == \"\" {\nreturn\n}", 0},
		{"assertion in a func literal", "time.Sleep(time.Second)\ngo func() {\nt.Error(1)\n}()", 0},
		{"another package's Sleep", "clock.Sleep(time.Second)\nt.Fatal(1)", 0},
		{"in a synctest bubble", "synctest.Test(t, func(t *testing.T) {\ntime.Sleep(time.Second)\nt.Fatal(1)\n})", 0},
		{"after a synctest bubble", "synctest.Test(t, func(t *testing.T) {\n})\ntime.Sleep(time.Second)\nt.Fatal(1)", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fset := token.NewFileSet()
			f, err := parser.ParseFile(fset, "x_test.go", "package x\nfunc f() {\n"+tt.body+"\n}\n", parser.ParseComments)
			if err != nil {
				t.Fatal(err)
			}
			if got := sleepsThenAssert(fset, f); len(got) != tt.want {
				t.Errorf("found %d, want %d in\n%s", len(got), tt.want, tt.body)
			}
		})
	}
}
