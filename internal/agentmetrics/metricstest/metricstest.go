// Package metricstest reads metric values for the agent's tests: from a
// registry (agentmetrics.Metrics.Registry) or from a scraped exposition
// (text format), so that tests check the counters the real code moved.
package metricstest

import (
	"io"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Families are gathered or parsed metric families, by name.
type Families map[string]*dto.MetricFamily

// Gather returns g's metric families.
func Gather(tb testing.TB, g prometheus.Gatherer) Families {
	tb.Helper()
	list, err := g.Gather()
	if err != nil {
		tb.Fatalf("gather: %v", err)
	}
	out := make(Families, len(list))
	for _, f := range list {
		out[f.GetName()] = f
	}
	return out
}

// Parse reads a scrape in the Prometheus text format.
func Parse(tb testing.TB, r io.Reader) Families {
	tb.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		tb.Fatalf("parse exposition: %v", err)
	}
	return Families(fams)
}

// Value returns the series name{labels} (labels as key, value pairs): a
// counter's or gauge's value, a histogram's sample count. ok is false when
// there is no such series.
func (fs Families) Value(name string, labels ...string) (v float64, ok bool) {
	f := fs[name]
	if f == nil {
		return 0, false
	}
	for _, m := range f.GetMetric() {
		if !matches(m, labels) {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		case m.Untyped != nil:
			return m.Untyped.GetValue(), true
		}
	}
	return 0, false
}

// Sum returns the sum of the histogram series name{labels}, or false.
func (fs Families) Sum(name string, labels ...string) (float64, bool) {
	f := fs[name]
	if f == nil {
		return 0, false
	}
	for _, m := range f.GetMetric() {
		if matches(m, labels) && m.Histogram != nil {
			return m.Histogram.GetSampleSum(), true
		}
	}
	return 0, false
}

// Must is Value that fails the test when the series does not exist.
func (fs Families) Must(tb testing.TB, name string, labels ...string) float64 {
	tb.Helper()
	v, ok := fs.Value(name, labels...)
	if !ok {
		tb.Fatalf("no series %s%v (have %s)", name, labels, strings.Join(fs.Names(), ", "))
	}
	return v
}

// Names returns the family names, sorted.
func (fs Families) Names() []string {
	out := make([]string, 0, len(fs))
	for n := range fs {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func matches(m *dto.Metric, labels []string) bool {
	for i := 0; i+1 < len(labels); i += 2 {
		found := false
		for _, lp := range m.GetLabel() {
			if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}
