package postgres

import (
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/berth-dev/berth/internal/broker"
)

// specInputs are stored forms of a SessionSpec: what encodeJSON writes, and
// JSON it does not write that must decode as encoding/json decodes it.
var specInputs = []string{
	`{}`,
	`{"gl":true,"init":"/etc/init.sh","autorun":"/usr/bin/app","args":["-a","b c"],"perm":"[permissions]\n%owner% allow builtin\n","req":"tag:ram_gb >= 64 and tag:rack != 'r3'","enqueue":true,"noretry":true}`,
	`{"args":[]}`,
	`{"args":null}`,
	`{"req":"a \u003e b \u0026 \"c\" \\ \/ \b\f\n\r\t \u00e9 \u20ac"}`,
	`{"init":"\ud83d\ude00 pair, \ud83d lone, \ude00 lone low, \ud83d\u0041 not a pair"}`,
	`{"init":"é – ✓ 😀 raw"}`,
	` { "gl" : false , "args" : [ "x" , "" ] } `,
	`{"init":"a","init":"b"}`,
	`{"unknown":1,"init":"x"}`,
	`{"INIT":"case differs"}`,
	`{"gl":null}`,
	`{"args":["a",1]}`,
	`{"init":"unterminated}`,
	`{"init":"x"} trailing`,
	`{"init":"bad \x escape"}`,
	`{"init":"\u12"}`,
	`[]`,
	`null`,
	``,
}

// TestDecodeSpec checks decodeSpec against encoding/json on specInputs.
func TestDecodeSpec(t *testing.T) {
	for _, in := range specInputs {
		checkDecodeSpec(t, []byte(in))
	}
}

func checkDecodeSpec(t *testing.T, in []byte) {
	t.Helper()
	var want, got broker.SessionSpec
	wantErr := json.Unmarshal(in, &want)
	gotErr := decodeSpec(in, &got)
	if (wantErr == nil) != (gotErr == nil) {
		t.Fatalf("decodeSpec(%q): error %v, encoding/json %v", in, gotErr, wantErr)
	}
	if wantErr != nil {
		return
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("decodeSpec(%q) (-encoding/json +decodeSpec):\n%s", in, d)
	}
	// The same for an array of strings.
	var wantS []string
	wantErr = json.Unmarshal(in, &wantS)
	gotS, gotErr := decodeStrings(in)
	if (wantErr == nil) != (gotErr == nil) || cmp.Diff(wantS, gotS) != "" {
		t.Errorf("decodeStrings(%q) = %q, %v; encoding/json %q, %v", in, gotS, gotErr, wantS, wantErr)
	}
}

// TestEncodeJSON_RoundTrip: what encodeJSON writes decodes to the same Spec
// and Excluded.
func TestEncodeJSON_RoundTrip(t *testing.T) {
	for _, sp := range []broker.SessionSpec{
		{},
		{DcvGlEnabled: true, InitFile: "/i", AutorunFile: "/a", AutorunFileArguments: []string{"x", "", `"q"`},
			PermissionsFile: "[permissions]\r\n%any% allow display\t\x01", Requirements: "a < b && c > d",
			EnqueueRequest: true, DisableRetryOnFailure: true},
		{AutorunFileArguments: []string{}},
		{InitFile: "\u2028 \u2029 \x7f 😀"},
	} {
		ss := &broker.Session{Spec: sp, Excluded: []string{"s-1", "s<2>"}}
		excluded, spec, err := encodeJSON(ss)
		if err != nil {
			t.Fatal(err)
		}
		var got broker.SessionSpec
		if err := decodeSpec([]byte(spec), &got); err != nil {
			t.Fatalf("decodeSpec(%s): %v", spec, err)
		}
		want := sp
		if len(want.AutorunFileArguments) == 0 {
			want.AutorunFileArguments = nil // omitempty
		}
		if d := cmp.Diff(want, got); d != "" {
			t.Errorf("spec %s (-want +got):\n%s", spec, d)
		}
		ex, err := decodeStrings([]byte(excluded))
		if err != nil || cmp.Diff(ss.Excluded, ex) != "" {
			t.Errorf("excluded %s = %q, %v", excluded, ex, err)
		}
	}
}

func FuzzDecodeSpec(f *testing.F) {
	for _, in := range specInputs {
		f.Add([]byte(in))
	}
	f.Fuzz(func(t *testing.T, in []byte) { checkDecodeSpec(t, in) })
}

// BenchmarkDecodeSpec decodes the spec of storetest.NewSession.
func BenchmarkDecodeSpec(b *testing.B) {
	in := []byte(specInputs[1])
	var sp broker.SessionSpec
	for b.Loop() {
		if err := decodeSpec(in, &sp); err != nil {
			b.Fatal(err)
		}
	}
}
