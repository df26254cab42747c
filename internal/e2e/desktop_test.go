package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/poll"
)

// desktopTerminalScript is make run's autorun program (scripts/run.sh
// writes the same into its autorun folder): the host's terminal.
const desktopTerminalScript = "#!/bin/sh\n# Opens a terminal on the new desktop (berth quick start).\nexec x-terminal-emulator\n"

// desktopTypedFile is the file the command typed into the terminal creates
// in the owner's home (the terminal starts there).
const desktopTypedFile = "berth-desktop-typed"

// TestE2E_Desktop is acceptance 1 of issue 15: a make run-style session
// (the host's default desktop, XFCE where test.sh installed it, plus make
// run's terminal autorun and a StorageRoot) seen through the gateway's
// session page in headless Chromium. The first screenshots show a desktop
// with a panel and a terminal, judged on pixels only (desktopView), and a
// command typed in the browser shows in the terminal and runs in the
// owner's shell.
func TestE2E_Desktop(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping the desktop browser test")
	}
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Skipf("SKIPPING the desktop test: %s is not installed (apt-get install chromium)", chromiumPath)
	}
	if sm, err := filepath.EvalSymlinks("/usr/bin/x-session-manager"); err != nil || strings.HasPrefix(filepath.Base(sm), "openbox") {
		t.Skipf("SKIPPING the desktop test: no desktop environment (x-session-manager: %q; scripts/test.sh installs XFCE)", sm)
	}
	e := MustStartEnvWith(t, EnvOptions{HostDesktop: true})
	script := filepath.Join(folders, "autorun", "desktop-terminal.sh")
	if err := os.WriteFile(script, []byte(desktopTerminalScript), 0o755); err != nil {
		t.Fatal(err)
	}
	_, home := mustUser(t, user1)
	typed := filepath.Join(home, desktopTypedFile)
	os.Remove(typed)
	t.Cleanup(func() { os.Remove(typed) })
	s := e.MustCreate(t, api.CreateSessionRequest{Name: "e2e desktop", Owner: user1, Type: api.TypeVirtual,
		AutorunFile: "desktop-terminal.sh", StorageRoot: "%home%"})[0]
	e.MustWaitState(t, s.Id, api.StateReady, readyTimeout)
	u := e.LocalURL(t, e.MustConnectionData(t, s.Id, user1))

	browser := MustStartChromium(t)
	page := browser.MustNewPage(t)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("page console and exceptions:\n%s", browser.Events())
		}
	})
	dir := desktopArtifactDir(t)
	page.MustNavigate(t, u)

	// Screenshots of the page until one shows the desktop: the first is kept
	// whatever it shows, the one that passes too. The desktop draws within
	// seconds of READY; 45 s covers XFCE's first start for a new user on a
	// busy host.
	var v desktopView
	var shot []byte
	n := 0
	last := "no screenshot yet"
	ok := desktopPoll(45*time.Second, func() bool {
		var err error
		if shot, err = desktopScreenshot(page); err != nil {
			last = err.Error() // the page is still loading
			return false
		}
		n++
		if n == 1 {
			desktopSave(t, dir, "first", shot)
		}
		v, err = desktopAnalyse(t, page, shot)
		if err != nil {
			last = err.Error()
			return false
		}
		last = v.String()
		return v.panel && v.terminal
	})
	desktopSave(t, dir, "desktop", shot)
	if !ok {
		t.Fatalf("no screenshot within 45 s showed a desktop with a panel and a terminal (%d taken; the last: %s; saved in %s)", n, last, dir)
	}
	t.Logf("screenshot %d shows the desktop: %s", n, v)

	// Type a command into the terminal (clicked into first: the middle of
	// its dark area), check that it shows there, then run it.
	cx, cy := v.pagePoint((v.term.Min.X+v.term.Max.X)/2, (v.term.Min.Y+v.term.Max.Y)/2)
	page.MustClick(t, cx, cy)
	before := v.termLight
	desktopType(t, page, "touch "+desktopTypedFile)
	var after desktopView
	ok = desktopPoll(15*time.Second, func() bool {
		var err error
		if shot, err = desktopScreenshot(page); err != nil {
			return false
		}
		a, err := desktopAnalyse(t, page, shot)
		if err != nil {
			return false
		}
		// The same terminal rectangle, before and after: the echoed command
		// adds light pixels (its glyphs) to it.
		after = a
		after.termLight = a.lightIn(v.termArea())
		return after.termLight >= before+desktopMinTyped
	})
	desktopSave(t, dir, "typing", shot)
	if !ok {
		t.Fatalf("the typed command did not show in the terminal within 15 s: %d light pixels in its area before, %d after (want %d more)", before, after.termLight, desktopMinTyped)
	}
	t.Logf("the typed command shows in the terminal: %d light pixels in its area before, %d after", before, after.termLight)
	desktopType(t, page, "\n")
	poll.Until(t, 15*time.Second, "the typed command to create "+typed, func() bool {
		_, err := os.Stat(typed)
		return err == nil
	})
	if shot, err := desktopScreenshot(page); err == nil {
		desktopSave(t, dir, "typed", shot)
	}
	// The owner's shell ran it: the file is theirs.
	fi, err := os.Stat(typed)
	if err != nil {
		t.Fatal(err)
	}
	if uid, _ := mustUser(t, user1); int(fi.Sys().(*syscall.Stat_t).Uid) != uid {
		t.Errorf("%s belongs to uid %d, want the owner's %d", typed, fi.Sys().(*syscall.Stat_t).Uid, uid)
	}
}

