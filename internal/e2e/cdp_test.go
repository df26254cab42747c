package e2e

import (
	"bufio"
	"context"
	"encoding/base64"
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

	"github.com/coder/websocket"

	"github.com/berth-dev/berth/internal/poll"
)

// chromiumPath is where Debian's chromium package puts the browser.
const chromiumPath = "/usr/bin/chromium"

// Chromium is a headless Chromium driven over the Chrome DevTools Protocol
// (flat sessions over the browser's WebSocket). Create it with
// MustStartChromium; it is killed (its whole process group) at cleanup.
type Chromium struct {
	cmd  *exec.Cmd
	conn *websocket.Conn
	log  string // Chromium's stderr

	mu      sync.Mutex
	nextID  int64
	pending map[int64]chan cdpMessage // guarded by mu
	events  []string                  // console messages and exceptions; guarded by mu
	readErr error                     // why the read loop ended; guarded by mu
}

// cdpMessage is one DevTools protocol message: a command, its answer or an
// event.
type cdpMessage struct {
	ID        int64           `json:"id,omitempty"`
	SessionID string          `json:"sessionId,omitempty"`
	Method    string          `json:"method,omitempty"`
	Params    json.RawMessage `json:"params,omitempty"`
	Result    json.RawMessage `json:"result,omitempty"`
	Error     *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error,omitempty"`
}

var devToolsLine = regexp.MustCompile(`DevTools listening on (ws://\S+)`)

// MustStartChromium starts headless Chromium with its own profile and a
// DevTools port it picks, and connects to the browser's DevTools WebSocket
// (read from the "DevTools listening on ws://..." line on stderr).
func MustStartChromium(tb testing.TB) *Chromium {
	tb.Helper()
	dir := tb.TempDir()
	c := &Chromium{pending: map[int64]chan cdpMessage{}, log: filepath.Join(dir, "chromium.log")}
	pr, pw, err := os.Pipe()
	if err != nil {
		tb.Fatal(err)
	}
	c.cmd = exec.Command(chromiumPath,
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-dev-shm-usage", "--window-size=1280,800",
		"--user-data-dir="+filepath.Join(dir, "profile"), "--ignore-certificate-errors",
		"--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", "about:blank")
	c.cmd.Stdout, c.cmd.Stderr = pw, pw
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := c.cmd.Start(); err != nil {
		pw.Close()
		pr.Close()
		tb.Fatalf("start %s: %v", chromiumPath, err)
	}
	pw.Close()
	exited := make(chan struct{})
	go func() {
		c.cmd.Wait()
		close(exited)
	}()
	tb.Cleanup(func() {
		// The whole group: Chromium's renderer, GPU and utility processes.
		syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			tb.Errorf("Chromium (pid %d) did not end within 10 s of SIGKILL", c.cmd.Process.Pid)
		}
		if tb.Failed() {
			tb.Logf("Chromium's stderr (%s):\n%s", c.log, logTail(c.log, 30))
		}
	})

	wsURL := make(chan string, 1)
	go func() {
		f, err := os.Create(c.log)
		if err != nil {
			f = nil
		}
		defer pr.Close()
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
		for sc.Scan() {
			if f != nil {
				fmt.Fprintln(f, sc.Text())
			}
			if m := devToolsLine.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case wsURL <- m[1]:
				default:
				}
			}
		}
		if f != nil {
			f.Close()
		}
	}()
	var u string
	select {
	case u = <-wsURL:
	case <-exited:
		tb.Fatalf("Chromium exited at start:\n%s", logTail(c.log, 30))
	case <-time.After(30 * time.Second):
		tb.Fatalf("Chromium printed no \"DevTools listening on\" line within 30 s:\n%s", logTail(c.log, 30))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, u, nil)
	if err != nil {
		tb.Fatalf("connect to Chromium's DevTools at %s: %v", u, err)
	}
	conn.SetReadLimit(64 << 20) // screenshots
	c.conn = conn
	tb.Cleanup(func() { conn.CloseNow() })
	go c.readLoop()
	return c
}

