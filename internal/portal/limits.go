package portal

import (
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"

	"github.com/berth-dev/berth/internal/broker"
)

// limitsForm is the quota and lifetime part of the template form: each
// field as typed, "" for unset.
type limitsForm struct {
	GPUs, MaxSessions, MaxGPUs                                      string
	IdleMinutes, DisconnectedMinutes, LifetimeHours, ExtensionHours string
}

// limitsFormOf is the form of t's limits and GPUs.
func limitsFormOf(t *broker.Template) limitsForm {
	num := func(v float64) string {
		if v == 0 {
			return ""
		}
		return strconv.FormatFloat(v, 'f', -1, 64)
	}
	whole := func(n int) string {
		if n == 0 {
			return ""
		}
		return strconv.Itoa(n)
	}
	l := &t.Limits
	return limitsForm{GPUs: whole(t.GPUs), MaxSessions: whole(l.MaxSessions), MaxGPUs: whole(l.MaxGPUs),
		IdleMinutes: num(l.IdleTimeoutMinutes), DisconnectedMinutes: num(l.DisconnectedTimeoutMinutes),
		LifetimeHours: num(l.MaxLifetimeHours), ExtensionHours: num(l.MaxExtensionHours)}
}

// readLimitsForm reads the limits' fields of r's form into t (the core
// checks their ranges); err names the field that is not a number.
func readLimitsForm(r *http.Request, t *broker.Template) (limitsForm, error) {
	v := func(k string) string { return strings.TrimSpace(r.PostFormValue(k)) }
	f := limitsForm{GPUs: v("gpus"), MaxSessions: v("max_sessions"), MaxGPUs: v("max_gpus"), IdleMinutes: v("idle_minutes"),
		DisconnectedMinutes: v("disconnected_minutes"), LifetimeHours: v("lifetime_hours"), ExtensionHours: v("extension_hours")}
	for _, w := range []struct {
		label, text string
		dst         *int
	}{{"GPUs per session", f.GPUs, &t.GPUs}, {"Max sessions", f.MaxSessions, &t.Limits.MaxSessions}, {"Max GPUs", f.MaxGPUs, &t.Limits.MaxGPUs}} {
		if w.text == "" {
			continue
		}
		n, err := strconv.Atoi(w.text)
		if err != nil {
			return f, fmt.Errorf("%s: must be a whole number (empty: unset, -1: off), got %q", w.label, truncateText(w.text, 32))
		}
		*w.dst = n
	}
	for _, x := range []struct {
		label, text string
		dst         *float64
	}{
		{"Idle timeout", f.IdleMinutes, &t.Limits.IdleTimeoutMinutes}, {"Disconnected timeout", f.DisconnectedMinutes, &t.Limits.DisconnectedTimeoutMinutes},
		{"Max lifetime", f.LifetimeHours, &t.Limits.MaxLifetimeHours}, {"Max extension", f.ExtensionHours, &t.Limits.MaxExtensionHours},
	} {
		if x.text == "" {
			continue
		}
		n, err := strconv.ParseFloat(x.text, 64)
		if err != nil || math.IsNaN(n) || math.IsInf(n, 0) {
			return f, fmt.Errorf("%s: must be a number (fractions allowed; empty: unset, -1: off), got %q", x.label, truncateText(x.text, 32))
		}
		*x.dst = n
	}
	return f, nil
}