// desktopMinTyped is how many more light pixels the terminal's area must
// show once the command is typed: its 25 glyphs draw several hundred at the
// page's scale, a blinking cursor about 60.
const desktopMinTyped = 100

// desktopView is what a screenshot of the session page shows of the
// desktop, judged on pixels within the noVNC canvas (the page may add bars
// or a toolbar around it, which are not looked at).
type desktopView struct {
	canvas image.Rectangle // the canvas's visible part, in screenshot pixels
	scale  float64         // screenshot pixels per desktop pixel
	origin image.Point     // the desktop's (0,0) in screenshot pixels
	img    image.Image

	// panel: a band of at least desktopPanelRows desktop rows at the top or
	// bottom edge of the desktop, each at least 40 % one colour that is not
	// black, and ending within 60 rows of the edge: a desktop panel (XFCE's,
	// tint2, ...). A black screen, a wallpaper or a plain background has no
	// such band. (40 %: the page's toolbar or its handle may cover part of
	// the panel, and its buttons and clock do.)
	panel     bool
	panelRows int
	panelAt   string
	// terminal: a rectangle of near-black pixels (a terminal's background)
	// at least desktopTermW×desktopTermH desktop pixels, and no more than
	// 75 % of the desktop either way (a black desktop is not a terminal).
	terminal  bool
	term      image.Rectangle // in screenshot pixels
	termLight int             // light pixels in termArea
}

// Thresholds of desktopView, in desktop pixels.
const (
	desktopPanelRows = 16
	desktopTermW     = 300
	desktopTermH     = 150
)

// String sums the view up for the test's log.
func (v desktopView) String() string {
	return fmt.Sprintf("canvas %v at scale %.2f; panel %v (%d rows at the %s); terminal %v (%v, %d light pixels)",
		v.canvas, v.scale, v.panel, v.panelRows, v.panelAt, v.terminal, v.term, v.termLight)
}

// pagePoint returns the page coordinates of a screenshot point (the page
// has one device pixel per CSS pixel).
func (v desktopView) pagePoint(x, y int) (float64, float64) { return float64(x), float64(y) }

// termArea is the terminal rectangle grown upwards and leftwards by 40
// desktop pixels: the prompt line, which may lie outside the largest dark
// rectangle.
func (v desktopView) termArea() image.Rectangle {
	g := int(40 * v.scale)
	return image.Rect(v.term.Min.X-g, v.term.Min.Y-g, v.term.Max.X, v.term.Max.Y).Intersect(v.canvas)
}

// lightIn counts light pixels (each channel > 150) in r.
func (v desktopView) lightIn(r image.Rectangle) int {
	n := 0
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			c := desktopRGB(v.img, x, y)
			if c[0] > 150 && c[1] > 150 && c[2] > 150 {
				n++
			}
		}
	}
	return n
}