// readLoop delivers answers to their callers and keeps console messages.
func (c *Chromium) readLoop() {
	for {
		_, b, err := c.conn.Read(context.Background())
		if err != nil {
			c.mu.Lock()
			c.readErr = err
			for id, ch := range c.pending {
				close(ch)
				delete(c.pending, id)
			}
			c.mu.Unlock()
			return
		}
		var m cdpMessage
		if json.Unmarshal(b, &m) != nil {
			continue
		}
		if m.ID != 0 {
			c.mu.Lock()
			ch := c.pending[m.ID]
			delete(c.pending, m.ID)
			c.mu.Unlock()
			if ch != nil {
				ch <- m
			}
			continue
		}
		switch m.Method {
		case "Runtime.consoleAPICalled", "Runtime.exceptionThrown", "Log.entryAdded":
			c.mu.Lock()
			if len(c.events) < 200 {
				c.events = append(c.events, m.Method+" "+string(m.Params))
			}
			c.mu.Unlock()
		}
	}
}

// Call sends a command (to a page when sessionID is set) and decodes its
// result into result (when not nil).
func (c *Chromium) Call(ctx context.Context, sessionID, method string, params, result any) error {
	if params == nil {
		params = struct{}{}
	}
	p, err := json.Marshal(params)
	if err != nil {
		return err
	}
	ch := make(chan cdpMessage, 1)
	c.mu.Lock()
	if c.readErr != nil {
		err := c.readErr
		c.mu.Unlock()
		return fmt.Errorf("%s: the DevTools connection is gone: %w", method, err)
	}
	c.nextID++
	id := c.nextID
	c.pending[id] = ch
	c.mu.Unlock()
	b, _ := json.Marshal(cdpMessage{ID: id, SessionID: sessionID, Method: method, Params: p})
	if err := c.conn.Write(ctx, websocket.MessageText, b); err != nil {
		return fmt.Errorf("%s: %w", method, err)
	}
	select {
	case m, ok := <-ch:
		if !ok {
			return fmt.Errorf("%s: the DevTools connection closed", method)
		}
		if m.Error != nil {
			return fmt.Errorf("%s: %s (%d)", method, m.Error.Message, m.Error.Code)
		}
		if result != nil {
			return json.Unmarshal(m.Result, result)
		}
		return nil
	case <-ctx.Done():
		c.mu.Lock()
		delete(c.pending, id)
		c.mu.Unlock()
		return fmt.Errorf("%s: %w", method, ctx.Err())
	}
}

// Events returns the console messages and exceptions seen so far.
func (c *Chromium) Events() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.Join(c.events, "\n")
}

// Page is a browser tab attached with a flat DevTools session.
type Page struct {
	c       *Chromium
	session string
}

// MustNewPage opens a tab on about:blank and attaches to it, with the page
// and runtime domains enabled and focus emulated (a headless window never
// has the OS focus, and keyboard events need a focused page).
func (c *Chromium) MustNewPage(tb testing.TB) *Page {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var target struct {
		TargetID string `json:"targetId"`
	}
	if err := c.Call(ctx, "", "Target.createTarget", map[string]any{"url": "about:blank"}, &target); err != nil {
		tb.Fatal(err)
	}
	var att struct {
		SessionID string `json:"sessionId"`
	}
	if err := c.Call(ctx, "", "Target.attachToTarget", map[string]any{"targetId": target.TargetID, "flatten": true}, &att); err != nil {
		tb.Fatal(err)
	}
	p := &Page{c: c, session: att.SessionID}
	for _, m := range []string{"Page.enable", "Runtime.enable"} {
		if err := p.Call(ctx, m, nil, nil); err != nil {
			tb.Fatal(err)
		}
	}
	if err := p.Call(ctx, "Emulation.setFocusEmulationEnabled", map[string]any{"enabled": true}, nil); err != nil {
		tb.Fatal(err)
	}
	return p
}

// Call sends a command to the page.
func (p *Page) Call(ctx context.Context, method string, params, result any) error {
	return p.c.Call(ctx, p.session, method, params, result)
}

