package main

import (
	"bytes"
	"fmt"
	"strings"
)

// iniFile is a parsed dcvsmcli.conf: the subset of Python's configparser INI
// format the reference CLI's file uses. Sections are case-sensitive, keys are
// case-insensitive (stored lower-case); "key = value" and "key: value" both
// work; lines starting with # or ; are comments. There are no inline comments,
// multi-line values or %(name)s interpolation: a value is the rest of the line,
// trimmed, so a password may hold any character.
type iniFile struct {
	// sections maps a section name to its keys, in file order.
	sections map[string]*iniSection
	order    []string
}

// iniSection is one [section] of an iniFile.
type iniSection struct {
	keys  map[string]iniValue
	order []string
}

// iniValue is one value and the line it was set on.
type iniValue struct {
	value string
	line  int
}

// iniError is a syntax error on one line.
type iniError struct {
	Line int
	Msg  string
}

func (e *iniError) Error() string { return fmt.Sprintf("line %d: %s", e.Line, e.Msg) }

// maxINISize caps the file size; a CLI config is a few hundred bytes.
const maxINISize = 1 << 20

// parseINI parses data. It fails on the first malformed line, a key outside a
// section, or a section or key given twice (as configparser's strict mode does).
func parseINI(data []byte) (*iniFile, error) {
	if len(data) > maxINISize {
		return nil, &iniError{Line: 1, Msg: fmt.Sprintf("file is larger than %d bytes", maxINISize)}
	}
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	f := &iniFile{sections: map[string]*iniSection{}}
	var cur *iniSection
	for i, raw := range strings.Split(string(data), "\n") {
		n := i + 1
		line := strings.TrimSpace(raw)
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
			continue
		case line[0] == '[':
			if line[len(line)-1] != ']' {
				return nil, &iniError{n, fmt.Sprintf("section header %q has no closing ]", clip(line))}
			}
			name := strings.TrimSpace(line[1 : len(line)-1])
			if name == "" {
				return nil, &iniError{n, "empty section name"}
			}
			if _, dup := f.sections[name]; dup {
				return nil, &iniError{n, fmt.Sprintf("section [%s] appears twice", clip(name))}
			}
			cur = &iniSection{keys: map[string]iniValue{}}
			f.sections[name] = cur
			f.order = append(f.order, name)
		default:
			at := strings.IndexAny(line, "=:")
			if at < 0 {
				return nil, &iniError{n, fmt.Sprintf("expected key = value, got %q", clip(line))}
			}
			key := strings.ToLower(strings.TrimSpace(line[:at]))
			if key == "" {
				return nil, &iniError{n, "missing key before " + string(line[at])}
			}
			if cur == nil {
				return nil, &iniError{n, fmt.Sprintf("key %q comes before any [section]", clip(key))}
			}
			if prev, dup := cur.keys[key]; dup {
				return nil, &iniError{n, fmt.Sprintf("key %q is already set on line %d", clip(key), prev.line)}
			}
			cur.keys[key] = iniValue{value: strings.TrimSpace(line[at+1:]), line: n}
			cur.order = append(cur.order, key)
		}
	}
	return f, nil
}

// get returns the value of key in section.
func (f *iniFile) get(section, key string) (iniValue, bool) {
	if f == nil {
		return iniValue{}, false
	}
	s, ok := f.sections[section]
	if !ok {
		return iniValue{}, false
	}
	v, ok := s.keys[strings.ToLower(key)]
	return v, ok
}

// clip shortens s for an error message.
func clip(s string) string {
	if len(s) > 60 {
		return s[:57] + "..."
	}
	return s
}
