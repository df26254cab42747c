package agentproto_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/agentproto"
	"github.com/google/go-cmp/cmp"
)

func sampleHost() agentproto.HostReport {
	return agentproto.HostReport{
		Hostname:   "desk-01",
		IP:         "10.0.0.7",
		Port:       8443,
		WebURLPath: "/",
		Endpoints: []agentproto.Endpoint{
			{IP: "10.0.0.7", Port: 8443, WebURLPath: "/", Protocol: agentproto.ProtocolHTTP},
			{IP: "10.0.0.7", Port: 8443, Protocol: agentproto.ProtocolQUIC},
		},
		Version:            "1.13.1",
		AgentVersion:       "0.1.0",
		Driver:             "sim",
		Healthy:            true,
		MaxVirtualSessions: 10,
		OS:                 agentproto.OS{Family: "linux", Name: "Debian GNU/Linux", Version: "12", Kernel: "6.1.0"},
		Memory:             agentproto.Memory{TotalBytes: 16 << 30, UsedBytes: 4 << 30, SwapTotalBytes: 1 << 30},
		AWS:                &agentproto.AWS{Region: "eu-west-1", InstanceType: "g4dn.xlarge", InstanceID: "i-0abc", ImageID: "ami-1"},
		CPU:                agentproto.CPU{Vendor: "GenuineIntel", Model: "Xeon", Arch: "x86_64", Count: 4, CoresPerCPU: 2},
		Load:               agentproto.Load{One: 0.5, Five: 0.25, Fifteen: 0.125},
		GPUs:               []agentproto.GPU{{Vendor: "NVIDIA", Model: "T4"}},
		LoggedInUsers:      []string{"alice"},
		Tags:               map[string]string{"pool": "gpu"},
	}
}

func sampleSessions() []agentproto.Session {
	t0 := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	return []agentproto.Session{
		{ID: "s1", Name: "one", Owner: "alice", Type: "VIRTUAL", State: agentproto.StateReady, CreationTime: t0, NumConnections: 1},
		{ID: "s2", Owner: "bob", Type: "VIRTUAL", State: agentproto.StateCreating},
	}
}

