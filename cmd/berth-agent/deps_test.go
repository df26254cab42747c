package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDeps guards the import rules: the agent binary never pulls in the
// broker, its stores, its transports or a SQL driver.
func TestDeps(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	deps := strings.Fields(string(out))
	if len(deps) == 0 {
		t.Fatal("go list -deps listed nothing")
	}
	forbidden := []string{
		"github.com/berth-dev/berth/internal/broker",
		"github.com/berth-dev/berth/internal/sqlite",
		"github.com/berth-dev/berth/internal/postgres",
		"github.com/berth-dev/berth/internal/httpapi",
		"github.com/berth-dev/berth/internal/agenthub",
		"modernc.org/sqlite",
		"github.com/jackc/pgx",
	}
	for _, d := range deps {
		for _, bad := range forbidden {
			if d == bad || strings.HasPrefix(d, bad+"/") {
				t.Errorf("berth-agent depends on %s", d)
			}
		}
	}
}
