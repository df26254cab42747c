package agent_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDeps guards the import rules: the agent library never pulls in the
// broker's packages, a SQL driver or Prometheus (internal/agentmetrics
// implements its Metrics), and agentproto stays std-lib only.
func TestDeps(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	deps := func(pkg string) []string {
		out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", pkg).Output()
		if err != nil {
			t.Fatalf("go list %s: %v", pkg, err)
		}
		return strings.Fields(string(out))
	}
	for _, d := range deps("github.com/berth-dev/berth/internal/agent") {
		for _, bad := range []string{"/internal/broker", "/internal/agenthub", "/internal/sqlite", "/internal/postgres",
			"/internal/httpapi", "/internal/oauth", "sqlite", "pgx", "lib/pq", "prometheus"} {
			if strings.Contains(d, bad) {
				t.Errorf("internal/agent depends on %s", d)
			}
		}
	}
	for _, d := range deps("github.com/berth-dev/berth/internal/agentproto") {
		if d != "github.com/berth-dev/berth/internal/agentproto" {
			t.Errorf("internal/agentproto depends on non-std %s", d)
		}
	}
}
