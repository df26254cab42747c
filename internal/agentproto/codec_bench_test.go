package agentproto_test

import (
	"testing"

	"github.com/berth-dev/berth/internal/agentproto"
)

// BenchmarkDecodeHeartbeat decodes the update that an idle agent sends
// every interval, the broker's most frequent message.
func BenchmarkDecodeHeartbeat(b *testing.B) {
	data, err := agentproto.Encode("u12345", &agentproto.Update{Seq: 12345})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := agentproto.Decode(data); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeFigures decodes an update that carries figures alone.
func BenchmarkDecodeFigures(b *testing.B) {
	data, err := agentproto.Encode("u12345", &agentproto.Update{Seq: 12345, Figures: &agentproto.HostFigures{
		Load: agentproto.Load{One: 1.25, Five: 0.5, Fifteen: 0.25}, MemoryUsedBytes: 5 << 30}})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := agentproto.Decode(data); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEncodeAck encodes the broker's answer to every update.
func BenchmarkEncodeAck(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := agentproto.Encode("u12345", &agentproto.Ack{}); err != nil {
			b.Fatal(err)
		}
	}
}
