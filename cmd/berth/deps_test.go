package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDeps guards what the CLI may import: the standard library and the public
// api package only (no broker internals, no third-party modules).
func TestDeps(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go command not found")
	}
	out, err := exec.Command(goBin, "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	allowed := map[string]bool{
		"github.com/berth-dev/berth/api":       true,
		"github.com/berth-dev/berth/cmd/berth": true,
	}
	for _, pkg := range strings.Fields(string(out)) {
		switch {
		case allowed[pkg]:
		case strings.HasPrefix(pkg, "github.com/berth-dev/berth/internal/"):
			t.Errorf("berth imports %s: the CLI may use only the public api package", pkg)
		default:
			t.Errorf("berth imports %s: the CLI may use only the standard library and the api package", pkg)
		}
	}
}
