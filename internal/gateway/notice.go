package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/berth-dev/berth/internal/logattr"
)

// Session lifetimes (docs/lifetimes.md) on the page: the broker's warnings
// before a policy acts reach the page at once through "notice-wait", a long
// poll the page keeps open while connected, and through session-info
// ("notice", for a page that connects later); the broker's idle
// disconnection closes the page's WebSocket with CloseDisconnected and the
// reason, and session-info then tells the page ("disconnected") so that it
// does not reconnect by itself; the page's Extend button posts to
// "extend", which the agent forwards to the broker.

// CloseDisconnected is the WebSocket close code of a connection the broker
// closed by policy (Clients.Disconnect); the close reason is the notice's
// message, cut to the 123 bytes a close frame holds.
const CloseDisconnected = 4000

// Notice is a message for a session's connected pages: a warning that a
// broker policy acts at Deadline, or why the pages were disconnected.
type Notice struct {
	Message string
	// Policy names the broker policy ("session-max-lifetime-hours", ...).
	Policy string
	// Deadline is when the policy acts; zero when it has no time.
	Deadline time.Time
	// Extendable says the session's lifetime can be extended: the page
	// shows an Extend button.
	Extendable bool
}

// Clients is what the gateway does for the broker's commands about a
// session's clients; *Server implements it.
type Clients interface {
	// Disconnect closes every connection of the session with
	// CloseDisconnected and reason.Message, and makes session-info tell
	// those pages why; it returns the number of connections closed.
	Disconnect(id string, reason Notice) int
	// Notify keeps n as the session's current notice, which session-info
	// gives every page of the session until its deadline passes (an hour
	// for a notice without one) or another notice replaces it; it returns
	// the number of connections the session has.
	Notify(id string, n Notice) int
}

// Attacher is an optional interface of Sessions: a driver that passes the
// broker's disconnect and notify commands to the gateway. New attaches the
// Server; Close detaches it.
type Attacher interface {
	Attach(c Clients) (detach func())
}

// InputObserver is an optional interface of Sessions: it learns of client
// input. InputSeen is called, without the gateway's locks held, for a new
// bridged connection and for the keyboard and pointer input a connection
// forwards, at most once a second per connection.
type InputObserver interface {
	InputSeen(id string, at time.Time)
}

// ExtendFunc asks the broker to extend session id's lifetime on behalf of
// user by by (0: the broker's default) and returns the new deadline. An
// error with an HTTPStatus() int method is a refusal to pass on with its
// status and message; any other error means the broker could not be asked.
type ExtendFunc func(ctx context.Context, id, user string, by time.Duration) (time.Time, error)

// Bounds of the notices and disconnections the gateway keeps.
const (
	// noticeLifetime keeps a notice without a deadline.
	noticeLifetime = time.Hour
	// kickLifetime keeps the reason of a disconnection for the page to
	// read after its WebSocket closed.
	kickLifetime = 10 * time.Minute
	// maxKicks bounds the disconnections kept.
	maxKicks = 10000
	// maxNoticeMessage bounds a notice's message on the page.
	maxNoticeMessage = 4096
	// maxCloseReason is what a WebSocket close frame holds.
	maxCloseReason = 123
)

// kept is a notice and when it expires.
type kept struct {
	Notice
	until time.Time
}

// noticeWait bounds one long poll of notice-wait.
const noticeWait = 25 * time.Second

// noticeState is what notice-wait watches per session: a version that
// moves with every change of the session's notice, and a channel closed on
// the next change.
type noticeState struct {
	seq     uint64
	changed chan struct{}
}

// noticeChangedLocked moves session id's notice version and wakes its
// waiters. s.mu must be held.
func (s *Server) noticeChangedLocked(id string) {
	if s.noticeStates == nil {
		s.noticeStates = make(map[string]*noticeState)
	}
	st := s.noticeStates[id]
	if st == nil {
		st = &noticeState{changed: make(chan struct{})}
		s.noticeStates[id] = st
	}
	st.seq++
	close(st.changed)
	st.changed = make(chan struct{})
}

// noticeVersion returns session id's notice version and the channel closed
// at its next change.
func (s *Server) noticeVersion(id string) (uint64, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.noticeStates == nil {
		s.noticeStates = make(map[string]*noticeState)
	}
	st := s.noticeStates[id]
	if st == nil {
		st = &noticeState{changed: make(chan struct{})}
		s.noticeStates[id] = st
	}
	return st.seq, st.changed
}

