package broker

import (
	"reflect"
	"testing"
	"time"
)

// TestPutFigures_AsPrepared: the server that putFigures caches equals one
// converted and prepared from scratch with the same report (so prepare
// derives nothing from the figures that putFigures would leave stale), it
// is a new value (readers key caches by pointer), and the old one is left
// as it was.
func TestPutFigures_AsPrepared(t *testing.T) {
	info := ServerInfo{
		Hostname: "h", IP: "10.0.0.1", WebURLPath: "/", Version: "1", AgentVersion: "2", Driver: "sim", Healthy: true,
		MaxVirtualSessions: 4, Tags: map[string]string{"pool": "a"}, Endpoints: []Endpoint{{Port: 8443, Protocol: "HTTP"}},
		Host: Host{OSFamily: "linux", OSName: "Debian", CPUVendor: "x", MemTotal: 8 << 30, MemUsed: 1, Load1: 0.5,
			GPUs: []GPU{{Vendor: "NVIDIA", Model: "T4"}}, LoggedInUsers: []string{"u"}},
	}
	c := &serverCache{byID: map[string]*Server{}}
	old := &Server{ID: "s", Seq: 1, BrokerID: "b1", Open: true, Info: info}
	c.put(old)
	before := *old
	f := HostFigures{Load1: 3, Load5: 2, Load15: 1, MemUsed: 5 << 30, SwapUsed: 7}
	t0 := time.Date(2026, 12, 8, 10, 0, 0, 0, time.UTC)
	if got, err := c.putFigures("s", f, t0, "b1"); err != nil || got != figuresMoved {
		t.Fatalf("putFigures = %d, %v; want figuresMoved", got, err)
	}
	want := &Server{ID: "s", Seq: 1, BrokerID: "b1", Open: true, Info: info, LastSeen: t0}
	want.Info.Host.setFigures(f)
	want.prepare()
	got := c.get("s")
	// The link mark is the cache's, not the report's: the new version
	// shares the old one's.
	if got.link == nil || got.link != old.link {
		t.Errorf("link mark %p, want the old version's %p", got.link, old.link)
	}
	want.link = got.link
	if !reflect.DeepEqual(got, want) {
		t.Errorf("cached after putFigures:\n%+v\nwant\n%+v", got, want)
	}
	if got == old || !reflect.DeepEqual(*old, before) {
		t.Error("putFigures changed the cached server in place")
	}
	cur := c.get("s")
	if got, _ := c.putFigures("s", f, t0.Add(time.Second), "b1"); got != figuresSame || c.get("s") != cur {
		t.Errorf("the same figures again = %d, want figuresSame and the server left as it was", got)
	}
	if got, _ := c.putFigures("s", HostFigures{}, t0, "b2"); got != figuresElsewhere || c.get("s").Info.Host.Load1 != 3 {
		t.Errorf("figures for a record another broker holds = %d, want figuresElsewhere and nothing done", got)
	}
}
