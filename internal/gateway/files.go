package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/logattr"
	"github.com/berth-dev/berth/internal/permfile"
	"github.com/berth-dev/berth/internal/userfiles"
)

// The files panel's API (docs/files.md), next to the session page, with the
// connection token's query like session-info:
//
//	GET {base}files?path=DIR           the folder's listing (JSON)
//	GET {base}files/download?path=FILE the file's bytes
//	PUT {base}files/upload?path=FILE   the body becomes the file (201)
//
// A user needs "display" (the token must let them connect), and
// "file-download" to download, "file-upload" to upload, either to list.
// Files are read and written as the session's owner (package userfiles),
// whoever the user is: DCV's semantics.

// DefaultMaxUploadBytes is Config.MaxUploadBytes when it is zero: 1 GiB.
const DefaultMaxUploadBytes = 1 << 30

// MaxListEntries bounds a listing; a folder with more entries is listed in
// part, with "truncated": true.
const MaxListEntries = 10000

// minTransferRate is the average rate, in bytes per second, an upload or a
// download must keep: its deadline is ReadTimeout plus its size at that
// rate. Each read or write must also make progress within ReadTimeout.
const minTransferRate = 64 << 10

// listTimeout bounds a listing.
const listTimeout = 30 * time.Second

// FileMetrics is an optional interface of Config.Metrics: the files panel's
// finished transfers. Its method is called from many goroutines and must
// not block.
type FileMetrics interface {
	// FileTransferred records an upload or a download (FileUpload,
	// FileDownload) that completed, and its size in bytes.
	FileTransferred(direction string, bytes int64)
}

// Directions of FileMetrics.FileTransferred.
const (
	FileUpload   = "upload"
	FileDownload = "download"
)

// fileTransferred tells the metrics of a finished transfer.
func (s *Server) fileTransferred(direction string, n int64) {
	if m, ok := s.cfg.Metrics.(FileMetrics); ok {
		m.FileTransferred(direction, n)
	}
}

// fileRoutes adds the files panel's endpoints (the session's storage root)
// to mux.
func (s *Server) fileRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET "+s.base+"files", s.serveFileList)
	mux.HandleFunc("GET "+s.base+"files/download", s.serveFileDownload)
	mux.HandleFunc("PUT "+s.base+"files/upload", s.serveFileUpload)
}

// maxUpload is the upload size limit.
func (s *Server) maxUpload() int64 {
	if s.cfg.MaxUploadBytes > 0 {
		return s.cfg.MaxUploadBytes
	}
	return DefaultMaxUploadBytes
}

// fileGrant is a request allowed to use a session's storage root.
type fileGrant struct {
	*grant
	upload, download bool
	owner            userfiles.Owner
	root             string
}

// Feature names of the files panel.
const (
	featureUpload   = "file-upload"
	featureDownload = "file-download"
)

// authorizeFiles checks the token and the user's file permissions: need is
// the feature the request needs, or "" for either. It writes the refusal
// and returns nil when the request may not proceed.
func (s *Server) authorizeFiles(w http.ResponseWriter, r *http.Request, need string) *fileGrant {
	g, herr := s.authorize(r.Context(), r)
	if herr != nil {
		herr.write(w)
		return nil
	}
	p := g.session.Permissions
	if p == nil {
		p = permfile.Default()
	}
	f := p.Features(g.claims.User, g.session.Owner, s.cfg.Groups)
	fg := &fileGrant{grant: g, upload: f[featureUpload], download: f[featureDownload]}
	switch {
	case need == "" && !fg.upload && !fg.download:
		fileRefuse(w, http.StatusForbidden, "the user may neither upload nor download files in this session (file-upload, file-download)")
		return nil
	case need == featureUpload && !fg.upload:
		fileRefuse(w, http.StatusForbidden, "the user may not upload files to this session (file-upload)")
		return nil
	case need == featureDownload && !fg.download:
		fileRefuse(w, http.StatusForbidden, "the user may not download files from this session (file-download)")
		return nil
	}
	fg.root = g.session.StorageRoot
	if fg.root == "" || !filepath.IsAbs(fg.root) {
		fileRefuse(w, http.StatusNotFound, "this session has no storage root")
		return nil
	}
	if err := userfiles.Available(); err != nil {
		s.log.Error("files panel unavailable", "err", err)
		fileRefuse(w, http.StatusServiceUnavailable, "files are not available on this host")
		return nil
	}
	fg.owner = userfiles.Owner{UID: g.session.UID, GID: g.session.GID}
	return fg
}

