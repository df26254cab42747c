package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/poll"
)

// pageAutorun is the autorun program of the page tests: it writes the
// session's DISPLAY and XAUTHORITY to $HOME/page-env.txt and runs an xterm
// that writes what is typed into it to $HOME/typed.txt.
const pageAutorun = "page-env.sh"

// Bounds of the page tests' waits (generous: the machine is small and
// shared, and a reconnect backs off).
const (
	pageConnectTimeout = 60 * time.Second
	pageChangeTimeout  = 60 * time.Second
)

var installPageAutorun struct {
	once sync.Once
	err  error
}

// mustInstallPageAutorun copies testdata/autorun/page-env.sh into the
// agents' autorun folder (TestMain copies a fixed list).
func mustInstallPageAutorun(tb testing.TB) {
	tb.Helper()
	installPageAutorun.once.Do(func() {
		b, err := os.ReadFile(filepath.Join("testdata", "autorun", pageAutorun))
		if err == nil {
			err = os.WriteFile(filepath.Join(folders, "autorun", pageAutorun), b, 0o755)
		}
		installPageAutorun.err = err
	})
	if installPageAutorun.err != nil {
		tb.Fatal(installPageAutorun.err)
	}
}

// skipWithoutBrowser skips tests that need Chromium where it is missing.
func skipWithoutBrowser(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: skipping the headless Chromium test")
	}
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Skipf("SKIPPING the browser test: %s is not installed (apt-get install chromium)", chromiumPath)
	}
}

// sessionX runs programs in a session's X display as its owner.
type sessionX struct {
	owner, display, xauth string
}

// mustCreatePageSession creates a VIRTUAL session for owner running the
// page tests' autorun program, waits until it is READY and its autorun
// program has written the display, and returns both.
func mustCreatePageSession(t *testing.T, e *Env, owner, perms string, mods ...func(*api.CreateSessionRequest)) (api.Session, sessionX) {
	t.Helper()
	mustInstallPageAutorun(t)
	_, home := mustUser(t, owner)
	envFile := filepath.Join(home, "page-env.txt")
	os.Remove(envFile)
	os.Remove(filepath.Join(home, "typed.txt"))
	req := api.CreateSessionRequest{Name: "e2e page", Owner: owner, Type: api.TypeVirtual, AutorunFile: pageAutorun}
	if perms != "" {
		req.PermissionsFile = perms
	}
	for _, mod := range mods {
		mod(&req)
	}
	s := e.MustCreate(t, req)[0]
	e.MustWaitState(t, s.Id, api.StateReady, readyTimeout)
	var b []byte
	poll.Until(t, 30*time.Second, "the autorun program's "+envFile, func() bool {
		var err error
		b, err = os.ReadFile(envFile)
		return err == nil
	})
	x := sessionX{owner: owner}
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), "=")
		switch k {
		case "DISPLAY":
			x.display = v
		case "XAUTHORITY":
			x.xauth = v
		}
	}
	if x.display == "" || x.xauth == "" {
		t.Fatalf("%s holds %q, want DISPLAY and XAUTHORITY", envFile, b)
	}
	return s, x
}

// command returns a command that runs args as the owner in the session's
// display.
func (x sessionX) command(ctx context.Context, args ...string) *exec.Cmd {
	a := append([]string{"-u", x.owner, "--", "env", "DISPLAY=" + x.display, "XAUTHORITY=" + x.xauth}, args...)
	return exec.CommandContext(ctx, "runuser", a...)
}

// mustCopy puts text on the session's clipboard (CLIPBOARD), as a program
// in the session copying it. xclip stays in the background to serve it
// until another program takes the clipboard or the session ends.
func (x sessionX) mustCopy(t *testing.T, text string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := x.command(ctx, "xclip", "-selection", "clipboard", "-i")
	cmd.Stdin = strings.NewReader(text)
	// No pipes on stdout and stderr: the background xclip keeps them open.
	if err := cmd.Run(); err != nil {
		t.Fatalf("xclip -i in the session: %v", err)
	}
}

// clipboard returns the session's clipboard text (CLIPBOARD).
func (x sessionX) clipboard() (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	out, err := x.command(ctx, "xclip", "-selection", "clipboard", "-o").Output()
	return string(out), err
}

var dimensionsLine = regexp.MustCompile(`dimensions:\s+(\d+)x(\d+) pixels`)

