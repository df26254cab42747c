package gateway_test

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/gateway"
	"github.com/berth-dev/berth/internal/localuser"
	"github.com/berth-dev/berth/internal/poll"
	"github.com/berth-dev/berth/internal/userfiles"
)

func TestMain(m *testing.M) {
	userfiles.Main() // the files panel's helper is this test binary run again
	os.Exit(m.Run())
}

// filesEnv is a gateway on an httptest TLS server with one session of a
// real user, berthtest1, whose storage root is a fresh folder of theirs.
type filesEnv struct {
	t        *testing.T
	env      *env // broker and sessions, for serveGateway
	owner    localuser.User
	other    localuser.User
	root     string
	srv      *httptest.Server
	sessions *sessions
}

const filesSession = "files-1"

func newFilesEnv(t *testing.T, perms string, mod func(*gateway.Config)) *filesEnv {
	t.Helper()
	e := &filesEnv{t: t, owner: localuser.Ensure(t, "berthtest1"), other: localuser.Ensure(t, "berthtest2"), sessions: newSessions()}
	e.env = &env{t: t, broker: newBroker(t), sessions: e.sessions}
	root, err := os.MkdirTemp(e.owner.Home, "files-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	if err := os.Chown(root, e.owner.UID, e.owner.GID); err != nil {
		t.Fatal(err)
	}
	e.root = root
	e.setPerms(perms)
	cfg := gateway.Config{Verifier: e.env.broker.verifier, Sessions: e.sessions, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if mod != nil {
		mod(&cfg)
	}
	gw := gateway.New(cfg)
	e.srv = httptest.NewUnstartedServer(gw.Handler())
	e.srv.StartTLS()
	t.Cleanup(func() {
		gw.Close()
		e.srv.Close()
	})
	return e
}

// setPerms sets the session's permissions file ("" is the default).
func (e *filesEnv) setPerms(perms string) {
	e.sessions.set(gateway.Session{ID: filesSession, Owner: e.owner.Name, UID: e.owner.UID, GID: e.owner.GID, Home: e.owner.Home, StorageRoot: e.root, Permissions: mustPerms(e.t, perms)})
}

// url is the address of endpoint (files, files/download, files/upload) for
// user, with the query q.
func (e *filesEnv) url(base, endpoint, user string, q url.Values) string {
	if q == nil {
		q = url.Values{}
	}
	q.Set("authToken", e.env.broker.token(e.t, filesSession, e.owner.Name, user))
	q.Set("sessionId", filesSession)
	return base + "/" + endpoint + "?" + q.Encode()
}

// do sends a request as user and returns the response with its body read.
func (e *filesEnv) do(method, endpoint, user string, q url.Values, body io.Reader) (*http.Response, []byte) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.url(e.srv.URL, endpoint, user, q), body)
	if err != nil {
		e.t.Fatal(err)
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, endpoint, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatalf("%s %s: read body: %v", method, endpoint, err)
	}
	return resp, b
}

func (e *filesEnv) upload(user, p string, data []byte, extra ...string) (int, string) {
	e.t.Helper()
	q := url.Values{"path": {p}}
	for i := 0; i+1 < len(extra); i += 2 {
		q.Set(extra[i], extra[i+1])
	}
	resp, b := e.do(http.MethodPut, "files/upload", user, q, bytes.NewReader(data))
	return resp.StatusCode, string(b)
}

func (e *filesEnv) download(user, p string) (int, []byte, *http.Response) {
	e.t.Helper()
	resp, b := e.do(http.MethodGet, "files/download", user, url.Values{"path": {p}}, nil)
	return resp.StatusCode, b, resp
}

// listing is the answer of GET files.
type listing struct {
	Path    string `json:"path"`
	Entries []struct {
		Name     string `json:"name"`
		Dir      bool   `json:"dir"`
		Size     int64  `json:"size"`
		Modified string `json:"modified"`
	} `json:"entries"`
	Truncated   bool `json:"truncated"`
	CanUpload   bool `json:"canUpload"`
	CanDownload bool `json:"canDownload"`
}

