package gateway

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

// handshake is what noVNC sends before its first message: protocol version,
// security type None, ClientInit (shared).
var handshake = []byte("RFB 003.008\n\x01\x01")

// Client messages, one of each kind.
var (
	setPixelFormat = []byte{0, 0, 0, 0, 32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0}                // noVNC's
	setEncodings   = []byte{2, 0, 0, 4, 0, 0, 0, 7, 0, 0, 0, 1, 0xff, 0xff, 0xfe, 0xfe, 0xff, 0xff, 0xfe, 0xcc} // Tight, CopyRect, QEMU keys, ExtendedDesktopSize
	fbUpdate       = []byte{3, 1, 0, 0, 0, 0, 5, 0, 3, 32}
	keyEvent       = []byte{4, 1, 0, 0, 0, 0, 0, 0x61}
	pointerEvent   = []byte{5, 1, 0, 10, 0, 20}
	cutText        = []byte{6, 0, 0, 0, 0, 0, 0, 5, 'h', 'e', 'l', 'l', 'o'}
	extCutText     = []byte{6, 0, 0, 0, 0xff, 0xff, 0xff, 0xf9, 0x10, 0, 0, 1, 'x', 'y', 'z'} // provide, length -7
	extCaps        = []byte{6, 0, 0, 0, 0xff, 0xff, 0xff, 0xf8, 0x1f, 0, 0, 1, 0, 0, 0, 0}    // noVNC's caps
	extRequest     = []byte{6, 0, 0, 0, 0xff, 0xff, 0xff, 0xfc, 0x02, 0, 0, 1}                // request text
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
	in := cat(handshake, setEncodings, keyEvent, fbUpdate, pointerEvent, cutText, qemuKey, extCutText, extCaps, extRequest, setDesktopSize, xvp, fence, contUpdates)
	want := cat(handshake, setEncodings, fbUpdate, extCaps, fence, contUpdates)
	none := func(in input) bool { return in == inputNone }
	for _, n := range []int{0, 1, 5} {
		out, err := run(none, in, n)
		if err != nil || !bytes.Equal(out, want) {
			t.Errorf("chunks of %d: err %v\n got %v\nwant %v", n, err, out, want)
		}
	}
	// Clipboard rights: paste lets text and provide through, copy lets
	// requests through; capabilities always pass.
	clip := cat(handshake, cutText, extCutText, extCaps, extRequest)
	for _, c := range []struct {
		name  string
		allow input
		want  []byte
	}{
		{"paste", inputClipboard, cat(handshake, cutText, extCutText, extCaps)},
		{"copy", inputClipboardRequest, cat(handshake, extCaps, extRequest)},
	} {
		out, err := run(func(in input) bool { return in == inputNone || in == c.allow }, clip, 2)
		if err != nil || !bytes.Equal(out, c.want) {
			t.Errorf("%s only: %v %v", c.name, out, err)
		}
	}
	// Keyboard only: pointer and clipboard go, keys stay.
	kb := func(in input) bool { return in == inputNone || in == inputKeyboard || in == inputControl }
	out, err := run(kb, cat(handshake, keyEvent, pointerEvent, qemuKey, cutText), 3)
	if want := cat(handshake, keyEvent, qemuKey); err != nil || !bytes.Equal(out, want) {
		t.Errorf("keyboard only: %v %v", out, err)
	}
}

// noVNCEncodings is noVNC 1.3's SetEncodings: CopyRect, Tight, TightPNG,
// Hextile, RRE, Raw, quality 6, compression 2, DesktopSize, LastRect, QEMU
// key events, ExtendedDesktopSize, XVP, Fence, ContinuousUpdates,
// DesktopName, ExtendedClipboard, VMware cursor, Cursor.
var noVNCEncodings = func() []byte {
	encs := []int32{1, 7, -260, 5, 2, 0, -26, -254, -223, -224, -258, -308, -309, -312, -313, -307, encExtendedClipboard, encVMwareCursor, -239}
	b := []byte{msgSetEncodings, 0, 0, byte(len(encs))}
	for _, e := range encs {
		b = binary.BigEndian.AppendUint32(b, uint32(e))
	}
	return b
}()

