package hostinfo

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"runtime"
	"strings"

	"github.com/berth-dev/berth/internal/agentproto"
)

// probeOS fills OS: the family from the build, name and version from
// os-release (NAME and VERSION_ID, or PRETTY_NAME when those are missing) and
// the kernel release.
func probeOS(_ context.Context, p *Prober, r *agentproto.HostReport) error {
	r.OS.Family = runtime.GOOS
	var errs []error
	rel, err := p.osRelease()
	if err != nil {
		errs = append(errs, err)
	}
	r.OS.Name, r.OS.Version = rel["NAME"], rel["VERSION_ID"]
	if r.OS.Name == "" && r.OS.Version == "" {
		r.OS.Name = rel["PRETTY_NAME"]
	}
	if k, err := p.readFile("/proc/sys/kernel/osrelease"); err != nil {
		errs = append(errs, fmt.Errorf("kernel release: %w", err))
	} else {
		r.OS.Kernel = strings.TrimSpace(string(k))
	}
	return errors.Join(errs...)
}

// osRelease reads /etc/os-release, or /usr/lib/os-release where the first
// does not exist (os-release(5)).
func (p *Prober) osRelease() (map[string]string, error) {
	data, err := p.readFile("/etc/os-release")
	if errors.Is(err, fs.ErrNotExist) {
		data, err = p.readFile("/usr/lib/os-release")
	}
	if err != nil {
		return nil, fmt.Errorf("os-release: %w", err)
	}
	return parseOSRelease(data), nil
}

// parseOSRelease parses os-release(5): KEY=value lines, the value optionally in
// single or double quotes, with backslash escapes inside double quotes.
// Comments, blank lines and malformed lines are skipped.
func parseOSRelease(data []byte) map[string]string {
	m := make(map[string]string)
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || k == "" || strings.ContainsAny(k, " \t") {
			continue
		}
		m[k] = unquoteShell(v)
	}
	return m
}

// unquoteShell undoes the quoting that os-release values may use.
func unquoteShell(v string) string {
	if len(v) >= 2 && v[0] == '\'' && v[len(v)-1] == '\'' {
		return v[1 : len(v)-1]
	}
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		v = v[1 : len(v)-1]
		var b strings.Builder
		for i := 0; i < len(v); i++ {
			if v[i] == '\\' && i+1 < len(v) && strings.IndexByte("\"\\$`", v[i+1]) >= 0 {
				i++
			}
			b.WriteByte(v[i])
		}
		return b.String()
	}
	return v
}
