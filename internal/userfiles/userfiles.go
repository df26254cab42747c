// Package userfiles lists, reads and writes files in a session's storage
// root as the session's owner: the web gateway's files panel.
//
// A root process must not touch a user's files itself: it would read what
// the user cannot, follow the user's symlinks with root's rights and leave
// root-owned files behind. Every operation runs in a helper process that is
// the calling program executed again through /proc/self/exe with a marker
// argument, started with the owner's user, primary group and supplementary
// groups (never root), an empty environment, "/" as its working directory
// and no_new_privs. A program that uses this package calls Main first thing
// in main (and a test binary in TestMain); its file must be executable by
// the owners (mode 0755, as packaged; the folders above it need not be
// searchable, /proc/self/exe leads straight to it). One helper serves one operation;
// the caller sends a JSON request line on its stdin (followed, for a write,
// by the file's bytes) and reads a JSON reply line on its stdout (followed,
// for a read, by the file's bytes).
//
// Paths are relative to the storage root and checked by CleanPath. The
// helper resolves them with os.Root, so no path reaches outside the root:
// ".." elements are refused outright, and symlinks are followed only while
// they stay inside the root (relative ones; an absolute symlink or one that
// climbs out is refused with CodeEscape). A listing shows folders, regular
// files, and symlinks that resolve inside the root to one of those; other
// entries (devices, FIFOs, sockets, escaping or dangling symlinks, names
// that are not valid UTF-8) are left out. Reads open regular files only.
//
// A write goes to a temporary file (".berth-upload-*.part") in the target's
// folder, is synced, and is then moved into place: linked under its name
// (which fails if the name exists, so two uploads cannot replace each other
// by accident) or, with overwrite, renamed over the old file, whose
// permission bits it keeps. A write that ends early (the client went away,
// the body was short, the size limit) removes its temporary file, so it
// leaves nothing behind. The storage root itself is created (as the owner,
// with its parents) by the first write if it does not exist; a listing of a
// missing root is empty.
package userfiles

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// helperArg is the argument that makes Main run the helper.
const helperArg = "__berth-userfiles-helper"

// MaxHelpers bounds the helper processes running at once; more operations
// wait for a slot (or their context).
const MaxHelpers = 32

// registered is set by Main: this program can run the helper.
var registered atomic.Bool

// slots holds one token per running helper.
var slots = make(chan struct{}, MaxHelpers)

// Main makes this program able to serve as the helper and, when it was
// started as one, runs the helper and exits. Call it first in main (and in
// TestMain of tests that use this package).
func Main() {
	registered.Store(true)
	if len(os.Args) == 2 && os.Args[1] == helperArg {
		os.Exit(runHelper(os.Stdin, os.Stdout))
	}
}

// Error codes: the kinds of *Error.
const (
	// CodeInvalid: the path or the request is malformed (a client error).
	CodeInvalid = "invalid"
	// CodeEscape: the path leads outside the storage root (through a
	// symlink).
	CodeEscape = "escape"
	// CodeNotFound: the file or folder does not exist.
	CodeNotFound = "not_found"
	// CodeIsDir: a file was expected, the path is a folder.
	CodeIsDir = "is_dir"
	// CodeNotDir: a folder was expected, the path is not one.
	CodeNotDir = "not_dir"
	// CodeNotRegular: the path is neither a regular file nor a folder.
	CodeNotRegular = "not_regular"
	// CodeExists: the file to write exists and overwrite was not asked.
	CodeExists = "exists"
	// CodeTooLarge: the file is larger than the limit.
	CodeTooLarge = "too_large"
	// CodeIncomplete: the file's bytes ended before its size.
	CodeIncomplete = "incomplete"
	// CodeDenied: the owner may not do it (file modes, a read-only file
	// system).
	CodeDenied = "denied"
	// CodeNoSpace: the file system or the owner's quota is full.
	CodeNoSpace = "no_space"
	// CodeUnavailable: this program cannot run the helper (Main was not
	// called, or the owner may not execute it), or the owner is root.
	CodeUnavailable = "unavailable"
	// CodeFailed: anything else (an I/O error, a helper that died).
	CodeFailed = "failed"
)

