package gateway_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDeps guards the import rules: the gateway never pulls in Prometheus
// (internal/agentmetrics implements its Metrics) nor the broker's packages.
func TestDeps(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", "github.com/berth-dev/berth/internal/gateway").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, d := range strings.Fields(string(out)) {
		for _, bad := range []string{"prometheus", "/internal/broker", "/internal/agenthub", "/internal/sqlite", "/internal/postgres", "/internal/httpapi"} {
			if strings.Contains(d, bad) {
				t.Errorf("internal/gateway depends on %s", d)
			}
		}
	}
}