// desktopCanvasJS returns the noVNC canvas's place in the page and its size
// in desktop pixels; it only locates the desktop in the screenshot.
const desktopCanvasJS = `(() => {
  let best = null;
  for (const c of document.querySelectorAll('canvas')) {
    if (!best || c.width * c.height > best.width * best.height) best = c;
  }
  if (!best || !best.width) return null;
  const r = best.getBoundingClientRect();
  return {x: r.left, y: r.top, w: r.width, h: r.height, cw: best.width, ch: best.height,
    vw: window.innerWidth, vh: window.innerHeight};
})()`

// desktopAnalyse judges a screenshot of the page.
func desktopAnalyse(t *testing.T, page *Page, shot []byte) (desktopView, error) {
	var c *struct{ X, Y, W, H, CW, CH, VW, VH float64 }
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	err := page.Eval(ctx, desktopCanvasJS, &c)
	cancel()
	if err != nil {
		return desktopView{}, err
	}
	if c == nil || c.W < 1 || c.CW < 1 {
		return desktopView{}, fmt.Errorf("no canvas drawn yet")
	}
	img, err := png.Decode(bytes.NewReader(shot))
	if err != nil {
		t.Fatalf("Page.captureScreenshot is not a PNG: %v", err)
	}
	return desktopJudge(img, c.X, c.Y, c.W, c.H, c.CW, c.CH)
}

// desktopJudge judges img, a screenshot whose desktop (cw×ch desktop
// pixels) is drawn at (x, y), w×h screenshot pixels.
func desktopJudge(img image.Image, x, y, w, h, cw, ch float64) (desktopView, error) {
	v := desktopView{img: img, scale: w / cw, origin: image.Pt(int(x), int(y))}
	v.canvas = image.Rect(int(x+0.5), int(y+0.5), int(x+w), int(y+h)).Intersect(img.Bounds())
	if v.canvas.Dx() < 100 || v.canvas.Dy() < 100 {
		return v, fmt.Errorf("the canvas's visible part %v is too small", v.canvas)
	}
	v.findPanel(ch)
	v.findTerminal()
	if v.terminal {
		v.termLight = v.lightIn(v.termArea())
	}
	return v, nil
}

// TestDesktopJudge: the pixel criteria of TestE2E_Desktop on made-up
// screenshots (1280×720 of a 1920×1080 desktop, as the page shows it): a
// panel and a terminal pass; the black screen of issue 15, a plain
// background, a wallpaper without a panel, a light terminal (an xterm) and a
// panel alone do not.
func TestDesktopJudge(t *testing.T) {
	const w, h = 1280, 720
	navy := color.RGBA{30, 38, 56, 255}
	grey := color.RGBA{240, 240, 240, 255}
	paint := func(img *image.RGBA, r image.Rectangle, c color.Color) {
		draw.Draw(img, r, image.NewUniform(c), image.Point{}, draw.Src)
	}
	// wallpaper draws light lines every 20 pixels on navy, as XFCE's does.
	wallpaper := func(img *image.RGBA) {
		paint(img, img.Bounds(), navy)
		for y := 0; y < h; y += 20 {
			for x := 0; x < w; x++ {
				img.Set(x, y+(x/7)%20, color.RGBA{200, 160, 90, 255})
			}
		}
	}
	panel := func(img *image.RGBA) {
		paint(img, image.Rect(0, 0, w, 18), grey)
		paint(img, image.Rect(4, 3, 60, 15), color.RGBA{40, 40, 40, 255}) // a button
		paint(img, image.Rect(600, 0, 700, 18), navy)                     // the page's handle
	}
	terminal := func(img *image.RGBA, bg color.Color) {
		paint(img, image.Rect(20, 30, 560, 60), grey) // title and menu bars
		paint(img, image.Rect(20, 60, 560, 360), bg)
		paint(img, image.Rect(24, 64, 40, 76), color.RGBA{220, 220, 220, 255}) // the prompt
	}
	for _, c := range []struct {
		name                string
		draw                func(*image.RGBA)
		wantPanel, wantTerm bool
	}{
		{"desktop with panel and terminal", func(i *image.RGBA) { wallpaper(i); panel(i); terminal(i, color.Black) }, true, true},
		{"black screen", func(i *image.RGBA) { paint(i, i.Bounds(), color.Black) }, false, false},
		{"plain grey background", func(i *image.RGBA) { paint(i, i.Bounds(), grey) }, false, false},
		{"wallpaper only", wallpaper, false, false},
		{"xterm on black", func(i *image.RGBA) { paint(i, i.Bounds(), color.Black); terminal(i, color.White) }, false, false},
		{"panel without terminal", func(i *image.RGBA) { wallpaper(i); panel(i) }, true, false},
		{"panel at the bottom", func(i *image.RGBA) {
			wallpaper(i)
			paint(i, image.Rect(0, h-20, w, h), grey)
			terminal(i, color.Black)
		}, true, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			img := image.NewRGBA(image.Rect(0, 0, w, h))
			c.draw(img)
			v, err := desktopJudge(img, 0, 0, w, h, 1920, 1080)
			if err != nil {
				t.Fatal(err)
			}
			if v.panel != c.wantPanel || v.terminal != c.wantTerm {
				t.Errorf("panel %v, terminal %v; want %v, %v (%s)", v.panel, v.terminal, c.wantPanel, c.wantTerm, v)
			}
		})
	}
}

