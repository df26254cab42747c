// Package properties parses Java .properties files, the format of the
// reference broker's session-manager-broker.properties.
//
// Parse follows java.util.Properties.load with one deliberate difference:
// trailing whitespace of a value is removed unless it is escaped ("\ "),
// because operators' files often carry stray trailing blanks that the
// reference broker would silently keep. The rules, in order:
//
//   - Natural lines end in \n, \r or \r\n. A natural line that ends in an odd
//     number of backslashes continues on the next one; the backslash and the
//     next line's leading whitespace are dropped.
//   - Leading whitespace (space, tab, form feed) is ignored. A line whose first
//     other character is '#' or '!' is a comment; blank lines are skipped.
//   - The key runs to the first unescaped '=', ':' or whitespace. Whitespace,
//     then at most one '=' or ':', then more whitespace separate it from the
//     value, so "k=v", "k: v" and "k v" are the same.
//   - In keys and values, \t \n \r \f are escapes, \uXXXX is a UTF-16 code
//     unit (surrogate pairs are joined; a lone surrogate becomes U+FFFD), and a
//     backslash before any other character stands for that character ("\=",
//     "\:", "\ ", "\\", "\#").
//
// The input must be UTF-8 (Java's load(InputStream) reads ISO-8859-1; a file
// that depends on that is rejected rather than misread). Parse rejects a
// natural line over MaxLineSize bytes and input over MaxFileSize bytes.
// Entries come back in file order, duplicates included: what a repeated key
// means is the caller's decision.
package properties

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// Size limits that Parse enforces.
const (
	// MaxLineSize is the longest natural line Parse accepts, in bytes,
	// without its line terminator.
	MaxLineSize = 64 << 10
	// MaxFileSize is the largest input Parse accepts, in bytes.
	MaxFileSize = 1 << 20
)

// Entry is one key/value pair, with escapes decoded.
type Entry struct {
	Key   string
	Value string
	// Line is the 1-based number of the natural line where the entry starts.
	Line int
}

// SyntaxError reports input that Parse cannot read.
type SyntaxError struct {
	// Line is the 1-based line of the problem; 0 when it concerns the whole
	// input (its size).
	Line int
	Msg  string
}

// Error implements error.
func (e *SyntaxError) Error() string {
	if e.Line == 0 {
		return "properties: " + e.Msg
	}
	return fmt.Sprintf("properties: line %d: %s", e.Line, e.Msg)
}

// Parse reads a .properties document from r. It returns a *SyntaxError for a
// malformed \u escape, input that is not UTF-8, or input over the size
// limits, and r's own error if reading fails.
func Parse(r io.Reader) ([]Entry, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("properties: read: %w", err)
	}
	if len(data) > MaxFileSize {
		return nil, &SyntaxError{Msg: fmt.Sprintf("input is larger than %d bytes", MaxFileSize)}
	}
	data = bytes.TrimPrefix(data, []byte("\uFEFF"))

	lines, err := splitLines(data)
	if err != nil {
		return nil, err
	}

	var entries []Entry
	for i := 0; i < len(lines); i++ {
		start := i + 1
		line := trimLeft(lines[i])
		if line == "" || line[0] == '#' || line[0] == '!' {
			continue
		}
		var logical strings.Builder
		for {
			cont := endsInContinuation(line)
			if !cont {
				logical.WriteString(line)
				break
			}
			logical.WriteString(line[:len(line)-1])
			i++
			if i == len(lines) {
				break
			}
			line = trimLeft(lines[i])
		}
		if logical.Len() == 0 {
			continue // a lone continuation backslash at the end of input
		}
		e, err := parseLogical(logical.String(), start)
		if err != nil {
			return nil, err
		}
		entries = append(entries, e)
	}
	return entries, nil
}

// splitLines splits data into natural lines, checking encoding and length.
func splitLines(data []byte) ([]string, error) {
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, MaxFileSize+2)
	sc.Split(scanNaturalLines)
	for sc.Scan() {
		n := len(lines) + 1
		b := sc.Bytes()
		if len(b) > MaxLineSize {
			return nil, &SyntaxError{Line: n, Msg: fmt.Sprintf("line is longer than %d bytes", MaxLineSize)}
		}
		if !utf8.Valid(b) {
			return nil, &SyntaxError{Line: n, Msg: "line is not valid UTF-8"}
		}
		lines = append(lines, string(b))
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("properties: %w", err)
	}
	return lines, nil
}

