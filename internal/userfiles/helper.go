package userfiles

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// runHelper is the helper process (see the package comment): it reads one
// request from in and answers on out. It returns the exit code.
func runHelper(in io.Reader, out io.Writer) int {
	unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
	r := bufio.NewReaderSize(in, 256<<10)
	w := bufio.NewWriterSize(out, 256<<10)
	send := func(rep *reply) bool {
		b, _ := json.Marshal(rep)
		w.Write(append(b, '\n'))
		return w.Flush() == nil
	}
	fail := func(err error) int {
		send(&reply{Error: toError(err)})
		return 1
	}
	line, err := readLine(r, 1<<20)
	if err != nil {
		return fail(failed(errors.New("files helper: read request: " + err.Error())))
	}
	var req request
	if err := json.Unmarshal(line, &req); err != nil {
		return fail(failed(errors.New("files helper: bad request: " + err.Error())))
	}
	if os.Geteuid() == 0 || os.Getuid() == 0 {
		return fail(&Error{Code: CodeUnavailable, Msg: "files helper: does not run as root"})
	}
	if !strings.HasPrefix(req.Root, "/") {
		return fail(failed(errors.New("files helper: the storage root is not absolute")))
	}
	p, err := CleanPath(req.Path)
	if err != nil {
		return fail(err)
	}
	switch req.Op {
	case "list":
		rep, err := list(req.Root, p, req.Limit)
		if err != nil {
			return fail(err)
		}
		send(rep)
		return 0
	case "read":
		return read(req.Root, p, w, send, fail)
	case "write":
		return write(&req, p, r, send, fail)
	}
	return fail(failed(errors.New("files helper: unknown operation")))
}

// list lists the folder dir of the storage root.
func list(rootDir, dir string, limit int) (*reply, error) {
	root, err := os.OpenRoot(rootDir)
	if err != nil {
		if dir == "" && errors.Is(err, fs.ErrNotExist) {
			return &reply{}, nil // no root yet: empty (the first upload makes it)
		}
		return nil, rootError(err)
	}
	defer root.Close()
	name := dir
	if name == "" {
		name = "."
	}
	f, err := root.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.IsDir() {
		return nil, &Error{Code: CodeNotDir, Msg: "path: is not a folder"}
	}
	des, err := f.ReadDir(limit + 1)
	if err != nil && err != io.EOF {
		return nil, err
	}
	rep := &reply{}
	if len(des) > limit {
		des, rep.Truncated = des[:limit], true
	}
	for _, de := range des {
		if !validName(de.Name()) {
			continue
		}
		var info fs.FileInfo
		if de.Type()&fs.ModeSymlink != 0 {
			info, err = root.Stat(path.Join(name, de.Name())) // inside the root only
		} else {
			info, err = de.Info()
		}
		if err != nil {
			continue
		}
		e := Entry{Name: de.Name(), Modified: info.ModTime().UTC().Format(time.RFC3339)}
		switch {
		case info.IsDir():
			e.Dir = true
		case info.Mode().IsRegular():
			e.Size = info.Size()
		default:
			continue
		}
		rep.Entries = append(rep.Entries, e)
	}
	slices.SortFunc(rep.Entries, func(a, b Entry) int {
		if a.Dir != b.Dir {
			if a.Dir {
				return -1
			}
			return 1
		}
		return strings.Compare(a.Name, b.Name)
	})
	return rep, nil
}

// read sends the file name of the storage root: a reply with its size,
// then its bytes.
func read(rootDir, name string, w *bufio.Writer, send func(*reply) bool, fail func(error) int) int {
	root, err := os.OpenRoot(rootDir)
	if err != nil {
		return fail(rootError(err))
	}
	defer root.Close()
	fi, err := root.Stat(name)
	if err != nil {
		return fail(err)
	}
	if err := regular(fi); err != nil {
		return fail(err)
	}
	// O_NONBLOCK: a FIFO swapped in since the Stat must not block the open.
	f, err := root.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
	if err != nil {
		return fail(err)
	}
	defer f.Close()
	if fi, err = f.Stat(); err != nil {
		return fail(err)
	}
	if err := regular(fi); err != nil {
		return fail(err)
	}
	if !send(&reply{Size: fi.Size(), Modified: fi.ModTime().UTC().Format(time.RFC3339)}) {
		return 1
	}
	if _, err := io.CopyN(w, f, fi.Size()); err != nil {
		return 1 // the caller sees the bytes end early
	}
	if w.Flush() != nil {
		return 1
	}
	return 0
}

// regular refuses what is not a regular file.
func regular(fi fs.FileInfo) error {
	switch {
	case fi.IsDir():
		return &Error{Code: CodeIsDir, Msg: "path: is a folder"}
	case !fi.Mode().IsRegular():
		return &Error{Code: CodeNotRegular, Msg: "path: is not a regular file"}
	}
	return nil
}