func TestClientFilter_SetEncodings(t *testing.T) {
	enc := func(list ...int32) []byte {
		b := []byte{msgSetEncodings, 0}
		b = binary.BigEndian.AppendUint16(b, uint16(len(list)))
		for _, e := range list {
			b = binary.BigEndian.AppendUint32(b, uint32(e))
		}
		return b
	}
	cases := []struct {
		name    string
		in, out []byte
	}{
		// noVNC keeps everything but TightPNG, which TigerVNC ignores anyway.
		{"noVNC", noVNCEncodings, enc(1, 7, 5, 2, 0, -26, -254, -223, -224, -258, -308, -309, -312, -313, -307, encExtendedClipboard, encVMwareCursor, -239)},
		// TigerVNC's viewer: ZRLE, levels, subsampling, alpha cursor, LED
		// states kept; CoRRE, H.264 and unknown ones dropped.
		{"tigervnc", enc(7, 16, 4, 50, -512, -412, -768, -763, -314, -261, 0x574d5668, 0x574d5666, -240, 12345, -1000), enc(7, 16, -512, -412, -768, -763, -314, -261, 0x574d5668, 0x574d5666, -240)},
		{"none left", enc(-260, 4), enc()},
		{"empty", enc(), enc()},
	}
	for _, c := range cases {
		for _, n := range []int{0, 1, 3} {
			out, err := run(nil, cat(handshake, c.in, fbUpdate), n)
			if want := cat(handshake, c.out, fbUpdate); err != nil || !bytes.Equal(out, want) {
				t.Errorf("%s, chunks of %d: %v\n got %v\nwant %v", c.name, n, err, out, want)
			}
		}
	}
	if _, err := run(nil, cat(handshake, []byte{msgSetEncodings, 0, 0x04, 0x01}), 0); !errors.Is(err, errRFB) {
		t.Errorf("1025 encodings: %v", err)
	}
}