// Error is a refused or failed operation. Msg is a short reason that can be
// shown to the client: it names the field ("path: is a folder").
type Error struct {
	Code string `json:"code"`
	Msg  string `json:"msg"`
}

// Error implements error.
func (e *Error) Error() string { return e.Msg }

func invalid(format string, args ...any) *Error {
	return &Error{Code: CodeInvalid, Msg: fmt.Sprintf(format, args...)}
}

// Owner is whose credentials the helper runs with.
type Owner struct {
	// UID and GID are the owner's user and primary group; UID 0 is refused.
	UID, GID int
	// Groups are the supplementary groups; nil looks them up (os/user),
	// falling back to GID alone.
	Groups []int
}

// Entry is one file or folder of a listing.
type Entry struct {
	Name string `json:"name"`
	Dir  bool   `json:"dir"`
	// Size is the file's size in bytes (0 for a folder).
	Size int64 `json:"size"`
	// Modified is the modification time, RFC 3339 in UTC.
	Modified string `json:"modified"`
}

// Listing is a folder's content: folders first, then files, each by name.
type Listing struct {
	Entries []Entry
	// Truncated is set when the folder has more entries than the limit;
	// the listing then holds the limit's worth, in no particular selection.
	Truncated bool
}

// Available says why this program cannot run the helper, or nil.
func Available() error {
	if !registered.Load() {
		return &Error{Code: CodeUnavailable, Msg: "files: this program cannot run the files helper"}
	}
	return nil
}

// request is what the caller sends the helper.
type request struct {
	Op        string `json:"op"` // "list", "read" or "write"
	Root      string `json:"root"`
	Path      string `json:"path"`
	Limit     int    `json:"limit,omitempty"`     // list: most entries
	Size      int64  `json:"size,omitempty"`      // write: the file's size
	Max       int64  `json:"max,omitempty"`       // write: the size limit
	Overwrite bool   `json:"overwrite,omitempty"` // write
}

// reply is the helper's answer line.
type reply struct {
	Error     *Error  `json:"error,omitempty"`
	Ready     bool    `json:"ready,omitempty"` // write: send the bytes
	Done      bool    `json:"done,omitempty"`  // write: the file is in place
	Entries   []Entry `json:"entries,omitempty"`
	Truncated bool    `json:"truncated,omitempty"`
	Size      int64   `json:"size,omitempty"`     // read
	Modified  string  `json:"modified,omitempty"` // read
}

// maxReply bounds a reply line (a listing of 10,000 entries with names of
// 255 bytes fits many times over).
const maxReply = 64 << 20

// proc is a running helper.
type proc struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stdout *bufio.Reader
	stderr *limitedBuffer
	done   func() // gives the slot back

	waitOnce sync.Once
	waitErr  error
}