// scanNaturalLines is a bufio.SplitFunc for lines ending in \n, \r or \r\n.
func scanNaturalLines(data []byte, atEOF bool) (advance int, token []byte, err error) {
	for i, c := range data {
		switch c {
		case '\n':
			return i + 1, data[:i], nil
		case '\r':
			if i+1 < len(data) {
				if data[i+1] == '\n' {
					return i + 2, data[:i], nil
				}
				return i + 1, data[:i], nil
			}
			if atEOF {
				return i + 1, data[:i], nil
			}
			return 0, nil, nil // need one more byte to tell \r from \r\n
		}
	}
	if atEOF && len(data) > 0 {
		return len(data), data, nil
	}
	return 0, nil, nil
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\f' }

func trimLeft(s string) string {
	for len(s) > 0 && isSpace(s[0]) {
		s = s[1:]
	}
	return s
}

// endsInContinuation reports whether s ends in an odd number of backslashes.
func endsInContinuation(s string) bool {
	n := 0
	for i := len(s) - 1; i >= 0 && s[i] == '\\'; i-- {
		n++
	}
	return n%2 == 1
}

// parseLogical splits a logical line (leading whitespace and continuations
// already removed) into its key and value and decodes both.
func parseLogical(s string, line int) (Entry, error) {
	keyEnd, valStart := len(s), len(s)
	hasSep := false
	escaped := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !escaped && (c == '=' || c == ':') {
			keyEnd, valStart, hasSep = i, i+1, true
			break
		}
		if !escaped && isSpace(c) {
			keyEnd, valStart = i, i+1
			break
		}
		escaped = c == '\\' && !escaped
	}
	for valStart < len(s) {
		c := s[valStart]
		if isSpace(c) {
			valStart++
			continue
		}
		if !hasSep && (c == '=' || c == ':') {
			hasSep = true
			valStart++
			continue
		}
		break
	}
	key, err := unescape(s[:keyEnd], line, false)
	if err != nil {
		return Entry{}, err
	}
	val, err := unescape(s[valStart:], line, true)
	if err != nil {
		return Entry{}, err
	}
	return Entry{Key: key, Value: val, Line: line}, nil
}

// unescape decodes the escapes of s. With trimRight, whitespace at the end
// that was not written as an escape is dropped.
func unescape(s string, line int, trimRight bool) (string, error) {
	if !strings.Contains(s, `\`) {
		if trimRight {
			s = strings.TrimRight(s, " \t\f")
		}
		return s, nil
	}
	var b strings.Builder
	keep := 0 // length of b up to the last byte that must not be trimmed
	var pending []uint16
	flush := func() {
		if len(pending) > 0 {
			b.WriteString(string(utf16.Decode(pending)))
			pending = pending[:0]
			keep = b.Len()
		}
	}
	for i := 0; i < len(s); {
		c := s[i]
		if c != '\\' {
			flush()
			_, size := utf8.DecodeRuneInString(s[i:])
			b.WriteString(s[i : i+size])
			if !isSpace(c) {
				keep = b.Len()
			}
			i += size
			continue
		}
		i++
		if i == len(s) {
			// A lone trailing backslash (only possible at end of input
			// after a continuation) stands for nothing, as in Java.
			break
		}
		c = s[i]
		if c == 'u' {
			if i+5 > len(s) {
				return "", &SyntaxError{Line: line, Msg: fmt.Sprintf(`malformed \uXXXX escape %q`, "\\"+s[i:])}
			}
			var u uint16
			for _, h := range []byte(s[i+1 : i+5]) {
				d, ok := hexDigit(h)
				if !ok {
					return "", &SyntaxError{Line: line, Msg: fmt.Sprintf(`malformed \uXXXX escape %q`, "\\"+s[i:i+5])}
				}
				u = u<<4 | uint16(d)
			}
			pending = append(pending, u)
			i += 5
			continue
		}
		flush()
		r, size := utf8.DecodeRuneInString(s[i:])
		switch r {
		case 't':
			b.WriteByte('\t')
		case 'n':
			b.WriteByte('\n')
		case 'r':
			b.WriteByte('\r')
		case 'f':
			b.WriteByte('\f')
		default:
			b.WriteString(s[i : i+size])
		}
		keep = b.Len()
		i += size
	}
	flush()
	out := b.String()
	if trimRight {
		out = out[:keep]
	}
	return out, nil
}

func hexDigit(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
