package postgres

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/berth-dev/berth/internal/broker"
)

// A session's Spec and Excluded are stored as JSON text. Decoding them with
// encoding/json took most of the time of a DescribeSessions page (about 7 µs
// a session, by reflection); decodeSpec and decodeStrings read what
// encodeJSON writes without reflection, and hand anything else (an unknown
// key, a value of another type) to encoding/json, so the stored form may
// still change.

// encodeJSON returns the JSON stored for ss.Excluded and ss.Spec. It does not
// escape <, > and & (requirements often hold them), so most values need no
// escape at all.
func encodeJSON(ss *broker.Session) (excluded, spec string, err error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(ss.Spec); err != nil {
		return "", "", fmt.Errorf("encode spec: %w", err)
	}
	spec = strings.TrimSuffix(b.String(), "\n")
	excluded = "[]"
	if len(ss.Excluded) > 0 {
		b.Reset()
		if err := enc.Encode(ss.Excluded); err != nil {
			return "", "", fmt.Errorf("encode excluded: %w", err)
		}
		excluded = strings.TrimSuffix(b.String(), "\n")
	}
	return excluded, spec, nil
}

// encodeLife returns the JSON stored for a session's Life ("{}" when zero).
func encodeLife(l *broker.SessionLife) (string, error) {
	if l.IsZero() {
		return "{}", nil
	}
	b, err := json.Marshal(l)
	if err != nil {
		return "", fmt.Errorf("encode life: %w", err)
	}
	return string(b), nil
}

// decodeLife decodes a stored Life into l (zero for "{}"); its times come
// back in UTC, as the store's other times do.
func decodeLife(b []byte, l *broker.SessionLife) error {
	if len(b) <= 2 { // "{}"
		return nil
	}
	if err := json.Unmarshal(b, l); err != nil {
		return err
	}
	for _, t := range []*time.Time{&l.LifetimeWarnedFor, &l.IdleWarnedFor, &l.IdleActedFor, &l.RetryAt} {
		if !t.IsZero() {
			*t = t.UTC()
		}
	}
	return nil
}

// decodeSpec decodes a stored SessionSpec into sp.
func decodeSpec(b []byte, sp *broker.SessionSpec) error {
	d := jsonDecoder{b: b}
	if utf8.Valid(b) && d.spec(sp) {
		return nil
	}
	*sp = broker.SessionSpec{}
	return json.Unmarshal(b, sp)
}

// decodeStrings decodes a stored JSON array of strings.
func decodeStrings(b []byte) ([]string, error) {
	d := jsonDecoder{b: b}
	if v, ok := d.readStrings(); ok && d.end() && utf8.Valid(b) {
		return v, nil
	}
	var v []string
	err := json.Unmarshal(b, &v)
	return v, err
}

// jsonDecoder reads the JSON forms that encodeJSON writes. Its methods
// return false for anything else, and the caller then falls back to
// encoding/json.
type jsonDecoder struct {
	b []byte
	i int
}

// end reports whether the input is consumed (but for white space).
func (d *jsonDecoder) end() bool {
	d.space()
	return d.i == len(d.b)
}

