package broker

import (
	"reflect"
	"strings"
	"testing"
)

// TestInfoEqual sets each field of a report, one at a time, and checks that
// infoEqual sees the change (so a field added to ServerInfo or Host must be
// added to it), and that onlyVolatile lets through exactly the volatile
// figures.
func TestInfoEqual(t *testing.T) {
	volatile := map[string]bool{"Host.Load1": true, "Host.Load5": true, "Host.Load15": true, "Host.MemUsed": true, "Host.SwapUsed": true}
	base := ServerInfo{Tags: map[string]string{"a": "b"}, Endpoints: []Endpoint{{Port: 1}}, Host: Host{GPUs: []GPU{{Model: "x"}}, LoggedInUsers: []string{"u"}}}
	n := 0
	var visit func(prefix string, typ reflect.Type)
	visit = func(prefix string, typ reflect.Type) {
		for i := range typ.NumField() {
			f := typ.Field(i)
			name := prefix + f.Name
			if f.Type == reflect.TypeFor[Host]() {
				visit(name+".", f.Type)
				continue
			}
			cp := base
			cp.Tags = map[string]string{"a": "b"}
			cp.Endpoints = []Endpoint{{Port: 1}}
			cp.Host.GPUs = []GPU{{Model: "x"}}
			cp.Host.LoggedInUsers = []string{"u"}
			change(t, name, fieldOf(reflect.ValueOf(&cp).Elem(), name))
			n++
			if infoEqual(&base, &cp) {
				t.Errorf("infoEqual misses %s", name)
			}
			if got := onlyVolatile(&base, &cp); got != volatile[name] {
				t.Errorf("onlyVolatile with %s changed = %v, want %v", name, got, volatile[name])
			}
		}
	}
	visit("", reflect.TypeFor[ServerInfo]())
	if n < 30 {
		t.Fatalf("visited %d fields", n)
	}
	if !infoEqual(&base, &base) || !onlyVolatile(&base, &base) {
		t.Error("a report differs from itself")
	}
}

// fieldOf returns the field of v named by a dotted path.
func fieldOf(v reflect.Value, path string) reflect.Value {
	for name := range strings.SplitSeq(path, ".") {
		v = v.FieldByName(name)
	}
	return v
}

// change gives a field a value its zero-ish test value does not have.
func change(t *testing.T, name string, v reflect.Value) {
	switch v.Kind() {
	case reflect.String:
		v.SetString("changed")
	case reflect.Int, reflect.Int64:
		v.SetInt(v.Int() + 7)
	case reflect.Float64:
		v.SetFloat(v.Float() + 0.5)
	case reflect.Bool:
		v.SetBool(!v.Bool())
	case reflect.Map:
		v.Set(reflect.ValueOf(map[string]string{"a": "c"}))
	case reflect.Slice:
		switch v.Type().Elem() {
		case reflect.TypeFor[Endpoint]():
			v.Set(reflect.ValueOf([]Endpoint{{Port: 2}}))
		case reflect.TypeFor[GPU]():
			v.Set(reflect.ValueOf([]GPU{{Model: "y"}}))
		case reflect.TypeFor[string]():
			v.Set(reflect.ValueOf([]string{"v"}))
		default:
			t.Fatalf("%s: no test value for %s", name, v.Type())
		}
	default:
		t.Fatalf("%s: no test value for %s", name, v.Type())
	}
}
