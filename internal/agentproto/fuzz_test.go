package agentproto_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/agentproto"
)

// FuzzDecode checks that Decode never panics and that whatever it accepts
// survives a round trip: decode → encode → decode → encode gives the same bytes.
func FuzzDecode(f *testing.F) {
	// The seed corpus lives in testdata/fuzz/FuzzDecode; add a few typed seeds here too.
	host := sampleHost()
	for _, b := range []agentproto.Body{
		&agentproto.Hello{ProtocolVersion: agentproto.ProtocolVersion, ServerID: "srv", Host: host, Sessions: sampleSessions()},
		&agentproto.Update{Host: &host, Sessions: []agentproto.Session{}},
		&agentproto.Update{Seq: 42, Changes: []agentproto.Session{{ID: "s1", Owner: "alice", State: agentproto.StateDeleted}}},
		&agentproto.Ack{Resync: true},
		&agentproto.Update{Seq: 43, Figures: &agentproto.HostFigures{Load: agentproto.Load{One: 0.5}, MemoryUsedBytes: 1 << 30}},
		&agentproto.Welcome{ProtocolVersion: agentproto.ProtocolVersion, UpdateIntervalMS: 1000, FleetSize: 10},
		&agentproto.Command{Kind: agentproto.KindNotify, SessionID: "s1", Notify: &agentproto.NotifyCommand{
			Message: "ends in 2 minutes", Policy: "session-max-lifetime-hours", Deadline: time.Date(2026, 12, 8, 18, 0, 0, 0, time.UTC), Extendable: true}},
		&agentproto.Command{Kind: agentproto.KindDisconnect, SessionID: "s1", Notify: &agentproto.NotifyCommand{Message: "idle"}},
		&agentproto.Command{Kind: agentproto.KindDisconnect, SessionID: "s1"},
		&agentproto.Update{Seq: 44, Changes: []agentproto.Session{{ID: "s1", Owner: "alice", State: agentproto.StateReady,
			LastInputTime: time.Date(2026, 12, 8, 17, 0, 30, 0, time.UTC), OwnerGroups: []string{"alice", "gpu"}}}},
	} {
		data, err := agentproto.Encode("1", b)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := agentproto.Decode(data)
		if err != nil {
			return
		}
		once, err := agentproto.Encode(m.ID, m.Body)
		if err != nil {
			t.Fatalf("re-encode %T: %v", m.Body, err)
		}
		m2, err := agentproto.Decode(once)
		if err != nil {
			t.Fatalf("decode of re-encoded %s: %v", once, err)
		}
		twice, err := agentproto.Encode(m2.ID, m2.Body)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(once, twice) {
			t.Fatalf("round trip differs:\n%s\n%s", once, twice)
		}
	})
}
