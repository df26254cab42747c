// Package requirements parses and evaluates the Requirements expression
// language of the DCV Session Manager CreateSessions API.
//
// A requirements expression selects the servers a new session may be placed
// on. It is parsed once with [Parse] into an immutable [Expr] and then matched
// against any number of servers through the [Subject] interface.
//
// # Grammar
//
//	expr       = and { "or" and }
//	and        = unary { "and" unary }
//	unary      = "not" unary | "(" expr ")" | comparison
//	comparison = operand operator value
//	operand    = "tag:" KEY | "server:" PROPERTY
//	operator   = "=" | "!=" | "<" | "<=" | ">" | ">=" | ":="
//	value      = STRING | NUMBER
//
// The keywords and, or and not are case-insensitive; not binds tighter than
// and, which binds tighter than or. Whitespace (space, tab, CR, LF) separates
// tokens and is otherwise ignored.
//
// KEY is a non-empty run of ASCII letters, digits and the characters
// _ - . / and :, so system tags such as tag:dcv:os-family are written as-is.
// A ":" immediately followed by "=" ends the key, because ":=" is an operator:
// tag:team:='x' compares the tag "team".
//
// PROPERTY is one of the dotted server property paths in [Properties]. The
// instance properties under Host.Aws are also accepted in the JSON spelling
// (EC2InstanceId, EC2InstanceType, EC2ImageId); see [CanonicalProperty]. An
// unknown property is a syntax error.
//
// STRING is single-quoted; a quote inside it is written twice:
//
//	tag:owner = 'o''neil'
//
// Double quotes have no special meaning. NUMBER is an optional sign, digits,
// an optional fraction and an optional exponent: 42, -1, 2.5, 1024E6, 2.5e-3.
// The operator := accepts only a STRING.
//
// A source longer than [MaxSourceLen] bytes, nested deeper than [MaxDepth]
// levels (each "(" and each "not" is a level), or empty is a *[SyntaxError].
//
// # Semantics
//
// A comparison reads the tag or property from the subject:
//
//   - If the tag or property is missing, every comparison is false except !=,
//     which is true.
//   - := is true when the value contains the literal as a substring
//     (case-sensitive).
//   - Otherwise, if both the value and the literal are numbers in the NUMBER
//     syntax above (a quoted literal such as '8' counts when its content is a
//     number), they are compared numerically, so '8' < 16 and 1.0 = 1.
//   - Otherwise they are compared as strings, byte-wise: = and != are exact
//     and case-sensitive, < <= > >= are lexicographic.
//
// Literal numbers are converted once, at parse time.
package requirements
