package portal

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/logattr"
	"github.com/berth-dev/berth/internal/oauth"
)

// Page sizes and bounds of the admin pages.
const (
	// adminServersPage is how many servers the servers page lists.
	adminServersPage = 100
	// adminSessionsPage is how many sessions the sessions page lists.
	adminSessionsPage = 50
	// adminScanBudget bounds how many sessions one sessions page reads
	// while it looks for sessions of a state or server filter; the page
	// then offers to search on from where it stopped.
	adminScanBudget = 5000
	// maxFilterLen bounds a filter's value.
	maxFilterLen = 256
)

// sessionStates are the states the sessions page filters on.
var sessionStates = []string{broker.StateCreating, broker.StateReady, broker.StateDeleting, broker.StateDeleted, broker.StateUnknown}

// registerAdmin registers the admin pages (the extension point of
// portal.go): servers, sessions, templates and API clients, all under
// /portal/admin/, all refused (403) to users who are not admins.
func (p *Portal) registerAdmin() {
	p.addAdminNav("Servers", "/portal/admin/servers")
	p.addAdminNav("All sessions", "/portal/admin/sessions")
	p.addAdminNav("Templates", "/portal/admin/templates")
	p.addAdminNav("API clients", "/portal/admin/clients")
	p.adminRoute("GET /portal/admin/{$}", func(w http.ResponseWriter, r *http.Request, s *Session) {
		http.Redirect(w, r, "/portal/admin/servers", http.StatusSeeOther)
	})
	p.adminRoute("GET /portal/admin/servers", p.adminServers)
	p.adminRoute("POST /portal/admin/servers/{id}/open", p.adminOpenServer)
	p.adminRoute("POST /portal/admin/servers/{id}/close", p.adminCloseServer)
	p.adminRoute("GET /portal/admin/sessions", p.adminSessions)
	p.adminRoute("POST /portal/admin/sessions/{id}/delete", p.adminDeleteSession)
	p.adminRoute("GET /portal/admin/templates", p.adminTemplates)
	p.adminRoute("GET /portal/admin/templates/new", p.adminNewTemplate)
	p.adminRoute("POST /portal/admin/templates", p.adminCreateTemplate)
	p.adminRoute("GET /portal/admin/templates/{id}", p.adminEditTemplate)
	p.adminRoute("POST /portal/admin/templates/{id}", p.adminUpdateTemplate)
	p.adminRoute("POST /portal/admin/templates/{id}/delete", p.adminDeleteTemplate)
	p.adminRoute("GET /portal/admin/clients", p.adminClients)
	// Any other admin path: 403 to non-admins (as every admin route), 404
	// to admins.
	p.adminRoute("/portal/admin/", func(w http.ResponseWriter, r *http.Request, s *Session) {
		p.fail(w, r, http.StatusNotFound, s, "There is no such admin page. Go to Servers, Sessions, Templates or API clients.")
	})
}

// AdminRoutes lists the admin routes (method and path, with {id} for an
// ID) for tests and docs: every one answers 403 to a user who is not an
// admin.
var AdminRoutes = []string{
	"GET /portal/admin/",
	"GET /portal/admin/servers",
	"POST /portal/admin/servers/{id}/open",
	"POST /portal/admin/servers/{id}/close",
	"GET /portal/admin/sessions",
	"POST /portal/admin/sessions/{id}/delete",
	"GET /portal/admin/templates",
	"GET /portal/admin/templates/new",
	"POST /portal/admin/templates",
	"GET /portal/admin/templates/{id}",
	"POST /portal/admin/templates/{id}",
	"POST /portal/admin/templates/{id}/delete",
	"GET /portal/admin/clients",
}

// notice is a line an admin page shows above its content: what was done
// (OK) or what went wrong and what to do.
type notice struct {
	OK, Error string
}

