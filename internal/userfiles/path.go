package userfiles

import (
	"strings"
	"unicode/utf8"
)

// Bounds of a path in a storage root.
const (
	// MaxPathBytes bounds a whole path, MaxNameBytes one of its elements
	// (Linux's PATH_MAX and NAME_MAX).
	MaxPathBytes = 4096
	MaxNameBytes = 255
)

// CleanPath checks p, a path relative to a storage root as a client gives
// it, and returns it cleaned: elements separated by one "/", without empty
// elements; "" is the root itself. It refuses, with a CodeInvalid *Error
// naming the field "path", a path that is absolute, has a "." or ".."
// element, a NUL byte or invalid UTF-8, is longer than MaxPathBytes or has
// an element longer than MaxNameBytes. It does not look at the file system:
// symlinks are the resolver's business.
func CleanPath(p string) (string, error) {
	switch {
	case len(p) > MaxPathBytes:
		return "", invalid("path: longer than %d bytes", MaxPathBytes)
	case strings.IndexByte(p, 0) >= 0:
		return "", invalid("path: contains a NUL byte")
	case !utf8.ValidString(p):
		return "", invalid("path: is not valid UTF-8")
	case strings.HasPrefix(p, "/"):
		return "", invalid("path: is absolute; give it relative to the storage root")
	}
	elems := make([]string, 0, strings.Count(p, "/")+1)
	for e := range strings.SplitSeq(p, "/") {
		switch {
		case e == "":
			continue
		case e == "..":
			return "", invalid("path: has a '..' element (escapes the storage root)")
		case e == ".":
			return "", invalid("path: has a '.' element")
		case len(e) > MaxNameBytes:
			return "", invalid("path: has an element longer than %d bytes", MaxNameBytes)
		}
		elems = append(elems, e)
	}
	return strings.Join(elems, "/"), nil
}

// validName says whether a directory entry's name can be given back in a
// path (CleanPath accepts it as one element).
func validName(name string) bool {
	c, err := CleanPath(name)
	return err == nil && c == name && name != ""
}