// geometry returns the session's screen size, as xdpyinfo tells it.
func (x sessionX) geometry() (int, int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	out, err := x.command(ctx, "xdpyinfo").Output()
	if err != nil {
		return 0, 0, fmt.Errorf("xdpyinfo: %w", err)
	}
	m := dimensionsLine.FindSubmatch(out)
	if m == nil {
		return 0, 0, fmt.Errorf("xdpyinfo printed no dimensions line")
	}
	w, _ := strconv.Atoi(string(m[1]))
	h, _ := strconv.Atoi(string(m[2]))
	return w, h, nil
}

// mustOpenPage opens the session's connection URL for user in a new tab
// and waits until the page is connected and shows the desktop.
func mustOpenPage(t *testing.T, e *Env, browser *Chromium, id, user string) *Page {
	t.Helper()
	d := e.MustConnectionData(t, id, user)
	page := browser.MustNewPage(t)
	mustRecordCSPViolations(t, page)
	page.MustNavigate(t, e.LocalURL(t, d))
	page.MustWaitTrue(t, pageConnectTimeout, user+"'s page connected",
		`document.body.dataset.state === 'connected' && !!document.querySelector('#screen canvas') && !!(window.berthPage && berthPage.info)`)
	return page
}

// mustStartPageBrowser starts Chromium and logs the pages' console when the
// test fails.
func mustStartPageBrowser(t *testing.T) *Chromium {
	t.Helper()
	browser := MustStartChromium(t)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("page console and exceptions:\n%s", browser.Events())
		}
	})
	return browser
}

// jsString quotes s as a JavaScript string literal.
func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// TestE2E_Page_Clipboard (acceptance 2 of issue 15): text copied in the
// session arrives in the clipboard panel of the owner's page and not in
// that of a user without clipboard-copy; the owner's paste reaches the
// session, and a user without clipboard-paste has the panel's Send
// disabled and cannot paste even by calling noVNC directly.
func TestE2E_Page_Clipboard(t *testing.T) {
	skipWithoutBrowser(t)
	e := MustStartEnv(t)
	owner, other := user2, user1
	_, home := mustUser(t, owner)
	s, x := mustCreatePageSession(t, e, owner, permissions("%owner% allow builtin", other+" allow display keyboard mouse"))
	browser := mustStartPageBrowser(t)
	dir := artifactDir(t)
	ownerPage := mustOpenPage(t, e, browser, s.Id, owner)
	otherPage := mustOpenPage(t, e, browser, s.Id, other)

	// The panels tell each user what they may do.
	openClip := `(() => { const b = document.getElementById('clip-toggle'); if (b.getAttribute('aria-expanded') !== 'true') b.click(); return true; })()`
	ownerPage.MustEval(t, openClip, nil)
	otherPage.MustEval(t, openClip, nil)
	type panel struct {
		SendDisabled bool   `json:"sendDisabled"`
		Note         string `json:"note"`
		Text         string `json:"text"`
		Received     int    `json:"received"`
	}
	const panelJS = `({sendDisabled: document.getElementById('clip-send').disabled, note: document.getElementById('clip-note').textContent,
	  text: document.getElementById('clip-text').value, received: berthPage.clipboardReceived})`
	var op, rp panel
	ownerPage.MustEval(t, panelJS, &op)
	otherPage.MustEval(t, panelJS, &rp)
	if op.SendDisabled || strings.Contains(op.Note, "may not") {
		t.Errorf("owner's clipboard panel: Send disabled %v, note %q; want enabled, no restriction", op.SendDisabled, op.Note)
	}
	if !rp.SendDisabled || !strings.Contains(rp.Note, "clipboard-copy") || !strings.Contains(rp.Note, "clipboard-paste") {
		t.Errorf("%s's clipboard panel: Send disabled %v, note %q; want disabled, naming clipboard-copy and clipboard-paste", other, rp.SendDisabled, rp.Note)
	}

	// Copied in the session: arrives for the owner only.
	copied := fmt.Sprintf("copied-in-session-%d", time.Now().UnixNano())
	x.mustCopy(t, copied)
	ownerPage.MustWaitTrue(t, pageChangeTimeout, "the session's clipboard in the owner's panel",
		`document.getElementById('clip-text').value === `+jsString(copied))
	ownerPage.MustSaveScreenshot(t, dir, "owner-clipboard")
	otherPage.MustSaveScreenshot(t, dir, "restricted-clipboard")
	otherPage.MustEval(t, panelJS, &rp)
	if rp.Received != 0 || rp.Text != "" {
		t.Errorf("%s (no clipboard-copy) received the session's clipboard: %d event(s), panel text %q", other, rp.Received, rp.Text)
	}
	t.Logf("the session's clipboard reached the owner's panel, and not %s's", other)

	// The owner pastes: the session's clipboard takes the text.
	pasted := fmt.Sprintf("pasted-by-owner-%d", time.Now().UnixNano())
	ownerPage.MustEval(t, `(() => { document.getElementById('clip-text').value = `+jsString(pasted)+`; document.getElementById('clip-send').click(); return true; })()`, nil)
	var got string
	poll.Until(t, pageChangeTimeout, "the owner's paste in the session's clipboard", func() bool {
		got, _ = x.clipboard()
		return got == pasted
	})
	t.Logf("the owner's paste reached the session: xclip -o gives %q", got)

	// The other user pastes, past the disabled button, straight through
	// noVNC; then types a marker into the session's xterm over the same
	// connection. Once the marker arrived, so had the paste: the session's
	// clipboard must still be the owner's.
	refused := fmt.Sprintf("pasted-without-permission-%d", time.Now().UnixNano())
	otherPage.MustEval(t, `(() => { window.rfb.clipboardPasteFrom(`+jsString(refused)+`); return true; })()`, nil)
	otherPage.MustEval(t, `(() => { document.getElementById('clip-toggle').click(); return true; })()`, nil)
	var st pageState
	otherPage.MustEval(t, pageStateJS, &st)
	// Into the xterm (the autorun program's, at the top left), below and
	// left of where the toolbar shows.
	otherPage.MustClick(t, st.X+st.CW/5, st.Y+st.CH*2/3)
	marker := fmt.Sprintf("marker-%d", time.Now().UnixNano()%1000000)
	otherPage.MustType(t, marker+"\n")
	typed := filepath.Join(home, "typed.txt")
	poll.Until(t, pageChangeTimeout, "the marker typed after the refused paste in "+typed, func() bool {
		b, _ := os.ReadFile(typed)
		return strings.Contains(string(b), marker)
	})
	if got, err := x.clipboard(); err != nil || got != pasted {
		t.Errorf("after %s's paste without clipboard-paste, the session's clipboard is %q (%v), want the owner's %q", other, got, err, pasted)
	}
	otherPage.MustSaveScreenshot(t, dir, "restricted-after-paste")
	checkCSP(t, ownerPage, "owner")
	checkCSP(t, otherPage, other)
}

