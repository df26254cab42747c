package agentproto

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"unicode"
	"unicode/utf8"
)

// ErrTooLarge means a message exceeds MaxMessageSize.
var ErrTooLarge = errors.New("message exceeds size limit")

// ErrUnknownType means a message has a type that this version does not know.
// A receiver may log and skip such a message instead of closing the link.
var ErrUnknownType = errors.New("unknown message type")

// VersionError is returned by Decode for a Hello whose protocol version is
// outside [MinProtocolVersion, ProtocolVersion].
type VersionError struct{ Version int }

// Error implements error.
func (e *VersionError) Error() string {
	return fmt.Sprintf("protocol version %d not supported (want %d to %d)",
		e.Version, MinProtocolVersion, ProtocolVersion)
}

// envelope is the wire frame of every message.
type envelope struct {
	Type string          `json:"type"`
	ID   string          `json:"id,omitempty"`
	Body json.RawMessage `json:"body,omitempty"`
}

// typed is the wire frame of a message whose type is known: encoded and
// decoded in one pass, where envelope takes two (its body is decoded or
// encoded apart). It gives the same bytes as envelope.
type typed[B any] struct {
	Type string `json:"type"`
	ID   string `json:"id,omitempty"`
	Body *B     `json:"body,omitempty"`
}

// Encode returns the wire form of a message with the given request ID. It returns
// an error wrapping ErrTooLarge if the result exceeds MaxMessageSize.
func Encode(id string, body Body) ([]byte, error) {
	var data []byte
	var err error
	switch b := body.(type) {
	case nil:
		return nil, errors.New("encode message: nil body")
	case *Hello:
		data, err = encodeTyped(id, b)
	case *Welcome:
		data, err = encodeTyped(id, b)
	case *Update:
		data, err = encodeTyped(id, b)
	case *Ack:
		if *b == (Ack{}) && plainASCII(id) {
			data = appendAck(make([]byte, 0, len(emptyAck)+len(id)+2), id)
		} else {
			data, err = encodeTyped(id, b)
		}
	case *Command:
		data, err = encodeTyped(id, b)
	case *Result:
		data, err = encodeTyped(id, b)
	case *Error:
		data, err = encodeTyped(id, b)
	default: // a Body from outside the package
		var raw []byte
		if raw, err = json.Marshal(body); err == nil {
			data, err = json.Marshal(envelope{Type: body.MessageType(), ID: id, Body: raw})
		}
	}
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", body.MessageType(), err)
	}
	if len(data) > MaxMessageSize {
		return nil, fmt.Errorf("encode %s (%d bytes): %w", body.MessageType(), len(data), ErrTooLarge)
	}
	return data, nil
}

func encodeTyped[B any, P interface {
	*B
	Body
}](id string, b P) ([]byte, error) {
	return json.Marshal(typed[B]{Type: b.MessageType(), ID: id, Body: b})
}

// emptyAck is the wire form of an Ack with nothing to say, less its ID.
const emptyAck = `{"type":"ack","id":,"body":{}}`

// appendAck appends the wire form of an empty Ack with the given ID, which
// must be plainASCII: the bytes that encoding it gives, without the cost of
// encoding the broker's most frequent message.
func appendAck(dst []byte, id string) []byte {
	dst = append(dst, `{"type":"ack"`...)
	if id != "" {
		dst = append(dst, `,"id":"`...)
		for i := range len(id) {
			switch c := id[i]; c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '<', '>', '&':
				dst = append(dst, `\u00`...)
				dst = append(dst, "0123456789abcdef"[c>>4], "0123456789abcdef"[c&15])
			default:
				dst = append(dst, c)
			}
		}
		dst = append(dst, '"')
	}
	return append(dst, `,"body":{}}`...)
}