func (e *filesEnv) list(user, p string) (int, *listing, string) {
	e.t.Helper()
	resp, b := e.do(http.MethodGet, "files", user, url.Values{"path": {p}}, nil)
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, nil, string(b)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		e.t.Errorf("listing Content-Type %q", ct)
	}
	var l listing
	if err := json.Unmarshal(b, &l); err != nil {
		e.t.Fatalf("listing %s: %v", b, err)
	}
	return resp.StatusCode, &l, string(b)
}

// fileOwner returns the owner UID of a file.
func fileOwner(t *testing.T, p string) int {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	return int(fi.Sys().(*syscall.Stat_t).Uid)
}

// entries lists a folder's names (nil when it is missing).
func entries(dir string) []string {
	des, _ := os.ReadDir(dir)
	var out []string
	for _, d := range des {
		out = append(out, d.Name())
	}
	return out
}

// TestFiles_RoundTrip uploads a 20 MB file as the owner and downloads it:
// the same bytes come back, the file on disk is the owner's, and the
// download carries a safe attachment's headers. A user who is not the
// owner but has both file permissions writes as the owner too (DCV's
// semantics).
func TestFiles_RoundTrip(t *testing.T) {
	e := newFilesEnv(t, "[permissions]\n%owner% allow builtin\nberthtest2 allow display file-upload file-download\n", nil)
	data := make([]byte, 20<<20)
	rand.Read(data)
	const name = "résumé \"final\".bin"
	if status, body := e.upload(e.owner.Name, name, data); status != http.StatusCreated {
		t.Fatalf("upload: %d %s", status, body)
	}
	if uid := fileOwner(t, filepath.Join(e.root, name)); uid != e.owner.UID {
		t.Errorf("the uploaded file belongs to UID %d, want the owner's %d", uid, e.owner.UID)
	}
	status, got, resp := e.download(e.owner.Name, name)
	if status != http.StatusOK {
		t.Fatalf("download: %d %s", status, got)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("downloaded %d bytes, not the %d uploaded", len(got), len(data))
	}
	for h, want := range map[string]string{
		"Content-Type":           "application/octet-stream",
		"Content-Length":         strconv.Itoa(len(data)),
		"X-Content-Type-Options": "nosniff",
		"Content-Disposition":    `attachment; filename="r_sum_ _final_.bin"; filename*=UTF-8''r%C3%A9sum%C3%A9%20%22final%22.bin`,
	} {
		if got := resp.Header.Get(h); got != want {
			t.Errorf("%s: %q, want %q", h, got, want)
		}
	}
	_, l, _ := e.list(e.owner.Name, "")
	if len(l.Entries) != 1 || l.Entries[0].Name != name || l.Entries[0].Size != int64(len(data)) || l.Entries[0].Dir {
		t.Fatalf("listing %+v", l)
	}
	if _, err := time.Parse(time.RFC3339, l.Entries[0].Modified); err != nil {
		t.Errorf("modified: %v", err)
	}

	// berthtest2 uploads and downloads as the owner.
	if status, body := e.upload(e.other.Name, "from-other.txt", []byte("hello")); status != http.StatusCreated {
		t.Fatalf("upload as berthtest2: %d %s", status, body)
	}
	if uid := fileOwner(t, filepath.Join(e.root, "from-other.txt")); uid != e.owner.UID {
		t.Errorf("berthtest2's upload belongs to UID %d, want the owner's %d", uid, e.owner.UID)
	}
	// A file only the owner may read is readable to berthtest2 through the
	// session.
	os.Chmod(filepath.Join(e.root, "from-other.txt"), 0o600)
	if status, got, _ := e.download(e.other.Name, "from-other.txt"); status != http.StatusOK || string(got) != "hello" {
		t.Errorf("download as berthtest2: %d %q", status, got)
	}
}