// TestE2E_Page_Fit (acceptance 4 of issue 15): with the view mode at Fit,
// the session's screen (xdpyinfo as the owner) follows the browser
// window's size; the mode is remembered across page loads.
func TestE2E_Page_Fit(t *testing.T) {
	skipWithoutBrowser(t)
	e := MustStartEnv(t)
	s, x := mustCreatePageSession(t, e, user2, "")
	browser := mustStartPageBrowser(t)
	dir := artifactDir(t)
	page := mustOpenPage(t, e, browser, s.Id, user2)
	w0, h0, err := x.geometry()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("the session's screen is %dx%d before Fit", w0, h0)

	// Scale (the default) -> 1:1 -> Fit, with the toolbar's button.
	for _, want := range []string{"View: 1:1", "View: Fit"} {
		var label string
		page.MustEval(t, `(() => { const b = document.getElementById('view'); b.click(); return b.textContent; })()`, &label)
		if label != want {
			t.Fatalf("the view button reads %q, want %q", label, want)
		}
	}
	for _, size := range [][2]int{{1024, 640}, {1180, 700}} {
		page.MustSetViewport(t, size[0], size[1], false)
		var w, h int
		poll.Until(t, pageChangeTimeout, fmt.Sprintf("the session's screen at %dx%d (xdpyinfo)", size[0], size[1]), func() bool {
			w, h, err = x.geometry()
			return err == nil && w == size[0] && h == size[1]
		})
		t.Logf("window %dx%d: the session's screen is %dx%d", size[0], size[1], w, h)
		page.MustWaitTrue(t, pageChangeTimeout, "the page's canvas at the new size",
			fmt.Sprintf(`(() => { const c = document.querySelector('#screen canvas'); return c.width === %d && c.height === %d; })()`, size[0], size[1]))
		page.MustSaveScreenshot(t, dir, fmt.Sprintf("fit-%dx%d", size[0], size[1]))
	}

	// The mode survives a reload.
	page.MustNavigate(t, e.LocalURL(t, e.MustConnectionData(t, s.Id, user2)))
	page.MustWaitTrue(t, pageConnectTimeout, "the reloaded page connected with View: Fit",
		`document.body.dataset.state === 'connected' && document.getElementById('view').textContent === 'View: Fit'`)
	checkCSP(t, page, "fit")
}