func TestEncodeDecode_RoundTrip(t *testing.T) {
	host := sampleHost()
	tests := []struct {
		name string
		id   string
		body agentproto.Body
	}{
		{"hello", "", &agentproto.Hello{ProtocolVersion: agentproto.ProtocolVersion, ServerID: "srv-1", AgentVersion: "0.1.0", Host: host, Sessions: sampleSessions()}},
		{"hello no sessions", "", &agentproto.Hello{ProtocolVersion: agentproto.ProtocolVersion, ServerID: "srv-1", Host: host}},
		{"welcome", "", &agentproto.Welcome{ProtocolVersion: 1, UpdateIntervalMS: 15000, HeartbeatTimeoutMS: 45000}},
		{"update full", "3", &agentproto.Update{Host: &host, Sessions: sampleSessions()}},
		{"update empty list", "4", &agentproto.Update{Sessions: []agentproto.Session{}}},
		{"update heartbeat", "5", &agentproto.Update{}},
		{"ack", "5", &agentproto.Ack{}},
		{"ack error", "5", &agentproto.Ack{Error: "store unavailable"}},
		{"update changes", "6", &agentproto.Update{Seq: 6, Changes: []agentproto.Session{
			{ID: "s1", Owner: "alice", Type: "VIRTUAL", State: agentproto.StateReady},
			{ID: "s2", Owner: "bob", Type: "VIRTUAL", State: agentproto.StateDeleted, StateReason: "ended"},
		}}},
		{"update full v3", "7", &agentproto.Update{Seq: 7, Sessions: sampleSessions()}},
		{"heartbeat v3", "8", &agentproto.Update{Seq: 8}},
		{"ack resync", "6", &agentproto.Ack{Resync: true}},
		{"ack retime", "7", &agentproto.Ack{UpdateIntervalMS: 50000, HeartbeatTimeoutMS: 150000}},
		{"update figures", "9", &agentproto.Update{Seq: 9, Figures: &agentproto.HostFigures{
			Load: agentproto.Load{One: 1.5, Five: 0.75, Fifteen: 0.25}, MemoryUsedBytes: 5 << 30, SwapUsedBytes: 1 << 20}}},
		{"update figures and changes", "10", &agentproto.Update{Seq: 10, Figures: &agentproto.HostFigures{MemoryUsedBytes: 1},
			Changes: []agentproto.Session{{ID: "s1", Owner: "alice", Type: "VIRTUAL", State: agentproto.StateReady}}}},
		{"welcome v3", "", &agentproto.Welcome{ProtocolVersion: 3, UpdateIntervalMS: 15000, HeartbeatTimeoutMS: 45000, FleetSize: 10000}},
		{"create", "c1", &agentproto.Command{Kind: agentproto.KindCreate, SessionID: "s1", TimeoutMS: 30000, Create: &agentproto.CreateCommand{
			Name: "n", Owner: "alice", Type: "VIRTUAL", MaxConcurrentClients: 2, DcvGlEnabled: true,
			InitFile: "init.sh", AutorunFile: "run.sh", AutorunFileArguments: []string{"-a", "b c"}, PermissionsFile: "[permissions]\n%owner% allow builtin\n",
		}}},
		{"delete", "c2", &agentproto.Command{Kind: agentproto.KindDelete, SessionID: "s1"}},
		{"permissions", "c3", &agentproto.Command{Kind: agentproto.KindPermissions, SessionID: "s1", Permissions: &agentproto.PermissionsCommand{File: "x"}}},
		{"screenshot", "c4", &agentproto.Command{Kind: agentproto.KindScreenshot, SessionID: "s1", Screenshot: &agentproto.ScreenshotCommand{MaxWidth: 800, MaxHeight: 600, Format: agentproto.FormatJPEG}}},
		{"notify", "c5", &agentproto.Command{Kind: agentproto.KindNotify, SessionID: "s1", Notify: &agentproto.NotifyCommand{
			Message: "ends in 15 minutes", Policy: "session-max-lifetime-hours", Deadline: time.Date(2026, 12, 8, 18, 0, 0, 0, time.UTC), Extendable: true}}},
		{"disconnect", "c6", &agentproto.Command{Kind: agentproto.KindDisconnect, SessionID: "s1", Notify: &agentproto.NotifyCommand{Message: "idle"}}},
		{"disconnect bare", "c7", &agentproto.Command{Kind: agentproto.KindDisconnect, SessionID: "s1"}},
		{"update activity", "5", &agentproto.Update{Seq: 5, Changes: []agentproto.Session{{ID: "s1", Owner: "alice", State: agentproto.StateReady,
			LastInputTime: time.Date(2026, 12, 8, 17, 0, 30, 0, time.UTC), OwnerGroups: []string{"alice", "gpu"}}}}},
		{"result ok", "c4", &agentproto.Result{OK: true, Images: []agentproto.Image{{Format: agentproto.FormatPNG, Data: []byte{0x89, 'P', 'N', 'G', 0, 1, 2}, CreationTime: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Primary: true}}}},
		{"result failed", "c1", &agentproto.Result{Error: "owner unknown"}},
		{"error", "", &agentproto.Error{Code: agentproto.CodeVersionUnsupported, Message: "too new", MinVersion: 1, MaxVersion: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data, err := agentproto.Encode(tt.id, tt.body)
			if err != nil {
				t.Fatal(err)
			}
			m, err := agentproto.Decode(data)
			if err != nil {
				t.Fatalf("Decode(%s): %v", data, err)
			}
			if m.Type != tt.body.MessageType() || m.ID != tt.id {
				t.Errorf("envelope = %q %q, want %q %q", m.Type, m.ID, tt.body.MessageType(), tt.id)
			}
			if diff := cmp.Diff(tt.body, m.Body); diff != "" {
				t.Errorf("body differs (-want +got):\n%s", diff)
			}
		})
	}
}