// adminServerRow is one line of the servers page.
type adminServerRow struct {
	ID, Hostname, IP, OS, CPU, Memory, GPUs, Agent string
	LastSeen                                       time.Time
	Open, Available                                bool
	Availability, Reason                           string
	Virtual, Console                               int
}

// adminServersData is admin_servers.html's data.
type adminServersData struct {
	notice
	Servers []adminServerRow
	// Next is the URL of the next page ("" on the last one); First is
	// set when this is not the first page.
	Next, First string
}

// adminServers lists servers with their host facts, availability, session
// counts and Open/Close buttons, a page at a time.
func (p *Portal) adminServers(w http.ResponseWriter, r *http.Request, s *Session) {
	p.renderServers(w, r, s, http.StatusOK, notice{OK: okMessage(r)})
}

// renderServers draws the servers page with a notice.
func (p *Portal) renderServers(w http.ResponseWriter, r *http.Request, s *Session, status int, n notice) {
	tok := r.URL.Query().Get("next")
	if len(tok) > 1024 {
		p.fail(w, r, http.StatusBadRequest, s, "The page link is damaged (next). Go back to the first page of Servers.")
		return
	}
	views, next, err := p.svc.DescribeServers(r.Context(), nil, adminServersPage, tok)
	if err != nil {
		p.failErr(w, r, s, err, "list the servers")
		return
	}
	d := adminServersData{notice: n}
	for _, v := range views {
		d.Servers = append(d.Servers, serverRow(v))
	}
	if next != "" {
		d.Next = "/portal/admin/servers?" + url.Values{"next": {next}}.Encode()
	}
	if tok != "" {
		d.First = "/portal/admin/servers"
	}
	p.render(w, r, status, "admin_servers.html", s, d)
}

// serverRow is the row of a server view.
func serverRow(v *broker.ServerView) adminServerRow {
	h := v.Info.Host
	row := adminServerRow{
		ID: v.ID, Hostname: v.Info.Hostname, IP: v.Info.IP, LastSeen: v.LastSeen,
		Open: v.Open, Available: v.Availability == broker.Available, Availability: v.Availability,
		Reason: reasonText(v.UnavailabilityReason), Virtual: v.VirtualSessions, Console: v.ConsoleSessions,
		OS:    strings.TrimSpace(cmpOr(h.OSName, h.OSFamily) + " " + h.OSVersion),
		Agent: strings.TrimSpace(v.Info.AgentVersion + " " + v.Info.Driver),
	}
	if h.CPUs > 0 {
		row.CPU = fmt.Sprintf("%d × %s", h.CPUs, cmpOr(h.CPUModel, h.CPUArch))
	}
	if h.MemTotal > 0 {
		row.Memory = fmt.Sprintf("%s of %s used", bytesText(h.MemUsed), bytesText(h.MemTotal))
	}
	var gpus []string
	for _, g := range h.GPUs {
		gpus = append(gpus, strings.TrimSpace(g.Vendor+" "+g.Model))
	}
	row.GPUs = strings.Join(gpus, ", ")
	return row
}

// reasonText says an unavailability reason in plain words.
func reasonText(reason string) string {
	switch reason {
	case "":
		return ""
	case broker.ReasonServerClosed:
		return "closed: no new sessions are placed on it"
	case broker.ReasonServerFull:
		return "full: it runs as many sessions as it may"
	case broker.ReasonUnreachableAgent:
		return "its agent is unreachable"
	case broker.ReasonUnhealthy:
		return "its desktop server is unhealthy"
	case broker.ReasonUnknown:
		return "waiting for its agent to reconnect"
	}
	return reason
}

// bytesText is n bytes in GiB (or MiB below 1 GiB).
func bytesText(n int64) string {
	if n >= 1<<30 {
		return strconv.FormatFloat(float64(n)/(1<<30), 'f', 1, 64) + " GiB"
	}
	return strconv.FormatInt(n>>20, 10) + " MiB"
}

