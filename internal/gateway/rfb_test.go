package gateway

import (
	"bytes"
	"errors"
	"testing"
)

// handshake is what noVNC sends before its first message: protocol version,
// security type None, ClientInit (shared).
var handshake = []byte("RFB 003.008\n\x01\x01")

// Client messages, one of each kind.
var (
	setPixelFormat = append([]byte{0, 0, 0, 0}, make([]byte, 16)...)
	setEncodings   = []byte{2, 0, 0, 3, 0, 0, 0, 7, 0, 0, 0, 1, 0xff, 0xff, 0xfe, 0xfe}
	fbUpdate       = []byte{3, 1, 0, 0, 0, 0, 5, 0, 3, 32}
	keyEvent       = []byte{4, 1, 0, 0, 0, 0, 0, 0x61}
	pointerEvent   = []byte{5, 1, 0, 10, 0, 20}
	cutText        = []byte{6, 0, 0, 0, 0, 0, 0, 5, 'h', 'e', 'l', 'l', 'o'}
	extCutText     = []byte{6, 0, 0, 0, 0xff, 0xff, 0xff, 0xfc, 1, 2, 3, 4} // length -4
	contUpdates    = []byte{150, 1, 0, 0, 0, 0, 5, 0, 3, 32}
	fence          = []byte{248, 0, 0, 0, 0x80, 0, 0, 1, 2, 'a', 'b'}
	xvp            = []byte{250, 0, 1, 2}
	setDesktopSize = append([]byte{251, 0, 5, 0, 3, 32, 1, 0}, make([]byte, 16)...)
	qemuKey        = []byte{255, 0, 0, 1, 0, 0, 0, 0x61, 0, 0, 0, 30}
)

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// run feeds in to a filter in chunks of n bytes (0: at once).
func run(allow func(input) bool, in []byte, n int) ([]byte, error) {
	f := &clientFilter{allow: allow}
	var out []byte
	var err error
	if n == 0 {
		return f.feed(nil, in)
	}
	for i := 0; i < len(in) && err == nil; i += n {
		out, err = f.feed(out, in[i:min(i+n, len(in))])
	}
	return out, err
}

func TestClientFilter_PassesEverythingAllowed(t *testing.T) {
	in := cat(handshake, setPixelFormat, setEncodings, fbUpdate, keyEvent, pointerEvent, cutText, extCutText, contUpdates, fence, xvp, setDesktopSize, qemuKey)
	for _, n := range []int{0, 1, 2, 3, 7, 64} {
		out, err := run(nil, in, n)
		if err != nil || !bytes.Equal(out, in) {
			t.Errorf("chunks of %d: err %v, out differs: %v", n, err, !bytes.Equal(out, in))
		}
	}
}

func TestClientFilter_ViewOnlyDropsInput(t *testing.T) {
	in := cat(handshake, setEncodings, keyEvent, fbUpdate, pointerEvent, cutText, qemuKey, extCutText, setDesktopSize, xvp, fence, contUpdates)
	want := cat(handshake, setEncodings, fbUpdate, fence, contUpdates)
	none := func(in input) bool { return in == inputNone }
	for _, n := range []int{0, 1, 5} {
		out, err := run(none, in, n)
		if err != nil || !bytes.Equal(out, want) {
			t.Errorf("chunks of %d: err %v\n got %v\nwant %v", n, err, out, want)
		}
	}
	// Keyboard only: pointer and clipboard go, keys stay.
	kb := func(in input) bool { return in == inputNone || in == inputKeyboard || in == inputControl }
	out, err := run(kb, cat(handshake, keyEvent, pointerEvent, qemuKey, cutText), 3)
	if want := cat(handshake, keyEvent, qemuKey); err != nil || !bytes.Equal(out, want) {
		t.Errorf("keyboard only: %v %v", out, err)
	}
}

func TestClientFilter_RFB33(t *testing.T) {
	in := cat([]byte("RFB 003.003\n\x01"), keyEvent)
	if out, err := run(nil, in, 1); err != nil || !bytes.Equal(out, in) {
		t.Errorf("3.3: %v %v", out, err)
	}
}