// Decode parses and checks one message. It never panics on hostile input and
// returns:
//   - an error wrapping ErrTooLarge for data over MaxMessageSize;
//   - an error wrapping ErrUnknownType (with Message.Type set) for a type this
//     version does not know;
//   - a *VersionError for a Hello outside the version window;
//   - another error for anything malformed: bad JSON, missing or invalid fields.
//
// Unknown fields are ignored, so that additions within a protocol version do not
// break older peers.
func Decode(data []byte) (*Message, error) {
	if len(data) > MaxMessageSize {
		return nil, fmt.Errorf("decode message (%d bytes): %w", len(data), ErrTooLarge)
	}
	if m, err, ok := decodeTyped(data); ok {
		return m, err
	}
	var env envelope
	if err := json.Unmarshal(data, &env); err != nil {
		return nil, fmt.Errorf("decode message: %w", err)
	}
	if env.Type == "" {
		return nil, errors.New("decode message: missing type")
	}
	if len(env.ID) > MaxIDLength || !printable(env.ID) {
		return nil, fmt.Errorf("decode %q: invalid id", clip(env.Type))
	}
	var body Body
	switch env.Type {
	case TypeHello:
		v, err := helloVersion(env.Body)
		if err != nil {
			return nil, err
		}
		if !SupportedVersion(v) {
			return nil, &VersionError{Version: v}
		}
		body = new(Hello)
	case TypeWelcome:
		body = new(Welcome)
	case TypeUpdate:
		body = new(Update)
	case TypeAck:
		body = new(Ack)
	case TypeCommand:
		body = new(Command)
	case TypeResult:
		body = new(Result)
	case TypeError:
		body = new(Error)
	default:
		return &Message{Type: clip(env.Type), ID: env.ID}, fmt.Errorf("decode %q: %w", clip(env.Type), ErrUnknownType)
	}
	if isNull(env.Body) {
		if env.Type != TypeAck {
			return nil, fmt.Errorf("decode %s: missing body", env.Type)
		}
	} else if err := json.Unmarshal(env.Body, body); err != nil {
		return nil, fmt.Errorf("decode %s: %w", env.Type, err)
	}
	if err := check(env.ID, body); err != nil {
		return nil, fmt.Errorf("decode %s: %w", env.Type, err)
	}
	return &Message{Type: env.Type, ID: env.ID, Body: body}, nil
}

// decodeTyped decodes, in one pass, a message whose type comes first (as
// Encode writes it) and is one that needs no look at its body first (all
// but hello). ok is false for any other message, which Decode decodes in
// two passes.
func decodeTyped(data []byte) (m *Message, err error, ok bool) {
	const prefix = `{"type":"`
	rest, found := bytes.CutPrefix(data, []byte(prefix))
	if !found {
		return nil, nil, false
	}
	end := bytes.IndexByte(rest, '"')
	if end < 0 {
		return nil, nil, false
	}
	switch string(rest[:end]) {
	case TypeUpdate:
		return decodeAs[Update](data, TypeUpdate)
	case TypeAck:
		return decodeAs[Ack](data, TypeAck)
	case TypeResult:
		return decodeAs[Result](data, TypeResult)
	case TypeCommand:
		return decodeAs[Command](data, TypeCommand)
	case TypeWelcome:
		return decodeAs[Welcome](data, TypeWelcome)
	case TypeError:
		return decodeAs[Error](data, TypeError)
	}
	return nil, nil, false
}

// decodeAs is decodeTyped for a message of type typ. ok is false when the
// decoded type is another (the object names type twice).
func decodeAs[B any, P interface {
	*B
	Body
}](data []byte, typ string) (m *Message, err error, ok bool) {
	var env typed[B]
	if err := json.Unmarshal(data, &env); err != nil {
		return nil, fmt.Errorf("decode message: %w", err), true
	}
	if env.Type != typ {
		return nil, nil, false
	}
	if len(env.ID) > MaxIDLength || !printable(env.ID) {
		return nil, fmt.Errorf("decode %q: invalid id", typ), true
	}
	if env.Body == nil {
		if typ != TypeAck {
			return nil, fmt.Errorf("decode %s: missing body", typ), true
		}
		env.Body = new(B)
	}
	body := P(env.Body)
	if err := check(env.ID, body); err != nil {
		return nil, fmt.Errorf("decode %s: %w", typ, err), true
	}
	return &Message{Type: typ, ID: env.ID, Body: body}, nil, true
}