// fileRefuse writes a short text/plain refusal.
func fileRefuse(w http.ResponseWriter, status int, reason string) {
	(&httpError{status, reason}).write(w)
}

// fileError answers a userfiles error: a 4xx for what the client asked, 5xx
// for what went wrong on the host (logged).
func (s *Server) fileError(w http.ResponseWriter, g *fileGrant, op, p string, err error) {
	var e *userfiles.Error
	if !errors.As(err, &e) {
		e = &userfiles.Error{Code: userfiles.CodeFailed, Msg: err.Error()}
	}
	status := http.StatusInternalServerError
	switch e.Code {
	case userfiles.CodeInvalid, userfiles.CodeIsDir, userfiles.CodeNotDir, userfiles.CodeNotRegular, userfiles.CodeIncomplete:
		status = http.StatusBadRequest
	case userfiles.CodeEscape, userfiles.CodeDenied:
		status = http.StatusForbidden
	case userfiles.CodeNotFound:
		status = http.StatusNotFound
	case userfiles.CodeExists:
		status = http.StatusConflict
	case userfiles.CodeTooLarge:
		status = http.StatusRequestEntityTooLarge
	case userfiles.CodeNoSpace:
		status = http.StatusInsufficientStorage
	case userfiles.CodeUnavailable:
		status = http.StatusServiceUnavailable
	}
	attrs := []any{logattr.SessionID, g.session.ID, logattr.User, g.claims.User, "op", op, "path", p, "reason", e.Msg}
	switch {
	case status >= 500:
		s.log.Warn("files panel: "+op+" failed", attrs...)
		if e.Code == userfiles.CodeFailed {
			e = &userfiles.Error{Msg: "cannot " + op + " the file now"}
		}
	case e.Code == userfiles.CodeEscape:
		s.log.Warn("files panel: path refused", attrs...)
	default:
		s.log.Debug("files panel: "+op+" refused", attrs...)
	}
	fileRefuse(w, status, e.Msg)
}

// fileListing is the answer of GET files.
type fileListing struct {
	Path        string            `json:"path"`
	Entries     []userfiles.Entry `json:"entries"`
	Truncated   bool              `json:"truncated"`
	CanUpload   bool              `json:"canUpload"`
	CanDownload bool              `json:"canDownload"`
}