func (d *jsonDecoder) space() {
	for d.i < len(d.b) {
		switch d.b[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

// eat consumes c, after white space, if it is next.
func (d *jsonDecoder) eat(c byte) bool {
	d.space()
	if d.i < len(d.b) && d.b[d.i] == c {
		d.i++
		return true
	}
	return false
}

// spec reads a whole SessionSpec object.
func (d *jsonDecoder) spec(sp *broker.SessionSpec) bool {
	*sp = broker.SessionSpec{}
	if !d.eat('{') {
		return false
	}
	if d.eat('}') {
		return d.end()
	}
	for {
		key, ok := d.readString()
		if !ok || !d.eat(':') {
			return false
		}
		switch key {
		case "gl":
			ok = d.readBool(&sp.DcvGlEnabled)
		case "init":
			sp.InitFile, ok = d.readString()
		case "autorun":
			sp.AutorunFile, ok = d.readString()
		case "args":
			sp.AutorunFileArguments, ok = d.readStrings()
		case "perm":
			sp.PermissionsFile, ok = d.readString()
		case "req":
			sp.Requirements, ok = d.readString()
		case "enqueue":
			ok = d.readBool(&sp.EnqueueRequest)
		case "noretry":
			ok = d.readBool(&sp.DisableRetryOnFailure)
		default:
			return false
		}
		if !ok {
			return false
		}
		if d.eat('}') {
			return d.end()
		}
		if !d.eat(',') {
			return false
		}
	}
}

// readBool reads true or false into v.
func (d *jsonDecoder) readBool(v *bool) bool {
	d.space()
	switch {
	case bytes.HasPrefix(d.b[d.i:], []byte("true")):
		*v, d.i = true, d.i+4
	case bytes.HasPrefix(d.b[d.i:], []byte("false")):
		*v, d.i = false, d.i+5
	default:
		return false
	}
	return true
}

// readStrings reads an array of strings, or null (a nil slice).
func (d *jsonDecoder) readStrings() ([]string, bool) {
	d.space()
	if bytes.HasPrefix(d.b[d.i:], []byte("null")) {
		d.i += 4
		return nil, true
	}
	if !d.eat('[') {
		return nil, false
	}
	out := []string{}
	if d.eat(']') {
		return out, true
	}
	for {
		s, ok := d.readString()
		if !ok {
			return nil, false
		}
		out = append(out, s)
		if d.eat(']') {
			return out, true
		}
		if !d.eat(',') {
			return nil, false
		}
	}
}

// readString reads a string, decoding its escapes as encoding/json does (a lone
// UTF-16 surrogate becomes U+FFFD).
func (d *jsonDecoder) readString() (string, bool) {
	if !d.eat('"') {
		return "", false
	}
	start := d.i
	for d.i < len(d.b) {
		switch c := d.b[d.i]; {
		case c == '"':
			s := string(d.b[start:d.i])
			d.i++
			return s, true
		case c == '\\':
			return d.escaped(start)
		case c < 0x20:
			return "", false
		}
		d.i++
	}
	return "", false
}

// escaped reads the rest of a string that starts at start and has an escape
// at d.i.
func (d *jsonDecoder) escaped(start int) (string, bool) {
	out := append([]byte(nil), d.b[start:d.i]...)
	for d.i < len(d.b) {
		c := d.b[d.i]
		switch {
		case c == '"':
			d.i++
			return string(out), true
		case c < 0x20:
			return "", false
		case c != '\\':
			out = append(out, c)
			d.i++
			continue
		}
		if d.i+1 >= len(d.b) {
			return "", false
		}
		e := d.b[d.i+1]
		d.i += 2
		switch e {
		case '"', '\\', '/':
			out = append(out, e)
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r, ok := d.hex4()
			if !ok {
				return "", false
			}
			if utf16.IsSurrogate(r) {
				r2 := rune(-1)
				if d.i+1 < len(d.b) && d.b[d.i] == '\\' && d.b[d.i+1] == 'u' {
					save := d.i
					d.i += 2
					if r2, ok = d.hex4(); !ok {
						return "", false
					}
					if utf16.DecodeRune(r, r2) == utf8.RuneError {
						d.i, r2 = save, -1 // not a pair: read the second escape on its own
					}
				}
				if r2 >= 0 {
					r = utf16.DecodeRune(r, r2)
				} else {
					r = utf8.RuneError
				}
			}
			out = utf8.AppendRune(out, r)
		default:
			return "", false
		}
	}
	return "", false
}

// hex4 reads the four hex digits of a \u escape.
func (d *jsonDecoder) hex4() (rune, bool) {
	if d.i+4 > len(d.b) {
		return 0, false
	}
	var r rune
	for _, c := range d.b[d.i : d.i+4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	d.i += 4
	return r, true
}
