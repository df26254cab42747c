package main

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/agentproto"
	"github.com/berth-dev/berth/internal/poll"
	"github.com/berth-dev/berth/internal/sqlite"
)

// TestBroker_Backup copies the store of a running broker with sessions and
// opens the copy.
func TestBroker_Backup(t *testing.T) {
	b := MustRunMain(t, t.TempDir(), nil)
	c := b.MustClient(t)
	b.MustStartSimAgent(t, t.TempDir(), nil, agentproto.HostReport{Hostname: "backup-host"})
	poll.Until(t, 10*time.Second, "the server", func() bool {
		out, err := c.DescribeServers(t.Context(), api.DescribeServersRequest{})
		return err == nil && len(out.Servers) == 1
	})
	out, err := c.CreateSessions(t.Context(), []api.CreateSessionRequest{{Name: "kept", Owner: "alice", Type: api.TypeVirtual}})
	if err != nil || len(out.SuccessfulList) != 1 {
		t.Fatalf("CreateSessions: %v %+v", err, out)
	}
	dst := filepath.Join(t.TempDir(), "copy.db")
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no --out", []string{"backup"}, 2, "--out is required"},
		{"new file", []string{"backup", "--out", dst}, 0, "backup written to " + dst},
		{"existing file", []string{"backup", "--out", dst}, 1, "exists"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, code := b.admin(t, tt.args...)
			if code != tt.code || !strings.Contains(got, tt.want) {
				t.Fatalf("%v: exit %d %q, want %d and %q", tt.args, code, got, tt.code, tt.want)
			}
		})
	}
	st, err := sqlite.Open(t.Context(), dst)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.GetSession(t.Context(), out.SuccessfulList[0].Id); err != nil {
		t.Fatalf("the copy lacks the session: %v", err)
	}
}
