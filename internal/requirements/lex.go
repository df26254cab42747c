package requirements

import (
	"strings"
	"unicode/utf8"
)

// tokKind is the kind of a lexical token.
type tokKind uint8

const (
	tEOF     tokKind = iota
	tTag             // tag:KEY; text is KEY
	tServer          // server:PATH; text is the canonical PATH
	tString          // quoted string; text is the unescaped value
	tNumber          // number; text is the literal as written
	tOp              // comparison operator; op says which
	tLParen          // (
	tRParen          // )
	tAnd             // and (any case)
	tOr              // or (any case)
	tNot             // not (any case)
	tInvalid         // anything else: an unknown word or character
)

// token is one lexical token. pos and end are byte offsets into the source.
type token struct {
	kind     tokKind
	op       op
	pos, end int
	text     string
}

// lexer splits a requirements source into tokens.
type lexer struct {
	src string
	off int
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }
func isDigit(c byte) bool { return '0' <= c && c <= '9' }
func isLetter(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}
func isWordChar(c byte) bool { return isLetter(c) || isDigit(c) || c == '_' }
func isKeyChar(c byte) bool {
	return isLetter(c) || isDigit(c) || c == '_' || c == '-' || c == '.' || c == '/' || c == ':'
}

// next returns the next token. It returns a *SyntaxError only for tokens that
// are malformed in themselves (an unterminated string, an empty tag key, an
// unknown server property); other unexpected input comes back as tInvalid so
// that the parser can say what it expected instead.
func (l *lexer) next() (token, *SyntaxError) {
	src := l.src
	for l.off < len(src) && isSpace(src[l.off]) {
		l.off++
	}
	start := l.off
	if start >= len(src) {
		return token{kind: tEOF, pos: start, end: start}, nil
	}
	tok := token{pos: start}
	c := src[start]
	switch {
	case c == '(':
		tok.kind, l.off = tLParen, start+1
	case c == ')':
		tok.kind, l.off = tRParen, start+1
	case c == '=':
		tok.kind, tok.op, l.off = tOp, opEq, start+1
	case c == '!' && l.peek(1) == '=':
		tok.kind, tok.op, l.off = tOp, opNe, start+2
	case c == ':' && l.peek(1) == '=':
		tok.kind, tok.op, l.off = tOp, opContains, start+2
	case c == '<' && l.peek(1) == '=':
		tok.kind, tok.op, l.off = tOp, opLe, start+2
	case c == '<':
		tok.kind, tok.op, l.off = tOp, opLt, start+1
	case c == '>' && l.peek(1) == '=':
		tok.kind, tok.op, l.off = tOp, opGe, start+2
	case c == '>':
		tok.kind, tok.op, l.off = tOp, opGt, start+1
	case c == '\'':
		return l.quoted()
	case isDigit(c) || (c == '+' || c == '-') && isDigit(l.peek(1)):
		n := scanNumber(src[start:])
		tok.kind, tok.text, l.off = tNumber, src[start:start+n], start+n
	case isWordChar(c):
		return l.word()
	default:
		_, size := utf8.DecodeRuneInString(src[start:])
		tok.kind, l.off = tInvalid, start+size
	}
	tok.end = l.off
	return tok, nil
}

// peek returns the byte i bytes after the current offset, or 0 past the end.
func (l *lexer) peek(i int) byte {
	if l.off+i < len(l.src) {
		return l.src[l.off+i]
	}
	return 0
}

// quoted lexes a single-quoted string starting at the current offset.
func (l *lexer) quoted() (token, *SyntaxError) {
	src, start := l.src, l.off
	var b strings.Builder
	escaped := false
	i := start + 1
	for {
		j := strings.IndexByte(src[i:], '\'')
		if j < 0 {
			return token{}, &SyntaxError{Pos: column(src, start), Expected: "a closing quote (') for the string", Found: "end of input"}
		}
		j += i
		if j+1 < len(src) && src[j+1] == '\'' { // '' is an escaped quote
			b.WriteString(src[i : j+1])
			escaped = true
			i = j + 2
			continue
		}
		l.off = j + 1
		text := src[i:j]
		if escaped {
			b.WriteString(text)
			text = b.String()
		}
		return token{kind: tString, pos: start, end: l.off, text: text}, nil
	}
}

// word lexes a keyword or an operand (tag:KEY, server:PATH).
func (l *lexer) word() (token, *SyntaxError) {
	src, start := l.src, l.off
	i := start
	for i < len(src) && isWordChar(src[i]) {
		i++
	}
	w := src[start:i]
	if i < len(src) && src[i] == ':' && (i+1 >= len(src) || src[i+1] != '=') {
		switch w {
		case "tag":
			return l.tag(i + 1)
		case "server":
			return l.server(i + 1)
		}
	}
	l.off = i
	tok := token{kind: tInvalid, pos: start, end: i}
	switch {
	case strings.EqualFold(w, "and"):
		tok.kind = tAnd
	case strings.EqualFold(w, "or"):
		tok.kind = tOr
	case strings.EqualFold(w, "not"):
		tok.kind = tNot
	}
	return tok, nil
}

// tag lexes the KEY of tag:KEY starting at byte offset i.
func (l *lexer) tag(i int) (token, *SyntaxError) {
	src, start := l.src, l.off
	j := i
	for j < len(src) && isKeyChar(src[j]) && !(src[j] == ':' && j+1 < len(src) && src[j+1] == '=') {
		j++
	}
	if j == i {
		return token{}, &SyntaxError{Pos: column(src, i), Expected: "a tag key after \"tag:\"", Found: l.describeAt(i)}
	}
	l.off = j
	return token{kind: tTag, pos: start, end: j, text: src[i:j]}, nil
}

// server lexes the PATH of server:PATH starting at byte offset i.
func (l *lexer) server(i int) (token, *SyntaxError) {
	src, start := l.src, l.off
	j := i
	for j < len(src) && (isWordChar(src[j]) || src[j] == '.') {
		j++
	}
	if j == i {
		return token{}, &SyntaxError{Pos: column(src, i), Expected: "a server property after \"server:\"", Found: l.describeAt(i)}
	}
	path := src[i:j]
	canonical, ok := CanonicalProperty(path)
	if !ok {
		return token{}, &SyntaxError{Pos: column(src, i), Expected: "a known server property", Found: "unknown server property " + describe(path)}
	}
	l.off = j
	return token{kind: tServer, pos: start, end: j, text: canonical}, nil
}

// describeAt describes the character at byte offset i for SyntaxError.Found.
func (l *lexer) describeAt(i int) string {
	if i >= len(l.src) {
		return "end of input"
	}
	_, size := utf8.DecodeRuneInString(l.src[i:])
	return describe(l.src[i : i+size])
}

// scanNumber returns the length of the longest prefix of s in the NUMBER
// syntax ([+-]digits[.digits][(e|E)[+-]digits]), or 0 if there is none.
func scanNumber(s string) int {
	i := 0
	if i < len(s) && (s[i] == '+' || s[i] == '-') {
		i++
	}
	d := digits(s[i:])
	if d == 0 {
		return 0
	}
	i += d
	if i < len(s) && s[i] == '.' {
		if d := digits(s[i+1:]); d > 0 {
			i += 1 + d
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		j := i + 1
		if j < len(s) && (s[j] == '+' || s[j] == '-') {
			j++
		}
		if d := digits(s[j:]); d > 0 {
			i = j + d
		}
	}
	return i
}

// digits returns the number of leading ASCII digits of s.
func digits(s string) int {
	i := 0
	for i < len(s) && isDigit(s[i]) {
		i++
	}
	return i
}