func TestClientFilter_Errors(t *testing.T) {
	cases := map[string][]byte{
		"version":       []byte("HTTP/1.1 200\n"),
		"major":         []byte("RFB 004.000\n"),
		"security":      []byte("RFB 003.008\n\x02"),
		"unknown type":  cat(handshake, []byte{7, 0, 0}),
		"qemu subtype":  cat(handshake, []byte{255, 1, 0, 0}),
		"huge cut text": cat(handshake, []byte{6, 0, 0, 0, 0x7f, 0xff, 0xff, 0xff}),
		"huge fence":    cat(handshake, []byte{248, 0, 0, 0, 0, 0, 0, 0, 65}),
	}
	for name, in := range cases {
		out, err := run(nil, in, 1)
		if !errors.Is(err, errRFB) {
			t.Errorf("%s: err %v", name, err)
		}
		if len(out) > len(in) {
			t.Errorf("%s: output longer than input", name)
		}
	}
}

// messages splits a filtered stream (after the handshake) into message types;
// it fails on a stream the filter could not have produced.
func messages(t *testing.T, s []byte) []byte {
	var types []byte
	f := &clientFilter{allow: func(in input) bool { return true }, stage: stageMessages}
	// Re-parse message by message, recording each type.
	for len(s) > 0 {
		types = append(types, s[0])
		before := len(s)
		// Feed byte by byte until the filter is between messages again.
		for i := 0; i < before; i++ {
			if _, err := f.feed(nil, s[:1]); err != nil {
				t.Fatalf("filtered stream does not parse: %v", err)
			}
			s = s[1:]
			if f.need == 0 && f.remain == 0 {
				break
			}
		}
	}
	return types
}

// FuzzClientMessages feeds arbitrary client streams, whole and in chunks,
// to the filter: it must not panic, must give the same result however the
// stream is split, must pass an allowed stream unchanged up to an error, and
// must never let a denied message through.
func FuzzClientMessages(f *testing.F) {
	f.Add(cat(handshake, setPixelFormat, setEncodings, fbUpdate, keyEvent, pointerEvent, cutText), uint8(3))
	f.Add(cat(handshake, extCutText, qemuKey, fence, setDesktopSize, xvp, contUpdates), uint8(1))
	f.Add([]byte("RFB 003.003\n\x00\x04\x01\x00\x00\x00\x00\x00\x41"), uint8(0))
	f.Fuzz(func(t *testing.T, in []byte, chunk uint8) {
		all, errAll := run(nil, in, 0)
		split, errSplit := run(nil, in, int(chunk))
		if !bytes.Equal(all, split) || (errAll == nil) != (errSplit == nil) {
			t.Fatalf("chunking changes the result: %v/%v vs %v/%v", all, errAll, split, errSplit)
		}
		if !bytes.HasPrefix(in, all) {
			t.Fatalf("allowed stream changed")
		}
		if errAll != nil && !errors.Is(errAll, errRFB) {
			t.Fatalf("unexpected error %v", errAll)
		}
		none := func(in input) bool { return in == inputNone }
		out, _ := run(none, in, int(chunk))
		if len(out) > len(in) {
			t.Fatal("filter grew the stream")
		}
		// Skip the handshake bytes the filter passed, then check the types.
		g := &clientFilter{}
		hs := 0
		for hs < len(out) && g.stage != stageMessages {
			if _, err := g.feed(nil, out[hs:hs+1]); err != nil {
				t.Fatalf("filtered handshake does not parse: %v", err)
			}
			hs++
		}
		for _, typ := range messages(t, out[hs:]) {
			switch typ {
			case msgKeyEvent, msgPointerEvent, msgClientCutText, msgQEMU, msgSetDesktopSize, msgXVP:
				t.Fatalf("input message %d passed a view-only filter", typ)
			}
		}
	})
}

func TestClassify(t *testing.T) {
	if classify(msgQEMU, 0) != inputKeyboard || classify(msgFBUpdateRequest, 0) != inputNone {
		t.Error("classify")
	}
}
