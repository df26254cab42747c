package fleetbench

import (
	"os"
	"strings"
	"testing"
	"time"
)

// TestNewBroker_Properties: the extra properties are added, and replace
// the benchmark's own line of their key (the broker refuses a key set
// twice).
func TestNewBroker_Properties(t *testing.T) {
	b, err := newBroker("berth-broker", t.TempDir(), Options{UpdateInterval: 10 * time.Second, LogLevel: "info",
		BrokerProperties: []string{"delete-session-duration-seconds = 120", "log-level = warn"}})
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(b.conf)
	if err != nil {
		t.Fatal(err)
	}
	conf := string(data)
	if !strings.HasSuffix(conf, "\ndelete-session-duration-seconds = 120\nlog-level = warn\n") || strings.Count(conf, "log-level") != 1 {
		t.Errorf("broker.properties does not end with the extra lines, or sets log-level twice:\n%s", conf)
	}
}
