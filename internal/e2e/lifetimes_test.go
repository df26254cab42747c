package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/poll"
)

// Session lifetimes (issue 17, acceptance 1) with a real broker, a vnc
// agent, real Xvnc sessions and Chromium. The policies are fractions of a
// minute so that the tests take seconds; the broker's policy loop and the
// agent's activity reports run every second.

// lifetimeAgent is the agent.conf table of the lifetime tests: input is
// reported within a second.
const lifetimeAgent = "[activity]\ninterval_seconds = 1\n"

// TestE2E_Lifetime_Idle: input from the browser and input inside the
// session (xdotool) each keep a session with an idle timeout connected;
// without input the browser client is disconnected with the reason, and
// after the disconnected timeout the session is deleted with a reason that
// names the policy.
func TestE2E_Lifetime_Idle(t *testing.T) {
	skipWithoutBrowser(t)
	const idle = 15 * time.Second
	e := MustStartEnvWith(t, EnvOptions{
		BrokerProps: []string{
			"session-idle-timeout-minutes = 0.25",         // 15 s
			"session-disconnected-timeout-minutes = 0.15", // 9 s
			"session-warning-minutes = 0.1",               // 6 s before
			"session-policy-interval-seconds = 1",
		},
		AgentTables: lifetimeAgent,
	})
	s, x := mustCreatePageSession(t, e, user1, "")
	browser := mustStartPageBrowser(t)
	page := mustOpenPage(t, e, browser, s.Id, user1)
	connected := `document.body.dataset.state === 'connected'`

	// The agent reports the page's connection.
	poll.Until(t, pageChangeTimeout, "DescribeSessions showing the page's connection", func() bool {
		got, err := e.Describe(t, s.Id)
		return err == nil && got.NumOfConnections == 1
	})

	// keep sends input every 3 s for longer than the idle timeout and
	// checks the page stays connected.
	keep := func(what string, input func()) {
		t.Helper()
		for end := time.Now().Add(idle + 8*time.Second); time.Now().Before(end); {
			input()
			time.Sleep(3 * time.Second)
			var ok bool
			page.MustEval(t, connected, &ok)
			if !ok {
				t.Fatalf("the page was disconnected although %s every 3 s (idle timeout %s)", what, idle)
			}
		}
		t.Logf("input %s kept the session connected past the idle timeout", what)
	}
	keep("came from the browser", func() { page.MustType(t, "a") })
	keep("came from xdotool in the session", func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		n := time.Now().UnixNano() % 200
		if out, err := x.command(ctx, "xdotool", "mousemove", fmt.Sprint(100+n), fmt.Sprint(100+n)).CombinedOutput(); err != nil {
			t.Fatalf("xdotool in the session: %v: %s", err, out)
		}
	})

	// No input: a warning, then the page is disconnected with the reason
	// and does not reconnect by itself.
	page.MustWaitTrue(t, idle+pageChangeTimeout, "the idle warning on the page",
		`!document.getElementById('notice').hidden && /session-idle-timeout-minutes|input/.test(document.getElementById('notice').textContent)`)
	page.MustSaveScreenshot(t, artifactDir(t), "idle-warning")
	page.MustWaitTrue(t, idle+pageChangeTimeout, "the page disconnected for lack of input",
		`document.body.dataset.state === 'disconnected' && /input/.test(document.getElementById('status').textContent)`)
	page.MustSaveScreenshot(t, artifactDir(t), "idle-disconnected")
	var status string
	page.MustEval(t, `document.getElementById('status').textContent`, &status)
	t.Logf("the disconnected page says: %q", status)
	got, err := e.Describe(t, s.Id)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != api.StateReady {
		t.Errorf("after the idle disconnection the session is %s (%q), want READY until the disconnected timeout", got.State, got.StateReason)
	}

	// The disconnected timeout deletes it, naming the policy.
	deadline := time.Now().Add(pageChangeTimeout)
	for {
		got, err = e.Describe(t, s.Id)
		if err == nil && got.State == api.StateDeleted {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the session was not deleted by the disconnected timeout: %+v %v", got, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !strings.Contains(got.StateReason, "session-disconnected-timeout-minutes") {
		t.Errorf("StateReason %q does not name session-disconnected-timeout-minutes", got.StateReason)
	}
	if got.LastDisconnectionTime == nil || got.LastDisconnectionTime.IsZero() {
		t.Errorf("LastDisconnectionTime is not set after the disconnection: %+v", got)
	}
	// The disconnected page does not reconnect by itself; its button does,
	// and finds the session ended.
	var btn struct{ X, Y float64 }
	page.MustEval(t, `(() => { const r = document.getElementById('reconnect').getBoundingClientRect(); return {X: r.left + r.width / 2, Y: r.top + r.height / 2}; })()`, &btn)
	page.MustClick(t, btn.X, btn.Y)
	page.MustWaitTrue(t, pageChangeTimeout, "the page saying the session has ended", `document.body.dataset.state === 'ended'`)
	checkCSP(t, page, "idle")
}