// desktopRGB returns a pixel's 8-bit channels.
func desktopRGB(img image.Image, x, y int) [3]int {
	r, g, b, _ := img.At(x, y).RGBA()
	return [3]int{int(r >> 8), int(g >> 8), int(b >> 8)}
}

// findPanel looks for the panel band at the desktop's top edge, then its
// bottom edge (where the canvas shows them).
func (v *desktopView) findPanel(desktopH float64) {
	minRows := max(int(desktopPanelRows*v.scale), 4)
	topVisible := v.canvas.Min.Y == v.origin.Y
	bottom := v.origin.Y + int(desktopH*v.scale)
	for _, edge := range []struct {
		name         string
		from, dir    int
		visible      bool
		rowsToSearch int
	}{
		{"top", v.canvas.Min.Y, 1, topVisible, int(60 * v.scale)},
		{"bottom", v.canvas.Max.Y - 1, -1, v.canvas.Max.Y >= bottom-1, int(60 * v.scale)},
	} {
		if !edge.visible {
			continue
		}
		// The band may start a row or two in (a border line), and must end
		// before the rows searched do.
		run, best := 0, 0
		for i := 0; i < edge.rowsToSearch; i++ {
			if v.panelRow(edge.from + edge.dir*i) {
				run++
			} else {
				best = max(best, run)
				run = 0
			}
		}
		if best >= minRows {
			v.panel, v.panelRows, v.panelAt = true, int(float64(best)/v.scale), edge.name
			return
		}
		if int(float64(best)/v.scale) > v.panelRows {
			v.panelRows, v.panelAt = int(float64(best)/v.scale), edge.name
		}
	}
}

// panelRow reports whether screenshot row y, across the canvas, is at
// least 40 % one colour (channels within 12) that is not black (brightness
// over 60 of 255).
func (v *desktopView) panelRow(y int) bool {
	if y < v.canvas.Min.Y || y >= v.canvas.Max.Y {
		return false
	}
	counts := map[[3]int]int{}
	for x := v.canvas.Min.X; x < v.canvas.Max.X; x++ {
		c := desktopRGB(v.img, x, y)
		counts[[3]int{c[0] / 8, c[1] / 8, c[2] / 8}]++
	}
	var mode [3]int
	for k, n := range counts {
		if n > counts[mode] {
			mode = k
		}
	}
	if (mode[0]+mode[1]+mode[2])*8/3 <= 60 {
		return false
	}
	near := 0
	for k, n := range counts {
		if desktopAbs(k[0]-mode[0]) <= 1 && desktopAbs(k[1]-mode[1]) <= 1 && desktopAbs(k[2]-mode[2]) <= 1 {
			near += n
		}
	}
	return near*5 >= v.canvas.Dx()*2
}

// desktopAbs returns |n|.
func desktopAbs(n int) int {
	if n < 0 {
		return -n
	}
	return n
}