// cmpOr returns the first of a and b that is not empty.
func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// okMessage is the notice of the action an admin page redirected from
// (the done and id parameters), in fixed words.
func okMessage(r *http.Request) string {
	q := r.URL.Query()
	id := q.Get("id")
	if len(id) > maxFilterLen {
		id = id[:maxFilterLen]
	}
	switch q.Get("done") {
	case "opened":
		return fmt.Sprintf("Server %s is open: new sessions may be placed on it.", id)
	case "closed":
		return fmt.Sprintf("Server %s is closed: no new sessions are placed on it.", id)
	case "deleted":
		return fmt.Sprintf("Session %s is being deleted.", id)
	case "created":
		return fmt.Sprintf("Template %s was created.", id)
	case "saved":
		return fmt.Sprintf("Template %s was saved.", id)
	case "removed":
		return fmt.Sprintf("Template %s was deleted.", id)
	}
	return ""
}

// adminOpenServer opens a server for placement.
func (p *Portal) adminOpenServer(w http.ResponseWriter, r *http.Request, s *Session) {
	p.setServerOpen(w, r, s, true)
}

// adminCloseServer closes a server for placement (Force: even while it runs
// sessions).
func (p *Portal) adminCloseServer(w http.ResponseWriter, r *http.Request, s *Session) {
	p.setServerOpen(w, r, s, false)
}

// setServerOpen opens or closes the server of the path through the core's
// OpenServers / CloseServers and goes back to the servers page.
func (p *Portal) setServerOpen(w http.ResponseWriter, r *http.Request, s *Session, open bool) {
	id := r.PathValue("id")
	if id == "" || len(id) > maxFilterLen {
		p.renderServers(w, r, s, http.StatusBadRequest, notice{Error: "The server ID is missing or too long. Use the buttons of the servers list."})
		return
	}
	var res []broker.ServerResult
	verb, done := "close", "closed"
	if open {
		verb, done = "open", "opened"
		res = p.svc.OpenServers(r.Context(), []string{id})
	} else {
		res = p.svc.CloseServers(r.Context(), []string{id}, []bool{r.PostFormValue("force") != ""})
	}
	if f := res[0]; f.FailureCode != "" {
		status, msg := http.StatusServiceUnavailable, fmt.Sprintf("Server %s could not be %s: %s", id, done, f.FailureReason)
		switch f.FailureCode {
		case broker.FailureServerNotFound:
			status, msg = http.StatusNotFound, fmt.Sprintf("There is no server %s (it may have been removed). Reload the list.", id)
		case broker.FailureServerHasSessions:
			status, msg = http.StatusConflict, fmt.Sprintf("Server %s runs sessions: delete them first, or tick Force to close it anyway (its sessions keep running).", id)
		case broker.FailureInvalidInput:
			status = http.StatusBadRequest
		}
		p.log.Info("portal admin: server not "+done, "admin", s.User, logattr.ServerID, id, "code", f.FailureCode)
		p.renderServers(w, r, s, status, notice{Error: msg})
		return
	}
	p.log.Info("portal admin: server "+done, "admin", s.User, logattr.ServerID, id, "action", verb)
	http.Redirect(w, r, "/portal/admin/servers?"+url.Values{"done": {done}, "id": {id}}.Encode(), http.StatusSeeOther)
}

// adminSessionRow is one line of the sessions page.
type adminSessionRow struct {
	ID, Name, Owner, Type, State, Reason, Server string
	Created                                      time.Time
	Deletable                                    bool
}

// adminFilter is the sessions page's filter.
type adminFilter struct {
	Owner, State, Server string
}

// query is the filter as URL parameters (empty ones left out).
func (f adminFilter) query() url.Values {
	q := url.Values{}
	for k, v := range map[string]string{"owner": f.Owner, "state": f.State, "server": f.Server} {
		if v != "" {
			q.Set(k, v)
		}
	}
	return q
}

