package agenthub_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/agenthub"
	"github.com/berth-dev/berth/internal/agentproto"
	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/poll"
	"github.com/coder/websocket"
)

// observer is an agenthub.Observer that keeps what it was told.
type observer struct {
	mu     sync.Mutex
	events []string
}

var _ agenthub.Observer = (*observer)(nil)

func (o *observer) LinkUp(reconnect bool) { o.add(fmt.Sprintf("up reconnect=%v", reconnect)) }
func (o *observer) LinkDown()             { o.add("down") }
func (o *observer) LinkRefused(r string)  { o.add("refused " + r) }

func (o *observer) add(e string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.events = append(o.events, e)
}

func (o *observer) list() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.events)
}

// TestHub_Observer opens, replaces, closes and refuses links and checks
// what the Observer is told for each.
func TestHub_Observer(t *testing.T) {
	obs := &observer{}
	e := mustStartHub(t, agenthub.Options{Observer: obs}, nil)
	e.svc.ConnectErr = func(_, serverID string) error {
		if serverID == "srv-taken" {
			return broker.ErrConflict
		}
		return nil
	}
	waitEvents := func(want ...string) {
		t.Helper()
		poll.Until(t, 20*time.Second, fmt.Sprintf("events %q", want), func() bool { return slices.Equal(obs.list(), want) })
	}

	first := e.dial(t)
	write(t, first, "", hello("srv-o"))
	read(t, first) // welcome
	waitEvents("up reconnect=false")

	// The same server again, while its first link stands: it replaces it.
	second := e.dial(t)
	write(t, second, "", hello("srv-o"))
	read(t, second)
	read(t, first) // replaced
	_, _, _ = first.Read(context.Background())
	waitEvents("up reconnect=false", "up reconnect=true", "down")

	second.Close(websocket.StatusNormalClosure, "")
	waitEvents("up reconnect=false", "up reconnect=true", "down", "down")

	bad := e.dial(t)
	write(t, bad, "1", &agentproto.Update{})
	read(t, bad)
	taken := e.dial(t)
	write(t, taken, "", hello("srv-taken"))
	read(t, taken)
	future := e.dial(t)
	raw := fmt.Sprintf(`{"type":"hello","body":{"protocol_version":%d,"server_id":"srv-f"}}`, agentproto.ProtocolVersion+1)
	if err := future.Write(context.Background(), websocket.MessageText, []byte(raw)); err != nil {
		t.Fatal(err)
	}
	read(t, future)
	waitEvents("up reconnect=false", "up reconnect=true", "down", "down",
		"refused "+agenthub.RefusedBadHello, "refused "+agenthub.RefusedConflict, "refused "+agenthub.RefusedVersion)
	for _, c := range []*websocket.Conn{bad, taken, future} {
		c.CloseNow() // so that their handlers need not wait for a close frame
	}
	e.hub.Close() // waits for the connection handlers; no link is up
	if got := obs.list(); len(got) != 7 {
		t.Errorf("more events than expected: %q", got)
	}
}
