package agent

import (
	"context"
	"sync"
	"sync/atomic"
)

// linkState is what the agent learns from its links that other parts of
// the agent use: whether a broker has welcomed it, the credentials of that
// link, and the web gateway CA the broker named in its Welcome.
type linkState struct {
	linked    chan struct{} // closed at the first Welcome
	linkOnce  sync.Once
	creds     atomic.Pointer[credentials]
	gatewayCA atomic.Pointer[string]
	caChanged chan struct{} // a Welcome named another gateway CA (capacity 1)
}

// stateMu guards the creation of every Agent's link state (Agent is a
// plain struct that callers fill and may copy before use, so it holds no
// lock of its own).
var stateMu sync.Mutex

// state returns the Agent's link state, creating it on first use.
func (a *Agent) state() *linkState {
	stateMu.Lock()
	defer stateMu.Unlock()
	if a.link == nil {
		a.link = &linkState{linked: make(chan struct{}), caChanged: make(chan struct{}, 1)}
	}
	return a.link
}

// welcomed records a Welcome on a link that used creds.
func (a *Agent) welcomed(creds *credentials, gatewayCAKeyID string) {
	st := a.state()
	if creds != nil {
		st.creds.Store(creds)
	}
	if old := st.gatewayCA.Swap(&gatewayCAKeyID); old == nil || *old != gatewayCAKeyID {
		select {
		case st.caChanged <- struct{}{}:
		default:
		}
	}
	st.linkOnce.Do(func() { close(st.linked) })
}

// WaitLinked returns once a broker has welcomed the agent (Run must be
// running), or ctx's error when ctx ends first.
func (a *Agent) WaitLinked(ctx context.Context) error {
	select {
	case <-a.state().linked:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// GatewayCAKeyID returns the key ID of the web gateway CA that the last
// Welcome named, "" before the first Welcome or when the broker named none.
func (a *Agent) GatewayCAKeyID() string {
	if p := a.state().gatewayCA.Load(); p != nil {
		return *p
	}
	return ""
}