// adminSessionsData is admin_sessions.html's data.
type adminSessionsData struct {
	notice
	Filter   adminFilter
	States   []string
	Sessions []adminSessionRow
	// Next is the URL of the next page ("" on the last one), First the
	// first page's when this is not it.
	Next, First string
	// Scanned is set when the page stopped searching after adminScanBudget
	// sessions without filling up.
	Scanned int
}

// adminSessions lists every session, with owner, state and server filters,
// a page at a time (DescribeSessions' pagination).
func (p *Portal) adminSessions(w http.ResponseWriter, r *http.Request, s *Session) {
	p.renderSessions(w, r, s, http.StatusOK, notice{OK: okMessage(r)})
}

// parseFilter reads and checks the sessions page's filter.
func parseFilter(q url.Values) (adminFilter, error) {
	f := adminFilter{Owner: strings.TrimSpace(q.Get("owner")), State: strings.ToUpper(strings.TrimSpace(q.Get("state"))), Server: strings.TrimSpace(q.Get("server"))}
	if len(f.Owner) > maxFilterLen || len(f.Server) > maxFilterLen {
		return f, fmt.Errorf("the owner and server filters are at most %d characters: shorten them", maxFilterLen)
	}
	if f.State != "" && !slices.Contains(sessionStates, f.State) {
		return f, fmt.Errorf("state %q is not a session state: choose one of %s, or any", truncateText(f.State, 32), strings.Join(sessionStates, ", "))
	}
	return f, nil
}