// TestFiles_Permissions refuses each operation to a user without its
// permission, and a listing to one with neither.
func TestFiles_Permissions(t *testing.T) {
	e := newFilesEnv(t, "", nil)
	if err := os.WriteFile(filepath.Join(e.root, "f.txt"), []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chown(filepath.Join(e.root, "f.txt"), e.owner.UID, e.owner.GID)
	for _, tc := range []struct {
		features               string
		list, download, upload int
		canUpload, canDownload bool
	}{
		{"display file-download", 200, 200, 403, false, true},
		{"display file-upload", 200, 403, 201, true, false},
		{"display file-upload file-download", 200, 200, 201, true, true},
		{"display keyboard mouse clipboard-copy clipboard-paste", 403, 403, 403, false, false},
		{"file-upload file-download", 403, 403, 403, false, false}, // cannot connect at all
	} {
		t.Run(tc.features, func(t *testing.T) {
			e.setPerms("[permissions]\n%owner% allow builtin\nberthtest2 allow " + tc.features + "\n")
			status, l, body := e.list(e.other.Name, "")
			if status != tc.list {
				t.Errorf("list: %d %s, want %d", status, body, tc.list)
			}
			if l != nil && (l.CanUpload != tc.canUpload || l.CanDownload != tc.canDownload) {
				t.Errorf("list says canUpload %v canDownload %v", l.CanUpload, l.CanDownload)
			}
			if status, body, _ := e.download(e.other.Name, "f.txt"); status != tc.download {
				t.Errorf("download: %d %s, want %d", status, body, tc.download)
			}
			os.Remove(filepath.Join(e.root, "new.txt"))
			if status, body := e.upload(e.other.Name, "new.txt", []byte("x")); status != tc.upload {
				t.Errorf("upload: %d %s, want %d", status, body, tc.upload)
			}
			if _, err := os.Stat(filepath.Join(e.root, "new.txt")); (err == nil) != (tc.upload == 201) {
				t.Errorf("after the upload: %v", err)
			}
		})
	}
	// The owner has both by default; a user the file does not name has
	// nothing (and cannot connect).
	e.setPerms("")
	if status, l, body := e.list(e.owner.Name, ""); status != 200 || !l.CanUpload || !l.CanDownload {
		t.Errorf("owner's listing: %d %s", status, body)
	}
	if status, _, body := e.list(e.other.Name, ""); status != http.StatusForbidden {
		t.Errorf("berthtest2 by default: %d %s", status, body)
	}
}

// TestFiles_Escapes refuses paths out of the storage root: ".." elements,
// absolute paths, NUL bytes, overlong paths, and symlinks (to files and to
// folders, absolute or relative) that lead to /etc or to another user's
// home. A symlink that stays inside the root is followed.
func TestFiles_Escapes(t *testing.T) {
	e := newFilesEnv(t, "", nil)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	// berthtest2's secret, which berthtest1 cannot read anyway, and a
	// folder of theirs berthtest1 could write to, were it not for the root.
	otherDir, err := os.MkdirTemp(e.other.Home, "files-escape-")
	must(err)
	t.Cleanup(func() { os.RemoveAll(otherDir) })
	must(os.Chmod(otherDir, 0o777))
	secret := filepath.Join(otherDir, "secret")
	must(os.WriteFile(secret, []byte("secret"), 0o644))
	must(os.Mkdir(filepath.Join(e.root, "sub"), 0o755))
	must(os.Chown(filepath.Join(e.root, "sub"), e.owner.UID, e.owner.GID))
	must(os.WriteFile(filepath.Join(e.root, "sub", "f.txt"), []byte("inside"), 0o644))
	relSecret, _ := filepath.Rel(e.root, secret)
	relOther, _ := filepath.Rel(filepath.Join(e.root, "sub"), otherDir)
	for link, target := range map[string]string{
		"etc":      "/etc",
		"passwd":   "/etc/passwd",
		"secret":   relSecret,
		"theirs":   otherDir,
		"sub/them": relOther,
		"up":       "../..",
		"inside":   "sub",
		"loop":     "loop",
	} {
		must(os.Symlink(target, filepath.Join(e.root, link)))
		os.Lchown(filepath.Join(e.root, link), e.owner.UID, e.owner.GID)
	}
	long := strings.Repeat("d/", 2100)
	for _, tc := range []struct {
		op, path string
		want     int
	}{
		{"download", "passwd", 403},
		{"download", "etc/passwd", 403},
		{"download", "secret", 403},
		{"download", "theirs/secret", 403},
		{"download", "sub/them/secret", 403},
		{"download", "up/etc/passwd", 403},
		{"download", "loop", 403},
		{"download", strings.Repeat("../", 3) + "etc/passwd", 400},
		{"download", "sub/../../" + filepath.Base(e.root), 400},
		{"download", "/etc/passwd", 400},
		{"download", "sub/f.txt\x00.png", 400},
		{"download", long, 400},
		{"download", strings.Repeat("n", 256), 400},
		{"download", "", 400},
		{"download", "sub", 400},
		{"list", "etc", 403},
		{"list", "theirs", 403},
		{"list", "up", 403},
		{"list", "..", 400},
		{"list", "/", 400},
		{"list", "sub/f.txt", 400},
		{"list", "nothing", 404},
		{"upload", "etc/x", 403},
		{"upload", "theirs/x", 403},
		{"upload", "sub/them/x", 403},
		{"upload", "up/x", 403},
		{"upload", "../x", 400},
		{"upload", "/tmp/x", 400},
		{"upload", "sub", 400},
		{"upload", "nodir/x", 404},
		// inside the root
		{"download", "inside/f.txt", 200},
		{"list", "inside", 200},
		{"upload", "inside/new.txt", 201},
	} {
		var status int
		var body string
		switch tc.op {
		case "download":
			var b []byte
			status, b, _ = e.download(e.owner.Name, tc.path)
			body = string(b)
		case "list":
			status, _, body = e.list(e.owner.Name, tc.path)
		case "upload":
			status, body = e.upload(e.owner.Name, tc.path, []byte("x"))
		}
		if status != tc.want {
			t.Errorf("%s %.40q: %d %s, want %d", tc.op, tc.path, status, body, tc.want)
		}
		if status >= 400 && !strings.HasPrefix(body, "path: ") {
			t.Errorf("%s %.40q: reason %q does not name the path", tc.op, tc.path, body)
		}
	}
	if got := entries(otherDir); len(got) != 1 {
		t.Errorf("berthtest2's folder holds %v", got)
	}
	if _, err := os.Lstat("/etc/x"); err == nil {
		t.Error("/etc/x was written")
	}
	if _, err := os.Stat(filepath.Join(e.root, "sub", "new.txt")); err != nil {
		t.Errorf("the upload through the inside symlink: %v", err)
	}
	// The listing shows the root's folders and files, and the symlink that
	// stays inside; the escaping and broken ones are left out.
	_, l, _ := e.list(e.owner.Name, "")
	var names []string
	for _, en := range l.Entries {
		names = append(names, fmt.Sprint(en.Name, map[bool]string{true: "/"}[en.Dir]))
	}
	if got := strings.Join(names, " "); got != "inside/ sub/" {
		t.Errorf("root lists %q", got)
	}
}

// TestFiles_Limits: an upload over the limit gets 413 and leaves nothing,
// one without Content-Length 411, an existing file 409 unless overwrite=1.
func TestFiles_Limits(t *testing.T) {
	e := newFilesEnv(t, "", func(c *gateway.Config) { c.MaxUploadBytes = 1000 })
	if status, body := e.upload(e.owner.Name, "big", make([]byte, 1001)); status != http.StatusRequestEntityTooLarge || !strings.HasPrefix(body, "body: ") {
		t.Errorf("over the limit: %d %s", status, body)
	}
	if got := entries(e.root); len(got) != 0 {
		t.Errorf("the refused upload left %v", got)
	}
	// A body of unknown length is sent chunked.
	resp, body := e.do(http.MethodPut, "files/upload", e.owner.Name, url.Values{"path": {"chunked"}}, io.MultiReader(strings.NewReader("abc")))
	if resp.StatusCode != http.StatusLengthRequired {
		t.Errorf("without Content-Length: %d %s", resp.StatusCode, body)
	}
	if status, body := e.upload(e.owner.Name, "f", make([]byte, 1000)); status != http.StatusCreated {
		t.Fatalf("at the limit: %d %s", status, body)
	}
	if status, body := e.upload(e.owner.Name, "f", []byte("new")); status != http.StatusConflict {
		t.Errorf("again: %d %s", status, body)
	}
	if b, _ := os.ReadFile(filepath.Join(e.root, "f")); len(b) != 1000 {
		t.Errorf("the refused upload changed the file: %d bytes", len(b))
	}
	if status, body := e.upload(e.owner.Name, "f", []byte("new"), "overwrite", "1"); status != http.StatusCreated {
		t.Errorf("overwrite: %d %s", status, body)
	}
	if b, _ := os.ReadFile(filepath.Join(e.root, "f")); string(b) != "new" {
		t.Errorf("after overwrite: %q", b)
	}
	if status, body := e.upload(e.owner.Name, "f", []byte("x"), "overwrite", "yes"); status != http.StatusBadRequest || !strings.HasPrefix(body, "overwrite: ") {
		t.Errorf("overwrite=yes: %d %s", status, body)
	}
	if got := entries(e.root); len(got) != 1 {
		t.Errorf("the root holds %v", got)
	}
}

// TestFiles_InterruptedUpload drops a connection in the middle of an
// upload: the temporary file the upload was written to goes away, and no
// file appears.
func TestFiles_InterruptedUpload(t *testing.T) {
	e := newFilesEnv(t, "", nil)
	u := e.url("", "files/upload", e.owner.Name, url.Values{"path": {"cut.bin"}})
	c, err := tls.Dial("tcp", e.srv.Listener.Addr().String(), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "PUT %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", u, 10<<20)
	if _, err := c.Write(make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 10*time.Second, "the upload's temporary file", func() bool {
		return len(entries(e.root)) == 1 && strings.HasSuffix(entries(e.root)[0], ".part")
	})
	c.Close()
	poll.Until(t, 20*time.Second, "the temporary file to go", func() bool { return len(entries(e.root)) == 0 })
}

// TestFiles_StorageRoot: a session without a storage root answers 404; a
// root that was removed lists empty, and the next upload makes it again, as
// the owner.
func TestFiles_StorageRoot(t *testing.T) {
	e := newFilesEnv(t, "", nil)
	e.sessions.set(gateway.Session{ID: filesSession, Owner: e.owner.Name, UID: e.owner.UID, GID: e.owner.GID, Home: e.owner.Home})
	if status, _, body := e.list(e.owner.Name, ""); status != http.StatusNotFound || body != "this session has no storage root\n" {
		t.Errorf("no storage root: %d %q", status, body)
	}
	e.setPerms("")
	os.Remove(e.root)
	if status, l, body := e.list(e.owner.Name, ""); status != http.StatusOK || len(l.Entries) != 0 {
		t.Errorf("missing storage root: %d %s", status, body)
	}
	if status, body := e.upload(e.owner.Name, "a.txt", []byte("a")); status != http.StatusCreated {
		t.Fatalf("upload to a missing root: %d %s", status, body)
	}
	if uid := fileOwner(t, e.root); uid != e.owner.UID {
		t.Errorf("the remade root belongs to UID %d", uid)
	}
}

// TestFiles_SlowTransfers runs a gateway through Serve with a short
// ReadTimeout: an upload and a download that take longer, while making
// progress, still complete (the transfer sets its own deadlines).
func TestFiles_SlowTransfers(t *testing.T) {
	e := newFilesEnv(t, "", nil)
	const timeout = 500 * time.Millisecond
	addr := serveGateway(t, e.env, func(c *gateway.Config) { c.ReadTimeout = timeout })
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	base := "https://" + addr
	// More than the loopback's socket buffers hold, so that the download's
	// handler waits on the slow reader.
	data := make([]byte, 32<<20)
	rand.Read(data)
	// The body comes in 8 pieces, 100 ms apart: 700 ms in all, each piece
	// well within the timeout.
	pr, pw := io.Pipe()
	go func() {
		for i := 0; i < 8; i++ {
			if i > 0 {
				time.Sleep(100 * time.Millisecond) //sleep-ok: a slow client, for longer than ReadTimeout
			}
			if _, err := pw.Write(data[i*len(data)/8 : (i+1)*len(data)/8]); err != nil {
				return
			}
		}
		pw.Close()
	}()
	req, _ := http.NewRequest(http.MethodPut, e.url(base, "files/upload", e.owner.Name, url.Values{"path": {"slow.bin"}}), pr)
	req.ContentLength = int64(len(data))
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("slow upload: %d %s", resp.StatusCode, b)
	}
	// The download is read in 8 pieces, 100 ms apart.
	resp, err = client.Get(e.url(base, "files/download", e.owner.Name, url.Values{"path": {"slow.bin"}}))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReaderSize(resp.Body, 64<<10)
	var got []byte
	piece := make([]byte, len(data)/8)
	for i := 0; i < 8; i++ {
		time.Sleep(100 * time.Millisecond) //sleep-ok: a slow reader, for longer than ReadTimeout
		n, err := io.ReadFull(br, piece)
		got = append(got, piece[:n]...)
		if err != nil {
			t.Fatalf("slow download: %v after %d bytes", err, len(got))
		}
	}
	if !bytes.Equal(got, data) {
		t.Fatal("the slow download differs")
	}
}