// forgetSession drops an ended session's notice and notice version,
// waking its waiters.
func (s *Server) forgetSession(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.notices, id)
	if st := s.noticeStates[id]; st != nil {
		close(st.changed)
		delete(s.noticeStates, id)
	}
}

// waitAnswer is the answer of GET notice-wait.
type waitAnswer struct {
	// Seq is the session's notice version: the page sends it back as
	// "after" to wait for the next change.
	Seq    uint64      `json:"seq"`
	Notice *infoNotice `json:"notice"`
}

// serveNoticeWait handles GET {base}notice-wait?authToken=…&sessionId=…&after=N:
// it answers at once when the session's notice version is not N, else
// when it changes or after 25 s, with the version and the current notice
// (null when none).
func (s *Server) serveNoticeWait(w http.ResponseWriter, r *http.Request) {
	g, herr := s.authorize(r.Context(), r)
	if herr != nil {
		herr.write(w)
		return
	}
	id := g.session.ID
	seq, changed := s.noticeVersion(id)
	if after := r.URL.Query().Get("after"); after != "" && after == strconv.FormatUint(seq, 10) {
		t := time.NewTimer(noticeWait)
		defer t.Stop()
		select {
		case <-changed:
		case <-t.C:
		case <-r.Context().Done():
			return
		case <-s.ctx.Done():
		}
		seq, _ = s.noticeVersion(id)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(waitAnswer{Seq: seq, Notice: s.noticeFor(id, g.claims.User == g.session.Owner)})
}

// kick is why a page's connection was closed by policy.
type kick struct {
	session, message string
	until            time.Time
}

// Disconnect implements Clients.
func (s *Server) Disconnect(id string, reason Notice) int {
	msg := cut(reason.Message, maxNoticeMessage)
	if msg == "" {
		msg = "Disconnected by the session's policy."
	}
	now := s.cfg.Now()
	s.mu.Lock()
	var bs []*bridge
	for b := range s.conns[id] {
		bs = append(bs, b)
	}
	if s.kicks == nil {
		s.kicks = make(map[string]kick)
	}
	for k, v := range s.kicks {
		if now.After(v.until) || len(s.kicks) >= maxKicks {
			delete(s.kicks, k)
		}
	}
	for _, b := range bs {
		if b.client != "" {
			s.kicks[b.client] = kick{session: id, message: msg, until: now.Add(kickLifetime)}
		}
	}
	if _, ok := s.notices[id]; ok {
		delete(s.notices, id) // the warning was about this
		s.noticeChangedLocked(id)
	}
	s.mu.Unlock()
	for _, b := range bs {
		b.stop(CloseDisconnected, cut(msg, maxCloseReason))
	}
	if len(bs) > 0 {
		s.log.Info("disconnected the session's clients", logattr.SessionID, id, "clients", len(bs), "policy", reason.Policy)
	}
	return len(bs)
}

// Notify implements Clients.
func (s *Server) Notify(id string, n Notice) int {
	n.Message = cut(n.Message, maxNoticeMessage)
	until := n.Deadline
	if until.IsZero() {
		until = s.cfg.Now().Add(noticeLifetime)
	}
	s.mu.Lock()
	if s.notices == nil {
		s.notices = make(map[string]kept)
	}
	s.notices[id] = kept{Notice: n, until: until}
	s.noticeChangedLocked(id)
	c := len(s.conns[id])
	s.mu.Unlock()
	return c
}

// infoNotice is a notice as session-info gives it.
type infoNotice struct {
	Message string `json:"message"`
	Policy  string `json:"policy,omitempty"`
	// Deadline is when the policy acts (RFC 3339, UTC), and SecondsLeft
	// the time until then as the gateway counts it: the page counts down
	// from it, so that its own clock does not matter. Both are absent for
	// a notice without a deadline.
	Deadline    string `json:"deadline,omitempty"`
	SecondsLeft *int64 `json:"secondsLeft,omitempty"`
	Extendable  bool   `json:"extendable"`
}

// noticeFor returns session id's current notice for session-info; nil when
// none. Extendable is offered to the owner only: the broker extends for the
// owner alone.
func (s *Server) noticeFor(id string, owner bool) *infoNotice {
	now := s.cfg.Now()
	s.mu.Lock()
	k, ok := s.notices[id]
	if ok && now.After(k.until) {
		delete(s.notices, id)
		ok = false
	}
	s.mu.Unlock()
	if !ok {
		return nil
	}
	out := &infoNotice{Message: k.Message, Policy: k.Policy, Extendable: k.Extendable && owner && s.cfg.Extend != nil}
	if !k.Deadline.IsZero() {
		left := int64(max(0, k.Deadline.Sub(now).Round(time.Second)/time.Second))
		out.Deadline = k.Deadline.UTC().Format(time.RFC3339)
		out.SecondsLeft = &left
	}
	return out
}

// kickedFor returns why the page with clientId client was disconnected
// from session id by policy; "" when it was not.
func (s *Server) kickedFor(id, client string) string {
	if client == "" {
		return ""
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	k, ok := s.kicks[client]
	if !ok || k.session != id || s.cfg.Now().After(k.until) {
		return ""
	}
	return k.message
}

// inputSeen tells the InputObserver of input on b, at most once a second.
func (s *Server) inputSeen(b *bridge) {
	o, ok := s.cfg.Sessions.(InputObserver)
	if !ok {
		return
	}
	now := s.cfg.Now()
	if sec := now.Unix(); b.lastInput.Swap(sec) != sec {
		o.InputSeen(b.session, now)
	}
}

// extendAnswer is the answer of POST extend.
type extendAnswer struct {
	// Deadline is the session's new deadline (RFC 3339, UTC) and
	// SecondsLeft the time until it.
	Deadline    string `json:"deadline"`
	SecondsLeft int64  `json:"secondsLeft"`
}

// serveExtend handles POST {base}extend?authToken=…&sessionId=…: the
// page's Extend button. Only the session's owner may extend; the request
// must come from the page's own origin (a browser sends Origin with a
// POST). An optional JSON body {"bySeconds": N} asks for N seconds instead
// of the broker's default.
func (s *Server) serveExtend(w http.ResponseWriter, r *http.Request) {
	if !sameOrigin(r) {
		fileRefuse(w, http.StatusForbidden, "the request does not come from the session page (Origin)")
		return
	}
	g, herr := s.authorize(r.Context(), r)
	if herr != nil {
		herr.write(w)
		return
	}
	if g.claims.User != g.session.Owner {
		fileRefuse(w, http.StatusForbidden, "only the session's owner can extend it")
		return
	}
	if s.cfg.Extend == nil {
		fileRefuse(w, http.StatusNotImplemented, "extending sessions is not available on this host")
		return
	}
	var body struct {
		BySeconds int64 `json:"bySeconds"`
	}
	if r.ContentLength != 0 {
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4<<10))
		if err := dec.Decode(&body); err != nil {
			fileRefuse(w, http.StatusBadRequest, "body: not a JSON object {\"bySeconds\": N}")
			return
		}
	}
	if body.BySeconds < 0 || body.BySeconds > 10*365*24*3600 {
		fileRefuse(w, http.StatusBadRequest, "bySeconds: must be 0 (the default extension) or a positive number of seconds")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	deadline, err := s.cfg.Extend(ctx, g.session.ID, g.claims.User, time.Duration(body.BySeconds)*time.Second)
	if err != nil {
		var st interface{ HTTPStatus() int }
		if errors.As(err, &st) {
			fileRefuse(w, st.HTTPStatus(), err.Error())
			return
		}
		s.log.Warn("session extension failed", logattr.SessionID, g.session.ID, "err", err)
		fileRefuse(w, http.StatusBadGateway, "the broker cannot be reached to extend the session; try again")
		return
	}
	s.mu.Lock()
	if k, ok := s.notices[g.session.ID]; ok && k.Extendable {
		delete(s.notices, g.session.ID) // the warning was about the old deadline
		s.noticeChangedLocked(g.session.ID)
	}
	s.mu.Unlock()
	s.log.Info("session extended from its page", logattr.SessionID, g.session.ID, logattr.User, g.claims.User, "deadline", deadline)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(extendAnswer{
		Deadline:    deadline.UTC().Format(time.RFC3339),
		SecondsLeft: int64(max(0, deadline.Sub(s.cfg.Now()).Round(time.Second)/time.Second)),
	})
}

// sameOrigin reports whether a request's Origin, if it has one, is the
// gateway's own (scheme https and the request's Host); Sec-Fetch-Site, if
// present, must not be cross-site.
func sameOrigin(r *http.Request) bool {
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" && site != "none" {
		return false
	}
	o := r.Header.Get("Origin")
	if o == "" {
		return true // not a browser's cross-origin request
	}
	u, err := url.Parse(o)
	return err == nil && u.Scheme == "https" && strings.EqualFold(u.Host, r.Host)
}

// cut shortens s to at most n bytes at a rune boundary.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}