// TestE2E_Lifetime_Extend: a session with a maximum lifetime warns through
// the page's banner; Extend on the banner and berth extend-session each
// push the deadline, up to session-max-extension-hours, beyond which the
// CLI is refused naming it and the banner offers no Extend.
func TestE2E_Lifetime_Extend(t *testing.T) {
	skipWithoutBrowser(t)
	const step = 36 * time.Second
	e := MustStartEnvWith(t, EnvOptions{
		BrokerProps: []string{
			"session-max-lifetime-hours = 0.01",      // 36 s
			"session-max-extension-hours = 0.02",     // 72 s in all
			"session-extension-default-hours = 0.01", // 36 s
			"session-warning-minutes = 0.55",         // 33 s before
			"session-policy-interval-seconds = 1",
		},
		AgentTables: lifetimeAgent,
	})
	s, _ := mustCreatePageSession(t, e, user2, "")
	browser := mustStartPageBrowser(t)
	dir := artifactDir(t)
	page := mustOpenPage(t, e, browser, s.Id, user2)
	expires := func() time.Time {
		t.Helper()
		lt, err := e.Client.SessionLifetime(apiCtx(t), s.Id)
		if err != nil || lt.ExpiresAt == nil {
			t.Fatalf("GET lifetime: %+v %v", lt, err)
		}
		return *lt.ExpiresAt
	}
	first := expires()
	if d := first.Sub(s.CreationTime); d < step-time.Second || d > step+time.Second {
		t.Errorf("ExpiresAt %s is %s after the creation, want %s", first, d, step)
	}

	// The warning: a banner with the time left and Extend.
	page.MustWaitTrue(t, pageChangeTimeout, "the lifetime warning with Extend on the page",
		`!document.getElementById('notice').hidden && !document.getElementById('notice-extend').hidden && /session-max-lifetime-hours/.test(document.getElementById('notice').textContent) && Number(document.getElementById('notice-left').dataset.seconds) > 0`)
	page.MustSaveScreenshot(t, dir, "1-warning")
	mustAxe(t, page, "lifetime warning")
	var btn struct{ X, Y float64 }
	page.MustEval(t, `(() => { const r = document.getElementById('notice-extend').getBoundingClientRect(); return {X: r.left + r.width / 2, Y: r.top + r.height / 2}; })()`, &btn)
	page.MustClick(t, btn.X, btn.Y)
	poll.Until(t, pageChangeTimeout, "Extend on the banner pushing the deadline by the default extension", func() bool {
		return expires().Equal(first.Add(step))
	})
	page.MustWaitTrue(t, pageChangeTimeout, "the page telling of the extension", `berthPage.extended !== null && /Extended/.test(document.getElementById('live').textContent)`)
	t.Logf("the banner's Extend pushed the deadline from %s to %s", first.Format(time.TimeOnly), first.Add(step).Format(time.TimeOnly))

	// The CLI: once more up to the cap, then refused naming it.
	creds := []string{"BERTH_CLIENT_ID=" + e.Client.ClientID, "BERTH_CLIENT_PASSWORD=" + e.Client.ClientSecret}
	cli := func(args ...string) (string, string, int) {
		return berthCLI(t, e.Bin, creds, append([]string{"--broker-url", e.BrokerURL, "--ca-bundle", e.CAFile}, args...)...)
	}
	out, stderr, code := cli("extend-session", "--session-id", s.Id, "--by", "36s")
	if code != 0 {
		t.Fatalf("berth extend-session: exit %d: %s %s", code, out, stderr)
	}
	if got := expires(); !got.Equal(first.Add(2 * step)) {
		t.Errorf("after berth extend-session ExpiresAt is %s, want %s", got, first.Add(2*step))
	}
	out, stderr, code = cli("extend-session", "--session-id", s.Id, "--by", "36s")
	if code == 0 || !strings.Contains(stderr, "session-max-extension-hours") {
		t.Errorf("berth extend-session past the cap: exit %d, stdout %q, stderr %q; want a refusal naming session-max-extension-hours", code, out, stderr)
	}
	if got := expires(); !got.Equal(first.Add(2 * step)) {
		t.Errorf("a refused extension moved ExpiresAt to %s", got)
	}

	// The warning of the last deadline offers no Extend: none is left.
	page.MustWaitTrue(t, 2*step+pageChangeTimeout, "the last lifetime warning, without Extend",
		`!document.getElementById('notice').hidden && document.getElementById('notice-extend').hidden && /session-max-lifetime-hours/.test(document.getElementById('notice').textContent)`)
	page.MustSaveScreenshot(t, dir, "2-last-warning")
	checkCSP(t, page, "lifetime")

	// At the deadline the session is deleted, naming the policy.
	var got api.Session
	poll.Until(t, 2*step+pageChangeTimeout, "the session deleted at its deadline", func() bool {
		var err error
		got, err = e.Describe(t, s.Id)
		return err == nil && got.State == api.StateDeleted
	})
	if !strings.Contains(got.StateReason, "session-max-lifetime-hours") {
		t.Errorf("StateReason %q does not name session-max-lifetime-hours", got.StateReason)
	}
}