// start starts a helper as o and sends it req. With gentle, a cancelled ctx
// closes the helper's stdin (a write then cleans up) instead of killing it;
// the helper is killed if it has not exited 10 s later.
func start(ctx context.Context, o Owner, req *request, gentle bool) (*proc, error) {
	if err := Available(); err != nil {
		return nil, err
	}
	if o.UID <= 0 || o.GID < 0 {
		return nil, &Error{Code: CodeUnavailable, Msg: "files: not served for a session owned by root"}
	}
	select {
	case slots <- struct{}{}:
	case <-ctx.Done():
		return nil, &Error{Code: CodeFailed, Msg: "files: " + ctx.Err().Error()}
	}
	var once sync.Once
	release := func() { once.Do(func() { <-slots }) }
	groups := o.Groups
	if groups == nil {
		groups = lookupGroups(o.UID, o.GID)
	}
	gs := make([]uint32, len(groups))
	for i, g := range groups {
		gs[i] = uint32(g)
	}
	cmd := exec.CommandContext(ctx, "/proc/self/exe", helperArg)
	cmd.Env = []string{}
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: &syscall.Credential{Uid: uint32(o.UID), Gid: uint32(o.GID), Groups: gs},
		Setsid:     true,
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		release()
		return nil, failed(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		release()
		return nil, failed(err)
	}
	stderr := &limitedBuffer{max: 4 << 10}
	cmd.Stderr = stderr
	if gentle {
		cmd.Cancel = stdin.Close
	}
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Start(); err != nil {
		release()
		if errors.Is(err, fs.ErrPermission) {
			return nil, &Error{Code: CodeUnavailable, Msg: "files: the agent's program is not executable by the session's owner (it must be mode 0755)"}
		}
		return nil, failed(fmt.Errorf("start the files helper: %w", err))
	}
	p := &proc{cmd: cmd, stdin: stdin, stdout: bufio.NewReaderSize(stdout, 64<<10), stderr: stderr, done: release}
	line, _ := json.Marshal(req)
	if _, err := stdin.Write(append(line, '\n')); err != nil {
		return nil, p.fail(err)
	}
	return p, nil
}

// reply reads the helper's next reply line.
func (p *proc) reply() (*reply, error) {
	line, err := readLine(p.stdout, maxReply)
	if err != nil {
		return nil, p.fail(err)
	}
	var r reply
	if err := json.Unmarshal(line, &r); err != nil {
		return nil, p.fail(fmt.Errorf("bad reply: %v", err))
	}
	if r.Error != nil {
		p.wait()
		return nil, r.Error
	}
	return &r, nil
}

// wait waits for the helper to exit and gives its slot back.
func (p *proc) wait() error {
	p.waitOnce.Do(func() {
		p.stdin.Close()
		p.waitErr = p.cmd.Wait()
		p.done()
	})
	return p.waitErr
}

// kill ends the helper.
func (p *proc) kill() {
	p.cmd.Process.Kill()
	p.wait()
}

// fail ends the helper and describes how it failed.
func (p *proc) fail(err error) error {
	p.kill()
	msg := bytes.TrimSpace(p.stderr.Bytes())
	if len(msg) > 0 {
		return failed(fmt.Errorf("files helper: %v: %s", err, msg))
	}
	return failed(fmt.Errorf("files helper: %v", err))
}

func failed(err error) *Error { return &Error{Code: CodeFailed, Msg: err.Error()} }

// List lists the folder dir (a path CleanPath accepts; "" is the root) of
// the storage root root (absolute) as o, at most limit entries.
func List(ctx context.Context, o Owner, root, dir string, limit int) (*Listing, error) {
	dir, err := CleanPath(dir)
	if err != nil {
		return nil, err
	}
	p, err := start(ctx, o, &request{Op: "list", Root: root, Path: dir, Limit: max(limit, 1)}, false)
	if err != nil {
		return nil, err
	}
	r, err := p.reply()
	if err != nil {
		return nil, err
	}
	p.wait()
	if r.Entries == nil {
		r.Entries = []Entry{}
	}
	return &Listing{Entries: r.Entries, Truncated: r.Truncated}, nil
}

// File is a file being read: its bytes come from Read. Close it.
type File struct {
	// Size is the file's size, and the number of bytes Read gives unless
	// the file shrinks meanwhile (Read then fails).
	Size int64
	// Modified is its modification time.
	Modified time.Time

	p *proc
	r io.Reader
}

