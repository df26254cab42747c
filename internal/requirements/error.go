package requirements

import (
	"fmt"
	"strconv"
	"unicode/utf8"
)

// SyntaxError reports why and where Parse rejected a requirements expression.
type SyntaxError struct {
	// Pos is the 1-based character (not byte) column of the offending token.
	Pos int
	// Expected describes what the parser would have accepted at Pos.
	Expected string
	// Found describes what is at Pos: a quoted token such as `"and"`, or
	// "end of input".
	Found string
}

// Error returns the message in the form
// `requirements: at position 14: expected a quoted string or a number, found "and"`.
func (e *SyntaxError) Error() string {
	return fmt.Sprintf("requirements: at position %d: expected %s, found %s", e.Pos, e.Expected, e.Found)
}

// maxFoundLen bounds how many bytes of a token SyntaxError.Found quotes.
const maxFoundLen = 40

// column converts a byte offset into src to a 1-based character column.
func column(src string, off int) int {
	return utf8.RuneCountInString(src[:off]) + 1
}

// describe renders the source text of a token for SyntaxError.Found.
func describe(text string) string {
	if len(text) > maxFoundLen {
		cut := maxFoundLen
		for cut > 0 && !utf8.RuneStart(text[cut]) {
			cut--
		}
		text = text[:cut] + "..."
	}
	return strconv.Quote(text)
}
