package broker

import (
	"encoding/base64"
	"fmt"
	"path"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/berth-dev/berth/internal/username"
)

// MaxNameLength caps session names (the Access Console enforces 255; DCV 256).
const MaxNameLength = 256

// maxPathLength caps InitFile, AutorunFile and StorageRoot.
const maxPathLength = 1024

// ValidateUserName checks an owner or user name. It accepts what real
// directories use (first.last, user@corp.example, DOMAIN\user) and refuses
// anything that could escape a path or a command line.
func ValidateUserName(field, name string) error {
	if err := username.Check(name); err != nil {
		return fmt.Errorf("%s: %w", field, err)
	}
	return nil
}

// validateRelPath checks a path that the agent resolves inside one of its folders.
func validateRelPath(field, p string) error {
	switch {
	case len(p) > maxPathLength:
		return fmt.Errorf("%s: longer than %d bytes", field, maxPathLength)
	case !utf8.ValidString(p):
		return fmt.Errorf("%s: is not valid UTF-8", field)
	case strings.ContainsFunc(p, unicode.IsControl):
		return fmt.Errorf("%s: contains control characters", field)
	case strings.HasPrefix(p, "/") || strings.HasPrefix(p, `\`) || (len(p) > 1 && p[1] == ':'):
		return fmt.Errorf("%s: must be relative to the agent's folder, not an absolute path", field)
	}
	for _, seg := range strings.FieldsFunc(p, func(r rune) bool { return r == '/' || r == '\\' }) {
		if seg == ".." {
			return fmt.Errorf("%s: must not contain \"..\" (it would escape the agent's folder)", field)
		}
	}
	if path.Clean(p) == "." {
		return fmt.Errorf("%s: names no file", field)
	}
	return nil
}

// validateStorageRoot checks StorageRoot: an absolute path or one under %home%.
func validateStorageRoot(p string) error {
	const field = "StorageRoot"
	switch {
	case len(p) > maxPathLength:
		return fmt.Errorf("%s: longer than %d bytes", field, maxPathLength)
	case !utf8.ValidString(p) || strings.ContainsFunc(p, unicode.IsControl):
		return fmt.Errorf("%s: contains invalid characters", field)
	case !strings.HasPrefix(p, "/") && p != "%home%" && !strings.HasPrefix(p, "%home%/"):
		return fmt.Errorf("%s: must be an absolute path or start with %%home%%/", field)
	}
	for _, seg := range strings.Split(p, "/") {
		if seg == ".." {
			return fmt.Errorf("%s: must not contain \"..\"", field)
		}
	}
	return nil
}

// decodeBase64 decodes standard base64 (padding optional), as clients send files.
func decodeBase64(field, s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		b, err = base64.RawStdEncoding.DecodeString(strings.TrimRight(s, "="))
	}
	if err != nil {
		return nil, fmt.Errorf("%s: is not valid base64", field)
	}
	return b, nil
}

// validateName checks a session name.
func validateName(n string) error {
	switch {
	case n == "":
		return fmt.Errorf("Name: is required")
	case len(n) > MaxNameLength:
		return fmt.Errorf("Name: longer than %d bytes", MaxNameLength)
	case !utf8.ValidString(n) || strings.ContainsFunc(n, unicode.IsControl):
		return fmt.Errorf("Name: contains invalid characters")
	}
	return nil
}
