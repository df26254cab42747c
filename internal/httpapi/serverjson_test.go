package httpapi

import (
	"encoding/json"
	"runtime"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/poll"
)

// fillOne fills the encoding of v and returns it.
func fillOne(c *serverJSON, v *broker.ServerView) json.RawMessage {
	raws := make([]json.RawMessage, 1)
	c.fill(func(int) *broker.ServerView { return v }, raws)
	return raws[0]
}

func newView(id, host string) *broker.ServerView {
	return &broker.ServerView{Server: &broker.Server{ID: id, Info: broker.ServerInfo{Hostname: host}}, Availability: "AVAILABLE"}
}

// An encoding that no page uses lets the server value it was made from go
// once its rounds are over: the broker replaces a server's value on every
// report with new figures, and an idle broker must not keep the old ones.
func TestServerJSON_LetsReplacedServersGo(t *testing.T) {
	var c serverJSON
	defer c.stop()
	freed := make(chan struct{})
	func() {
		v := newView("srv-1", "old")
		runtime.AddCleanup(v.Server, func(ch chan struct{}) { close(ch) }, freed)
		if raw := fillOne(&c, v); raw == nil {
			t.Fatal("no encoding")
		}
	}()
	c.rotateNow()
	c.rotateNow()
	poll.Until(t, 10*time.Second, "the replaced server value to be freed", func() bool {
		runtime.GC()
		select {
		case <-freed:
			return true
		default:
			return false
		}
	})
	// A new value encodes anew.
	v := newView("srv-1", "new")
	var got struct{ Hostname string }
	if err := json.Unmarshal(fillOne(&c, v), &got); err != nil || got.Hostname != "new" {
		t.Fatalf("encoding after the value changed: %+v, %v", got, err)
	}
}

// An encoding no page used in a round is dropped at the end of the next: a
// page of round i finds the encodings of round i-1 cached, and only those.
func TestServerJSON_Rounds(t *testing.T) {
	tests := []struct {
		name string
		// uses[i] says whether a page shows the server in round i; the
		// first round does.
		uses []bool
		want int // encodings held in the last round
	}{
		{"one round", []bool{true}, 1},
		{"unused one round", []bool{true, false}, 1},
		{"unused two rounds", []bool{true, false, false}, 0},
		{"used again after two rounds", []bool{true, false, false, true}, 1},
		{"used every round", []bool{true, true, true, true}, 1},
		{"used, then unused two rounds", []bool{true, true, false, false}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c serverJSON
			defer c.stop()
			v := newView("srv-1", "h")
			last := fillOne(&c, v)
			for i := 1; i < len(tt.uses); i++ {
				c.rotateNow()
				if !tt.uses[i] {
					continue
				}
				raw := fillOne(&c, v)
				if hit, wantHit := &raw[0] == &last[0], tt.uses[i-1]; hit != wantHit {
					t.Errorf("round %d: cached encoding used = %v, want %v", i, hit, wantHit)
				}
				last = raw
			}
			if got := c.cached(); got != tt.want {
				t.Errorf("held %d encodings, want %d", got, tt.want)
			}
		})
	}
}

// rotateNow ends the round at once (tests).
func (c *serverJSON) rotateNow() {
	c.mu.Lock()
	t := c.round
	c.mu.Unlock()
	if t != nil && t.Stop() {
		c.rotate()
	}
}

// stop stops the rounds (tests).
func (c *serverJSON) stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.round != nil {
		c.round.Stop()
	}
}

// cached returns the number of encodings held.
func (c *serverJSON) cached() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.m) + len(c.old)
}
