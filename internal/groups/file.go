package groups

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// FileSource is a broker.GroupSource reading a groups file (Parse). It is
// read when created, where any error fails; afterwards it stats the file at
// most once per CheckInterval when asked for groups, and re-reads it when
// its modification time or size changed. A re-read that fails keeps the
// groups read before and logs the error, once per change of the file.
// FileSource is safe for concurrent use.
type FileSource struct {
	path string
	log  *slog.Logger

	// CheckInterval bounds how often the file is stat'ed (default 1s;
	// negative: on every call). Set it before use.
	CheckInterval time.Duration
	// Now is the clock (default time.Now). Set it before use.
	Now func() time.Time

	mu      sync.Mutex
	table   *Table
	mtime   time.Time
	size    int64
	checked time.Time
}

// NewFileSource reads the groups file at path. The error names the file and,
// for a bad line, the line.
func NewFileSource(path string, log *slog.Logger) (*FileSource, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	f := &FileSource{path: path, log: log, CheckInterval: time.Second, Now: time.Now}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("groups file: %w", err)
	}
	t, err := readFile(path)
	if err != nil {
		return nil, err
	}
	f.table, f.mtime, f.size = t, fi.ModTime(), fi.Size()
	f.checked = f.Now()
	return f, nil
}

// readFile parses the file at path.
func readFile(path string) (*Table, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("groups file: %w", err)
	}
	defer fh.Close()
	return Parse(fh, path)
}

// current returns the table, re-read first when the file changed.
func (f *FileSource) current() *Table {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := f.Now()
	if f.CheckInterval >= 0 && now.Sub(f.checked) < f.CheckInterval && !now.Before(f.checked) {
		return f.table
	}
	f.checked = now
	fi, err := os.Stat(f.path)
	if err != nil {
		if f.size != -1 {
			f.log.Error("groups file: keeping the groups read before", "path", f.path, "err", err)
			f.size = -1 // log once until the file is back
		}
		return f.table
	}
	if fi.ModTime().Equal(f.mtime) && fi.Size() == f.size {
		return f.table
	}
	f.mtime, f.size = fi.ModTime(), fi.Size()
	t, err := readFile(f.path)
	if err != nil {
		f.log.Error("groups file: keeping the groups read before", "path", f.path, "err", err)
		return f.table
	}
	f.table = t
	f.log.Info("groups file re-read", "path", f.path, "groups", t.Len())
	return t
}

// Groups returns the groups of user in the file.
func (f *FileSource) Groups(_ context.Context, user string) []string {
	return f.current().Groups(user)
}

// Members returns the members of group in the file.
func (f *FileSource) Members(_ context.Context, group string) []string {
	return f.current().Members(group)
}
