// Package logging builds the daemons' loggers: log/slog records as JSON (for
// log shippers) or text (for a person at a terminal), at a configured level,
// to stderr or to a file in a configured directory that rotates by size and
// age (with gopkg.in/natefinch/lumberjack.v2). Log files are readable by the
// daemon's user only (0600 in a 0700 directory), or also by one configured
// group (0640 in 0750); the rotated and compressed files keep that mode.
// Attributes whose key names a secret (password, secret, token,
// authorization, statement, …) are masked, as a last line of defence: no code
// path should log one in the first place.
package logging

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"gopkg.in/natefinch/lumberjack.v2"
)

// Options configure New. Zero values take the defaults noted.
type Options struct {
	// Level is debug, info (default), warn or error; trace means debug.
	Level string
	// Format is auto (default: text when the output is a terminal, JSON
	// otherwise), json or text.
	Format string
	// Dir, when set, receives the log in File instead of Stderr.
	Dir string
	// File is the log file's name in Dir, e.g. "broker.log".
	File string
	// MaxSizeMB rotates the file when it grows past this size (100).
	MaxSizeMB int
	// MaxAgeDays removes rotated files older than this (14).
	MaxAgeDays int
	// MaxBackups keeps at most this many rotated files (10).
	MaxBackups int
	// RotateEvery also starts a new file at this interval, e.g. 24h for the
	// reference agent's daily rotation (0: by size only).
	RotateEvery time.Duration
	// Stderr is where logs go without Dir (os.Stderr).
	Stderr io.Writer
	// Group, when set, is the group (a name or a numeric ID) that may read
	// the log: a directory New creates is 0750 and the files are 0640 and
	// belong to that group. Unset: 0700 and 0600, the daemon's user only.
	Group string
}

// File modes of the log directory (when New creates it) and files.
const (
	dirMode       fs.FileMode = 0o700
	fileMode      fs.FileMode = 0o600
	groupDirMode  fs.FileMode = 0o750
	groupFileMode fs.FileMode = 0o640
)

// Logger is a configured logger and the file it writes, if any.
type Logger struct {
	*slog.Logger
	file *lumberjack.Logger
	stop chan struct{}
	once sync.Once
}

// Close stops timed rotation and closes the log file, if any. It waits (up to
// closeWait) for rotated files still being compressed, so that nothing writes
// in the directory after Close returns.
func (l *Logger) Close() error {
	if l.file == nil {
		return nil
	}
	l.once.Do(func() { close(l.stop) })
	err := l.file.Close()
	dir, base := filepath.Dir(l.file.Filename), filepath.Base(l.file.Filename)
	prefix := strings.TrimSuffix(base, filepath.Ext(base)) + "-"
	for deadline := time.Now().Add(closeWait); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if !pendingCompression(dir, prefix, filepath.Ext(base)) {
			break
		}
	}
	return err
}

// closeWait bounds how long Close waits for compression.
const closeWait = 5 * time.Second

// pendingCompression reports whether a rotated file (prefix…ext) has not
// been compressed yet.
func pendingCompression(dir, prefix, ext string) bool {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, e := range entries {
		if n := e.Name(); strings.HasPrefix(n, prefix) && strings.HasSuffix(n, ext) {
			return true
		}
	}
	return false
}

// Rotate starts a new log file now (for SIGHUP, or tests); without a file it
// does nothing.
func (l *Logger) Rotate() error {
	if l.file == nil {
		return nil
	}
	return l.file.Rotate()
}

// ParseLevel turns a configured level into a slog.Level.
func ParseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "info":
		return slog.LevelInfo, nil
	case "trace", "debug":
		return slog.LevelDebug, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("log level %q is not one of trace, debug, info, warn, error", s)
}