// TestE2E_Page_Reconnect (acceptance 5 of issue 15): a link whose token
// expired says so; when the agent (and its web gateway) stops, the page says it is reconnecting and connects
// again by itself once the agent is back; after DeleteSessions it says the
// session has ended and stops trying.
func TestE2E_Page_Reconnect(t *testing.T) {
	skipWithoutBrowser(t)
	e := MustStartEnv(t)
	s, _ := mustCreatePageSession(t, e, user2, "")
	browser := mustStartPageBrowser(t)
	dir := artifactDir(t)

	// A link whose token expired says so, and how to get a new one.
	d := e.MustConnectionData(t, s.Id, user2)
	expired := *d
	expired.ConnectionToken = e.MustMintExpiredToken(t, s.Id, user2, user2)
	old := browser.MustNewPage(t)
	old.MustNavigate(t, e.LocalURL(t, &expired))
	old.MustWaitTrue(t, pageConnectTimeout, "the page of an expired link saying it expired",
		`document.body.dataset.state === 'expired' && /link has expired/.test(document.getElementById('status').textContent) && /get-session-connection-data/.test(document.getElementById('status').textContent)`)
	old.MustSaveScreenshot(t, dir, "0-expired")

	page := mustOpenPage(t, e, browser, s.Id, user2)
	page.MustSaveScreenshot(t, dir, "1-connected")

	e.Agent.Stop(t)
	page.MustWaitTrue(t, pageChangeTimeout, "the page reconnecting while the gateway is down",
		`document.body.dataset.state === 'reconnecting' && /Reconnecting in/.test(document.getElementById('status').textContent)`)
	page.MustSaveScreenshot(t, dir, "2-reconnecting")
	var status string
	page.MustEval(t, `document.getElementById('status').textContent`, &status)
	t.Logf("while the agent is down the page says: %q", status)

	e.MustStartAgent(t)
	e.MustWaitServer(t)
	page.MustWaitTrue(t, 2*pageChangeTimeout, "the page connected again by itself after the agent restarted",
		`document.body.dataset.state === 'connected' && !!document.querySelector('#screen canvas')`)
	page.MustSaveScreenshot(t, dir, "3-reconnected")
	t.Log("the page reconnected by itself after the agent restarted")

	e.MustDelete(t, s.Id)
	page.MustWaitTrue(t, 2*pageChangeTimeout, "the page saying the session has ended",
		`document.body.dataset.state === 'ended' && /session has ended/.test(document.getElementById('status').textContent)`)
	page.MustSaveScreenshot(t, dir, "4-ended")
	var retrying bool
	page.MustEval(t, `!document.getElementById('status-actions').hidden || berthPage.retryTimer > 0 && berthPage.state !== 'ended'`, &retrying)
	if retrying {
		t.Error("the page offers or schedules a reconnect to an ended session")
	}
	checkCSP(t, page, "reconnect")
}

// axeViolation is one rule axe-core found broken.
type axeViolation struct {
	ID      string   `json:"id"`
	Impact  string   `json:"impact"`
	Help    string   `json:"help"`
	Nodes   int      `json:"nodes"`
	Targets []string `json:"targets"`
}

var axeSource struct {
	once sync.Once
	src  string
	err  error
}

// mustAxe runs axe-core in the page and fails on serious or critical
// violations; it logs the others.
func mustAxe(t *testing.T, page *Page, label string) {
	t.Helper()
	axeSource.once.Do(func() {
		b, err := os.ReadFile(filepath.Join("testdata", "axe", "axe.min.js"))
		axeSource.src, axeSource.err = string(b), err
	})
	if axeSource.err != nil {
		t.Fatal(axeSource.err)
	}
	var loaded bool
	page.MustEval(t, `typeof axe !== 'undefined'`, &loaded)
	if !loaded {
		page.MustEval(t, axeSource.src+"\n;true", nil)
	}
	var res struct {
		Violations []axeViolation `json:"violations"`
		Passes     int            `json:"passes"`
	}
	page.MustEval(t, `axe.run(document).then((r) => ({passes: r.passes.length, violations: r.violations.map((v) => ({
	  id: v.id, impact: v.impact || '', help: v.help, nodes: v.nodes.length,
	  targets: v.nodes.slice(0, 5).map((n) => n.target.join(' '))}))}))`, &res)
	if res.Passes == 0 {
		t.Fatalf("%s: axe-core checked nothing (no rule passed)", label)
	}
	vs := res.Violations
	bad := 0
	for _, v := range vs {
		line := fmt.Sprintf("%s: axe %s (%s): %s, %d node(s): %s", label, v.ID, v.Impact, v.Help, v.Nodes, strings.Join(v.Targets, ", "))
		if v.Impact == "serious" || v.Impact == "critical" {
			bad++
			t.Error(line)
		} else {
			t.Log(line)
		}
	}
	t.Logf("%s: axe-core found %d violation(s), %d serious or critical; %d rules passed", label, len(vs), bad, res.Passes)
}

