// Package groups gives the broker the groups of session owners, for the
// group limits and quotas of internal/broker: a groups file in /etc/group
// format (which users are in which group, re-read when it changes), the
// groups the agents report for session owners from their hosts' NSS
// (Learned), a source combining others (Combine), and the group limits file
// (LoadLimits: TOML, [groups.NAME] tables of broker.SessionLimits).
package groups

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/berth-dev/berth/internal/username"
)

// Limits on a groups file, so that a hostile or broken file fails clearly
// instead of exhausting memory.
const (
	// MaxLineLength caps a line of a groups file, in bytes.
	MaxLineLength = 1 << 20
	// MaxNameLength caps a group name, in bytes.
	MaxNameLength = 256
	// MaxFileSize caps a groups file, in bytes.
	MaxFileSize = 64 << 20
)

// Table is a parsed groups file: the groups of each user and the members of
// each group. It is not modified after Parse returns.
type Table struct {
	byUser  map[string][]string
	byGroup map[string][]string
}

// Groups returns the groups user is a member of, sorted (nil: none).
func (t *Table) Groups(user string) []string { return t.byUser[user] }

// Members returns the members of group, sorted (nil: none or unknown).
func (t *Table) Members(group string) []string { return t.byGroup[group] }

// Len returns the number of groups.
func (t *Table) Len() int { return len(t.byGroup) }

// LineError is a parse error at a line of a groups file.
type LineError struct {
	File string
	Line int
	Err  error
}

// Error gives the file, the line and what is wrong with it.
func (e *LineError) Error() string { return fmt.Sprintf("%s:%d: %v", e.File, e.Line, e.Err) }

// Unwrap returns the error of the line.
func (e *LineError) Unwrap() error { return e.Err }

// Parse reads a groups file in /etc/group format: one group a line,
// "name:password:gid:user1,user2", blank lines and lines starting with '#'
// ignored. A group listed on several lines gets the members of all. name
// names the file in errors, which give the line and what is wrong: a line
// longer than MaxLineLength, not four fields, an empty or invalid group
// name, a gid that is not a number, an invalid user name, NIS '+'/'-'
// entries.
func Parse(r io.Reader, name string) (*Table, error) {
	t := &Table{byUser: make(map[string][]string), byGroup: make(map[string][]string)}
	br := bufio.NewReaderSize(io.LimitReader(r, MaxFileSize+1), 64<<10)
	var total int64
	for n := 1; ; n++ {
		line, err := readLine(br)
		total += int64(len(line)) + 1
		if total > MaxFileSize+1 {
			return nil, &LineError{name, n, fmt.Errorf("the file is larger than %d bytes", MaxFileSize)}
		}
		if errors.Is(err, errLineTooLong) {
			return nil, &LineError{name, n, fmt.Errorf("line longer than %d bytes", MaxLineLength)}
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		if perr := t.parseLine(line); perr != nil {
			return nil, &LineError{name, n, perr}
		}
		if errors.Is(err, io.EOF) {
			break
		}
	}
	for u, gs := range t.byUser {
		slices.Sort(gs)
		t.byUser[u] = slices.Compact(gs)
	}
	for g, ms := range t.byGroup {
		slices.Sort(ms)
		t.byGroup[g] = slices.Compact(ms)
	}
	return t, nil
}

var errLineTooLong = errors.New("line too long")

// readLine returns the next line without its end; io.EOF with the last one.
func readLine(br *bufio.Reader) ([]byte, error) {
	var buf []byte
	for {
		chunk, isPrefix, err := br.ReadLine()
		if len(buf)+len(chunk) > MaxLineLength {
			return nil, errLineTooLong
		}
		buf = append(buf, chunk...)
		if err != nil {
			return buf, err
		}
		if !isPrefix {
			return buf, nil
		}
	}
}

// parseLine adds one line's group to t.
func (t *Table) parseLine(line []byte) error {
	line = bytes.TrimRight(line, "\r")
	if s := bytes.TrimSpace(line); len(s) == 0 || s[0] == '#' {
		return nil
	}
	if !utf8.Valid(line) {
		return errors.New("not valid UTF-8")
	}
	f := strings.Split(string(line), ":")
	if len(f) != 4 {
		return fmt.Errorf("%d fields, want 4 (name:password:gid:members)", len(f))
	}
	g := f[0]
	switch {
	case g == "":
		return errors.New("the group name is empty")
	case g[0] == '+' || g[0] == '-':
		return fmt.Errorf("NIS entry %q: list the groups themselves", truncate(g))
	case len(g) > MaxNameLength:
		return fmt.Errorf("the group name is longer than %d bytes", MaxNameLength)
	case strings.ContainsFunc(g, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) || r == ',' }):
		return fmt.Errorf("group %q: the name contains a space, a comma or a control character", truncate(g))
	}
	if _, err := strconv.ParseUint(f[2], 10, 32); err != nil {
		return fmt.Errorf("group %q: gid %q is not a number", truncate(g), truncate(f[2]))
	}
	if _, ok := t.byGroup[g]; !ok {
		t.byGroup[g] = nil
	}
	if f[3] == "" {
		return nil
	}
	for _, u := range strings.Split(f[3], ",") {
		if err := username.Check(u); err != nil {
			return fmt.Errorf("group %q: member %q: %v", truncate(g), truncate(u), err)
		}
		t.byGroup[g] = append(t.byGroup[g], u)
		t.byUser[u] = append(t.byUser[u], g)
	}
	return nil
}

func truncate(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}
