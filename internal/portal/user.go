package portal

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/broker"
)

func (p *Portal) userRoutes() {
	p.userRoute("GET /portal/api/sessions", p.apiSessions)
	p.userRoute("GET /portal/sessions/{id}/thumbnail", p.thumbnail)
	p.userRoute("GET /portal/sessions/{id}/connect", p.connect)
	p.userRoute("POST /portal/sessions/{id}/delete", p.deleteSession)
	p.userRoute("POST /portal/sessions/{id}/share", p.share)
	p.userRoute("POST /portal/launch", p.launch)
}

// sessionItem is one row of My sessions, as the page and its script see it.
type sessionItem struct {
	ID        string      `json:"id"`
	Name      string      `json:"name"`
	Owner     string      `json:"owner"`
	Type      string      `json:"type"`
	Shared    bool        `json:"shared"`              // shared with the user, not theirs
	State     string      `json:"state"`               // the API's state
	Label     string      `json:"label"`               // the state in plain words
	Reason    string      `json:"reason,omitempty"`    // why it failed or ended, in plain words
	Queued    bool        `json:"queued,omitempty"`    // waiting in the queue
	Position  int         `json:"position,omitempty"`  // its place in the queue (1: next)
	Server    string      `json:"server,omitempty"`    // host name
	Created   string      `json:"created"`             // UTC, minutes
	Thumb     string      `json:"thumb,omitempty"`     // thumbnail URL, while READY
	Connect   string      `json:"connect,omitempty"`   // connect URL, while READY
	Deletable bool        `json:"deletable,omitempty"` // owner, not deleted yet
	Class     string      `json:"class"`               // CSS class of the state
	Shares    []shareItem `json:"shares,omitempty"`
}

// shareItem is one of the user's shares of a session.
type shareItem struct {
	User  string `json:"user"`
	Level string `json:"level"`
}

// sessionsData is My sessions' data.
type sessionsData struct {
	Sessions  []sessionItem      `json:"sessions"`
	Queued    int                `json:"queued"` // requests waiting in the broker's queue
	More      bool               `json:"more"`   // over maxListed of the user's own
	Templates []*broker.Template `json:"-"`
	Notice    string             `json:"-"`
	Problem   string             `json:"-"`
}

// maxListed caps the user's own sessions listed.
const maxListed = 1000

// maxSharesListed caps the sessions whose shares My sessions lists (one
// store read each), newest first.
const maxSharesListed = 100

// userSessions lists the user's sessions and those shared with them.
func (p *Portal) userSessions(ctx context.Context, s *Session) (*sessionsData, error) {
	views, next, err := p.svc.DescribeSessions(ctx, broker.DescribeQuery{Filters: [][2]string{{"owner", s.User}}, MaxResults: maxListed})
	if err != nil {
		return nil, err
	}
	d := &sessionsData{More: next != ""}
	for _, v := range views {
		d.Sessions = append(d.Sessions, p.item(v, false))
	}
	shared, err := p.svc.SharedWith(ctx, s.User)
	if err != nil {
		p.log.Debug("portal: sessions shared with the user", "err", err)
	}
	if len(shared) > 0 {
		ids := make([]string, 0, min(len(shared), maxListed))
		for _, x := range shared[:min(len(shared), maxListed)] {
			ids = append(ids, x.ID)
		}
		views, _, err := p.svc.DescribeSessions(ctx, broker.DescribeQuery{SessionIDs: ids})
		if err != nil {
			return nil, err
		}
		for _, v := range views {
			if v.Owner != s.User && v.State != broker.StateDeleted {
				d.Sessions = append(d.Sessions, p.item(v, true))
			}
		}
	}
	if slices.ContainsFunc(d.Sessions, func(it sessionItem) bool { return it.Queued }) {
		p.queuePositions(ctx, d)
	}
	// Newest first.
	slices.Reverse(d.Sessions)
	return d, nil
}

// queuePositions sets the queue length and the position of each queued
// session of d, as the broker's queue orders them (Service.QueuePositions).
func (p *Portal) queuePositions(ctx context.Context, d *sessionsData) {
	pos, n, err := p.svc.QueuePositions(ctx)
	if err != nil {
		p.log.Debug("portal: read the queue", "err", err)
		return
	}
	d.Queued = n
	for i := range d.Sessions {
		it := &d.Sessions[i]
		if k, ok := pos[it.ID]; ok && it.Queued {
			it.Position = k
			it.Label = fmt.Sprintf("Waiting for a free server: number %d in the queue", k)
		}
	}
}