func (s *Server) serveFileList(w http.ResponseWriter, r *http.Request) {
	g := s.authorizeFiles(w, r, "")
	if g == nil {
		return
	}
	dir := r.URL.Query().Get("path")
	clean, err := userfiles.CleanPath(dir)
	if err != nil {
		s.fileError(w, g, "list", dir, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), listTimeout)
	defer cancel()
	l, err := userfiles.List(ctx, g.owner, g.root, clean, MaxListEntries)
	if err != nil {
		s.fileError(w, g, "list", clean, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(fileListing{Path: clean, Entries: l.Entries, Truncated: l.Truncated, CanUpload: g.upload, CanDownload: g.download})
}

func (s *Server) serveFileDownload(w http.ResponseWriter, r *http.Request) {
	g := s.authorizeFiles(w, r, featureDownload)
	if g == nil {
		return
	}
	name := r.URL.Query().Get("path")
	if name == "" {
		fileRefuse(w, http.StatusBadRequest, "path: missing")
		return
	}
	f, err := userfiles.Open(r.Context(), g.owner, g.root, name)
	if err != nil {
		s.fileError(w, g, "download", name, err)
		return
	}
	defer f.Close()
	name, _ = userfiles.CleanPath(name)
	// The server sets no WriteTimeout (net/http lifts the read deadline
	// while a handler without a body to read runs): the download sets its
	// own write deadlines, so that a client that stops reading lets go of
	// the helper.
	d := s.transferDeadline(w, f.Size)
	defer d.rc.SetWriteDeadline(time.Time{}) // the connection may serve more requests
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Disposition", attachment(path.Base(name)))
	h.Set("Content-Length", strconv.FormatInt(f.Size, 10))
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	if !f.Modified.IsZero() {
		h.Set("Last-Modified", f.Modified.UTC().Format(http.TimeFormat))
	}
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	n, err := io.CopyBuffer(deadlineWriter{w, d}, f, make([]byte, 256<<10))
	attrs := []any{logattr.SessionID, g.session.ID, logattr.User, g.claims.User, logattr.Owner, g.session.Owner, "path", name, "size", n}
	if err != nil {
		s.log.Info("file download ended early", append(attrs, "err", err)...)
		return
	}
	s.log.Info("file downloaded", attrs...)
	s.fileTransferred(FileDownload, n)
}

func (s *Server) serveFileUpload(w http.ResponseWriter, r *http.Request) {
	g := s.authorizeFiles(w, r, featureUpload)
	if g == nil {
		return
	}
	q := r.URL.Query()
	name := q.Get("path")
	if name == "" {
		fileRefuse(w, http.StatusBadRequest, "path: missing")
		return
	}
	var overwrite bool
	switch q.Get("overwrite") {
	case "", "0", "false":
	case "1", "true":
		overwrite = true
	default:
		fileRefuse(w, http.StatusBadRequest, "overwrite: must be 1 or 0")
		return
	}
	if r.ContentLength < 0 {
		fileRefuse(w, http.StatusLengthRequired, "Content-Length: required")
		return
	}
	limit := s.maxUpload()
	if r.ContentLength > limit {
		fileRefuse(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body: larger than the upload limit of %d bytes", limit))
		return
	}
	d := s.transferDeadline(w, r.ContentLength)
	body := &deadlineReader{r: http.MaxBytesReader(w, r.Body, limit), d: d}
	err := userfiles.Write(r.Context(), g.owner, g.root, name, body, r.ContentLength, limit, overwrite)
	if err != nil {
		if errors.As(body.err, new(*http.MaxBytesError)) {
			err = &userfiles.Error{Code: userfiles.CodeTooLarge, Msg: fmt.Sprintf("body: larger than the upload limit of %d bytes", limit)}
		}
		s.fileError(w, g, "upload", name, err)
		return
	}
	name, _ = userfiles.CleanPath(name)
	s.log.Info("file uploaded", logattr.SessionID, g.session.ID, logattr.User, g.claims.User, logattr.Owner, g.session.Owner, "path", name, "size", r.ContentLength, "overwrite", overwrite)
	s.fileTransferred(FileUpload, r.ContentLength)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusCreated)
	json.NewEncoder(w).Encode(struct {
		Path string `json:"path"`
		Size int64  `json:"size"`
	}{name, r.ContentLength})
}

// transfer bounds an upload's or a download's time: each read or write
// must make progress within the server's ReadTimeout, and the whole must
// finish by ReadTimeout plus its size at minTransferRate. The server's own
// ReadTimeout, meant for requests, would cut large uploads short.
type transfer struct {
	rc   *http.ResponseController
	idle time.Duration
	end  time.Time
}

func (s *Server) transferDeadline(w http.ResponseWriter, size int64) *transfer {
	return &transfer{
		rc:   http.NewResponseController(w),
		idle: s.cfg.ReadTimeout,
		end:  time.Now().Add(s.cfg.ReadTimeout + time.Duration(size/minTransferRate)*time.Second),
	}
}

// next is the deadline of the next read or write.
func (t *transfer) next() time.Time {
	if d := time.Now().Add(t.idle); d.Before(t.end) {
		return d
	}
	return t.end
}

// deadlineReader is an upload's body, with its deadlines; err is the body's
// first error.
type deadlineReader struct {
	r   io.Reader
	d   *transfer
	err error
}

func (r *deadlineReader) Read(b []byte) (int, error) {
	r.d.rc.SetReadDeadline(r.d.next()) // ErrNotSupported (HTTP/2 test servers): the server's timeouts alone
	n, err := r.r.Read(b)
	if err != nil && err != io.EOF && r.err == nil {
		r.err = err
	}
	return n, err
}

// deadlineWriter is a download's response, with its deadlines.
type deadlineWriter struct {
	w http.ResponseWriter
	d *transfer
}

func (w deadlineWriter) Write(b []byte) (int, error) {
	w.d.rc.SetWriteDeadline(w.d.next())
	return w.w.Write(b)
}

// attachment is a Content-Disposition for a download named name: an ASCII
// filename for old clients and the exact one in RFC 6266's filename*
// (RFC 8187 encoding), so that no name can break the header.
func attachment(name string) string {
	var ascii, enc strings.Builder
	for _, r := range name {
		if r >= 0x20 && r < 0x7f && r != '"' && r != '\\' && r != '%' {
			ascii.WriteRune(r)
		} else {
			ascii.WriteByte('_')
		}
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("!#$&+-.^_`|~", c) >= 0 {
			enc.WriteByte(c)
		} else {
			fmt.Fprintf(&enc, "%%%02X", c)
		}
	}
	return `attachment; filename="` + ascii.String() + `"; filename*=UTF-8''` + enc.String()
}