// TestE2E_Page_Accessibility (acceptance 6 of issue 15): axe-core finds no
// serious or critical violation in the page with the toolbar and each
// panel open, for the owner and for a view-only user (disabled controls and
// their explanations). F8 reaches the toolbar from the desktop and Escape
// leaves it; the keys panel's Tab reaches the session; the view-only badge
// and the peers show; on a phone-sized touch screen the toolbar opens with
// a tap, and its Keyboard button lets the device's keyboard type into the
// session. Screenshots are saved.
func TestE2E_Page_Accessibility(t *testing.T) {
	skipWithoutBrowser(t)
	e := MustStartEnv(t)
	owner, viewer := user2, user1
	s, _ := mustCreatePageSession(t, e, owner, permissions("%owner% allow builtin", viewer+" allow display"))
	browser := mustStartPageBrowser(t)
	dir := artifactDir(t)
	ownerPage := mustOpenPage(t, e, browser, s.Id, owner)
	viewerPage := mustOpenPage(t, e, browser, s.Id, viewer)

	// Keyboard: F8 opens the toolbar and focuses its first button; Escape
	// hides it and gives the focus back to the desktop.
	ownerPage.MustWaitTrue(t, pageChangeTimeout, "the toolbar hidden after its first show", `document.body.dataset.bar !== 'open'`)
	var st pageState
	ownerPage.MustEval(t, pageStateJS, &st)
	ownerPage.MustClick(t, st.X+st.CW/2, st.Y+st.CH/2)
	ownerPage.MustTapKey(t, "F8", 119)
	ownerPage.MustWaitTrue(t, pageChangeTimeout, "F8 opening the toolbar with the focus on its first button",
		`document.body.dataset.bar === 'open' && document.activeElement && document.activeElement.id === 'fullscreen'`)
	ownerPage.MustSaveScreenshot(t, dir, "owner-toolbar")
	ownerPage.MustTapKey(t, "Escape", 27)
	ownerPage.MustWaitTrue(t, pageChangeTimeout, "Escape closing the toolbar and focusing the desktop",
		`document.activeElement && document.activeElement.tagName === 'CANVAS'`)

	// The keys panel sends keys: Tab, Ctrl+Alt+Del and F5, then a typed
	// marker, reach the xterm (it has the X focus from the click above),
	// which writes them to typed.txt: Tab as itself, Ctrl+Alt+Del and F5
	// as xterm's escape sequences for Delete with Ctrl+Alt (modifier 7)
	// and for F5.
	ownerPage.MustEval(t, `(() => { document.getElementById('handle').click(); document.getElementById('keys-toggle').click();
	  for (const k of ['tab', 'ctrl-alt-del', 'f5']) document.querySelector('#keys-panel button[data-keys="' + k + '"]').click();
	  document.getElementById('keys-toggle').click(); berthPage.rfb.focus(); return true; })()`, nil)
	marker := fmt.Sprintf("keys-%d", time.Now().UnixNano()%1000000)
	ownerPage.MustType(t, marker+"\n")
	_, home := mustUser(t, owner)
	typed := filepath.Join(home, "typed.txt")
	want := "\t\x1b[3;7~\x1b[15~" + marker + "\n"
	poll.Until(t, pageChangeTimeout, "Tab, Ctrl+Alt+Del and F5 from the keys panel, then the marker, in "+typed, func() bool {
		b, _ := os.ReadFile(typed)
		return strings.Contains(string(b), want)
	})

	// Who is connected, and the view-only badge.
	ownerPage.MustWaitTrue(t, pageChangeTimeout, "the owner's page naming the viewer",
		`document.getElementById('peers').textContent.includes(`+jsString(viewer)+`)`)
	viewerPage.MustWaitTrue(t, pageChangeTimeout, "the viewer's page naming the owner and showing View only",
		`document.getElementById('peers').textContent.includes(`+jsString(owner)+`) && !document.getElementById('viewonly').hidden`)
	var badge bool
	ownerPage.MustEval(t, `!document.getElementById('viewonly').hidden`, &badge)
	if badge {
		t.Error("the owner's page shows the View only badge")
	}

	// axe with the toolbar and each panel open.
	for _, p := range []struct {
		name string
		page *Page
	}{{"owner", ownerPage}, {"viewer", viewerPage}} {
		p.page.MustEval(t, `(() => { document.getElementById('handle').click(); return true; })()`, nil)
		p.page.MustWaitTrue(t, pageChangeTimeout, "the toolbar open", `document.body.dataset.bar === 'open'`)
		mustAxe(t, p.page, p.name+" toolbar")
		for _, panel := range []string{"clip", "keys", "files"} {
			p.page.MustEval(t, `(() => { const b = document.getElementById('`+panel+`-toggle'); b.click(); b.focus(); return true; })()`, nil)
			p.page.MustWaitTrue(t, pageChangeTimeout, "the "+panel+" panel open", `!document.getElementById('`+panel+`-panel').hidden`)
			p.page.MustSaveScreenshot(t, dir, p.name+"-"+panel)
			mustAxe(t, p.page, p.name+" "+panel+" panel")
		}
	}
	// The viewer's keys are disabled, with the reason.
	var keys struct {
		Disabled bool   `json:"disabled"`
		Note     string `json:"note"`
	}
	viewerPage.MustEval(t, `({disabled: [...document.querySelectorAll('#keys-panel button')].every((b) => b.disabled), note: document.getElementById('keys-note').textContent})`, &keys)
	if !keys.Disabled || !strings.Contains(keys.Note, "keyboard") {
		t.Errorf("the viewer's special keys: all disabled %v, note %q; want disabled, naming the keyboard permission", keys.Disabled, keys.Note)
	}

	// A phone: the toolbar opens with a tap on its handle and fits the
	// screen.
	ownerPage.MustEval(t, `(() => { for (const b of document.querySelectorAll('[aria-expanded="true"][aria-controls$="-panel"]')) b.click(); document.querySelector('#screen canvas').focus(); return true; })()`, nil)
	bringToFront(t, ownerPage) // a background tab runs no transitions
	ownerPage.MustSetViewport(t, 390, 844, true)
	ownerPage.MustWaitTrue(t, pageChangeTimeout, "the toolbar hidden on the phone", `document.body.dataset.bar !== 'open'`)
	var handle struct{ X, Y float64 }
	ownerPage.MustEval(t, `(() => { const r = document.getElementById('handle').getBoundingClientRect(); return {X: r.left + r.width / 2, Y: r.top + r.height / 2}; })()`, &handle)
	mustTap(t, ownerPage, handle.X, handle.Y)
	ownerPage.MustWaitTrue(t, pageChangeTimeout, "a tap on the handle opening the toolbar, within the phone's width",
		`document.body.dataset.bar === 'open' && [...document.querySelectorAll('#toolbar button:not([hidden])')].every((b) => { const r = b.getBoundingClientRect(); return r.left >= 0 && r.right <= innerWidth && r.height >= 44; })`)
	var view string
	ownerPage.MustEval(t, `document.getElementById('view').textContent`, &view)
	if view != "View: Scale" {
		t.Errorf("after the tap on the handle the view button reads %q, want View: Scale (the tap must not also press the button under it)", view)
	}
	ownerPage.MustWaitTrue(t, pageChangeTimeout, "the phone's toolbar slid in whole (its .15 s transition over)",
		`(() => { const r = document.getElementById('bar').getBoundingClientRect(); return r.top >= 0 && r.bottom <= innerHeight; })()`)
	ownerPage.MustSaveScreenshot(t, dir, "phone-toolbar")
	mustAxe(t, ownerPage, "phone toolbar")

	// The on-screen keyboard: its button focuses the page's text field, and
	// what the device's keyboard types there reaches the session.
	// The page must be connected (keys typed while it reconnects are
	// dropped, as they should be), and the text field must have the focus.
	ownerPage.MustWaitTrue(t, pageConnectTimeout, "the owner's page connected before typing on the phone",
		`window.berthPage && berthPage.state === 'connected'`)
	ownerPage.MustWaitTrue(t, pageChangeTimeout, "the Keyboard button focusing the page's text field",
		`(() => { const b = document.getElementById('keyboard'); if (b.hidden || b.disabled) return false;
		  if (!document.activeElement || document.activeElement.id !== 'touch-input') b.click();
		  return document.activeElement && document.activeElement.id === 'touch-input'; })()`)
	phoneMarker := fmt.Sprintf("phone-%d", time.Now().UnixNano()%1000000)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := ownerPage.Call(ctx, "Input.insertText", map[string]any{"text": phoneMarker}, nil); err != nil {
		t.Fatal(err)
	}
	ownerPage.MustTapKey(t, "Enter", 13)
	poll.Until(t, pageChangeTimeout, "the text typed on the phone's keyboard in "+typed, func() bool {
		b, _ := os.ReadFile(typed)
		return strings.Contains(string(b), phoneMarker+"\n")
	})

	// Full screen: a real click on the toolbar's button (a user gesture,
	// which the Fullscreen API requires) makes the page full screen, and
	// another click leaves it.
	bringToFront(t, viewerPage)
	clickFullScreen := func() {
		t.Helper()
		viewerPage.MustEval(t, `(() => { if (document.body.dataset.bar !== 'open') document.getElementById('handle').click(); return true; })()`, nil)
		viewerPage.MustWaitTrue(t, pageChangeTimeout, "the viewer's toolbar open and in view",
			`document.body.dataset.bar === 'open' && document.getElementById('fullscreen').getBoundingClientRect().top >= 0`)
		var b struct{ X, Y float64 }
		viewerPage.MustEval(t, `(() => { const r = document.getElementById('fullscreen').getBoundingClientRect(); return {X: r.left + r.width / 2, Y: r.top + r.height / 2}; })()`, &b)
		viewerPage.MustClick(t, b.X, b.Y)
	}
	clickFullScreen()
	viewerPage.MustWaitTrue(t, pageChangeTimeout, "the page full screen after a click on Full screen",
		`document.fullscreenElement !== null && document.getElementById('fullscreen').getAttribute('aria-pressed') === 'true'`)
	viewerPage.MustSaveScreenshot(t, dir, "viewer-fullscreen")
	clickFullScreen()
	viewerPage.MustWaitTrue(t, pageChangeTimeout, "the page out of full screen after a second click",
		`document.fullscreenElement === null && document.getElementById('fullscreen').getAttribute('aria-pressed') === 'false'`)

	checkCSP(t, ownerPage, "owner")
	checkCSP(t, viewerPage, "viewer")
}