// MustNavigate loads url in the page.
func (p *Page) MustNavigate(tb testing.TB, url string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var nav struct {
		ErrorText string `json:"errorText"`
	}
	if err := p.Call(ctx, "Page.navigate", map[string]any{"url": url}, &nav); err != nil {
		tb.Fatal(err)
	}
	if nav.ErrorText != "" {
		tb.Fatalf("Chromium could not load %s: %s", redact(url), nav.ErrorText)
	}
}

// Eval evaluates a JavaScript expression in the page and decodes its value
// into out.
func (p *Page) Eval(ctx context.Context, expr string, out any) error {
	var r struct {
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		ExceptionDetails *struct {
			Text      string `json:"text"`
			Exception *struct {
				Description string `json:"description"`
			} `json:"exception"`
		} `json:"exceptionDetails"`
	}
	err := p.Call(ctx, "Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true, "awaitPromise": true}, &r)
	if err != nil {
		return err
	}
	if r.ExceptionDetails != nil {
		msg := r.ExceptionDetails.Text
		if r.ExceptionDetails.Exception != nil {
			msg += " " + r.ExceptionDetails.Exception.Description
		}
		return fmt.Errorf("evaluate %q: %s", expr, msg)
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(r.Result.Value, out)
}

// key describes one key for Input.dispatchKeyEvent.
type key struct {
	key, code, text string
	vk              int
}

// keyFor returns the key that types r on a US keyboard: a-z, 0-9, '-', '\n'.
func keyFor(r rune) (key, error) {
	switch {
	case r >= 'a' && r <= 'z':
		return key{key: string(r), code: "Key" + strings.ToUpper(string(r)), text: string(r), vk: int(r - 'a' + 'A')}, nil
	case r >= '0' && r <= '9':
		return key{key: string(r), code: "Digit" + string(r), text: string(r), vk: int(r)}, nil
	case r == '-':
		return key{key: "-", code: "Minus", text: "-", vk: 189}, nil
	case r == '\n':
		return key{key: "Enter", code: "Enter", text: "\r", vk: 13}, nil
	}
	return key{}, fmt.Errorf("no key for %q", r)
}

// MustType sends a key press and release for every character of s, as a
// user's keyboard does.
func (p *Page) MustType(tb testing.TB, s string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	for _, r := range s {
		k, err := keyFor(r)
		if err != nil {
			tb.Fatal(err)
		}
		down := map[string]any{"type": "keyDown", "key": k.key, "code": k.code, "text": k.text, "unmodifiedText": k.text,
			"windowsVirtualKeyCode": k.vk, "nativeVirtualKeyCode": k.vk}
		up := map[string]any{"type": "keyUp", "key": k.key, "code": k.code, "windowsVirtualKeyCode": k.vk, "nativeVirtualKeyCode": k.vk}
		for _, ev := range []map[string]any{down, up} {
			if err := p.Call(ctx, "Input.dispatchKeyEvent", ev, nil); err != nil {
				tb.Fatal(err)
			}
		}
	}
}

// MustClick clicks the left mouse button at a point of the page.
func (p *Page) MustClick(tb testing.TB, x, y float64) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	for _, typ := range []string{"mouseMoved", "mousePressed", "mouseReleased"} {
		ev := map[string]any{"type": typ, "x": x, "y": y}
		if typ != "mouseMoved" {
			ev["button"], ev["clickCount"] = "left", 1
		}
		if err := p.Call(ctx, "Input.dispatchMouseEvent", ev, nil); err != nil {
			tb.Fatal(err)
		}
	}
}

// MustScreenshot captures the page as PNG.
func (p *Page) MustScreenshot(tb testing.TB) []byte {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var r struct {
		Data string `json:"data"`
	}
	if err := p.Call(ctx, "Page.captureScreenshot", map[string]any{"format": "png"}, &r); err != nil {
		tb.Fatal(err)
	}
	b, err := base64.StdEncoding.DecodeString(r.Data)
	if err != nil {
		tb.Fatalf("Page.captureScreenshot data: %v", err)
	}
	return b
}

// artifactDir returns the folder where a test keeps its artifacts
// (screenshots): $BERTH_TEST_ARTIFACTS/<test name> when that is set (CI
// uploads it), else a temporary folder of the test. It logs the path once.
func artifactDir(tb testing.TB) string {
	tb.Helper()
	root := os.Getenv("BERTH_TEST_ARTIFACTS")
	if root == "" {
		return tb.TempDir()
	}
	dir := filepath.Join(root, strings.NewReplacer("/", "_", " ", "_").Replace(tb.Name()))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	return dir
}

// MustSaveScreenshot captures the page as PNG into dir/name.png, logs the
// path and returns the PNG.
func (p *Page) MustSaveScreenshot(tb testing.TB, dir, name string) []byte {
	tb.Helper()
	shot := p.MustScreenshot(tb)
	path := filepath.Join(dir, name+".png")
	if err := os.WriteFile(path, shot, 0o644); err != nil {
		tb.Fatal(err)
	}
	tb.Logf("screenshot %s", path)
	return shot
}

// MustSetViewport makes the page's viewport w×h CSS pixels, as a browser
// window of that size (Emulation.setDeviceMetricsOverride); mobile also
// emulates a phone's touch screen.
func (p *Page) MustSetViewport(tb testing.TB, w, h int, mobile bool) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := p.Call(ctx, "Emulation.setDeviceMetricsOverride", map[string]any{
		"width": w, "height": h, "deviceScaleFactor": 1, "mobile": mobile,
	}, nil); err != nil {
		tb.Fatal(err)
	}
	if err := p.Call(ctx, "Emulation.setTouchEmulationEnabled", map[string]any{"enabled": mobile, "maxTouchPoints": 5}, nil); err != nil {
		tb.Fatal(err)
	}
}

