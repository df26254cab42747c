package e2e

import (
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/berth-dev/berth/api"
)

// alive says whether a process exists (and is not a zombie).
func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	for _, p := range listProcs() {
		if p.pid == pid {
			return p.state != "Z"
		}
	}
	return false
}

// TestE2E_AgentRestart kills the agent (SIGKILL) while two sessions run
// (acceptance 3 of issue 3): the broker shows them UNKNOWN while the
// desktops keep running; the agent started again on the same state
// directory re-adopts the same Xvnc processes, the sessions are READY
// again, listed once each, on the one server, and open through the gateway.
func TestE2E_AgentRestart(t *testing.T) {
	e := MustStartEnv(t)
	created := e.MustCreate(t,
		api.CreateSessionRequest{Name: "restart one", Owner: user1, Type: api.TypeVirtual},
		api.CreateSessionRequest{Name: "restart two", Owner: user2, Type: api.TypeVirtual},
	)
	ids := []string{created[0].Id, created[1].Id}
	before := map[string]xserver{}
	for _, id := range ids {
		e.MustWaitState(t, id, api.StateReady, readyTimeout)
		before[id] = mustFindXvnc(t, id)
	}
	server := e.MustWaitServer(t)

	e.Agent.Kill(t)
	for _, id := range ids {
		s := e.MustWaitState(t, id, api.StateUnknown, 15*time.Second)
		t.Logf("session %s is UNKNOWN while the agent is down (reason %q)", id, s.StateReason)
		if !alive(before[id].pid) {
			t.Errorf("session %s: its Xvnc (pid %d) died with the agent; sessions must outlive it", id, before[id].pid)
		}
	}

	t0 := time.Now()
	e.MustStartAgent(t)
	for _, id := range ids {
		e.MustWaitState(t, id, api.StateReady, readyTimeout)
	}
	t.Logf("both sessions READY again %s after the agent was started again", time.Since(t0).Round(time.Millisecond))

	// Each session is listed exactly once, every one of them READY, on the
	// same (single) server, run by the same Xvnc as before.
	out, err := e.Client.DescribeSessions(apiCtx(t), api.DescribeSessionsRequest{})
	if err != nil {
		t.Fatalf("DescribeSessions: %v", err)
	}
	seen := map[string]int{}
	for _, s := range out.Sessions {
		seen[s.Id]++
		if s.State != api.StateReady {
			t.Errorf("after the restart DescribeSessions lists session %s (%s) as %s, want READY", s.Id, s.Name, s.State)
		}
		if s.Server == nil || s.Server.Id != server.Id {
			t.Errorf("session %s is on server %+v after the restart, want %s", s.Id, s.Server, server.Id)
		}
	}
	if len(out.Sessions) != len(ids) {
		t.Errorf("DescribeSessions lists %d sessions after the restart, want the %d created", len(out.Sessions), len(ids))
	}
	for _, id := range ids {
		if seen[id] != 1 {
			t.Errorf("DescribeSessions lists session %s %d times, want once", id, seen[id])
		}
		if x := mustFindXvnc(t, id); x.pid != before[id].pid || x.display != before[id].display {
			t.Errorf("session %s runs Xvnc pid %d on :%d after the restart, want the re-adopted pid %d on :%d", id, x.pid, x.display, before[id].pid, before[id].display)
		}
	}
	servers, err := e.Client.DescribeServers(apiCtx(t), api.DescribeServersRequest{})
	if err != nil {
		t.Fatalf("DescribeServers: %v", err)
	}
	if len(servers.Servers) != 1 || servers.Servers[0].Id != server.Id {
		t.Errorf("DescribeServers lists %d servers after the restart, want the one server %s", len(servers.Servers), server.Id)
	}

	// The re-adopted sessions open through the new agent's gateway.
	for _, c := range []struct{ id, user string }{{ids[0], user1}, {ids[1], user2}} {
		d := e.MustConnectionData(t, c.id, c.user)
		e.MustConnect(t, c.id, d.ConnectionToken, c.user+" after the restart").Close(websocket.StatusNormalClosure, "")
	}
}

// TestE2E_XvncKilled kills a session's Xvnc by hand (acceptance 4 of issue
// 3): the broker shows the session DELETED, with a reason, within one
// update interval, and the rest of the session goes with it.
func TestE2E_XvncKilled(t *testing.T) {
	e := MustStartEnv(t)
	uid, _ := mustUser(t, user1)
	s := e.MustCreate(t, api.CreateSessionRequest{Name: "doomed", Owner: user1, Type: api.TypeVirtual, AutorunFile: "xterm.sh"})[0]
	e.MustWaitState(t, s.Id, api.StateReady, readyTimeout)
	x := mustFindXvnc(t, s.Id)

	const slack = time.Second
	t0 := time.Now()
	if err := syscall.Kill(x.pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill Xvnc pid %d: %v", x.pid, err)
	}
	got := e.MustWaitState(t, s.Id, api.StateDeleted, updateInterval+slack)
	t.Logf("session DELETED %s after its Xvnc was killed (update interval %s), reason %q", time.Since(t0).Round(time.Millisecond), updateInterval, got.StateReason)
	if got.StateReason == "" {
		t.Errorf("session %s is DELETED without a StateReason, want one saying its X server ended", s.Id)
	}
	// Its programs lose their display and are stopped; nothing is left.
	deadline := time.Now().Add(deleteSettle)
	for {
		left := leftovers(uid, s.Id, x.display)
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("%s after the session's Xvnc was killed, processes of it remain:%s", deleteSettle, describeProcs(left))
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := e.ConnectionData(t, s.Id, user1); err == nil {
		t.Errorf("GetSessionConnectionData succeeded for a session whose X server is dead")
	}
}
