package requirements

import (
	"fmt"
	"strconv"
	"unicode/utf8"
)

// Limits that keep hostile input cheap to reject.
const (
	// MaxSourceLen is the longest source, in bytes, that Parse accepts.
	MaxSourceLen = 4096
	// MaxDepth is the deepest nesting Parse accepts; each "(" and each
	// "not" opens one level.
	MaxDepth = 64
)

const (
	expectComparison = `a comparison (tag:KEY or server:PROPERTY), "not" or "("`
	expectOperator   = "an operator (=, !=, <, <=, >, >=, :=)"
	expectValue      = "a quoted string or a number"
)

// Parse compiles a requirements expression. It returns a *SyntaxError when
// src is empty, malformed, longer than MaxSourceLen bytes (in the source or
// in its canonical form, see Expr.String) or nested deeper than MaxDepth
// levels.
func Parse(src string) (*Expr, error) {
	if len(src) > MaxSourceLen {
		cut := MaxSourceLen
		for cut > 0 && !utf8.RuneStart(src[cut]) {
			cut--
		}
		return nil, &SyntaxError{
			Pos:      column(src, cut),
			Expected: fmt.Sprintf("at most %d bytes of input", MaxSourceLen),
			Found:    fmt.Sprintf("%d bytes", len(src)),
		}
	}
	p := &parser{lx: lexer{src: src}}
	if err := p.advance(); err != nil {
		return nil, err
	}
	if p.tok.kind == tEOF {
		return nil, p.unexpected("an expression")
	}
	root, err := p.or()
	if err != nil {
		return nil, err
	}
	if p.tok.kind != tEOF {
		return nil, p.unexpected(`"and", "or" or end of input`)
	}
	canon := root.String()
	if len(canon) > MaxSourceLen {
		// The canonical form adds spaces, so it can outgrow a dense source
		// that is within the limit. Reject it so that String always parses.
		return nil, &SyntaxError{
			Pos:      1,
			Expected: fmt.Sprintf("an expression of at most %d bytes in canonical form", MaxSourceLen),
			Found:    fmt.Sprintf("%d bytes", len(canon)),
		}
	}
	return &Expr{root: root, src: canon}, nil
}

// parser is a recursive-descent parser with one token of lookahead.
type parser struct {
	lx    lexer
	tok   token
	depth int
}

// advance moves to the next token.
func (p *parser) advance() *SyntaxError {
	tok, err := p.lx.next()
	if err != nil {
		return err
	}
	p.tok = tok
	return nil
}

// unexpected reports that the current token is not what was expected.
func (p *parser) unexpected(expected string) *SyntaxError {
	found := "end of input"
	if p.tok.kind != tEOF {
		found = describe(p.lx.src[p.tok.pos:p.tok.end])
	}
	return &SyntaxError{Pos: column(p.lx.src, p.tok.pos), Expected: expected, Found: found}
}

// enter opens a nesting level, failing past MaxDepth.
func (p *parser) enter() *SyntaxError {
	p.depth++
	if p.depth > MaxDepth {
		return p.unexpected(fmt.Sprintf("at most %d levels of nesting", MaxDepth))
	}
	return nil
}

// or parses: and { "or" and }.
func (p *parser) or() (*node, error) {
	return p.list(tOr, kindOr, p.and)
}

// and parses: unary { "and" unary }.
func (p *parser) and() (*node, error) {
	return p.list(tAnd, kindAnd, p.unary)
}

// list parses operands of one associative operator separated by sep and
// flattens nested operands of the same kind, so (a and b) and c is one
// three-way and.
func (p *parser) list(sep tokKind, kind nodeKind, operand func() (*node, error)) (*node, error) {
	first, err := operand()
	if err != nil || p.tok.kind != sep {
		return first, err
	}
	n := &node{kind: kind}
	n.add(first)
	for p.tok.kind == sep {
		if err := p.advance(); err != nil {
			return nil, err
		}
		x, err := operand()
		if err != nil {
			return nil, err
		}
		n.add(x)
	}
	return n, nil
}

// unary parses: "not" unary | "(" or ")" | comparison.
func (p *parser) unary() (*node, error) {
	switch p.tok.kind {
	case tNot:
		if err := p.enter(); err != nil {
			return nil, err
		}
		if err := p.advance(); err != nil {
			return nil, err
		}
		x, err := p.unary()
		if err != nil {
			return nil, err
		}
		p.depth--
		return &node{kind: kindNot, kids: []*node{x}}, nil
	case tLParen:
		if err := p.enter(); err != nil {
			return nil, err
		}
		if err := p.advance(); err != nil {
			return nil, err
		}
		x, err := p.or()
		if err != nil {
			return nil, err
		}
		if p.tok.kind != tRParen {
			return nil, p.unexpected(`"and", "or" or ")"`)
		}
		if err := p.advance(); err != nil {
			return nil, err
		}
		p.depth--
		return x, nil
	case tTag, tServer:
		return p.comparison()
	default:
		return nil, p.unexpected(expectComparison)
	}
}

// comparison parses: operand operator value.
func (p *parser) comparison() (*node, error) {
	n := &node{kind: kindCmp, tag: p.tok.kind == tTag, key: p.tok.text}
	if err := p.advance(); err != nil {
		return nil, err
	}
	if p.tok.kind != tOp {
		return nil, p.unexpected(expectOperator)
	}
	n.op = p.tok.op
	if err := p.advance(); err != nil {
		return nil, err
	}
	switch p.tok.kind {
	case tString:
		n.lit, n.quoted = p.tok.text, true
		n.num, n.isNum = parseNumber(n.lit)
	case tNumber:
		if n.op == opContains {
			return nil, p.unexpected("a quoted string (:= compares strings only)")
		}
		n.lit = p.tok.text
		n.num, n.isNum = parseNumber(n.lit)
	default:
		if n.op == opContains {
			return nil, p.unexpected("a quoted string")
		}
		return nil, p.unexpected(expectValue)
	}
	if err := p.advance(); err != nil {
		return nil, err
	}
	return n, nil
}

// parseNumber converts s to a float64 if all of s is in the NUMBER syntax.
// Values too large for a float64 become ±Inf and still compare correctly.
func parseNumber(s string) (float64, bool) {
	if len(s) == 0 || !(isDigit(s[0]) || s[0] == '+' || s[0] == '-') {
		return 0, false
	}
	// Fast path: up to 15 digits, the common shape of counts and sizes, is
	// exact in a float64.
	if len(s) <= 15 {
		var u uint64
		i := 0
		for ; i < len(s) && isDigit(s[i]); i++ {
			u = u*10 + uint64(s[i]-'0')
		}
		if i == len(s) {
			return float64(u), true
		}
	}
	if scanNumber(s) != len(s) {
		return 0, false
	}
	f, _ := strconv.ParseFloat(s, 64) // the syntax is valid, so only ErrRange is possible
	return f, true
}