// write receives the file p of the storage root: it answers ready once the
// temporary file exists, reads req.Size bytes from r into it, and moves it
// into place.
func write(req *request, p string, r io.Reader, send func(*reply) bool, fail func(error) int) int {
	if req.Size < 0 || req.Size > req.Max {
		return fail(tooLarge(req.Max))
	}
	root, err := os.OpenRoot(req.Root)
	if errors.Is(err, fs.ErrNotExist) {
		// The driver makes the root at the session's start, as the owner;
		// make it again the same way if it was removed since.
		if err = os.MkdirAll(req.Root, 0o755); err == nil {
			root, err = os.OpenRoot(req.Root)
		}
	}
	if err != nil {
		return fail(rootError(err))
	}
	defer root.Close()
	dir, name := path.Split(p)
	d := root
	if dir = strings.TrimSuffix(dir, "/"); dir != "" {
		if d, err = root.OpenRoot(dir); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return fail(&Error{Code: CodeNotFound, Msg: "path: its folder does not exist"})
			}
			if errors.Is(err, syscall.ENOTDIR) {
				return fail(&Error{Code: CodeNotDir, Msg: "path: its folder is not a folder"})
			}
			return fail(err)
		}
		defer d.Close()
	}
	perm := fs.FileMode(0o644)
	if fi, err := d.Lstat(name); err == nil {
		switch {
		case fi.IsDir():
			return fail(&Error{Code: CodeIsDir, Msg: "path: is a folder"})
		case !req.Overwrite:
			return fail(exists())
		case fi.Mode().IsRegular():
			perm = fi.Mode().Perm()
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fail(err)
	}
	rnd := make([]byte, 8)
	rand.Read(rnd)
	tmp := ".berth-upload-" + hex.EncodeToString(rnd) + ".part"
	f, err := d.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fail(err)
	}
	abort := func(err error) int {
		f.Close()
		d.Remove(tmp)
		return fail(err)
	}
	if !send(&reply{Ready: true}) {
		return abort(failed(errors.New("files helper: the caller went away")))
	}
	n, err := io.CopyN(f, r, req.Size)
	if err != nil {
		if errors.Is(err, io.EOF) {
			return abort(&Error{Code: CodeIncomplete, Msg: "body: ended early"})
		}
		return abort(err)
	}
	if n != req.Size {
		return abort(&Error{Code: CodeIncomplete, Msg: "body: ended early"})
	}
	if err := f.Chmod(perm); err != nil {
		return abort(err)
	}
	if err := f.Sync(); err != nil {
		return abort(err)
	}
	if err := f.Close(); err != nil {
		d.Remove(tmp)
		return fail(err)
	}
	if req.Overwrite {
		err = d.Rename(tmp, name)
	} else if err = d.Link(tmp, name); err == nil || errors.Is(err, fs.ErrExist) {
		d.Remove(tmp)
	} else if _, serr := d.Lstat(name); errors.Is(serr, fs.ErrNotExist) {
		// A file system without hard links: a rename, after the check.
		err = d.Rename(tmp, name)
	}
	if err != nil {
		d.Remove(tmp)
		if errors.Is(err, fs.ErrExist) {
			return fail(exists())
		}
		return fail(err)
	}
	if df, err := d.Open("."); err == nil {
		df.Sync() // the rename, too, is on disk
		df.Close()
	}
	send(&reply{Done: true, Size: n})
	return 0
}

func exists() *Error {
	return &Error{Code: CodeExists, Msg: "path: exists (overwrite=1 replaces it)"}
}

// rootError describes a failure to open the storage root.
func rootError(err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return &Error{Code: CodeNotFound, Msg: "path: the storage root does not exist"}
	case errors.Is(err, syscall.ENOTDIR):
		return &Error{Code: CodeNotFound, Msg: "path: the storage root is not a folder"}
	case errors.Is(err, fs.ErrPermission):
		return &Error{Code: CodeDenied, Msg: "path: the session's owner cannot open the storage root"}
	}
	return err
}

// toError turns a file system error into an *Error for the client. Its
// message names the field, never the host's path of the root.
func toError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	var errno syscall.Errno
	errors.As(err, &errno)
	switch {
	case strings.Contains(err.Error(), "path escapes from parent"): // os.Root's unexported error
		return &Error{Code: CodeEscape, Msg: "path: escapes the storage root"}
	case errno == syscall.ELOOP:
		return &Error{Code: CodeEscape, Msg: "path: too many symlinks"}
	case errors.Is(err, fs.ErrNotExist):
		return &Error{Code: CodeNotFound, Msg: "path: not found"}
	case errno == syscall.ENOTDIR:
		return &Error{Code: CodeNotDir, Msg: "path: an element is not a folder"}
	case errno == syscall.EISDIR:
		return &Error{Code: CodeIsDir, Msg: "path: is a folder"}
	case errno == syscall.ENAMETOOLONG:
		return &Error{Code: CodeInvalid, Msg: "path: too long for the file system"}
	case errors.Is(err, fs.ErrPermission), errno == syscall.EROFS:
		return &Error{Code: CodeDenied, Msg: "path: the session's owner may not do this"}
	case errno == syscall.ENOSPC, errno == syscall.EDQUOT:
		return &Error{Code: CodeNoSpace, Msg: "the storage root is full (no space or over quota)"}
	case errno == syscall.EFBIG:
		return &Error{Code: CodeTooLarge, Msg: "body: larger than the file system or the owner's file size limit allows"}
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return failed(errors.New(pe.Op + ": " + pe.Err.Error()))
	}
	return failed(err)
}