// findTerminal finds the largest rectangle of near-black pixels (each
// channel ≤ 24) in the canvas (the maximal rectangle in a histogram, row by
// row) and judges it a terminal's background when it is large enough and
// not the whole desktop.
func (v *desktopView) findTerminal() {
	r := v.canvas
	w := r.Dx()
	heights := make([]int, w+1)
	var best image.Rectangle
	type bar struct{ x, h int }
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for i := 0; i < w; i++ {
			c := desktopRGB(v.img, r.Min.X+i, y)
			if c[0] <= 24 && c[1] <= 24 && c[2] <= 24 {
				heights[i]++
			} else {
				heights[i] = 0
			}
		}
		heights[w] = 0
		var stack []bar
		for i := 0; i <= w; i++ {
			start := i
			for len(stack) > 0 && stack[len(stack)-1].h >= heights[i] {
				b := stack[len(stack)-1]
				stack = stack[:len(stack)-1]
				if area := b.h * (i - b.x); area > best.Dx()*best.Dy() {
					best = image.Rect(r.Min.X+b.x, y-b.h+1, r.Min.X+i, y+1)
				}
				start = b.x
			}
			stack = append(stack, bar{start, heights[i]})
		}
	}
	v.term = best
	dw, dh := float64(best.Dx())/v.scale, float64(best.Dy())/v.scale
	fullW, fullH := float64(r.Dx())/v.scale, float64(r.Dy())/v.scale
	v.terminal = dw >= desktopTermW && dh >= desktopTermH && dw <= 0.75*fullW && dh <= 0.75*fullH
}

// desktopKeys are the keys desktopType types (a US keyboard).
var desktopKeys = map[rune]key{
	' ':  {key: " ", code: "Space", text: " ", vk: 32},
	'\n': {key: "Enter", code: "Enter", text: "\r", vk: 13},
}

// desktopType types s (a-z, 0-9, '-', space, newline) into the page.
func desktopType(t *testing.T, page *Page, s string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	for _, r := range s {
		k, ok := desktopKeys[r]
		if !ok {
			var err error
			if k, err = keyFor(r); err != nil {
				t.Fatal(err)
			}
		}
		down := map[string]any{"type": "keyDown", "key": k.key, "code": k.code, "text": k.text, "unmodifiedText": k.text,
			"windowsVirtualKeyCode": k.vk, "nativeVirtualKeyCode": k.vk}
		up := map[string]any{"type": "keyUp", "key": k.key, "code": k.code, "windowsVirtualKeyCode": k.vk, "nativeVirtualKeyCode": k.vk}
		for _, ev := range []map[string]any{down, up} {
			if err := page.Call(ctx, "Input.dispatchKeyEvent", ev, nil); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// desktopArtifactDir returns the folder for the test's screenshots:
// $BERTH_TEST_ARTIFACTS/<test name> when set (CI keeps it), else a
// temporary folder of the test.
func desktopArtifactDir(t *testing.T) string {
	dir := t.TempDir()
	if root := os.Getenv("BERTH_TEST_ARTIFACTS"); root != "" {
		dir = filepath.Join(root, regexp.MustCompile(`[^A-Za-z0-9_.-]+`).ReplaceAllString(t.Name(), "_"))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("screenshots go to %s", dir)
	return dir
}

// desktopSave writes a screenshot as dir/name.png.
func desktopSave(t *testing.T, dir, name string, png []byte) {
	p := filepath.Join(dir, name+".png")
	if err := os.WriteFile(p, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("saved %s", p)
}

// desktopPoll calls cond every 250 ms until it returns true (true) or
// timeout passes (false), for waits whose failure the caller explains.
func desktopPoll(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(250 * time.Millisecond)
	}
	return true
}

// desktopScreenshot captures the page as PNG; unlike MustScreenshot it
// returns an error, as while the page loads.
func desktopScreenshot(page *Page) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var r struct {
		Data string `json:"data"`
	}
	if err := page.Call(ctx, "Page.captureScreenshot", map[string]any{"format": "png"}, &r); err != nil {
		return nil, err
	}
	return base64.StdEncoding.DecodeString(r.Data)
}
