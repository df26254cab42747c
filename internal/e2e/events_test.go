package e2e

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/poll"
)

// receiver is a webhook endpoint on loopback that checks every delivery's
// signature the way docs/webhooks.md tells receivers to, by hand.
type receiver struct {
	secret string

	mu     sync.Mutex
	events []api.Event
	keys   map[string]int
	errs   []string
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	rc.mu.Lock()
	defer rc.mu.Unlock()
	fail := func(format string, args ...any) {
		rc.errs = append(rc.errs, fmt.Sprintf(format, args...))
		http.Error(w, "refused", http.StatusBadRequest)
	}
	if err != nil {
		fail("read: %v", err)
		return
	}
	// Berth-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, t + "." + body)>
	var ts, sig string
	for _, part := range strings.Split(r.Header.Get("Berth-Signature"), ",") {
		k, v, _ := strings.Cut(part, "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			sig = v
		}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || time.Since(time.Unix(sec, 0)).Abs() > 5*time.Minute {
		fail("bad or stale timestamp %q", ts)
		return
	}
	mac := hmac.New(sha256.New, []byte(rc.secret))
	mac.Write([]byte(ts + "." + string(body)))
	want := hex.EncodeToString(mac.Sum(nil))
	if !hmac.Equal([]byte(sig), []byte(want)) {
		fail("signature %q does not match the body", sig)
		return
	}
	var ev api.Event
	if err := json.Unmarshal(body, &ev); err != nil || ev.Id == 0 || ev.Type == "" {
		fail("body is not an event as the stream gives it: %v %s", err, body)
		return
	}
	if got := r.Header.Get("Berth-Event-Id"); got != strconv.FormatInt(ev.Id, 10) {
		fail("Berth-Event-Id %q for event %d", got, ev.Id)
		return
	}
	key := r.Header.Get("Idempotency-Key")
	if key == "" {
		fail("no Idempotency-Key")
		return
	}
	rc.keys[key]++
	if rc.keys[key] == 1 {
		rc.events = append(rc.events, ev)
	}
	w.WriteHeader(http.StatusNoContent)
}

// sessionStates returns the states of id's session.state events in evs,
// and fails unless their IDs increase.
func sessionStates(t *testing.T, what string, evs []api.Event, id string) []string {
	t.Helper()
	var states []string
	var last int64
	for _, ev := range evs {
		if ev.SessionId != id || ev.Type != "session.state" {
			continue
		}
		if ev.Id <= last {
			t.Errorf("%s: event %d after event %d", what, ev.Id, last)
		}
		last = ev.Id
		st, _ := ev.Data["state"].(string)
		states = append(states, st)
	}
	return states
}

// TestE2E_Events (issue 18, acceptance 1): a real session's life, from
// CreateSessions to its deletion, arrives as ordered session.state events
// through the event stream and through a webhook on loopback whose every
// delivery carries a valid signature; a stream resumed after an event's ID
// continues exactly after it.
func TestE2E_Events(t *testing.T) {
	e := MustStartEnv(t)
	rc := &receiver{secret: "e2e-webhook-secret-0123456789", keys: map[string]int{}}
	hook := httptest.NewServer(rc)
	defer hook.Close()
	created, err := e.Client.CreateWebhook(apiCtx(t), api.CreateWebhookRequest{Url: hook.URL + "/berth", EventTypes: []string{"session.*"}, Secret: rc.secret})
	if err != nil {
		t.Fatalf("CreateWebhook: %v", err)
	}
	t.Cleanup(func() { _, _ = e.Client.DeleteWebhook(context.Background(), created.Webhook.Id) })

	var mu sync.Mutex
	var streamed []api.Event
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	watchDone := make(chan error, 1)
	go func() {
		watchDone <- e.Client.WatchEvents(ctx, api.WatchRequest{Types: []string{"session.*"}}, func(ev api.Event) error {
			mu.Lock()
			streamed = append(streamed, ev)
			mu.Unlock()
			return nil
		})
	}()

	s := e.MustCreate(t, api.CreateSessionRequest{Name: "e2e events", Owner: user1, Type: api.TypeVirtual})[0]
	e.MustWaitState(t, s.Id, api.StateReady, readyTimeout)
	e.MustDelete(t, s.Id)

	t.Cleanup(func() {
		if t.Failed() {
			mu.Lock()
			defer mu.Unlock()
			rc.mu.Lock()
			defer rc.mu.Unlock()
			t.Logf("streamed %d events: %+v", len(streamed), streamed)
			t.Logf("the webhook received %d events: %+v; refusals: %v", len(rc.events), rc.events, rc.errs)
		}
	})
	ended := func(states []string) bool { return len(states) > 0 && states[len(states)-1] == api.StateDeleted }
	var fromStream, fromHook []string
	poll.Until(t, pageChangeTimeout, "the session's events up to DELETED on the stream and the webhook", func() bool {
		mu.Lock()
		fromStream = sessionStates(t, "stream", streamed, s.Id)
		mu.Unlock()
		rc.mu.Lock()
		fromHook = sessionStates(t, "webhook", rc.events, s.Id)
		rc.mu.Unlock()
		select {
		case err := <-watchDone:
			t.Fatalf("WatchEvents ended early: %v", err)
		default:
		}
		return ended(fromStream) && ended(fromHook)
	})
	t.Logf("the stream gave the session's states %v; the webhook %v", fromStream, fromHook)
	for _, want := range []string{api.StateCreating, api.StateReady, api.StateDeleting, api.StateDeleted} {
		if !slices.Contains(fromStream, want) {
			t.Errorf("the stream's states %v lack %s", fromStream, want)
		}
	}
	if !slices.Equal(fromStream, fromHook) {
		t.Errorf("the webhook's states %v differ from the stream's %v", fromHook, fromStream)
	}
	rc.mu.Lock()
	if len(rc.errs) > 0 {
		t.Errorf("the receiver refused deliveries: %v", rc.errs)
	}
	for k, n := range rc.keys {
		if n > 1 {
			t.Logf("delivery %s came %d times (at least once is the promise)", k, n)
		}
	}
	rc.mu.Unlock()

	// Resume: after the session's first event, the stream continues with
	// exactly the events that followed it.
	mu.Lock()
	all := slices.Clone(streamed)
	mu.Unlock()
	cancel()
	if err := <-watchDone; err != nil && !errors.Is(err, context.Canceled) {
		t.Errorf("WatchEvents ended with %v", err)
	}
	if len(all) < 3 {
		t.Fatalf("only %d events streamed", len(all))
	}
	after := all[0].Id
	var resumed []api.Event
	rctx, rcancel := context.WithCancel(context.Background())
	defer rcancel()
	errStop := errors.New("enough")
	err = e.Client.WatchEvents(rctx, api.WatchRequest{Types: []string{"session.*"}, After: after}, func(ev api.Event) error {
		resumed = append(resumed, ev)
		if len(resumed) == len(all)-1 {
			return errStop
		}
		return nil
	})
	if !errors.Is(err, errStop) {
		t.Fatalf("resumed WatchEvents: %v after %d events", err, len(resumed))
	}
	for i, ev := range resumed {
		if ev.Id != all[i+1].Id {
			t.Fatalf("resumed after event %d, event %d is %d, want %d", after, i, ev.Id, all[i+1].Id)
		}
	}
	t.Logf("resumed after event %d: the next %d events match, no gap, no repeat", after, len(resumed))
}