// item is v as a row.
func (p *Portal) item(v broker.SessionView, shared bool) sessionItem {
	it := sessionItem{ID: v.ID, Name: v.Name, Owner: v.Owner, Type: v.Type, Shared: shared, State: v.State,
		Created: v.CreationTime.UTC().Format("2006-01-02 15:04 UTC")}
	if v.Server != nil {
		it.Server = v.Server.Info.Hostname
	}
	esc := url.PathEscape(v.ID)
	switch v.State {
	case broker.StateReady:
		it.Label, it.Class = "Ready", "state-ready"
		it.Thumb = "/portal/sessions/" + esc + "/thumbnail"
		it.Connect = "/portal/sessions/" + esc + "/connect"
	case broker.StateCreating:
		it.Label, it.Class = "Starting", "state-creating"
		if v.Enqueued {
			it.Queued = true
			it.Label = "Waiting for a free server"
			it.Reason = "Every server is busy; your desktop starts as soon as one is free (queued since " +
				v.EnqueuedAt.UTC().Format("15:04 UTC") + ")."
		} else if v.ServerID == "" {
			it.Label = "Finding a server"
		}
	case broker.StateDeleting:
		it.Label, it.Class = "Closing", "state-deleting"
	case broker.StateDeleted:
		it.Label, it.Class = "Ended", "state-deleted"
		it.Reason = plainReason(v.StateReason)
	default:
		it.Label, it.Class = "Not answering", "state-unknown"
		it.Reason = "The desktop's server is not answering just now; it may come back. If it does not within a few minutes, delete the desktop and launch a new one."
	}
	it.Deletable = !shared && v.State != broker.StateDeleted
	return it
}

// plainReason says why a session ended, in plain words.
func plainReason(r string) string {
	switch {
	case r == "":
		return ""
	case strings.HasPrefix(r, "deleted by request"):
		return "You (or an administrator) deleted it."
	case strings.Contains(r, "queue") && (strings.Contains(r, "time") || strings.Contains(r, "expired")):
		return "No server became free in time. Launch it again later, or ask your administrator for more capacity. (" + r + ")"
	case strings.Contains(r, "unreachable"):
		return "Its server stopped answering, so the desktop was lost. Launch a new one. (" + r + ")"
	}
	return "It could not run: " + r + ". Launch it again; if this keeps happening, tell your administrator."
}

// home is My sessions.
func (p *Portal) home(w http.ResponseWriter, r *http.Request) {
	s, ok := p.requireSession(w, r)
	if !ok {
		return
	}
	d, err := p.userSessions(r.Context(), s)
	if err != nil {
		p.log.Error("portal: list sessions", "err", err)
		p.fail(w, r, http.StatusServiceUnavailable, s, "Your desktops could not be listed just now. Reload the page in a few seconds.")
		return
	}
	asked := 0
	for _, it := range d.Sessions {
		if it.Deletable && !it.Shared && it.State != broker.StateDeleting && asked < maxSharesListed {
			asked++
			if shares, err := p.svc.SharesOf(r.Context(), it.ID); err == nil {
				for _, sh := range shares {
					if sh.Level != broker.ShareNone {
						d.setShares(it.ID, shareItem{User: sh.User, Level: string(sh.Level)})
					}
				}
			}
		}
	}
	if ts, err := p.svc.TemplatesFor(r.Context(), s.User, s.Groups); err == nil {
		d.Templates = ts
	} else {
		p.log.Debug("portal: templates for the user", "err", err)
	}
	d.Notice = notices[r.URL.Query().Get("done")]
	p.render(w, r, http.StatusOK, "sessions.html", s, d)
}

func (d *sessionsData) setShares(id string, sh shareItem) {
	for i := range d.Sessions {
		if d.Sessions[i].ID == id {
			d.Sessions[i].Shares = append(d.Sessions[i].Shares, sh)
		}
	}
}

// notices are the messages after an action (?done=...); fixed texts, so
// nothing from the URL is shown.
var notices = map[string]string{
	"launched": "Your desktop is starting. It shows Ready here when you can connect.",
	"deleted":  "The desktop is closing.",
	"shared":   "Sharing updated.",
}