// MustEval evaluates expr in the page and decodes its value into out,
// failing the test on an error.
func (p *Page) MustEval(tb testing.TB, expr string, out any) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.Eval(ctx, expr, out); err != nil {
		tb.Fatal(err)
	}
}

// MustWaitTrue polls the JavaScript expression expr (a boolean) in the page
// until it is true, for up to timeout; what names it in the failure.
func (p *Page) MustWaitTrue(tb testing.TB, timeout time.Duration, what, expr string) {
	tb.Helper()
	last := ""
	poll.Until(tb, timeout, what, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var ok bool
		err := p.Eval(ctx, expr, &ok)
		if err != nil && err.Error() != last {
			last = err.Error()
			tb.Logf("waiting for %s: %v", what, err)
		}
		return err == nil && ok
	})
}

// MustTapKey presses and releases one named key (Input.dispatchKeyEvent's
// key and code, e.g. "F8", "Escape", "Tab") with its Windows key code.
func (p *Page) MustTapKey(tb testing.TB, name string, vk int) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	for _, typ := range []string{"rawKeyDown", "keyUp"} {
		ev := map[string]any{"type": typ, "key": name, "code": name, "windowsVirtualKeyCode": vk, "nativeVirtualKeyCode": vk}
		if err := p.Call(ctx, "Input.dispatchKeyEvent", ev, nil); err != nil {
			tb.Fatal(err)
		}
	}
}

// MustSetInputFiles picks files for the page's file input (CSS selector
// sel), as a user choosing them in the file dialog does: the input's change
// event fires.
func (p *Page) MustSetInputFiles(tb testing.TB, sel string, paths ...string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var r struct {
		Result struct {
			ObjectID string `json:"objectId"`
		} `json:"result"`
	}
	if err := p.Call(ctx, "Runtime.evaluate", map[string]any{"expression": "document.querySelector(" + strconv.Quote(sel) + ")"}, &r); err != nil {
		tb.Fatal(err)
	}
	if r.Result.ObjectID == "" {
		tb.Fatalf("no element %s in the page", sel)
	}
	if err := p.Call(ctx, "DOM.setFileInputFiles", map[string]any{"files": paths, "objectId": r.Result.ObjectID}, nil); err != nil {
		tb.Fatal(err)
	}
}