// TestFiles_ListBound lists a folder of more than MaxListEntries files: the
// listing holds MaxListEntries of them, sorted, and says it is truncated.
func TestFiles_ListBound(t *testing.T) {
	e := newFilesEnv(t, "", nil)
	if err := os.Mkdir(filepath.Join(e.root, "dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range gateway.MaxListEntries + 1 {
		f, err := os.Create(filepath.Join(e.root, fmt.Sprintf("f%05d", i)))
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	status, l, body := e.list(e.owner.Name, "")
	if status != http.StatusOK {
		t.Fatalf("list: %d %.200s", status, body)
	}
	if len(l.Entries) != gateway.MaxListEntries || !l.Truncated {
		t.Fatalf("listed %d entries, truncated %v; want %d, true", len(l.Entries), l.Truncated, gateway.MaxListEntries)
	}
	for i := 1; i < len(l.Entries); i++ {
		a, b := l.Entries[i-1], l.Entries[i]
		if a.Dir == b.Dir && a.Name >= b.Name || !a.Dir && b.Dir {
			t.Fatalf("entries %d and %d out of order: %+v, %+v", i-1, i, a, b)
		}
	}
}

// TestFiles_RootOwner: a session owned by root is never served (the helper
// does not run as root).
func TestFiles_RootOwner(t *testing.T) {
	e := newFilesEnv(t, "", nil)
	e.sessions.set(gateway.Session{ID: filesSession, Owner: e.owner.Name, UID: 0, GID: 0, StorageRoot: e.root})
	if status, _, body := e.list(e.owner.Name, ""); status != http.StatusServiceUnavailable {
		t.Errorf("root's session: %d %s", status, body)
	}
}

// fileMetrics records the files panel's transfers (gateway.FileMetrics).
type fileMetrics struct {
	noopMetrics
	mu    sync.Mutex
	bytes map[string]int64
}

func (m *fileMetrics) FileTransferred(direction string, n int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.bytes[direction] += n
}

// noopMetrics is a gateway.Metrics that records nothing.
type noopMetrics struct{}

func (noopMetrics) ConnectionOpened()        {}
func (noopMetrics) ConnectionClosed()        {}
func (noopMetrics) ConnectionRefused(string) {}

// TestFiles_Metrics: a Config.Metrics that implements FileMetrics counts
// finished uploads and downloads.
func TestFiles_Metrics(t *testing.T) {
	m := &fileMetrics{bytes: map[string]int64{}}
	e := newFilesEnv(t, "", func(c *gateway.Config) { c.Metrics = m })
	if status, body := e.upload(e.owner.Name, "m.txt", []byte("12345")); status != http.StatusCreated {
		t.Fatalf("upload: %d %s", status, body)
	}
	if status, _, _ := e.download(e.owner.Name, "m.txt"); status != http.StatusOK {
		t.Fatalf("download: %d", status)
	}
	e.upload(e.owner.Name, "m.txt", []byte("refused")) // 409: not counted
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.bytes[gateway.FileUpload] != 5 || m.bytes[gateway.FileDownload] != 5 {
		t.Errorf("metrics %v, want 5 bytes each way", m.bytes)
	}
}
