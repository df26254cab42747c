package requirements

import "strings"

// Subject is what an expression is matched against: one server.
type Subject interface {
	// Tag returns the value of the tag key and whether the server has it.
	Tag(key string) (string, bool)
	// Property returns the value of the server property at the canonical
	// path (one of Properties) and whether the server reports it.
	Property(path string) (string, bool)
}

// Expr is a compiled requirements expression. It is immutable and safe for
// concurrent use.
type Expr struct {
	root *node
	src  string
}

// String returns the canonical source of e: keywords in lower case, single
// spaces around operators, canonical property names, and only the
// parentheses that precedence needs. Parse(e.String()) yields an equivalent
// expression with the same String. A nil *Expr returns "".
func (e *Expr) String() string {
	if e == nil {
		return ""
	}
	return e.src
}

// Match reports whether the subject satisfies e. It calls s.Property with
// canonical property names only. A nil *Expr matches every subject.
func (e *Expr) Match(s Subject) bool {
	if e == nil {
		return true
	}
	return e.root.eval(s)
}

// op is a comparison operator.
type op uint8

const (
	opEq op = iota
	opNe
	opLt
	opLe
	opGt
	opGe
	opContains
)

var opText = [...]string{opEq: "=", opNe: "!=", opLt: "<", opLe: "<=", opGt: ">", opGe: ">=", opContains: ":="}

// nodeKind is the kind of an expression tree node.
type nodeKind uint8

const (
	kindCmp nodeKind = iota
	kindAnd
	kindOr
	kindNot
)

// node is an expression tree node. And and or nodes have two or more kids,
// never of their own kind; a not node has exactly one.
type node struct {
	kind nodeKind
	kids []*node

	// Comparison fields.
	tag    bool   // tag:key, otherwise server:key
	key    string // tag key or canonical property path
	op     op
	lit    string  // string value, or number literal as written
	quoted bool    // lit was a quoted string
	isNum  bool    // lit is a number; num holds its value
	num    float64 // numeric value of lit, converted once at parse time
}

// add appends x as a kid of n, flattening x if it has n's kind.
func (n *node) add(x *node) {
	if x.kind == n.kind {
		n.kids = append(n.kids, x.kids...)
		return
	}
	n.kids = append(n.kids, x)
}

// eval evaluates n against s.
func (n *node) eval(s Subject) bool {
	switch n.kind {
	case kindAnd:
		for _, k := range n.kids {
			if !k.eval(s) {
				return false
			}
		}
		return true
	case kindOr:
		for _, k := range n.kids {
			if k.eval(s) {
				return true
			}
		}
		return false
	case kindNot:
		return !n.kids[0].eval(s)
	}
	var v string
	var ok bool
	if n.tag {
		v, ok = s.Tag(n.key)
	} else {
		v, ok = s.Property(n.key)
	}
	if !ok {
		return n.op == opNe
	}
	if n.op == opContains {
		return strings.Contains(v, n.lit)
	}
	var c int
	if f, ok := n.number(v); ok {
		switch {
		case f < n.num:
			c = -1
		case f > n.num:
			c = 1
		}
	} else {
		c = strings.Compare(v, n.lit)
	}
	switch n.op {
	case opEq:
		return c == 0
	case opNe:
		return c != 0
	case opLt:
		return c < 0
	case opLe:
		return c <= 0
	case opGt:
		return c > 0
	default: // opGe
		return c >= 0
	}
}

// number converts the value v of a comparison to a number when both v and
// the literal of n are numbers.
func (n *node) number(v string) (float64, bool) {
	if !n.isNum {
		return 0, false
	}
	return parseNumber(v)
}

// String returns the canonical source of the subtree at n.
func (n *node) String() string {
	var b strings.Builder
	n.write(&b)
	return b.String()
}

func (n *node) write(b *strings.Builder) {
	switch n.kind {
	case kindAnd, kindOr:
		sep := " and "
		if n.kind == kindOr {
			sep = " or "
		}
		for i, k := range n.kids {
			if i > 0 {
				b.WriteString(sep)
			}
			// Only an or inside an and needs parentheses: kids are never of
			// their parent's kind, and not and comparisons bind tighter.
			paren := n.kind == kindAnd && k.kind == kindOr
			if paren {
				b.WriteByte('(')
			}
			k.write(b)
			if paren {
				b.WriteByte(')')
			}
		}
	case kindNot:
		b.WriteString("not ")
		k := n.kids[0]
		paren := k.kind == kindAnd || k.kind == kindOr
		if paren {
			b.WriteByte('(')
		}
		k.write(b)
		if paren {
			b.WriteByte(')')
		}
	default:
		if n.tag {
			b.WriteString("tag:")
		} else {
			b.WriteString("server:")
		}
		b.WriteString(n.key)
		b.WriteByte(' ')
		b.WriteString(opText[n.op])
		b.WriteByte(' ')
		if n.quoted {
			b.WriteByte('\'')
			b.WriteString(strings.ReplaceAll(n.lit, "'", "''"))
			b.WriteByte('\'')
		} else {
			b.WriteString(n.lit)
		}
	}
}