// TestUpdate_SessionsNilVersusEmpty pins the wire difference between "sessions
// unchanged" and "no sessions".
func TestUpdate_SessionsNilVersusEmpty(t *testing.T) {
	unchanged, _ := agentproto.Encode("1", &agentproto.Update{})
	if bytes.Contains(unchanged, []byte("sessions")) {
		t.Errorf("nil sessions encoded: %s", unchanged)
	}
	empty, _ := agentproto.Encode("1", &agentproto.Update{Sessions: []agentproto.Session{}})
	if !bytes.Contains(empty, []byte(`"sessions":[]`)) {
		t.Errorf("empty sessions not encoded as []: %s", empty)
	}
	m, err := agentproto.Decode([]byte(`{"type":"update","id":"1","body":{"sessions":null}}`))
	if err != nil {
		t.Fatal(err)
	}
	if m.Body.(*agentproto.Update).Sessions != nil {
		t.Error("null sessions decoded as non-nil")
	}
}

func TestDecode_Errors(t *testing.T) {
	long := strings.Repeat("x", agentproto.MaxIDLength+1)
	tests := []struct {
		name string
		in   string
	}{
		{"empty", ``},
		{"not json", `hello`},
		{"array", `[]`},
		{"null", `null`},
		{"missing type", `{"id":"1","body":{}}`},
		{"trailing data", `{"type":"ack","id":"1"} {}`},
		{"id too long", `{"type":"ack","id":"` + long + `"}`},
		{"id control char", `{"type":"ack","id":"a\u0000"}`},
		{"hello without body", `{"type":"hello"}`},
		{"hello without version", `{"type":"hello","body":{"server_id":"x"}}`},
		{"hello version string", `{"type":"hello","body":{"protocol_version":"1","server_id":"x"}}`},
		{"hello without server", `{"type":"hello","body":{"protocol_version":1}}`},
		{"hello bad session", `{"type":"hello","body":{"protocol_version":1,"server_id":"x","sessions":[{"id":""}]}}`},
		{"hello bad field type", `{"type":"hello","body":{"protocol_version":1,"server_id":"x","host":{"port":"80"}}}`},
		{"welcome zero version", `{"type":"welcome","body":{}}`},
		{"welcome negative", `{"type":"welcome","body":{"protocol_version":1,"update_interval_ms":-1}}`},
		{"ack without id", `{"type":"ack"}`},
		{"ack negative interval", `{"type":"ack","id":"1","body":{"update_interval_ms":-1}}`},
		{"ack negative timeout", `{"type":"ack","id":"1","body":{"heartbeat_timeout_ms":-5}}`},
		{"update sessions and changes", `{"type":"update","id":"1","body":{"seq":1,"sessions":[],"changes":[{"id":"s","state":"READY"}]}}`},
		{"update bad change", `{"type":"update","id":"1","body":{"seq":1,"changes":[{"id":""}]}}`},
		{"update host and figures", `{"type":"update","id":"1","body":{"seq":1,"host":{"hostname":"h"},"figures":{"memory_used_bytes":1}}}`},
		{"update negative figures", `{"type":"update","id":"1","body":{"seq":1,"figures":{"swap_used_bytes":-1}}}`},
		{"update figures bad load", `{"type":"update","id":"1","body":{"seq":1,"figures":{"load":{"one":"high"}}}}`},
		{"update negative seq", `{"type":"update","id":"1","body":{"seq":-1}}`},
		{"command without id", `{"type":"command","body":{"kind":"delete","session_id":"s"}}`},
		{"command unknown kind", `{"type":"command","id":"1","body":{"kind":"reboot","session_id":"s"}}`},
		{"command without session", `{"type":"command","id":"1","body":{"kind":"delete"}}`},
		{"command negative timeout", `{"type":"command","id":"1","body":{"kind":"delete","session_id":"s","timeout_ms":-5}}`},
		{"create without body", `{"type":"command","id":"1","body":{"kind":"create","session_id":"s"}}`},
		{"permissions without body", `{"type":"command","id":"1","body":{"kind":"permissions","session_id":"s"}}`},
		{"screenshot huge", `{"type":"command","id":"1","body":{"kind":"screenshot","session_id":"s","screenshot":{"max_width":100000}}}`},
		{"screenshot negative", `{"type":"command","id":"1","body":{"kind":"screenshot","session_id":"s","screenshot":{"max_height":-1}}}`},
		{"screenshot bad format", `{"type":"command","id":"1","body":{"kind":"screenshot","session_id":"s","screenshot":{"format":"gif"}}}`},
		{"notify without body", `{"type":"command","id":"1","body":{"kind":"notify","session_id":"s"}}`},
		{"notify too long", `{"type":"command","id":"1","body":{"kind":"notify","session_id":"s","notify":{"message":"` + strings.Repeat("m", agentproto.MaxNotifyMessage+1) + `"}}}`},
		{"disconnect reason too long", `{"type":"command","id":"1","body":{"kind":"disconnect","session_id":"s","notify":{"message":"` + strings.Repeat("m", agentproto.MaxNotifyMessage+1) + `"}}}`},
		{"notify bad deadline", `{"type":"command","id":"1","body":{"kind":"notify","session_id":"s","notify":{"message":"m","deadline":"soon"}}}`},
		{"session bad last input", `{"type":"update","id":"1","body":{"seq":1,"changes":[{"id":"s","state":"READY","last_input_time":5}]}}`},
		{"result without id", `{"type":"result","body":{"ok":true}}`},
		{"result bad base64", `{"type":"result","id":"1","body":{"ok":true,"images":[{"format":"png","data":"%%%"}]}}`},
		{"result bad image format", `{"type":"result","id":"1","body":{"ok":true,"images":[{"format":"bmp","data":""}]}}`},
		{"error without code", `{"type":"error","body":{}}`},
		{"int overflow", `{"type":"welcome","body":{"protocol_version":1e400}}`},
		{"deep nesting", `{"type":"update","id":"1","body":{"x":` + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + `}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := agentproto.Decode([]byte(tt.in))
			if err == nil {
				t.Fatalf("Decode succeeded: %+v", m)
			}
		})
	}
}

// TestHostReport_Figures checks that Figures and SetFigures cover the
// volatile figures of a report and nothing else.
func TestHostReport_Figures(t *testing.T) {
	h := sampleHost()
	f := agentproto.HostFigures{Load: agentproto.Load{One: 9, Five: 8, Fifteen: 7}, MemoryUsedBytes: 6, SwapUsedBytes: 5}
	want := sampleHost()
	want.Load = f.Load
	want.Memory.UsedBytes, want.Memory.SwapUsedBytes = 6, 5
	h.SetFigures(f)
	if diff := cmp.Diff(want, h); diff != "" {
		t.Errorf("SetFigures (-want +got):\n%s", diff)
	}
	if got := h.Figures(); got != f {
		t.Errorf("Figures = %+v, want %+v", got, f)
	}
}

// TestEncode_Ack: an empty ack, which Encode writes without encoding/json,
// comes out as encoding/json writes it, whatever its ID.
func TestEncode_Ack(t *testing.T) {
	for _, id := range []string{"", "u1", "u18446744073709551615", `a"b\c`, "<&>", "x y/z", "caf\u00e9", "\u2028", "a\x00b", "\xff"} {
		want, err := json.Marshal(struct {
			Type string   `json:"type"`
			ID   string   `json:"id,omitempty"`
			Body struct{} `json:"body"`
		}{Type: "ack", ID: id})
		if err != nil {
			t.Fatal(err)
		}
		got, err := agentproto.Encode(id, &agentproto.Ack{})
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("Encode(%q, ack) = %s, want %s", id, got, want)
		}
	}
}