// New returns the logger that o describes. With Dir it creates the directory
// (mode 0700, or 0750 with a Group) and the file (0600, or 0640 with a Group).
// An existing log file, and rotated files of it, whose mode allows more than
// that (left by an older version or another tool) are restricted to it: the
// files lumberjack rotates and compresses take the mode of the file they come
// from.
func New(o Options) (*Logger, error) {
	level, err := ParseLevel(o.Level)
	if err != nil {
		return nil, err
	}
	out := o.Stderr
	if out == nil {
		out = os.Stderr
	}
	l := &Logger{}
	if o.Dir != "" {
		if o.File == "" || strings.ContainsAny(o.File, `/\`) {
			return nil, fmt.Errorf("log file name %q: want a plain file name", o.File)
		}
		dmode, fmode, gid := dirMode, fileMode, -1
		if o.Group != "" {
			if gid, err = lookupGroup(o.Group); err != nil {
				return nil, err
			}
			dmode, fmode = groupDirMode, groupFileMode
		}
		if err := os.MkdirAll(o.Dir, dmode); err != nil {
			return nil, fmt.Errorf("log directory: %w", err)
		}
		path := filepath.Join(o.Dir, o.File)
		// Create the file before lumberjack does, with the mode (and group)
		// that every file rotated from it then keeps.
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, fmode)
		if err != nil {
			return nil, fmt.Errorf("log file: %w", err)
		}
		f.Close()
		if err := restrict(o.Dir, o.File, fmode, gid); err != nil {
			return nil, fmt.Errorf("log file: %w", err)
		}
		l.file = &lumberjack.Logger{
			Filename:   path,
			MaxSize:    orDefault(o.MaxSizeMB, 100),
			MaxAge:     orDefault(o.MaxAgeDays, 14),
			MaxBackups: orDefault(o.MaxBackups, 10),
			LocalTime:  false,
			Compress:   true,
		}
		out = l.file
		l.stop = make(chan struct{})
		if o.RotateEvery > 0 {
			go l.rotateEvery(o.RotateEvery)
		}
	}
	hopts := &slog.HandlerOptions{Level: level, ReplaceAttr: redact}
	text := o.Format == "text" || (o.Format != "json" && o.Dir == "" && isTerminal(out))
	if text {
		l.Logger = slog.New(slog.NewTextHandler(out, hopts))
	} else {
		l.Logger = slog.New(slog.NewJSONHandler(out, hopts))
	}
	return l, nil
}

// lookupGroup returns the ID of group, a name or a number.
func lookupGroup(group string) (int, error) {
	if id, err := strconv.Atoi(group); err == nil && id >= 0 {
		return id, nil
	}
	g, err := user.LookupGroup(group)
	if err != nil {
		return 0, fmt.Errorf("log group: %w", err)
	}
	id, err := strconv.Atoi(g.Gid)
	if err != nil {
		return 0, fmt.Errorf("log group %q: group ID %q is not a number", group, g.Gid)
	}
	return id, nil
}

// restrict gives the log file name in dir, and the rotated files of it
// (name-<time>.ext, compressed or not), mode (or less where the file already
// allows less) and, when gid >= 0, that group.
func restrict(dir, name string, mode fs.FileMode, gid int) error {
	ext := filepath.Ext(name)
	prefix := strings.TrimSuffix(name, ext) + "-"
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		n := e.Name()
		rotated := strings.HasPrefix(n, prefix) && (strings.HasSuffix(n, ext) || strings.HasSuffix(n, ext+".gz"))
		if n != name && !rotated || !e.Type().IsRegular() {
			continue
		}
		p := filepath.Join(dir, n)
		fi, err := e.Info()
		if err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, err)
			}
			continue
		}
		if gid >= 0 {
			if err := os.Chown(p, -1, gid); err != nil {
				errs = append(errs, err)
			}
		}
		perm := fi.Mode().Perm()
		want := perm & mode
		if n == name && gid >= 0 {
			want = mode // the group was asked for: it may read the live file
		}
		if want != perm {
			if err := os.Chmod(p, want); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// rotateEvery rotates the file at each multiple of d (UTC) until Close.
func (l *Logger) rotateEvery(d time.Duration) {
	for {
		now := time.Now()
		next := now.Truncate(d).Add(d)
		t := time.NewTimer(next.Sub(now))
		select {
		case <-l.stop:
			t.Stop()
			return
		case <-t.C:
			_ = l.file.Rotate()
		}
	}
}

func orDefault(v, d int) int {
	if v <= 0 {
		return d
	}
	return v
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// secretKeys are attribute keys (compared lower-case, and as suffixes after
// "_" or ".") whose values are never logged.
var secretKeys = []string{"password", "passwd", "secret", "token", "authorization", "cookie", "private_key", "dsn", "statement"}

// redact masks the value of an attribute whose key names a secret.
func redact(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindGroup {
		return a
	}
	if IsSecretKey(a.Key) {
		return slog.String(a.Key, "[redacted]")
	}
	return a
}

// IsSecretKey reports whether an attribute key names a secret: "password",
// "client_secret", "access_token", "Authorization", "software_statement" and
// the like.
func IsSecretKey(key string) bool {
	k := strings.ToLower(key)
	for _, s := range secretKeys {
		if k == s || strings.HasSuffix(k, "_"+s) || strings.HasSuffix(k, "."+s) || strings.HasSuffix(k, "-"+s) {
			return true
		}
	}
	return false
}