// truncateText cuts s to n bytes.
func truncateText(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// renderSessions draws the sessions page with a notice.
func (p *Portal) renderSessions(w http.ResponseWriter, r *http.Request, s *Session, status int, n notice) {
	q := r.URL.Query()
	f, err := parseFilter(q)
	d := adminSessionsData{notice: n, Filter: f, States: sessionStates}
	if err != nil {
		d.Error = "Refused: " + err.Error() + "."
		p.render(w, r, http.StatusBadRequest, "admin_sessions.html", s, d)
		return
	}
	tok := q.Get("next")
	if len(tok) > 1024 {
		d.Error = "The page link is damaged (next): go back to the first page."
		p.render(w, r, http.StatusBadRequest, "admin_sessions.html", s, d)
		return
	}
	rows, next, scanned, err := p.findSessions(r.Context(), f, tok, adminSessionsPage, adminScanBudget)
	if err != nil {
		if broker.ErrorCode(err) == broker.CodeInvalidInput {
			d.Error = "Refused: " + err.Error() + ". Go back to the first page."
			p.render(w, r, http.StatusBadRequest, "admin_sessions.html", s, d)
			return
		}
		p.failErr(w, r, s, err, "list the sessions")
		return
	}
	d.Sessions = rows
	if next != "" {
		nq := f.query()
		nq.Set("next", next)
		d.Next = "/portal/admin/sessions?" + nq.Encode()
		if len(rows) < adminSessionsPage {
			d.Scanned = scanned
		}
	}
	if tok != "" {
		d.First = "/portal/admin/sessions"
		if fq := f.query(); len(fq) > 0 {
			d.First += "?" + fq.Encode()
		}
	}
	p.render(w, r, status, "admin_sessions.html", s, d)
}

// findSessions returns up to limit sessions that pass f from the page
// token tok on, and the token of the page after them. The owner filter
// goes to DescribeSessions; state and server are checked here on the
// sessions as the core shows them (a READY session of an unreachable
// server is UNKNOWN), reading at most budget sessions: scanned says how
// many it read.
func (p *Portal) findSessions(ctx context.Context, f adminFilter, tok string, limit, budget int) (rows []adminSessionRow, next string, scanned int, err error) {
	q := broker.DescribeQuery{NextToken: tok, MaxResults: limit, ServerID: f.Server}
	if f.Owner != "" {
		q.Filters = [][2]string{{"owner", f.Owner}}
	}
	if f.State != "" {
		// The store narrows to the stored states; match below keeps
		// those that show as f.State (READY or UNKNOWN on an unreachable
		// server), so the scan stays short.
		q.States = broker.StatesShowing(f.State)
	}
	match := func(v *broker.SessionView) bool {
		return (f.State == "" || v.State == f.State) && (f.Server == "" || v.ServerID == f.Server)
	}
	if f.State == "" && f.Server == "" {
		// Every session of the page passes: one page of the core.
		pg, err := p.svc.DescribeSessionsPage(ctx, q)
		if err != nil {
			return nil, "", 0, err
		}
		defer pg.Release()
		for i := range pg.Views {
			rows = append(rows, sessionRow(&pg.Views[i]))
		}
		return rows, pg.NextToken, len(pg.Views), nil
	}
	for scanned < budget {
		start := q.NextToken
		q.MaxResults = min(1000, budget-scanned)
		pg, err := p.svc.DescribeSessionsPage(ctx, q)
		if err != nil {
			return nil, "", scanned, err
		}
		cut := -1
		for i := range pg.Views {
			if v := &pg.Views[i]; match(v) {
				rows = append(rows, sessionRow(v))
				if len(rows) == limit {
					cut = i
					break
				}
			}
		}
		n, pageNext := len(pg.Views), pg.NextToken
		pg.Release()
		if cut >= 0 {
			scanned += cut + 1
			if cut == n-1 {
				return rows, pageNext, scanned, nil
			}
			// The page is full before the end of the core's page: the
			// token after the last row is that of a page of cut+1 from
			// the same start.
			q.NextToken, q.MaxResults = start, cut+1
			_, next, err := p.svc.DescribeSessions(ctx, q)
			return rows, next, scanned, err
		}
		scanned += n
		if pageNext == "" {
			return rows, "", scanned, nil
		}
		q.NextToken = pageNext
	}
	return rows, q.NextToken, scanned, nil
}

// sessionRow is the row of a session view (copied: page views are reused).
func sessionRow(v *broker.SessionView) adminSessionRow {
	row := adminSessionRow{ID: v.ID, Name: v.Name, Owner: v.Owner, Type: v.Type, State: v.State,
		Reason: v.StateReason, Server: v.ServerID, Created: v.CreationTime, Deletable: v.State != broker.StateDeleted}
	if v.ServerID == "" && v.State == broker.StateCreating {
		row.Server = "(waiting for a server)"
	}
	return row
}

// adminDeleteSession deletes a session of any owner through the core's
// DeleteSessions (Force: drop it even if its server is unreachable) and
// goes back to the sessions page with its filter.
func (p *Portal) adminDeleteSession(w http.ResponseWriter, r *http.Request, s *Session) {
	id := r.PathValue("id")
	_ = r.ParseForm()
	f, _ := parseFilter(r.PostForm)
	back := f.query()
	if id == "" || len(id) > maxFilterLen {
		p.renderSessions(w, r, s, http.StatusBadRequest, notice{Error: "The session ID is missing or too long. Use the buttons of the sessions list."})
		return
	}
	views, _, err := p.svc.DescribeSessions(r.Context(), broker.DescribeQuery{SessionIDs: []string{id}, MaxResults: 1})
	if err != nil {
		p.failErr(w, r, s, err, "find the session")
		return
	}
	if len(views) == 0 || views[0].State == broker.StateDeleted {
		p.renderSessions(w, r, s, http.StatusNotFound, notice{Error: fmt.Sprintf("There is no session %s (it may be deleted already). Reload the list.", id)})
		return
	}
	res := p.svc.DeleteSessions(r.Context(), []broker.DeleteRequest{{SessionID: id, Owner: views[0].Owner, Force: r.PostFormValue("force") != ""}})
	if res[0].FailureReason != "" {
		p.renderSessions(w, r, s, http.StatusConflict, notice{Error: fmt.Sprintf("Session %s could not be deleted: %s. Reload the list; tick Force to drop a session whose server is unreachable.", id, res[0].FailureReason)})
		return
	}
	p.log.Info("portal admin: session deleted", "admin", s.User, logattr.SessionID, id, logattr.Owner, views[0].Owner)
	back.Set("done", "deleted")
	back.Set("id", id)
	http.Redirect(w, r, "/portal/admin/sessions?"+back.Encode(), http.StatusSeeOther)
}

// adminTemplatesData is admin_templates.html's data.
type adminTemplatesData struct {
	notice
	Templates []*broker.Template
}

// adminTemplates lists every template with Edit and Delete.
func (p *Portal) adminTemplates(w http.ResponseWriter, r *http.Request, s *Session) {
	p.renderTemplates(w, r, s, http.StatusOK, notice{OK: okMessage(r)})
}

// renderTemplates draws the templates page with a notice.
func (p *Portal) renderTemplates(w http.ResponseWriter, r *http.Request, s *Session, status int, n notice) {
	list, err := p.svc.ListTemplates(r.Context())
	if err != nil {
		p.failErr(w, r, s, err, "list the templates")
		return
	}
	p.render(w, r, status, "admin_templates.html", s, adminTemplatesData{notice: n, Templates: list})
}

// templateForm is admin_template_form.html's data: a template as its form
// fields.
type templateForm struct {
	notice
	// ID is "" for a new template.
	ID, Name, Description, Type, Requirements, InitFile, AutorunFile string
	Args, Users, Groups                                              string // one per line
	MaxConcurrentClients                                             string
	DcvGlEnabled                                                     bool
	StorageRoot                                                      string
	// Limits are the template's quotas and lifetime policies.
	Limits limitsForm
	// Action is the form's URL.
	Action string
}

// formOf is the form of t.
func formOf(t *broker.Template) templateForm {
	f := templateForm{ID: t.ID, Name: t.Name, Description: t.Description, Type: t.Type, Requirements: t.Requirements,
		InitFile: t.InitFile, AutorunFile: t.AutorunFile, Args: strings.Join(t.AutorunFileArguments, "\n"),
		Users: strings.Join(t.Users, "\n"), Groups: strings.Join(t.Groups, "\n"), DcvGlEnabled: t.DcvGlEnabled,
		StorageRoot: t.StorageRoot, Action: "/portal/admin/templates/" + url.PathEscape(t.ID), Limits: limitsFormOf(t)}
	if t.MaxConcurrentClients > 0 {
		f.MaxConcurrentClients = strconv.FormatInt(t.MaxConcurrentClients, 10)
	}
	return f
}

// maxFormBytes bounds a template form's body.
const maxFormBytes = 64 << 10

// readTemplateForm reads a template form (the core checks the template
// itself); err names the field that cannot be read.
func readTemplateForm(w http.ResponseWriter, r *http.Request) (broker.Template, templateForm, error) {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		return broker.Template{}, templateForm{}, fmt.Errorf("the form could not be read (at most %d KiB): %v", maxFormBytes>>10, err)
	}
	v := r.PostFormValue
	f := templateForm{Name: strings.TrimSpace(v("name")), Description: v("description"), Type: v("type"), Requirements: v("requirements"),
		InitFile: strings.TrimSpace(v("init_file")), AutorunFile: strings.TrimSpace(v("autorun_file")), Args: v("args"),
		Users: v("users"), Groups: v("groups"), MaxConcurrentClients: strings.TrimSpace(v("max_clients")),
		DcvGlEnabled: v("gl") != "", StorageRoot: strings.TrimSpace(v("storage_root"))}
	t := broker.Template{Name: f.Name, Description: f.Description, Type: f.Type, Requirements: strings.TrimSpace(f.Requirements),
		InitFile: f.InitFile, AutorunFile: f.AutorunFile, AutorunFileArguments: lines(f.Args), DcvGlEnabled: f.DcvGlEnabled,
		StorageRoot: f.StorageRoot, Users: lines(f.Users), Groups: lines(f.Groups)}
	if f.MaxConcurrentClients != "" {
		n, err := strconv.ParseInt(f.MaxConcurrentClients, 10, 64)
		if err != nil || n < 0 {
			return t, f, fmt.Errorf("Max concurrent clients: must be a whole number, 0 or more (empty: the default), got %q", truncateText(f.MaxConcurrentClients, 32))
		}
		t.MaxConcurrentClients = n
	}
	lf, err := readLimitsForm(r, &t)
	f.Limits = lf
	if err != nil {
		return t, f, err
	}
	return t, f, nil
}