// TestClientFilter_Link checks what the filter tells the server parser, and
// that it refuses a pixel size change once updates were asked for.
func TestClientFilter_Link(t *testing.T) {
	l := newLink()
	f := &clientFilter{link: l}
	pf16msg := cat([]byte{0, 0, 0, 0}, pf16.bytes())
	if _, err := f.feed(nil, cat(handshake, pf16msg)); err != nil {
		t.Fatal(err)
	}
	if l.clientMinor() != 8 {
		t.Errorf("minor %d", l.clientMinor())
	}
	if _, err := f.feed(nil, cat(pf16msg, fbUpdate, pf16msg)); err != nil {
		t.Fatal(err)
	}
	if pf, err := l.updateFormat(); err != nil || pf != pf16 {
		t.Errorf("format %v %v", pf, err)
	}
	if _, err := f.feed(nil, setPixelFormat); !errors.Is(err, errRFB) {
		t.Errorf("changing to 32 bits after a request: %v", err)
	}
	if _, err := (&clientFilter{link: newLink()}).feed(nil, cat(handshake, []byte{0, 0, 0, 0, 24, 24, 0, 1}, fill(12, 0))); !errors.Is(err, errRFB) {
		t.Errorf("24 bits per pixel: %v", err)
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
		// Listed, then not listed any more.
		"desktop size, not listed": cat(handshake, setEncodings, []byte{2, 0, 0, 0}, setDesktopSize),
		// A KeyEvent hidden after what the server reads of an extended
		// clipboard message (TigerVNC reads the flags and the caps' sizes).
		"long caps":                cat(handshake, []byte{6, 0, 0, 0, 0xff, 0xff, 0xff, 0xf0, 0x01, 0, 0, 1, 0, 0, 0, 0}, keyEvent),
		"long notify":              cat(handshake, []byte{6, 0, 0, 0, 0xff, 0xff, 0xff, 0xf4, 0x08, 0, 0, 1}, keyEvent),
		"long peek":                cat(handshake, []byte{6, 0, 0, 0, 0xff, 0xff, 0xff, 0xf4, 0x04, 0, 0, 0}, keyEvent),
		"short extended clipboard": cat(handshake, []byte{6, 0, 0, 0, 0xff, 0xff, 0xff, 0xfe, 0, 0}),
		// TightVNC's file transfer (FileListRequest): no file transfer.
		"file transfer": cat(handshake, []byte{132, 0, 0, 0, 0, 0, 0, 1, '/'}),
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

// messages splits a filtered stream (after the handshake) into messages; it
// fails on a stream the filter could not have produced. The last one may be
// incomplete.
func messages(t *testing.T, s []byte) [][]byte {
	var msgs [][]byte
	f := &clientFilter{stage: stageMessages}
	for len(s) > 0 {
		// Feed byte by byte until the filter is between messages again.
		n := 0
		for n < len(s) {
			if _, err := f.feed(nil, s[n:n+1]); err != nil {
				t.Fatalf("filtered stream does not parse: %v", err)
			}
			n++
			if f.need == 0 && f.remain == 0 && !f.collect {
				break
			}
		}
		msgs = append(msgs, s[:n])
		s = s[n:]
	}
	return msgs
}

// header returns the part of a client message classify reads.
func header(m []byte) []byte {
	if m[0] == msgClientCutText && len(m) >= 12 && int32(binary.BigEndian.Uint32(m[4:])) < 0 {
		return m[:12]
	}
	if m[0] == msgClientCutText {
		return m[:min(8, len(m))]
	}
	return m
}

// skipHandshake returns the messages of a filtered stream.
func skipHandshake(t *testing.T, out []byte) []byte {
	g := &clientFilter{}
	hs := 0
	for hs < len(out) && g.stage != stageMessages {
		if _, err := g.feed(nil, out[hs:hs+1]); err != nil {
			t.Fatalf("filtered handshake does not parse: %v", err)
		}
		hs++
	}
	return out[hs:]
}

// FuzzClientMessages feeds arbitrary client streams, whole and in chunks,
// to the filter: it must not panic, must give the same result however the
// stream is split, must never grow it, must leave a stream that filters to
// itself (the same messages, SetEncodings already rewritten) and whose
// SetEncodings list only encodings the server parser frames, and must never
// let a denied message through.
func FuzzClientMessages(f *testing.F) {
	f.Add(cat(handshake, setPixelFormat, setEncodings, fbUpdate, keyEvent, pointerEvent, cutText), uint8(3))
	f.Add(cat(handshake, setEncodings, extCutText, qemuKey, fence, setDesktopSize, xvp, contUpdates), uint8(1))
	f.Add(cat(handshake, extCaps, extRequest, noVNCEncodings, extCutText), uint8(2))
	f.Add([]byte("RFB 003.003\n\x00\x04\x01\x00\x00\x00\x00\x00\x41"), uint8(0))
	f.Fuzz(func(t *testing.T, in []byte, chunk uint8) {
		all, errAll := run(nil, in, 0)
		split, errSplit := run(nil, in, int(chunk))
		if !bytes.Equal(all, split) || (errAll == nil) != (errSplit == nil) {
			t.Fatalf("chunking changes the result: %v/%v vs %v/%v", all, errAll, split, errSplit)
		}
		if errAll != nil && !errors.Is(errAll, errRFB) {
			t.Fatalf("unexpected error %v", errAll)
		}
		if len(all) > len(in) {
			t.Fatal("filter grew the stream")
		}
		if again, err := run(nil, all, 0); err != nil || !bytes.Equal(again, all) {
			t.Fatalf("the filtered stream filters to something else: %v", err)
		}
		for _, m := range messages(t, skipHandshake(t, all)) {
			if m[0] != msgSetEncodings || len(m) < 4 {
				continue
			}
			for i := 4; i+4 <= len(m); i += 4 {
				if e := int32(binary.BigEndian.Uint32(m[i:])); !framable(e) {
					t.Fatalf("SetEncodings passed encoding %d", e)
				}
			}
		}
		none := func(in input) bool { return in == inputNone }
		out, _ := run(none, in, int(chunk))
		if len(out) > len(in) {
			t.Fatal("filter grew the stream")
		}
		for _, m := range messages(t, skipHandshake(t, out)) {
			if in := classify(header(m)); in != inputNone {
				t.Fatalf("message %d (class %d) passed a view-only filter", m[0], in)
			}
		}
	})
}

func TestClassify(t *testing.T) {
	ext := func(flags uint32) []byte {
		return binary.BigEndian.AppendUint32([]byte{6, 0, 0, 0, 0xff, 0xff, 0xff, 0xfc}, flags)
	}
	cases := []struct {
		name string
		h    []byte
		want input
	}{
		{"QEMU key", qemuKey, inputKeyboard},
		{"update request", fbUpdate, inputNone},
		{"key", keyEvent, inputKeyboard},
		{"pointer", pointerEvent, inputMouse},
		{"classic cut text", cutText[:8], inputClipboard},
		{"extended caps", ext(clipCaps | 1), inputNone},
		{"noVNC's caps (every action bit)", ext(clipCaps | clipRequest | clipPeek | clipNotify | clipProvide | 1), inputNone},
		{"extended request", ext(clipRequest | 1), inputClipboardRequest},
		{"extended peek", ext(clipPeek), inputClipboardRequest},
		{"extended notify", ext(clipNotify | 1), inputClipboard},
		{"extended provide", ext(clipProvide | 1), inputClipboard},
		{"request and provide", ext(clipRequest | clipProvide | 1), inputClipboard},
		{"no action", ext(1), inputClipboard},
		{"desktop size", setDesktopSize, inputControl},
		{"xvp", xvp, inputControl},
	}
	for _, c := range cases {
		if got := classify(c.h); got != c.want {
			t.Errorf("%s: %d, want %d", c.name, got, c.want)
		}
	}
}