// TestDecode_OnePassAsTwo: messages whose type comes first are decoded in
// one pass; those whose body comes first, in two; both give the same
// message, and a type named twice counts as its last naming.
func TestDecode_OnePassAsTwo(t *testing.T) {
	for _, tt := range []struct{ a, b string }{
		{`{"type":"update","id":"u1","body":{"seq":1,"figures":{"load":{"one":1}}}}`, `{"body":{"seq":1,"figures":{"load":{"one":1}}},"id":"u1","type":"update"}`},
		{`{"type":"ack","id":"u1"}`, `{"id":"u1","type":"ack"}`},
		{`{"type":"ack","id":"u1","body":{"resync":true}}`, `{"body":{"resync":true},"type":"ack","id":"u1"}`},
		{`{"type":"result","id":"7","body":{"ok":true}}`, `{"id":"7","body":{"ok":true},"type":"result"}`},
		{`{"type":"update","id":"u1","body":{},"type":"ack"}`, `{"id":"u1","type":"ack"}`},
	} {
		a, errA := agentproto.Decode([]byte(tt.a))
		b, errB := agentproto.Decode([]byte(tt.b))
		if errA != nil || errB != nil {
			t.Errorf("Decode(%s) = %v; Decode(%s) = %v", tt.a, errA, tt.b, errB)
			continue
		}
		if diff := cmp.Diff(b, a); diff != "" {
			t.Errorf("%s decodes otherwise than %s (-two +one):\n%s", tt.a, tt.b, diff)
		}
	}
}

