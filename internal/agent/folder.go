package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// ResolveInFolder resolves rel, a path from a request, inside folder for a
// driver: it refuses absolute paths, ".." and symlinks that lead out of the
// folder, and anything but an executable regular file. field names the
// request field in errors ("InitFile"), kind the folder ("init").
func ResolveInFolder(folder, rel, field, kind string) (string, error) {
	if filepath.IsAbs(rel) {
		return "", fmt.Errorf("%s must be relative to the %s folder", field, kind)
	}
	if strings.ContainsRune(rel, 0) {
		return "", fmt.Errorf("%s is not a valid path", field)
	}
	clean := filepath.Clean(rel)
	if clean == "." || clean == ".." || strings.HasPrefix(clean, "../") {
		return "", fmt.Errorf("%s escapes the %s folder", field, kind)
	}
	if folder == "" {
		return "", fmt.Errorf("%s is not allowed: no %s folder is configured on this host", field, kind)
	}
	base, err := filepath.EvalSymlinks(folder)
	if err != nil {
		return "", fmt.Errorf("%s: the %s folder does not exist on this host", field, kind)
	}
	p, err := filepath.EvalSymlinks(filepath.Join(base, clean))
	if err != nil {
		return "", fmt.Errorf("%s %q does not exist in the %s folder", field, rel, kind)
	}
	if !strings.HasPrefix(p, base+string(filepath.Separator)) {
		return "", fmt.Errorf("%s escapes the %s folder", field, kind)
	}
	fi, err := os.Stat(p)
	if err != nil || !fi.Mode().IsRegular() {
		return "", fmt.Errorf("%s %q is not a regular file", field, rel)
	}
	if fi.Mode().Perm()&0o111 == 0 {
		return "", fmt.Errorf("%s %q is not executable", field, rel)
	}
	return p, nil
}
