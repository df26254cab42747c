package api

import (
	"errors"
	"strings"
	"testing"
)

// TestReadEvents parses a stream with comments, retry and id lines, data
// over several lines, and stops with ErrStreamEnded at its end, or with
// the callback's error.
func TestReadEvents(t *testing.T) {
	stream := ": berth events\nretry: 2000\n\n" +
		"id: 7\nevent: session.state\ndata: {\"Id\":7,\"Type\":\"session.state\",\n" +
		"data: \"Data\":{\"state\":\"READY\"}}\n\n" +
		": keepalive\n\n" +
		"id: 9\nevent: server.idle\ndata:{\"Id\":9,\"Type\":\"server.idle\",\"ServerId\":\"s\"}\n\n"
	var got []Event
	err := ReadEvents(strings.NewReader(stream), func(e Event) error { got = append(got, e); return nil })
	if !errors.Is(err, ErrStreamEnded) {
		t.Fatalf("err = %v, want ErrStreamEnded", err)
	}
	if len(got) != 2 || got[0].Id != 7 || got[0].Data["state"] != "READY" || got[1].Id != 9 || got[1].ServerId != "s" {
		t.Fatalf("events = %+v", got)
	}
	stop := errors.New("stop")
	if err := ReadEvents(strings.NewReader(stream), func(Event) error { return stop }); !errors.Is(err, stop) {
		t.Errorf("err = %v, want the callback's", err)
	}
	if err := ReadEvents(strings.NewReader("data: {nope\n\n"), func(Event) error { return nil }); err == nil || errors.Is(err, ErrStreamEnded) {
		t.Errorf("a bad event: err = %v, want a decode error", err)
	}
}