// Read reads the file's bytes.
func (f *File) Read(b []byte) (int, error) {
	n, err := f.r.Read(b)
	if err == io.EOF && f.r.(*io.LimitedReader).N > 0 {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

// Close ends the helper.
func (f *File) Close() error {
	f.p.kill()
	return nil
}

// Open opens the file name (a path CleanPath accepts) of the storage root
// root as o, for reading.
func Open(ctx context.Context, o Owner, root, name string) (*File, error) {
	name, err := CleanPath(name)
	if err != nil {
		return nil, err
	}
	if name == "" {
		return nil, &Error{Code: CodeIsDir, Msg: "path: is a folder"}
	}
	p, err := start(ctx, o, &request{Op: "read", Root: root, Path: name}, false)
	if err != nil {
		return nil, err
	}
	r, err := p.reply()
	if err != nil {
		return nil, err
	}
	mod, _ := time.Parse(time.RFC3339, r.Modified)
	return &File{Size: r.Size, Modified: mod, p: p, r: &io.LimitedReader{R: p.stdout, N: r.Size}}, nil
}

// Write writes the file name (a path CleanPath accepts) of the storage
// root root as o: size bytes from body, at most limit (CodeTooLarge
// otherwise). Its folder must exist. An existing file is replaced only
// with overwrite (CodeExists otherwise), a folder never. Either the whole
// file is in place when Write returns nil, or nothing changed.
func Write(ctx context.Context, o Owner, root, name string, body io.Reader, size, limit int64, overwrite bool) error {
	name, err := CleanPath(name)
	if err != nil {
		return err
	}
	if name == "" {
		return &Error{Code: CodeIsDir, Msg: "path: is a folder"}
	}
	if size < 0 {
		return invalid("body: has no length")
	}
	if size > limit {
		return tooLarge(limit)
	}
	p, err := start(ctx, o, &request{Op: "write", Root: root, Path: name, Size: size, Max: limit, Overwrite: overwrite}, true)
	if err != nil {
		return err
	}
	if _, err := p.reply(); err != nil { // ready, or why not
		return err
	}
	buf := make([]byte, 256<<10)
	var n int64
	for n < size {
		k, rerr := body.Read(buf[:min(int64(len(buf)), size-n)])
		if k > 0 {
			if _, werr := p.stdin.Write(buf[:k]); werr != nil {
				// The helper stopped reading: its reply says why.
				p.stdin.Close()
				if _, err := p.reply(); err != nil {
					return err
				}
				return p.fail(werr)
			}
			n += int64(k)
		}
		if rerr != nil && n < size {
			if rerr == io.EOF {
				rerr = io.ErrUnexpectedEOF
			}
			// The helper sees its stdin end early and removes its
			// temporary file before it answers.
			p.stdin.Close()
			p.reply()
			p.wait()
			msg := fmt.Sprintf("body: ended after %d of %d bytes", n, size)
			if ne, ok := rerr.(interface{ Timeout() bool }); ok && ne.Timeout() {
				msg += " (timed out)"
			}
			return &Error{Code: CodeIncomplete, Msg: msg}
		}
	}
	p.stdin.Close()
	if _, err := p.reply(); err != nil {
		return err
	}
	p.wait()
	return nil
}

func tooLarge(limit int64) *Error {
	return &Error{Code: CodeTooLarge, Msg: fmt.Sprintf("body: larger than the upload limit of %d bytes", limit)}
}

// lookupGroups returns the user's groups (supplementary and primary), or
// just gid when they cannot be looked up.
func lookupGroups(uid, gid int) []int {
	out := []int{gid}
	u, err := user.LookupId(strconv.Itoa(uid))
	if err != nil {
		return out
	}
	ids, err := u.GroupIds()
	if err != nil {
		return out
	}
	for _, id := range ids {
		if g, err := strconv.Atoi(id); err == nil && g != gid {
			out = append(out, g)
		}
	}
	return out
}

// readLine reads one line of at most max bytes, without its newline.
func readLine(r *bufio.Reader, max int) ([]byte, error) {
	var line []byte
	for {
		chunk, err := r.ReadSlice('\n')
		line = append(line, chunk...)
		if len(line) > max {
			return nil, errors.New("line too long")
		}
		if err == nil {
			return line[:len(line)-1], nil
		}
		if err != bufio.ErrBufferFull {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
}

// limitedBuffer keeps the first max bytes written to it.
type limitedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
	max int
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if room := b.max - b.buf.Len(); room > 0 {
		b.buf.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

func (b *limitedBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes())
}
