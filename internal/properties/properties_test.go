package properties_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/berth-dev/berth/internal/properties"
)

type kv = properties.Entry

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []kv
	}{
		{"empty", "", nil},
		{"blank and comments", "\n   \n# c\n! c\n  # indented comment\n", nil},
		{"equals", "a=b", []kv{{"a", "b", 1}}},
		{"colon", "a:b", []kv{{"a", "b", 1}}},
		{"space", "a b", []kv{{"a", "b", 1}}},
		{"spaces around equals", "a   =   b", []kv{{"a", "b", 1}}},
		{"spaces around colon", "a : b", []kv{{"a", "b", 1}}},
		{"tab and form feed", "\ta\t=\fb", []kv{{"a", "b", 1}}},
		{"only first separator", "a==b", []kv{{"a", "=b", 1}}},
		{"space then separator then separator", "a = :b", []kv{{"a", ":b", 1}}},
		{"colon in value", "url = https://h:8443/x", []kv{{"url", "https://h:8443/x", 1}}},
		{"leading whitespace ignored", "    key = v", []kv{{"key", "v", 1}}},
		{"key only", "key", []kv{{"key", "", 1}}},
		{"key and separator", "key=", []kv{{"key", "", 1}}},
		{"empty key", "=v", []kv{{"", "v", 1}}},
		{"trailing whitespace trimmed", "a = b  \t", []kv{{"a", "b", 1}}},
		{"escaped trailing space kept", `a = b\ `, []kv{{"a", "b ", 1}}},
		{"escaped trailing space then blanks", "a = b\\  \t", []kv{{"a", "b ", 1}}},
		{"inner whitespace kept", "a = b  c", []kv{{"a", "b  c", 1}}},
		{"escaped leading space", `a = \ b`, []kv{{"a", " b", 1}}},
		{"escapes", `a = \t\n\r\f\\`, []kv{{"a", "\t\n\r\f\\", 1}}},
		{"other escapes drop backslash", `a = \q\#\!\"`, []kv{{"a", `q#!"`, 1}}},
		{"escaped separators in key", `a\=b\:c\ d = v`, []kv{{"a=b:c d", "v", 1}}},
		{"escaped backslash ends key", `a\\=v`, []kv{{`a\`, "v", 1}}},
		{"unicode escape", `a = caf\u00e9 \u00E9`, []kv{{"a", "café é", 1}}},
		{"surrogate pair", `a = \uD83D\uDE00`, []kv{{"a", "😀", 1}}},
		{"lone surrogate", `a = \uD83Dx`, []kv{{"a", "\uFFFDx", 1}}},
		{"utf-8 passes through", "clé = välue", []kv{{"clé", "välue", 1}}},
		{"continuation", "a = b\\\n    c", []kv{{"a", "bc", 1}}},
		{"continuation keeps space before backslash", "a = one, \\\n    two", []kv{{"a", "one, two", 1}}},
		{"continuation in key", "ke\\\n  y = v", []kv{{"key", "v", 1}}},
		{"double backslash is not continuation", "a = b\\\\\nc = d", []kv{{"a", `b\`, 1}, {"c", "d", 2}}},
		{"continued comment-looking line is content", "a = b\\\n# c", []kv{{"a", "b# c", 1}}},
		{"comment does not continue", "# c \\\na = b", []kv{{"a", "b", 2}}},
		{"continuation at end of input", "a = b\\", []kv{{"a", "b", 1}}},
		{"lone backslash at end", "\\", nil},
		{"continuation then blank line ends", "a = b\\\n\nc = d", []kv{{"a", "b", 1}, {"c", "d", 3}}},
		{"line numbers", "\n# c\na=1\n\nb=2\\\n 2\nc=3", []kv{{"a", "1", 3}, {"b", "22", 5}, {"c", "3", 7}}},
		{"crlf", "a=1\r\nb=2\r\n", []kv{{"a", "1", 1}, {"b", "2", 2}}},
		{"cr", "a=1\rb=2\r", []kv{{"a", "1", 1}, {"b", "2", 2}}},
		{"crlf continuation", "a=1\\\r\n  2\r\nb=3", []kv{{"a", "12", 1}, {"b", "3", 3}}},
		{"duplicates kept in order", "a=1\na=2", []kv{{"a", "1", 1}, {"a", "2", 2}}},
		{"byte order mark", "\uFEFFa=1", []kv{{"a", "1", 1}}},
		{"dollar stays", "p = ${HOME}", []kv{{"p", "${HOME}", 1}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := properties.Parse(strings.NewReader(tt.in))
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.in, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Parse(%q)\n got %#v\nwant %#v", tt.in, got, tt.want)
			}
		})
	}
}

func TestParse_Errors(t *testing.T) {
	tests := []struct {
		name     string
		in       string
		wantLine int
		wantMsg  string
	}{
		{"short unicode escape", "a = \\u12", 1, `malformed \uXXXX escape "\\u12"`},
		{"bad hex", "\n\na = \\u12G4", 3, `malformed \uXXXX escape "\\u12G4"`},
		{"bad escape in key", "\\uZZZZ = v", 1, `malformed \uXXXX escape "\\uZZZZ"`},
		{"bad escape on continued line", "a = x\\\n \\u1", 1, `malformed \uXXXX escape "\\u1"`},
		{"invalid utf-8", "a = b\nc = \xff", 2, "line is not valid UTF-8"},
		{"long line", "a = b\n" + strings.Repeat("x", properties.MaxLineSize+1), 2, "line is longer than 65536 bytes"},
		{"large file", strings.Repeat("a = b\n", properties.MaxFileSize/6+1), 0, "input is larger than 1048576 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := properties.Parse(strings.NewReader(tt.in))
			var se *properties.SyntaxError
			if !errors.As(err, &se) {
				t.Fatalf("Parse: got error %v, want *SyntaxError", err)
			}
			if se.Line != tt.wantLine || se.Msg != tt.wantMsg {
				t.Errorf("Parse: got line %d %q, want line %d %q", se.Line, se.Msg, tt.wantLine, tt.wantMsg)
			}
		})
	}
}

func TestParse_LineAtLimit(t *testing.T) {
	in := "a=" + strings.Repeat("x", properties.MaxLineSize-2)
	got, err := properties.Parse(strings.NewReader(in))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if len(got) != 1 || len(got[0].Value) != properties.MaxLineSize-2 {
		t.Errorf("Parse: got %d entries", len(got))
	}
}

func TestSyntaxError_Error(t *testing.T) {
	tests := []struct {
		err  *properties.SyntaxError
		want string
	}{
		{&properties.SyntaxError{Line: 4, Msg: "bad"}, "properties: line 4: bad"},
		{&properties.SyntaxError{Msg: "too big"}, "properties: too big"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("disk on fire") }

func TestParse_ReadError(t *testing.T) {
	_, err := properties.Parse(errReader{})
	if err == nil || !strings.Contains(err.Error(), "disk on fire") {
		t.Fatalf("Parse: got %v, want the reader's error", err)
	}
}

// escapeProperty writes s so that Parse reads it back unchanged, as key or
// as value.
func escapeProperty(s string, key bool) string {
	var b strings.Builder
	for i, r := range s {
		switch r {
		case '\\':
			b.WriteString(`\\`)
		case '\t':
			b.WriteString(`\t`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\f':
			b.WriteString(`\f`)
		case '=', ':', '#', '!':
			b.WriteByte('\\')
			b.WriteRune(r)
		case ' ':
			if key || i == 0 || strings.TrimRight(s[i:], " ") == "" {
				b.WriteString(`\ `)
			} else {
				b.WriteByte(' ')
			}
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"a=b", "a : b\n", "a b  ", "# c\n! c\n", "a=b\\\n  c", "k\\=x = \\u00e9\\uD83D\\uDE00",
		"a=\\u12", "a=b\r\nc=d\re=f", "\\", "   \\\n", "a\\ b=c\\ ", "\uFEFFa=1",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		entries, err := properties.Parse(strings.NewReader(in))
		if err != nil {
			var se *properties.SyntaxError
			if !errors.As(err, &se) {
				t.Fatalf("Parse: error %v is not a *SyntaxError", err)
			}
			return
		}
		prev := 0
		var out strings.Builder
		for _, e := range entries {
			if e.Line <= prev {
				t.Fatalf("Parse: line %d after line %d", e.Line, prev)
			}
			prev = e.Line
			if !utf8.ValidString(e.Key) || !utf8.ValidString(e.Value) {
				t.Fatalf("Parse: invalid UTF-8 in %#v", e)
			}
			if strings.TrimRight(e.Value, " \t\f") != e.Value && !strings.Contains(in, `\`) {
				t.Fatalf("Parse: unescaped trailing whitespace kept in %q", e.Value)
			}
			out.WriteString(escapeProperty(e.Key, true) + "=" + escapeProperty(e.Value, false) + "\n")
		}
		again, err := properties.Parse(strings.NewReader(out.String()))
		if err != nil {
			t.Fatalf("Parse of re-encoded %q: %v", out.String(), err)
		}
		if len(again) != len(entries) {
			t.Fatalf("re-encoded: got %d entries, want %d", len(again), len(entries))
		}
		for i := range again {
			if again[i].Key != entries[i].Key || again[i].Value != entries[i].Value {
				t.Fatalf("round trip of %q: got %#v, want %#v", out.String(), again[i], entries[i])
			}
		}
	})
}
