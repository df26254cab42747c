package portal

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/broker"
)

// TestAdmin_TemplateLimits: the admin template form sets a template's GPUs,
// quotas and lifetime policies, shows them when edited, and names the field
// of a bad value (the form's or the core's).
func TestAdmin_TemplateLimits(t *testing.T) {
	e := newAdminEnv(t)
	admin := e.signIn(t, "admin", []string{adminTestGroup}, false)
	form := url.Values{"name": {"GPU desktop"}, "type": {"VIRTUAL"}, "gpus": {"2"}, "max_sessions": {"10"}, "max_gpus": {"-1"},
		"idle_minutes": {"0.5"}, "disconnected_minutes": {""}, "lifetime_hours": {"8"}, "extension_hours": {"2"}}
	resp := admin.post(t, "/portal/admin/templates", form, true)
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("create: %s: %.1000s", resp.Status, bodyOf(resp))
	}
	list, err := e.svc.ListTemplates(context.Background())
	if err != nil || len(list) != 1 {
		t.Fatalf("templates after create: %v %v", list, err)
	}
	tp := list[0]
	want := broker.SessionLimits{IdleTimeoutMinutes: 0.5, MaxLifetimeHours: 8, MaxExtensionHours: 2, MaxSessions: 10, MaxGPUs: -1}
	if tp.GPUs != 2 || tp.Limits != want {
		t.Errorf("created GPUs %d limits %+v, want 2 and %+v", tp.GPUs, tp.Limits, want)
	}
	_, body := admin.get(t, "/portal/admin/templates/"+tp.ID)
	for _, v := range []string{`name="gpus" value="2"`, `name="max_sessions" value="10"`, `name="max_gpus" value="-1"`, `name="idle_minutes" value="0.5"`, `name="disconnected_minutes" value=""`} {
		if !strings.Contains(body, v) {
			t.Errorf("the edit form lacks %s", v)
		}
	}
	for _, tc := range []struct{ field, value, want string }{
		{"gpus", "two", "GPUs per session: must be a whole number"},
		{"lifetime_hours", "soon", "Max lifetime: must be a number"},
		{"max_sessions", "-5", "Limits.MaxSessions: must be 0 (unset), positive, or -1 (off)"},
		{"gpus", "65", "GPUs: must be between 0 and 64"},
	} {
		bad := url.Values{"name": {"X"}, "type": {"VIRTUAL"}, tc.field: {tc.value}}
		resp := admin.post(t, "/portal/admin/templates", bad, true)
		if body := bodyOf(resp); resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, tc.want) {
			t.Errorf("%s=%q: %s, want 400 with %q", tc.field, tc.value, resp.Status, tc.want)
		}
	}
}
