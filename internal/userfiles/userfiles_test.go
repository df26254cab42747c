package userfiles_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"unicode/utf8"

	"github.com/berth-dev/berth/internal/localuser"
	"github.com/berth-dev/berth/internal/userfiles"
)

func TestMain(m *testing.M) {
	userfiles.Main()
	os.Exit(m.Run())
}

func TestCleanPath(t *testing.T) {
	long := strings.Repeat("a", 256)
	for _, tc := range []struct {
		in, want string
		err      string // a part of the error; "" for none
	}{
		{"", "", ""},
		{"a.txt", "a.txt", ""},
		{"dir/a.txt", "dir/a.txt", ""},
		{"dir//a.txt/", "dir/a.txt", ""},
		{"..a/b..", "..a/b..", ""},
		{"été/ü", "été/ü", ""},
		{strings.Repeat("a", 255), strings.Repeat("a", 255), ""},
		{"/etc/passwd", "", "absolute"},
		{"../x", "", "'..'"},
		{"a/../../x", "", "'..'"},
		{"a/..", "", "'..'"},
		{"./a", "", "'.'"},
		{"a\x00b", "", "NUL"},
		{"a\xffb", "", "UTF-8"},
		{long, "", "longer than 255"},
		{strings.Repeat("a/", 2049), "", "longer than 4096"},
	} {
		got, err := userfiles.CleanPath(tc.in)
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("CleanPath(%q): %v", tc.in, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err) || !strings.HasPrefix(err.Error(), "path: ")):
			t.Errorf("CleanPath(%q) = %q, %v; want an error with %q", tc.in, got, err, tc.err)
		case tc.err == "" && got != tc.want:
			t.Errorf("CleanPath(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// FuzzFilePath checks that whatever CleanPath accepts stays inside the
// storage root: relative, no "." or ".." or empty element, no NUL, within
// the length bounds, and stable (cleaning it again changes nothing).
func FuzzFilePath(f *testing.F) {
	for _, s := range []string{"", "a", "a/b", "/etc/passwd", "../x", "a/../b", "a//b/", ".", "a\x00", "\xff", "é/./x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		got, err := userfiles.CleanPath(p)
		if err != nil {
			var e *userfiles.Error
			if !errors.As(err, &e) || e.Code != userfiles.CodeInvalid || !strings.HasPrefix(e.Msg, "path: ") {
				t.Fatalf("CleanPath(%q): error %v is not a CodeInvalid naming the path", p, err)
			}
			return
		}
		if len(got) > userfiles.MaxPathBytes || strings.ContainsRune(got, 0) || !utf8.ValidString(got) {
			t.Fatalf("CleanPath(%q) = %q: too long, NUL or invalid UTF-8", p, got)
		}
		if got == "" {
			return
		}
		if !filepath.IsLocal(got) || path.Clean(got) != got {
			t.Fatalf("CleanPath(%q) = %q: not a clean local path", p, got)
		}
		for e := range strings.SplitSeq(got, "/") {
			if e == "" || e == "." || e == ".." || len(e) > userfiles.MaxNameBytes {
				t.Fatalf("CleanPath(%q) = %q: bad element %q", p, got, e)
			}
		}
		if again, err := userfiles.CleanPath(got); err != nil || again != got {
			t.Fatalf("CleanPath(%q) = %q, but CleanPath(%q) = %q, %v", p, got, got, again, err)
		}
	})
}

// testUser returns a real local user (made if missing) and a fresh storage
// root of theirs, owned by them.
func testUser(t *testing.T, name string) (userfiles.Owner, string) {
	t.Helper()
	u := localuser.Ensure(t, name)
	root, err := os.MkdirTemp(u.Home, "files-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	if err := os.Chown(root, u.UID, u.GID); err != nil {
		t.Fatal(err)
	}
	return userfiles.Owner{UID: u.UID, GID: u.GID}, root
}

func code(err error) string {
	var e *userfiles.Error
	if errors.As(err, &e) {
		return e.Code
	}
	return fmt.Sprintf("not an *Error: %v", err)
}

// TestHelper_AsOwner writes, lists and reads files through the helper as a
// real user: the files are theirs, and what they cannot reach (another
// user's file, paths out of the root) stays out of reach.
func TestHelper_AsOwner(t *testing.T) {
	o, root := testUser(t, "berthtest1")
	other, otherRoot := testUser(t, "berthtest2")
	ctx := context.Background()

	data := make([]byte, 3<<20+17)
	rand.Read(data)
	if err := os.Mkdir(filepath.Join(root, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chown(filepath.Join(root, "sub"), o.UID, o.GID)
	if err := userfiles.Write(ctx, o, root, "sub/data.bin", bytes.NewReader(data), int64(len(data)), 4<<20, false); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(root, "sub", "data.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); int(st.Uid) != o.UID || int(st.Gid) != o.GID {
		t.Errorf("written file belongs to %d:%d, want the owner %d:%d", st.Uid, st.Gid, o.UID, o.GID)
	}
	f, err := userfiles.Open(ctx, o, root, "sub/data.bin")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(f)
	f.Close()
	if err != nil || !bytes.Equal(got, data) || f.Size != int64(len(data)) {
		t.Fatalf("read back %d bytes (size %d), %v; want the %d written", len(got), f.Size, err, len(data))
	}
	l, err := userfiles.List(ctx, o, root, "", 100)
	if err != nil || len(l.Entries) != 1 || l.Entries[0].Name != "sub" || !l.Entries[0].Dir {
		t.Fatalf("list root: %+v, %v", l, err)
	}

	// A file of berthtest2's only they may read, and a symlink to it in
	// berthtest1's root (relative, climbing out).
	secret := filepath.Join(otherRoot, "secret")
	if err := userfiles.Write(ctx, other, otherRoot, "secret", strings.NewReader("s"), 1, 10, false); err != nil {
		t.Fatal(err)
	}
	os.Chmod(secret, 0o600)
	rel, _ := filepath.Rel(root, secret)
	os.Symlink(rel, filepath.Join(root, "theirs"))
	os.Symlink("/etc/passwd", filepath.Join(root, "passwd"))
	os.Symlink("sub", filepath.Join(root, "inside"))
	for _, tc := range []struct {
		name, want string
	}{
		{"theirs", userfiles.CodeEscape},
		{"passwd", userfiles.CodeEscape},
		{"../" + filepath.Base(otherRoot) + "/secret", userfiles.CodeInvalid},
		{"sub", userfiles.CodeIsDir},
		{"nothing", userfiles.CodeNotFound},
	} {
		if f, err := userfiles.Open(ctx, o, root, tc.name); code(err) != tc.want {
			if f != nil {
				f.Close()
			}
			t.Errorf("Open(%q): %v, want %s", tc.name, err, tc.want)
		}
	}
	// The symlink inside the root is followed; the escaping ones are not
	// listed.
	l, err = userfiles.List(ctx, o, root, "inside", 100)
	if err != nil || len(l.Entries) != 1 || l.Entries[0].Name != "data.bin" {
		t.Fatalf("list inside: %+v, %v", l, err)
	}
	l, _ = userfiles.List(ctx, o, root, "", 100)
	var names []string
	for _, e := range l.Entries {
		names = append(names, e.Name)
	}
	if strings.Join(names, ",") != "inside,sub" {
		t.Errorf("root lists %v, want [inside sub]", names)
	}
	// Writing through a symlink that leaves the root is refused too.
	os.Symlink(filepath.Dir(secret), filepath.Join(root, "theirdir"))
	if err := userfiles.Write(ctx, o, root, "theirdir/x", strings.NewReader("x"), 1, 10, false); code(err) != userfiles.CodeEscape {
		t.Errorf("write through an escaping folder symlink: %v", err)
	}
}

// TestHelper_WriteLeavesNothing checks that a write that fails leaves
// neither the file nor its temporary file behind.
func TestHelper_WriteLeavesNothing(t *testing.T) {
	o, root := testUser(t, "berthtest1")
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		body io.Reader
		size int64
		want string
	}{
		{"short", strings.NewReader("abc"), 5, userfiles.CodeIncomplete},
		{"failing", io.MultiReader(strings.NewReader("abc"), errReader{}), 5, userfiles.CodeIncomplete},
		{"too large", strings.NewReader("abcdef"), 6, userfiles.CodeTooLarge},
	} {
		if err := userfiles.Write(ctx, o, root, "f", tc.body, tc.size, 5, false); code(err) != tc.want {
			t.Errorf("%s: %v, want %s", tc.name, err, tc.want)
		}
		if ents, _ := os.ReadDir(root); len(ents) != 0 {
			t.Errorf("%s: left %v", tc.name, ents)
		}
	}
	if err := userfiles.Write(ctx, o, root, "f", strings.NewReader("one"), 3, 5, false); err != nil {
		t.Fatal(err)
	}
	os.Chmod(filepath.Join(root, "f"), 0o640)
	if err := userfiles.Write(ctx, o, root, "f", strings.NewReader("two"), 3, 5, false); code(err) != userfiles.CodeExists {
		t.Errorf("second write without overwrite: %v", err)
	}
	if err := userfiles.Write(ctx, o, root, "f", strings.NewReader("three"), 5, 5, true); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "f")); string(b) != "three" {
		t.Errorf("after overwrite: %q", b)
	}
	if fi, _ := os.Stat(filepath.Join(root, "f")); fi.Mode().Perm() != 0o640 {
		t.Errorf("overwrite changed the mode to %v", fi.Mode().Perm())
	}
	if ents, _ := os.ReadDir(root); len(ents) != 1 {
		t.Errorf("left %v", ents)
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("connection reset") }