// apiSessions is the script's live view of My sessions.
func (p *Portal) apiSessions(w http.ResponseWriter, r *http.Request, s *Session) {
	d, err := p.userSessions(r.Context(), s)
	if err != nil {
		p.log.Error("portal: list sessions", "err", err)
		p.fail(w, r, http.StatusServiceUnavailable, s, "Your desktops could not be listed just now; retrying.")
		return
	}
	if d.Sessions == nil {
		d.Sessions = []sessionItem{}
	}
	writeJSON(w, http.StatusOK, d)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// errNoAccess is a session the user may not see (or that does not exist):
// both answer 404, so nothing leaks.
var errNoAccess = errors.New("no such session")

// access returns the session id if s's user owns it or it is shared with
// them (owner tells which).
func (p *Portal) access(ctx context.Context, s *Session, id string) (broker.SessionView, bool, error) {
	views, _, err := p.svc.DescribeSessions(ctx, broker.DescribeQuery{SessionIDs: []string{id}, MaxResults: 1})
	if err != nil {
		return broker.SessionView{}, false, err
	}
	if len(views) == 0 {
		return broker.SessionView{}, false, errNoAccess
	}
	v := views[0]
	if v.Owner == s.User {
		return v, true, nil
	}
	if v.State == broker.StateDeleted {
		return broker.SessionView{}, false, errNoAccess
	}
	shares, err := p.svc.SharesOf(ctx, id)
	if err != nil {
		return broker.SessionView{}, false, errNoAccess
	}
	for _, sh := range shares {
		if sh.User == s.User && sh.Level != broker.ShareNone {
			return v, false, nil
		}
	}
	return broker.SessionView{}, false, errNoAccess
}

// sessionArg reads and checks the {id} of the path, or answers 400/404/503.
func (p *Portal) sessionArg(w http.ResponseWriter, r *http.Request, s *Session) (broker.SessionView, bool, bool) {
	id := r.PathValue("id")
	if id == "" || len(id) > 256 || strings.ContainsFunc(id, func(c rune) bool { return c < 0x21 || c == 0x7f }) {
		p.fail(w, r, http.StatusBadRequest, s, "The session ID in the address is not valid (1 to 256 printable characters). Go back to My sessions and use its buttons.")
		return broker.SessionView{}, false, false
	}
	v, owner, err := p.access(r.Context(), s, id)
	switch {
	case errors.Is(err, errNoAccess):
		p.fail(w, r, http.StatusNotFound, s, "There is no such desktop among yours or those shared with you. Go back to My sessions.")
		return broker.SessionView{}, false, false
	case err != nil:
		p.log.Error("portal: read session", "err", err)
		p.fail(w, r, http.StatusServiceUnavailable, s, "The desktop could not be read just now. Try again in a few seconds.")
		return broker.SessionView{}, false, false
	}
	return v, owner, true
}

// connect sends the browser to the desktop with a connection token for the
// signed-in user (the sharee, for a shared session).
func (p *Portal) connect(w http.ResponseWriter, r *http.Request, s *Session) {
	v, _, ok := p.sessionArg(w, r, s)
	if !ok {
		return
	}
	cd, err := p.svc.GetSessionConnectionData(r.Context(), v.ID, s.User)
	if err != nil {
		switch broker.ErrorCode(err) {
		case broker.CodeNotReady:
			p.fail(w, r, http.StatusConflict, s, "This desktop is not ready yet. Wait until My sessions shows Ready, then Connect again.")
		case broker.CodeForbidden:
			p.fail(w, r, http.StatusForbidden, s, "Your access to this desktop was withdrawn. Ask its owner to share it again.")
		case broker.CodeNotFound:
			p.fail(w, r, http.StatusNotFound, s, "This desktop has ended. Go back to My sessions.")
		default:
			p.log.Error("portal: connection data", "err", err)
			p.fail(w, r, http.StatusServiceUnavailable, s, "The desktop could not be opened just now. Try again in a few seconds.")
		}
		return
	}
	u := connectionURL(cd)
	if u == "" {
		p.fail(w, r, http.StatusServiceUnavailable, s, "The desktop's server reported no address to connect to. Try again in a minute, or tell your administrator.")
		return
	}
	http.Redirect(w, r, u, http.StatusSeeOther)
}

// connectionURL is the desktop's browser URL (as api.ConnectionURL):
// https://IP:PORT/PATH?authToken=TOKEN#SESSION.
func connectionURL(cd *broker.ConnectionData) string {
	srv := cd.View.Server
	if srv == nil || srv.Info.IP == "" {
		return ""
	}
	host, port, pth := srv.Info.IP, srv.Info.Port, srv.Info.WebURLPath
	for _, e := range srv.Info.Endpoints {
		if e.Protocol == "HTTP" {
			port = e.Port
			if e.WebURLPath != "" {
				pth = e.WebURLPath
			}
			break
		}
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	return fmt.Sprintf("https://%s:%d%s?authToken=%s#%s", host, port, pth, url.QueryEscape(cd.Token), cd.View.ID)
}

// deleteSession deletes one of the user's own sessions.
func (p *Portal) deleteSession(w http.ResponseWriter, r *http.Request, s *Session) {
	v, owner, ok := p.sessionArg(w, r, s)
	if !ok {
		return
	}
	if !owner {
		p.fail(w, r, http.StatusForbidden, s, "Only the desktop's owner can delete it. It stays in your list while it is shared with you.")
		return
	}
	res := p.svc.DeleteSessions(r.Context(), []broker.DeleteRequest{{SessionID: v.ID, Owner: s.User}})
	if res[0].FailureReason != "" {
		p.fail(w, r, http.StatusConflict, s, "The desktop could not be deleted: "+res[0].FailureReason+".")
		return
	}
	p.done(w, r, "deleted")
}

// share gives another user view or full access to one of the user's own
// sessions, or removes it (none).
func (p *Portal) share(w http.ResponseWriter, r *http.Request, s *Session) {
	user := strings.TrimSpace(r.PostFormValue("user"))
	level := broker.ShareLevel(r.PostFormValue("level"))
	if err := broker.ValidateUserName("user", user); err != nil {
		p.fail(w, r, http.StatusBadRequest, s, fmt.Sprintf("Share with: %v. Enter the other person's user name.", strings.TrimPrefix(err.Error(), "user: ")))
		return
	}
	switch level {
	case broker.ShareView, broker.ShareFull, broker.ShareNone:
	default:
		p.fail(w, r, http.StatusBadRequest, s, "Access: choose View only, Full control or Remove access (level must be view, full or none).")
		return
	}
	v, owner, ok := p.sessionArg(w, r, s)
	if !ok {
		return
	}
	if !owner {
		p.fail(w, r, http.StatusForbidden, s, "Only the desktop's owner can share it.")
		return
	}
	if user == s.User {
		p.fail(w, r, http.StatusBadRequest, s, "Share with: that is you. Enter another person's user name.")
		return
	}
	if err := p.svc.ShareSession(r.Context(), v.ID, s.User, user, level); err != nil {
		p.fail(w, r, statusOf(err), s, "Sharing was not changed: "+errText(err)+".")
		return
	}
	p.done(w, r, "shared")
}

// launch starts a session from a template published to the user.
func (p *Portal) launch(w http.ResponseWriter, r *http.Request, s *Session) {
	id := r.PostFormValue("template")
	if id == "" || len(id) > 256 {
		p.fail(w, r, http.StatusBadRequest, s, "Template: choose a template to launch.")
		return
	}
	res, err := p.svc.LaunchTemplate(r.Context(), id, s.User, s.Groups)
	if err != nil {
		if errors.Is(err, broker.ErrNotFound) {
			p.fail(w, r, http.StatusNotFound, s, "That template does not exist any more. Reload My sessions and choose another.")
			return
		}
		p.fail(w, r, statusOf(err), s, "The desktop was not launched: "+errText(err)+".")
		return
	}
	if res.FailureReason != "" {
		p.fail(w, r, http.StatusConflict, s, "The desktop could not be launched: "+res.FailureReason+". Try again later, or tell your administrator.")
		return
	}
	p.done(w, r, "launched")
}

// done ends a form's action: back to My sessions with a notice, or 200
// JSON for the script.
func (p *Portal) done(w http.ResponseWriter, r *http.Request, what string) {
	if wantsJSON(r) {
		writeJSON(w, http.StatusOK, map[string]string{"done": what})
		return
	}
	http.Redirect(w, r, "/portal/?done="+what, http.StatusSeeOther)
}

// statusOf maps a core error to an HTTP status: the refusals to 4xx (the
// core's message says why), anything else to 503 (retry).
func statusOf(err error) int {
	switch {
	case errors.Is(err, broker.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, broker.ErrConflict):
		return http.StatusConflict
	}
	switch broker.ErrorCode(err) {
	case broker.CodeInvalidInput:
		return http.StatusBadRequest
	case broker.CodeNotFound:
		return http.StatusNotFound
	case broker.CodeForbidden:
		return http.StatusForbidden
	case broker.CodeNotReady:
		return http.StatusConflict
	}
	return http.StatusServiceUnavailable
}

// errText is a core error's client-safe message.
func errText(err error) string {
	var be *broker.Error
	if errors.As(err, &be) {
		return strings.TrimSuffix(be.Message, ".")
	}
	if errors.Is(err, broker.ErrNotFound) {
		return "not found"
	}
	return "the broker could not do it just now; try again"
}

// thumbnail serves the session's latest screenshot: taken through the
// screenshot path at most every thumbEvery per session, cached, for its
// owner and those it is shared with.
func (p *Portal) thumbnail(w http.ResponseWriter, r *http.Request, s *Session) {
	v, _, ok := p.sessionArg(w, r, s)
	if !ok {
		return
	}
	if v.State != broker.StateReady {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	img, format := p.thumbs.get(r.Context(), p, v.ID)
	if img == nil {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	ct := "image/png"
	if format == "jpeg" {
		ct = "image/jpeg"
	}
	w.Header().Set("Content-Type", ct)
	w.Header().Set("Cache-Control", "private, max-age="+strconv.Itoa(int(thumbEvery/time.Second)))
	_, _ = w.Write(img)
}
