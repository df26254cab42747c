package portal

import (
	"context"
	"sync"
	"time"

	"github.com/berth-dev/berth/internal/broker"
)

// thumbEvery is how often a session's thumbnail is taken at most.
const thumbEvery = 10 * time.Second

// maxThumbs bounds the cache; past it, entries older than a minute go.
const maxThumbs = 2000

// thumbCache holds each session's latest thumbnail. A session's screenshot
// is asked of its agent at most once per thumbEvery, however many viewers
// poll; concurrent requests wait for the one in flight.
type thumbCache struct {
	mu sync.Mutex
	m  map[string]*thumb
}

type thumb struct {
	taken  time.Time
	img    []byte
	format string
	done   chan struct{} // closed when the fetch in flight ends
}

// get returns the session's thumbnail, fetching a new one when the cached
// one is older than thumbEvery.
func (c *thumbCache) get(ctx context.Context, p *Portal, id string) ([]byte, string) {
	now := p.now()
	c.mu.Lock()
	if c.m == nil {
		c.m = map[string]*thumb{}
	}
	t := c.m[id]
	if t != nil && (t.done != nil || now.Sub(t.taken) < thumbEvery) {
		done := t.done
		c.mu.Unlock()
		if done != nil {
			select {
			case <-done:
			case <-ctx.Done():
			}
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		if t := c.m[id]; t != nil {
			return t.img, t.format
		}
		return nil, ""
	}
	if len(c.m) >= maxThumbs {
		for k, o := range c.m {
			if o.done == nil && now.Sub(o.taken) > time.Minute {
				delete(c.m, k)
			}
		}
	}
	nt := &thumb{taken: now, done: make(chan struct{})}
	if t != nil {
		nt.img, nt.format = t.img, t.format // kept while the new one is taken
	}
	c.m[id] = nt
	c.mu.Unlock()

	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
	res := p.svc.GetSessionScreenshots(fctx, []broker.ScreenshotRequest{{SessionID: id}})
	cancel()

	c.mu.Lock()
	defer c.mu.Unlock()
	if len(res) == 1 && res[0].FailureReason == "" {
		var got *broker.Image
		for i, im := range res[0].Images {
			if len(im.Data) > 0 && (got == nil || im.Primary && !got.Primary) {
				got = &res[0].Images[i]
			}
		}
		if got != nil {
			nt.img, nt.format = got.Data, got.Format
		}
	}
	close(nt.done)
	nt.done = nil
	return nt.img, nt.format
}