func TestDecode_Version(t *testing.T) {
	for _, v := range []int{agentproto.MinProtocolVersion - 1, agentproto.ProtocolVersion + 1, -7} {
		// A future hello may change everything but protocol_version.
		in := `{"type":"hello","body":{"protocol_version":` + itoa(v) + `,"server_id":{"v2":true}}}`
		_, err := agentproto.Decode([]byte(in))
		var ve *agentproto.VersionError
		if !errors.As(err, &ve) || ve.Version != v {
			t.Errorf("version %d: err = %v, want *VersionError", v, err)
		}
	}
}

func TestDecode_UnknownType(t *testing.T) {
	m, err := agentproto.Decode([]byte(`{"type":"telemetry","id":"9","body":{"x":1}}`))
	if !errors.Is(err, agentproto.ErrUnknownType) {
		t.Fatalf("err = %v, want ErrUnknownType", err)
	}
	if m == nil || m.Type != "telemetry" || m.ID != "9" {
		t.Errorf("message = %+v", m)
	}
}

func TestDecode_UnknownFieldsIgnored(t *testing.T) {
	_, err := agentproto.Decode([]byte(`{"type":"update","id":"1","extra":1,"body":{"future":{"a":[1]},"sessions":[{"id":"s","new":true}]}}`))
	if err != nil {
		t.Fatal(err)
	}
}

func TestSizeLimit(t *testing.T) {
	big := &agentproto.Result{OK: true, Images: []agentproto.Image{{Format: agentproto.FormatPNG, Data: make([]byte, agentproto.MaxMessageSize*3/4)}}}
	if _, err := agentproto.Encode("1", big); !errors.Is(err, agentproto.ErrTooLarge) {
		t.Errorf("Encode: err = %v, want ErrTooLarge", err)
	}
	data := make([]byte, agentproto.MaxMessageSize+1)
	if _, err := agentproto.Decode(data); !errors.Is(err, agentproto.ErrTooLarge) {
		t.Errorf("Decode: err = %v, want ErrTooLarge", err)
	}
	// A 24 MiB image (32 MiB after base64, less the envelope) still fits.
	fits := &agentproto.Result{OK: true, Images: []agentproto.Image{{Format: agentproto.FormatPNG, Data: make([]byte, 24<<20-1024)}}}
	data, err := agentproto.Encode("1", fits)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := agentproto.Decode(data); err != nil {
		t.Fatal(err)
	}
}

func itoa(v int) string {
	if v < 0 {
		return "-" + itoa(-v)
	}
	if v < 10 {
		return string(rune('0' + v))
	}
	return itoa(v/10) + string(rune('0'+v%10))
}