// plainASCII reports whether s is printable ASCII, which appendAck quotes
// as encoding/json does.
func plainASCII(s string) bool {
	for i := range len(s) {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// helloVersion reads only the protocol version of a hello body, whose name and
// type never change, so that a peer of any version can be refused cleanly.
func helloVersion(raw json.RawMessage) (int, error) {
	var v struct {
		ProtocolVersion *int `json:"protocol_version"`
	}
	if isNull(raw) {
		return 0, errors.New("decode hello: missing body")
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return 0, fmt.Errorf("decode hello: %w", err)
	}
	if v.ProtocolVersion == nil {
		return 0, errors.New("decode hello: missing protocol_version")
	}
	return *v.ProtocolVersion, nil
}

// check validates the fields of a decoded body.
func check(id string, body Body) error {
	switch b := body.(type) {
	case *Hello:
		if !ValidID(b.ServerID) {
			return errors.New("invalid server_id")
		}
		return checkSessions(b.Sessions)
	case *Welcome:
		if b.ProtocolVersion <= 0 {
			return errors.New("invalid protocol_version")
		}
		if b.UpdateIntervalMS < 0 || b.HeartbeatTimeoutMS < 0 {
			return errors.New("negative interval")
		}
	case *Update:
		if b.Sessions != nil && len(b.Changes) > 0 {
			return errors.New("sessions and changes together")
		}
		if b.Host != nil && b.Figures != nil {
			return errors.New("host and figures together")
		}
		if f := b.Figures; f != nil && (f.MemoryUsedBytes < 0 || f.SwapUsedBytes < 0) {
			return errors.New("figures: negative memory")
		}
		if err := checkSessions(b.Sessions); err != nil {
			return err
		}
		if err := checkSessions(b.Changes); err != nil {
			return fmt.Errorf("changes: %w", err)
		}
	case *Ack:
		if id == "" {
			return errors.New("missing id")
		}
		if b.UpdateIntervalMS < 0 || b.HeartbeatTimeoutMS < 0 {
			return errors.New("negative interval")
		}
	case *Command:
		return checkCommand(id, b)
	case *Result:
		if id == "" {
			return errors.New("missing id")
		}
		for _, im := range b.Images {
			if im.Format != FormatPNG && im.Format != FormatJPEG {
				return fmt.Errorf("invalid image format %q", clip(im.Format))
			}
		}
	case *Error:
		if b.Code == "" {
			return errors.New("missing code")
		}
	}
	return nil
}

func checkCommand(id string, c *Command) error {
	if id == "" {
		return errors.New("missing id")
	}
	if !ValidID(c.SessionID) {
		return errors.New("invalid session_id")
	}
	if c.TimeoutMS < 0 {
		return errors.New("negative timeout_ms")
	}
	switch c.Kind {
	case KindCreate:
		if c.Create == nil {
			return errors.New("create command without create body")
		}
		if c.Create.MaxConcurrentClients < 0 {
			return errors.New("negative max_concurrent_clients")
		}
	case KindDelete:
	case KindPermissions:
		if c.Permissions == nil {
			return errors.New("permissions command without permissions body")
		}
	case KindScreenshot:
		s := c.Screenshot
		if s == nil {
			return nil // defaults
		}
		if s.MaxWidth < 0 || s.MaxHeight < 0 || s.MaxWidth > MaxScreenshotSide || s.MaxHeight > MaxScreenshotSide {
			return errors.New("screenshot size out of range")
		}
		if s.Format != "" && s.Format != FormatPNG && s.Format != FormatJPEG {
			return fmt.Errorf("invalid screenshot format %q", clip(s.Format))
		}
	case KindDisconnect:
		if c.Notify != nil && len(c.Notify.Message) > MaxNotifyMessage {
			return fmt.Errorf("notify message longer than %d bytes", MaxNotifyMessage)
		}
	case KindNotify:
		if c.Notify == nil {
			return errors.New("notify command without notify body")
		}
		if len(c.Notify.Message) > MaxNotifyMessage {
			return fmt.Errorf("notify message longer than %d bytes", MaxNotifyMessage)
		}
	default:
		return fmt.Errorf("unknown command kind %q", clip(c.Kind))
	}
	return nil
}

func checkSessions(ss []Session) error {
	for i := range ss {
		if !ValidID(ss[i].ID) {
			return fmt.Errorf("session %d: invalid id", i)
		}
	}
	return nil
}

// ValidID reports whether s is usable as a server, session or request ID on the
// wire: 1 to MaxIDLength bytes of UTF-8 without control characters. Decode
// rejects messages with other IDs, so senders filter with it. Drivers must still
// check IDs against their own, stricter rules before using them in commands or
// paths.
func ValidID(s string) bool {
	return s != "" && len(s) <= MaxIDLength && printable(s)
}

func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return false
		}
	}
	return true
}

func isNull(raw json.RawMessage) bool {
	raw = bytes.TrimSpace(raw)
	return len(raw) == 0 || bytes.Equal(raw, []byte("null"))
}

// clip shortens peer-supplied text that goes into error messages (always
// through %q, so control characters stay escaped).
func clip(s string) string {
	const n = 64
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
