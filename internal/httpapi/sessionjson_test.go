package httpapi

import (
	"encoding/json"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/broker"
)

func TestAppendSession_MatchesEncodingJSON(t *testing.T) {
	strs := []string{"", "alice", `quote " back \ slash`, "<b>&amp;</b>", "tab\tnew\nline\r\x00\x1f\x7f", "ünïcødé 日本",
		"bad \xff utf8 \xc3", "line\u2028sep\u2029", "emoji 😀", "%home%/x"}
	r := rand.New(rand.NewPCG(1, 2))
	pick := func() string { return strs[r.IntN(len(strs))] }
	server := []byte(`{"Id":"srv","Tags":[]}`)
	for i := range 2000 {
		x := &broker.Session{ID: pick(), Name: pick(), Owner: pick(), Type: pick(), State: pick(), Substate: pick(),
			StateReason: pick(), StorageRoot: pick(), MaxConcurrentClients: r.Int64N(3) - 1, NumOfConnections: r.Int64N(5),
			CreationTime: time.Unix(r.Int64N(2e9), r.Int64N(1e9)).In(time.FixedZone("x", 3600))}
		if i%2 == 0 {
			x.LastDisconnectionTime = time.Unix(r.Int64N(2e9), 0)
		}
		var srv []byte
		want := sessionFields(x)
		if i%3 != 0 {
			srv = server
			var s api.Server
			if err := json.Unmarshal(server, &s); err != nil {
				t.Fatal(err)
			}
			want.Server = &s
		}
		exp, err := json.Marshal(struct {
			api.Session
			Server json.RawMessage `json:"Server,omitempty"`
		}{want, srv})
		if err != nil {
			t.Fatal(err)
		}
		// Compare as parsed JSON values (field order of the embedding differs)
		// and byte-for-byte without the server.
		got := appendSession(nil, x, srv)
		var a, b any
		if err := json.Unmarshal(got, &a); err != nil {
			t.Fatalf("invalid JSON %s: %v", got, err)
		}
		_ = json.Unmarshal(exp, &b)
		ja, _ := json.Marshal(a)
		jb, _ := json.Marshal(b)
		if string(ja) != string(jb) {
			t.Fatalf("session %d:\n got %s\nwant %s", i, got, exp)
		}
		if srv == nil {
			plain, _ := json.Marshal(want)
			if string(got) != string(plain) {
				t.Fatalf("bytes differ:\n got %s\nwant %s", got, plain)
			}
		}
	}
}

func TestAppendTime_MatchesEncodingJSON(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	times := []time.Time{{}, time.Unix(0, 0), time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC),
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(2025, 3, 14, 9, 26, 53, 589_000_000, time.FixedZone("x", -7*3600)), time.Date(2025, 1, 2, 3, 4, 5, 10, time.UTC)}
	for range 5000 {
		ns := r.Int64N(1e9)
		switch r.IntN(3) {
		case 0:
			ns -= ns % 1e6 // milliseconds, as the stores keep them
		case 1:
			ns = 0
		}
		times = append(times, time.Unix(r.Int64N(4e11)-2e11, ns).In(time.FixedZone("z", r.IntN(50000)-25000)))
	}
	for _, x := range times {
		want, err := json.Marshal(x.UTC())
		if err != nil {
			continue // years json cannot write
		}
		if got := appendTime(nil, x); string(got) != string(want) {
			t.Fatalf("appendTime(%v) = %s, want %s", x, got, want)
		}
	}
}

// BenchmarkAppendTime writes a session time as a page does.
func BenchmarkAppendTime(b *testing.B) {
	t := time.Date(2026, 12, 6, 12, 16, 37, 376_000_000, time.UTC)
	buf := make([]byte, 0, 64)
	for b.Loop() {
		buf = appendTime(buf[:0], t)
	}
}

// FuzzAppendString: appendString writes what encoding/json writes.
func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "alice", "0123456789abcdef0123456789", `quote " back \ slash`, "<b>&amp;</b>",
		"tab\tnew\nline\r\x00\x1f\x7f", "ünïcødé 日本", "bad \xff utf8 \xc3", "line\u2028sep\u2029", "12345678\x01", "abcdefgh<"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, err := json.Marshal(s)
		if err != nil {
			t.Skip()
		}
		if got := appendString(nil, s); string(got) != string(want) {
			t.Fatalf("appendString(%q) = %s, encoding/json %s", s, got, want)
		}
	})
}

// BenchmarkAppendString encodes the strings of a session as a page has
// them: an ID, a name, an owner, a state and a storage root.
func BenchmarkAppendString(b *testing.B) {
	strs := []string{"7b1a608e-43d6-4a6a-b35e-f816dc3cfb5b", "desktop", "owner042", "READY", "/home/owner042"}
	buf := make([]byte, 0, 256)
	for b.Loop() {
		buf = buf[:0]
		for _, s := range strs {
			buf = appendString(buf, s)
		}
	}
}
