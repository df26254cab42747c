package e2e

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
)

// ffProbeJS runs in the session page before the page's own scripts
// (Page.addScriptToEvaluateOnNewDocument) and records, in window.__ff and
// in milliseconds since the navigation started (performance.now()), when
// the WebSocket was created and opened, its first message, the page's
// connected state (body[data-state]), the first WebSocket message after it
// (the first FramebufferUpdate), and the first animation frame on which the
// noVNC canvas under #screen shows something that is not black ("frame";
// "painted" is the first with any pixel drawn). It then copies the
// Navigation and Resource Timing entries it needs.
const ffProbeJS = `(() => {
  if (window.top !== window || window.__ff) return;
  const ff = window.__ff = {};
  const now = () => performance.now();
  const WS = window.WebSocket;
  function Probe(...args) {
    const ws = new WS(...args);
    if (ff.wsCreate === undefined) ff.wsCreate = now();
    ws.addEventListener('open', () => { if (ff.wsOpen === undefined) ff.wsOpen = now(); });
    ws.addEventListener('message', () => {
      const t = now();
      if (ff.firstMsg === undefined) ff.firstMsg = t;
      if (ff.connected !== undefined && ff.firstUpdate === undefined) ff.firstUpdate = t;
    });
    return ws;
  }
  Probe.prototype = WS.prototype;
  Object.setPrototypeOf(Probe, WS);
  window.WebSocket = Probe;
  const state = () => {
    if (ff.connected === undefined && document.body && document.body.dataset.state === 'connected') ff.connected = now();
  };
  new MutationObserver(state).observe(document, {subtree: true, attributes: true, attributeFilter: ['data-state']});
  const small = document.createElement('canvas');
  small.width = 64; small.height = 36;
  const sctx = small.getContext('2d', {willReadFrequently: true});
  const collect = () => {
    const nav = performance.getEntriesByType('navigation')[0];
    if (nav) { ff.responseEnd = nav.responseEnd; ff.domContentLoaded = nav.domContentLoadedEventEnd; }
    const res = performance.getEntriesByType('resource');
    const info = res.find(e => e.name.includes('session-info'));
    if (info) { ff.infoStart = info.startTime; ff.infoEnd = info.responseEnd; }
    const mods = res.filter(e => e.name.includes('/novnc/'));
    ff.modules = mods.length;
    ff.modulesEnd = mods.length ? Math.max(...mods.map(e => e.responseEnd)) : 0;
    ff.origin = performance.timeOrigin;
  };
  const tick = () => {
    state();
    const c = document.querySelector('#screen canvas');
    if (c && c.width > 0 && c.height > 0) {
      sctx.clearRect(0, 0, 64, 36);
      sctx.drawImage(c, 0, 0, 64, 36);
      const d = sctx.getImageData(0, 0, 64, 36).data;
      let painted = false, lit = false;
      for (let i = 0; i < d.length; i += 4) {
        if (d[i+3] > 0) painted = true;
        if (d[i+3] > 0 && d[i] + d[i+1] + d[i+2] > 96) { lit = true; break; }
      }
      if (painted && ff.painted === undefined) ff.painted = now();
      if (lit) { ff.frame = now(); collect(); return; }
    }
    requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
})()`

// ffTimes is window.__ff: milliseconds since the navigation started.
type ffTimes struct {
	ResponseEnd      float64 `json:"responseEnd"`
	DOMContentLoaded float64 `json:"domContentLoaded"`
	ModulesEnd       float64 `json:"modulesEnd"`
	Modules          int     `json:"modules"`
	InfoStart        float64 `json:"infoStart"`
	InfoEnd          float64 `json:"infoEnd"`
	WSCreate         float64 `json:"wsCreate"`
	WSOpen           float64 `json:"wsOpen"`
	FirstMsg         float64 `json:"firstMsg"`
	Connected        float64 `json:"connected"`
	FirstUpdate      float64 `json:"firstUpdate"`
	Painted          float64 `json:"painted"`
	Frame            float64 `json:"frame"`
	Origin           float64 `json:"origin"` // performance.timeOrigin, ms since the epoch
}

// ffPhases names the fields of ffTimes the benchmark reports, in order.
var ffPhases = []struct {
	name string
	get  func(ffTimes) float64
}{
	{"html-ms", func(t ffTimes) float64 { return t.ResponseEnd }},
	{"modules-ms", func(t ffTimes) float64 { return t.ModulesEnd }},
	{"info-ms", func(t ffTimes) float64 { return t.InfoEnd }},
	{"ws-open-ms", func(t ffTimes) float64 { return t.WSOpen }},
	{"rfb-connected-ms", func(t ffTimes) float64 { return t.Connected }},
	{"first-update-ms", func(t ffTimes) float64 { return t.FirstUpdate }},
	{"frame-ms", func(t ffTimes) float64 { return t.Frame }},
}

