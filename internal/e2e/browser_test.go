package e2e

import (
	"bytes"
	"context"
	"image"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/poll"
)

// typedText is what TestE2E_Browser types into the session.
const typedText = "berth-e2e"

// pageState is what the session page shows about its connection: the
// gateway's page sets body[data-state] to "connected" on noVNC's connect
// event and shows problems in #status; lit counts near-white pixels of a
// sample of the noVNC canvas (the session's xterm).
type pageState struct {
	State  string `json:"state"`
	Status string `json:"status"`
	Canvas bool   `json:"canvas"`
	W      int    `json:"w"`
	H      int    `json:"h"`
	RFB    string `json:"rfb"`
	Lit    int    `json:"lit"`
	X, Y   float64
	CW, CH float64
}

const pageStateJS = `(() => {
  const c = document.querySelector('#screen canvas');
  const st = document.getElementById('status');
  const out = {state: document.body ? (document.body.dataset.state || '') : '',
    status: st && !st.hidden ? st.textContent : '', canvas: !!c, w: 0, h: 0,
    rfb: window.rfb ? String(window.rfb._rfbConnectionState) : '', lit: 0, X: 0, Y: 0, CW: 0, CH: 0};
  if (c && c.width > 0 && c.height > 0) {
    out.w = c.width; out.h = c.height;
    const r = c.getBoundingClientRect();
    out.X = r.left; out.Y = r.top; out.CW = r.width; out.CH = r.height;
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    for (let i = 0; i < d.length; i += 4 * 61) { if (d[i] > 200 && d[i+1] > 200 && d[i+2] > 200) out.lit++; }
  }
  return out;
})()`

// TestE2E_Browser opens a session's connection URL in headless Chromium,
// driven through the DevTools protocol (acceptance 2 of issue 3): the noVNC
// canvas connects and shows the desktop, and text typed in the browser
// reaches a program in the session.
func TestE2E_Browser(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping the headless Chromium test")
	}
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Skipf("SKIPPING the browser test: %s is not installed (apt-get install chromium)", chromiumPath)
	}
	e := MustStartEnv(t)
	_, home := mustUser(t, user2)
	typed := filepath.Join(home, "typed.txt")
	os.Remove(typed)
	s := e.MustCreate(t, api.CreateSessionRequest{Name: "e2e browser", Owner: user2, Type: api.TypeVirtual, AutorunFile: "typing.sh"})[0]
	e.MustWaitState(t, s.Id, api.StateReady, readyTimeout)
	d := e.MustConnectionData(t, s.Id, user2)
	u := e.LocalURL(t, d)

	browser := MustStartChromium(t)
	page := browser.MustNewPage(t)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("page console and exceptions:\n%s", browser.Events())
		}
	})
	t0 := time.Now()
	page.MustNavigate(t, u)

	// The canvas connects and shows the session's xterm (white).
	var st pageState
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := page.Eval(ctx, pageStateJS, &st)
		cancel()
		if err != nil {
			t.Fatalf("read the page's state: %v", err)
		}
		if st.State == "connected" && st.Canvas && st.W > 0 && st.Lit > 50 {
			break
		}
		if st.State == "disconnected" || (st.Status != "" && st.Status != "Connecting…") {
			t.Fatalf("the session page did not connect: state %q, status %q", st.State, st.Status)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the session page did not show the desktop within 20 s: state %q (want connected), status %q, canvas %v %dx%d, noVNC %q, %d lit pixels sampled (want > 50)",
				st.State, st.Status, st.Canvas, st.W, st.H, st.RFB, st.Lit)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("noVNC connected and drew the desktop (%dx%d canvas) %s after navigation", st.W, st.H, time.Since(t0).Round(time.Millisecond))
	if st.RFB != "connected" {
		t.Errorf("the page says connected, but noVNC's connection state is %q", st.RFB)
	}
	if st.W != 1920 || st.H != 1080 {
		t.Errorf("noVNC canvas is %dx%d, want the session's 1920x1080", st.W, st.H)
	}

	// The broker counts the browser's connection.
	poll.Until(t, 10*time.Second, "NumOfConnections 1 while the browser is connected", func() bool {
		got, err := e.Describe(t, s.Id)
		return err == nil && got.NumOfConnections == 1
	})

	// Click into the xterm (the middle of the canvas) and type.
	page.MustClick(t, st.X+st.CW/2, st.Y+st.CH/2)
	page.MustType(t, typedText+"\n")
	var got []byte
	deadline = time.Now().Add(15 * time.Second)
	for {
		got, _ = os.ReadFile(typed)
		if strings.Contains(string(got), typedText+"\n") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s holds %q 15 s after typing %q and Enter in the browser, want the typed line", typed, got, typedText)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("typed text reached the session: %s holds %q", typed, got)

	// A screenshot of the page shows the desktop.
	dir := artifactDir(t)
	shot := page.MustSaveScreenshot(t, dir, "browser")
	path := filepath.Join(dir, "browser.png")
	img, err := png.Decode(bytes.NewReader(shot))
	if err != nil {
		t.Fatalf("Page.captureScreenshot is not a PNG: %v", err)
	}
	if blank(img) {
		t.Errorf("the browser's screenshot %s is blank", path)
	}
	// The harness runs openbox (desktop_command), so the session's xterm
	// (white, see testdata/autorun/typing.sh) is what lights the screen.
	if f := whiteFraction(img); f < 0.05 {
		t.Errorf("only %.1f%% of the browser's screenshot %s is near-white, want the session's xterm (> 5%%)", 100*f, path)
	}
	t.Logf("browser screenshot saved as %s (%v)", path, img.Bounds().Size())
}

// whiteFraction returns the share of near-white pixels of img.
func whiteFraction(img image.Image) float64 {
	b := img.Bounds()
	n := 0
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, _ := img.At(x, y).RGBA()
			if r > 0xc800 && g > 0xc800 && bl > 0xc800 {
				n++
			}
		}
	}
	return float64(n) / float64(b.Dx()*b.Dy())
}