// mustTap taps the touch screen at a point of the page.
func mustTap(t *testing.T, page *Page, x, y float64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	for _, typ := range []string{"touchStart", "touchEnd"} {
		pts := []map[string]any{{"x": x, "y": y}}
		if typ == "touchEnd" {
			pts = []map[string]any{}
		}
		if err := page.Call(ctx, "Input.dispatchTouchEvent", map[string]any{"type": typ, "touchPoints": pts}, nil); err != nil {
			t.Fatal(err)
		}
	}
}

// bringToFront makes page the browser's active tab.
func bringToFront(t *testing.T, page *Page) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := page.Call(ctx, "Page.bringToFront", nil, nil); err != nil {
		t.Fatal(err)
	}
}

// TestE2E_Page_Files: the files panel lists the session's storage root,
// uploads a file picked in the page with progress (it lands in the storage
// root, the owner's, byte for byte) and downloads it back; a user with
// file-download only sees the upload disabled, with the reason, and can
// download.
func TestE2E_Page_Files(t *testing.T) {
	skipWithoutBrowser(t)
	e := MustStartEnv(t)
	owner, other := user2, user1
	uid, home := mustUser(t, owner)
	s, _ := mustCreatePageSession(t, e, owner, permissions("%owner% allow builtin", other+" allow display file-download"),
		func(r *api.CreateSessionRequest) { r.StorageRoot = "%home%" })
	browser := mustStartPageBrowser(t)
	dir := artifactDir(t)

	name := fmt.Sprintf("page-upload-%d.bin", time.Now().UnixNano())
	data := make([]byte, 6<<20)
	rand.Read(data)
	local := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(local, data, 0o644); err != nil {
		t.Fatal(err)
	}
	stored := filepath.Join(home, name)
	t.Cleanup(func() { os.Remove(stored) })
	sum := sha256.Sum256(data)

	ownerPage := mustOpenPage(t, e, browser, s.Id, owner)
	openFiles := `(() => { document.getElementById('handle').click(); document.getElementById('files-toggle').click(); return true; })()`
	ownerPage.MustEval(t, openFiles, nil)
	ownerPage.MustWaitTrue(t, pageChangeTimeout, "the owner's files panel listing the storage root",
		`document.getElementById('files-path').textContent === 'Storage folder' && document.querySelectorAll('#files-list tr').length > 0 && !document.getElementById('files-input').disabled`)
	ownerPage.MustSetInputFiles(t, "#files-input", local)
	linkJS := `[...document.querySelectorAll('#files-list a')].find((a) => a.textContent === ` + jsString(name) + `)`
	ownerPage.MustWaitTrue(t, pageChangeTimeout, "the uploaded file listed with a download link", `!!`+linkJS)
	ownerPage.MustSaveScreenshot(t, dir, "owner-files")
	var up struct {
		Name          string
		Loaded, Total int
	}
	ownerPage.MustEval(t, `berthPage.upload`, &up)
	if up.Name != name || up.Total != len(data) || up.Loaded != len(data) {
		t.Errorf("upload progress %+v, want %s at %d of %d bytes", up, name, len(data), len(data))
	}
	got, err := os.ReadFile(stored)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the storage root's %s: %d bytes (%v), want the %d uploaded", stored, len(got), err, len(data))
	}
	if fi, err := os.Stat(stored); err == nil && int(fi.Sys().(*syscall.Stat_t).Uid) != uid {
		t.Errorf("%s is owned by uid %d, want the session owner's %d", stored, fi.Sys().(*syscall.Stat_t).Uid, uid)
	}

	// The same name again, without "Replace existing files": the panel
	// says it exists without sending the file (a large body the gateway
	// refuses early can end the connection before the browser reads why),
	// and the stored file is unchanged.
	uploadsJS := `performance.getEntriesByType('resource').filter((e) => e.name.includes('/files/upload')).length`
	var uploadsBefore, uploadsAfter int
	ownerPage.MustEval(t, uploadsJS, &uploadsBefore)
	ownerPage.MustSetInputFiles(t, "#files-input", local)
	ownerPage.MustWaitTrue(t, pageChangeTimeout, "the panel saying the file exists already",
		`/exists already/.test(document.getElementById('files-note').textContent)`)
	ownerPage.MustEval(t, uploadsJS, &uploadsAfter)
	if uploadsAfter != uploadsBefore {
		t.Errorf("the panel sent %d upload(s) of a name the folder holds; want none without Replace existing files", uploadsAfter-uploadsBefore)
	}
	if got, err := os.ReadFile(stored); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("after the refused second upload the storage root's %s holds %d bytes (%v), want the first upload's %d", stored, len(got), err, len(data))
	}

	// The file's link downloads it back.
	digestJS := func(link string) string {
		return `fetch(` + link + `.href, {credentials: 'omit'}).then((r) => r.ok ? r.arrayBuffer() : Promise.reject(new Error(r.status)))
		  .then((b) => crypto.subtle.digest('SHA-256', b)).then((h) => [...new Uint8Array(h)].map((x) => x.toString(16).padStart(2, '0')).join(''))`
	}
	var digest string
	ownerPage.MustEval(t, digestJS(linkJS), &digest)
	if digest != hex.EncodeToString(sum[:]) {
		t.Errorf("the download's SHA-256 %s, want the upload's %x", digest, sum)
	}

	// file-download only: upload disabled with the reason; downloads work.
	otherPage := mustOpenPage(t, e, browser, s.Id, other)
	bringToFront(t, otherPage)
	otherPage.MustEval(t, openFiles, nil)
	otherPage.MustWaitTrue(t, pageChangeTimeout, "the other user's files panel listing the file, upload disabled with the reason",
		`!!`+linkJS+` && document.getElementById('files-input').disabled && /file-upload/.test(document.getElementById('files-note').textContent)`)
	otherPage.MustSaveScreenshot(t, dir, "download-only-files")
	otherPage.MustEval(t, digestJS(linkJS), &digest)
	if digest != hex.EncodeToString(sum[:]) {
		t.Errorf("the other user's download's SHA-256 %s, want %x", digest, sum)
	}
	checkCSP(t, ownerPage, "owner")
	checkCSP(t, otherPage, other)
}

// mustRecordCSPViolations makes the page record the Content Security Policy
// violations of every document it loads (window.__csp); checkCSP reads
// them.
func mustRecordCSPViolations(t *testing.T, page *Page) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	src := `window.__csp = []; document.addEventListener('securitypolicyviolation', (e) => window.__csp.push(e.effectiveDirective + ' blocked ' + (e.blockedURI || 'inline') + ' at ' + e.sourceFile + ':' + e.lineNumber));`
	if err := page.Call(ctx, "Page.addScriptToEvaluateOnNewDocument", map[string]any{"source": src}, nil); err != nil {
		t.Fatal(err)
	}
}

// checkCSP fails the test if the page's policy blocked anything: the page
// and noVNC must work within it.
func checkCSP(t *testing.T, page *Page, label string) {
	t.Helper()
	var v []string
	page.MustEval(t, `window.__csp || []`, &v)
	for _, x := range v {
		t.Errorf("%s: the page's Content Security Policy blocked: %s", label, x)
	}
}
