package portal

import (
	"bytes"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

// page is what layout.html and every page template execute on.
type page struct {
	// S is the signed-in user's portal session; nil when signed out.
	S *Session
	// CSRF is S's token, for forms ("" when signed out).
	CSRF string
	// Data is the page's own data.
	Data any
	// Asset maps a static file name (portal.css) to its URL.
	Asset map[string]string
	// Path is the request path, for the nav's current page.
	Path string
	// AdminNav are the admin pages' nav links (shown to admins).
	AdminNav []navLink
}

// navLink is one link of the nav.
type navLink struct{ Label, Href string }

// addAdminNav adds an admin page's link to the nav (admin.go calls it in
// registerAdmin, in the order the links should show).
func (p *Portal) addAdminNav(label, href string) {
	p.adminNav = append(p.adminNav, navLink{Label: label, Href: href})
}

// rowData is the "row" template's data: a session row, or an empty one
// (nil item) for the script to fill.
type rowData struct {
	CSRF string
	It   sessionItem
}

// funcs are the templates' helper functions.
var funcs = template.FuncMap{
	"since": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.UTC().Format("2006-01-02 15:04 UTC")
	},
	"lower": strings.ToLower,
	"row": func(csrf string, it any) rowData {
		r := rowData{CSRF: csrf}
		if x, ok := it.(sessionItem); ok {
			r.It = x
		}
		return r
	},
	"join": strings.Join,
}

// loadPages parses layout.html with each other template file.
func (p *Portal) loadPages() error {
	layout, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html")
	if err != nil {
		return err
	}
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return err
	}
	p.pages = map[string]*template.Template{}
	for _, n := range names {
		base := path.Base(n)
		if base == "layout.html" {
			continue
		}
		t, err := template.Must(layout.Clone()).ParseFS(templateFS, n)
		if err != nil {
			return fmt.Errorf("portal template %s: %w", base, err)
		}
		p.pages[base] = t
	}
	return nil
}

// render executes the page template name (in layout.html) with data and
// writes it with status. s may be nil (signed out).
func (p *Portal) render(w http.ResponseWriter, r *http.Request, status int, name string, s *Session, data any) {
	t, ok := p.pages[name]
	if !ok {
		p.log.Error("portal template missing", "template", name)
		http.Error(w, "internal error: page template missing", http.StatusInternalServerError)
		return
	}
	pg := page{S: s, Data: data, Asset: p.assets, Path: r.URL.Path, AdminNav: p.adminNav}
	if s != nil {
		pg.CSRF = s.CSRF
	}
	var b bytes.Buffer
	if err := t.ExecuteTemplate(&b, "layout.html", pg); err != nil {
		p.log.Error("render portal page", "template", name, "err", err)
		http.Error(w, "internal error: the page could not be drawn; reload it", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(b.Bytes())
}

// errorData is error.html's data.
type errorData struct {
	Status  int
	Title   string
	Message string
}

// fail renders error.html with status and msg, which should say what to do.
// A request for JSON (the script's API) gets {"error": msg}.
func (p *Portal) fail(w http.ResponseWriter, r *http.Request, status int, s *Session, msg string) {
	if wantsJSON(r) {
		writeJSON(w, status, map[string]string{"error": msg})
		return
	}
	p.render(w, r, status, "error.html", s, errorData{Status: status, Title: http.StatusText(status), Message: msg})
}

// wantsJSON reports whether r is the script's (its API, or Accept JSON).
func wantsJSON(r *http.Request) bool {
	return strings.HasPrefix(r.URL.Path, "/portal/api/") || strings.Contains(r.Header.Get("Accept"), "application/json")
}