// lines splits one-per-line text into its non-empty trimmed lines.
func lines(s string) []string {
	var out []string
	for l := range strings.SplitSeq(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// adminNewTemplate shows an empty template form.
func (p *Portal) adminNewTemplate(w http.ResponseWriter, r *http.Request, s *Session) {
	p.render(w, r, http.StatusOK, "admin_template_form.html", s, templateForm{Type: broker.TypeVirtual, Action: "/portal/admin/templates"})
}

// adminCreateTemplate creates a template from the form.
func (p *Portal) adminCreateTemplate(w http.ResponseWriter, r *http.Request, s *Session) {
	t, f, err := readTemplateForm(w, r)
	f.Action = "/portal/admin/templates"
	if err != nil {
		f.Error = "Refused: " + err.Error() + "."
		p.render(w, r, http.StatusBadRequest, "admin_template_form.html", s, f)
		return
	}
	created, err := p.svc.CreateTemplate(r.Context(), t)
	if err != nil {
		f.Error = p.templateError(err, t.Name)
		p.render(w, r, statusOf(err), "admin_template_form.html", s, f)
		return
	}
	p.log.Info("portal admin: template created", "admin", s.User, "template", created.ID, "name", created.Name)
	http.Redirect(w, r, "/portal/admin/templates?"+url.Values{"done": {"created"}, "id": {created.Name}}.Encode(), http.StatusSeeOther)
}

// adminEditTemplate shows a template's form.
func (p *Portal) adminEditTemplate(w http.ResponseWriter, r *http.Request, s *Session) {
	id := r.PathValue("id")
	t, err := p.svc.GetTemplate(r.Context(), id)
	if err != nil {
		if statusOf(err) == http.StatusNotFound {
			p.renderTemplates(w, r, s, http.StatusNotFound, notice{Error: "There is no such template (it may have been deleted). Pick one from the list."})
			return
		}
		p.failErr(w, r, s, err, "read the template")
		return
	}
	p.render(w, r, http.StatusOK, "admin_template_form.html", s, formOf(t))
}

// adminUpdateTemplate saves a template's form (its publication included).
func (p *Portal) adminUpdateTemplate(w http.ResponseWriter, r *http.Request, s *Session) {
	id := r.PathValue("id")
	t, f, err := readTemplateForm(w, r)
	f.ID, f.Action = id, "/portal/admin/templates/"+url.PathEscape(id)
	if err != nil {
		f.Error = "Refused: " + err.Error() + "."
		p.render(w, r, http.StatusBadRequest, "admin_template_form.html", s, f)
		return
	}
	t.ID = id
	saved, err := p.svc.UpdateTemplate(r.Context(), t)
	if err != nil {
		f.Error = p.templateError(err, t.Name)
		p.render(w, r, statusOf(err), "admin_template_form.html", s, f)
		return
	}
	p.log.Info("portal admin: template saved", "admin", s.User, "template", saved.ID, "name", saved.Name)
	http.Redirect(w, r, "/portal/admin/templates?"+url.Values{"done": {"saved"}, "id": {saved.Name}}.Encode(), http.StatusSeeOther)
}

// adminDeleteTemplate deletes a template.
func (p *Portal) adminDeleteTemplate(w http.ResponseWriter, r *http.Request, s *Session) {
	id := r.PathValue("id")
	t, err := p.svc.GetTemplate(r.Context(), id)
	if err == nil {
		err = p.svc.DeleteTemplate(r.Context(), id)
	}
	if err != nil {
		if statusOf(err) == http.StatusNotFound {
			p.renderTemplates(w, r, s, http.StatusNotFound, notice{Error: "There is no such template (it may be deleted already)."})
			return
		}
		p.failErr(w, r, s, err, "delete the template")
		return
	}
	p.log.Info("portal admin: template deleted", "admin", s.User, "template", id, "name", t.Name)
	http.Redirect(w, r, "/portal/admin/templates?"+url.Values{"done": {"removed"}, "id": {t.Name}}.Encode(), http.StatusSeeOther)
}

// templateError says why the core refused a template and what to do.
func (p *Portal) templateError(err error, name string) string {
	switch {
	case errors.Is(err, broker.ErrConflict):
		return fmt.Sprintf("Refused: a template named %q exists already. Choose another name.", name)
	case errors.Is(err, broker.ErrNotFound):
		return "This template no longer exists (another admin may have deleted it). Go back to the list."
	}
	switch broker.ErrorCode(err) {
	case broker.CodeInvalidInput, broker.CodeForbidden, broker.CodeNotFound:
		return "Refused: " + err.Error() + ". Correct the field and save again."
	case broker.CodeUnavailable:
		return "The broker could not save the template just now (" + err.Error() + "). Try again in a few seconds."
	}
	p.log.Error("portal admin: save template", "err", err)
	return "The broker could not save the template just now. Try again in a few seconds."
}

// adminClient is one line of the API clients page.
type adminClient struct {
	Name, ID string
	Active   bool
	Created  time.Time
}

// adminClientsData is admin_clients.html's data.
type adminClientsData struct {
	notice
	Clients []adminClient
}

// clientLister lists OAuth clients: the broker's store (oauth.Store), as
// `berth-broker describe-api-clients` reads them.
type clientLister interface {
	ListClients(ctx context.Context, kind string) ([]*oauth.Client, error)
}

// adminClients lists the API clients registered with the broker's
// authorization server, read-only (secrets are never shown: only their
// hashes are kept).
func (p *Portal) adminClients(w http.ResponseWriter, r *http.Request, s *Session) {
	d := adminClientsData{}
	cl, ok := p.store.(clientLister)
	if !ok {
		d.Error = "This broker's store does not list API clients. Use berth-broker describe-api-clients on the broker host."
		p.render(w, r, http.StatusOK, "admin_clients.html", s, d)
		return
	}
	list, err := cl.ListClients(r.Context(), oauth.KindAPI)
	if err != nil {
		p.failErr(w, r, s, err, "list the API clients")
		return
	}
	for _, c := range list {
		d.Clients = append(d.Clients, adminClient{Name: c.Name, ID: c.ID, Active: c.Active, Created: c.CreatedAt})
	}
	p.render(w, r, http.StatusOK, "admin_clients.html", s, d)
}

// failErr renders the error page for a core error while doing what: the
// core's message for a refusal, a plain retry note otherwise.
func (p *Portal) failErr(w http.ResponseWriter, r *http.Request, s *Session, err error, what string) {
	status := statusOf(err)
	switch status {
	case http.StatusBadRequest, http.StatusNotFound, http.StatusForbidden, http.StatusConflict:
		p.fail(w, r, status, s, fmt.Sprintf("Could not %s: %v.", what, err))
		return
	}
	p.log.Error("portal admin: "+what, "admin", s.User, "err", err)
	p.fail(w, r, http.StatusServiceUnavailable, s, fmt.Sprintf("The broker could not %s just now. Reload the page in a few seconds.", what))
}