// ffLoad opens url in a new page of browser and returns the probe's times
// and the wall time from sending Page.navigate to the first non-black
// frame (the page's clock and this process's are the same machine's).
func ffLoad(tb testing.TB, browser *Chromium, url string, cold bool) (ffTimes, time.Duration) {
	tb.Helper()
	page := browser.MustNewPage(tb)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	defer page.Call(ctx, "Page.close", nil, nil)
	if err := page.Call(ctx, "Page.addScriptToEvaluateOnNewDocument", map[string]any{"source": ffProbeJS}, nil); err != nil {
		tb.Fatal(err)
	}
	if cold {
		if err := page.Call(ctx, "Network.enable", nil, nil); err != nil {
			tb.Fatal(err)
		}
		if err := page.Call(ctx, "Network.setCacheDisabled", map[string]any{"cacheDisabled": true}, nil); err != nil {
			tb.Fatal(err)
		}
	}
	t0 := time.Now()
	page.MustNavigate(tb, url)
	var got *ffTimes
	deadline := time.Now().Add(20 * time.Second)
	for got == nil {
		if err := page.Eval(ctx, `window.__ff && window.__ff.frame !== undefined ? window.__ff : null`, &got); err != nil {
			tb.Fatalf("read the probe: %v", err)
		}
		if got != nil {
			break
		}
		if time.Now().After(deadline) {
			var st pageState
			page.Eval(ctx, pageStateJS, &st)
			var partial any
			page.Eval(ctx, `window.__ff`, &partial)
			tb.Fatalf("no non-black frame within 20 s: page state %q, status %q, noVNC %q, probe %v; console:\n%s", st.State, st.Status, st.RFB, partial, browser.Events())
		}
		time.Sleep(20 * time.Millisecond) //sleep-ok: polling the page; the page measures its own times
	}
	wall := time.UnixMicro(int64((got.Origin + got.Frame) * 1000)).Sub(t0)
	return *got, wall
}

// ffQuantile returns the q quantile of v (nearest rank).
func ffQuantile(v []float64, q float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

// ffMedian returns the median of v.
func ffMedian(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 0 {
		return (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return s[len(s)/2]
}

// BenchmarkFirstFrame opens a READY session's connection URL (a vnc session
// with an xterm) in a new headless Chromium page, ten times per iteration,
// and reports the median and 90th percentile of the time from the start of
// the navigation to the first animation frame on which the noVNC canvas
// shows the desktop (not black), measured by the page itself and as wall
// time, and the medians of the steps before it: the page's HTML, its noVNC
// modules, session-info, the WebSocket open, RFB connected (ServerInit) and
// the first update. "cold" disables the browser's cache (a first visit),
// "warm" keeps it (a reload). Issue 15's target: under 1 s on loopback.
func BenchmarkFirstFrame(b *testing.B) {
	if testing.Short() {
		b.Skip("-short: skipping the headless Chromium benchmark")
	}
	if _, err := os.Stat(chromiumPath); err != nil {
		b.Skipf("%s is not installed (apt-get install chromium)", chromiumPath)
	}
	e := MustStartEnv(b)
	s := e.MustCreate(b, api.CreateSessionRequest{Name: "first frame", Owner: user2, Type: api.TypeVirtual, AutorunFile: "xterm.sh"})[0]
	e.MustWaitState(b, s.Id, api.StateReady, readyTimeout)
	browser := MustStartChromium(b)
	url := func() string { return e.LocalURL(b, e.MustConnectionData(b, s.Id, user2)) }
	// Not measured: the session's xterm comes up, Chromium warms up.
	ffLoad(b, browser, url(), true)
	for _, mode := range []string{"cold", "warm"} {
		b.Run(mode, func(b *testing.B) {
			const runs = 10
			var pages []ffTimes
			var walls []float64
			for b.Loop() {
				for range runs {
					u := url()
					t, wall := ffLoad(b, browser, u, mode == "cold")
					pages = append(pages, t)
					walls = append(walls, ms(wall))
				}
			}
			frames := make([]float64, len(pages))
			for i, t := range pages {
				frames[i] = t.Frame
			}
			b.ReportMetric(ffMedian(frames), "median-ms")
			b.ReportMetric(ffQuantile(frames, 0.9), "p90-ms")
			b.ReportMetric(ffMedian(walls), "wall-median-ms")
			b.ReportMetric(ffQuantile(walls, 0.9), "wall-p90-ms")
			var steps []string
			for _, p := range ffPhases {
				v := make([]float64, len(pages))
				for i, t := range pages {
					v[i] = p.get(t)
				}
				steps = append(steps, fmt.Sprintf("%s %.0f", strings.TrimSuffix(p.name, "-ms"), ffMedian(v)))
				if p.name != "frame-ms" {
					b.ReportMetric(ffMedian(v), p.name)
				}
			}
			b.Logf("%s, %d pages (%d noVNC modules each): first frame median %.0f ms, p90 %.0f ms, wall median %.0f ms, p90 %.0f ms; median ms since navigation start: %s (target: under 1 s)",
				mode, len(pages), pages[0].Modules, ffMedian(frames), ffQuantile(frames, 0.9), ffMedian(walls), ffQuantile(walls, 0.9), strings.Join(steps, ", "))
		})
	}
}
