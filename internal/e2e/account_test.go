package e2e

import (
	"strings"
	"testing"

	"github.com/berth-dev/berth/api"
)

// TestE2E_AccountPolicy reproduces the review's finding 4 through the
// public API: a session for the system account daemon (uid 1, shell
// nologin) used to get a running Xvnc and openbox. Now the agent's account
// policy refuses it before anything starts, the session ends DELETED with a
// StateReason that says why, and nothing runs as daemon.
func TestE2E_AccountPolicy(t *testing.T) {
	e := MustStartEnv(t)
	created := e.MustCreate(t, api.CreateSessionRequest{
		Name: "system account", Owner: "daemon", Type: api.TypeVirtual, DisableRetryOnFailure: true,
	})
	s := e.MustWaitState(t, created[0].Id, api.StateDeleted, readyTimeout)
	if !strings.Contains(s.StateReason, "account policy") || !strings.Contains(s.StateReason, "daemon") {
		t.Errorf("StateReason = %q, want the account policy's refusal of daemon", s.StateReason)
	}
	t.Logf("StateReason: %s", s.StateReason)
	var daemons []procInfo
	for _, p := range listProcs() {
		if p.uid == 1 && p.state != "Z" && strings.Contains(p.cmdline, created[0].Id) {
			daemons = append(daemons, p)
		}
	}
	if len(daemons) > 0 {
		t.Errorf("the refused session's processes run as daemon:%s", describeProcs(daemons))
	}
}
