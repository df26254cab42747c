package e2e

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"image"
	_ "image/jpeg"
	_ "image/png"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/berth-dev/berth/api"
)

// autorunArgs are the AutorunFileArguments of TestE2E_Sessions: each must
// reach the program as one argument, unchanged (no shell in between).
var autorunArgs = []string{
	"two words",
	"it's",
	`say "hi"`,
	"$HOME",
	"$(id)",
	"`id`",
	`back\slash`,
	"  lead and trail  ",
	"*",
	"a;b|c&d>e",
}

// deleteSettle is how long after the broker shows a session DELETED its
// processes and files may still be there. A deleted session is listed by the
// vnc driver until its teardown is done, so nothing should remain; a session
// whose X server died is DELETED at once while the rest of it is stopped, so
// that case gets a few seconds.
const deleteSettle = 5 * time.Second

// permissions returns a permissions file, base64-encoded as the API wants it.
func permissions(lines ...string) string {
	return base64.StdEncoding.EncodeToString([]byte("[permissions]\n" + strings.Join(lines, "\n") + "\n"))
}

// TestE2E_Sessions drives a real broker and a real agent with the vnc
// driver through the API (acceptance 1 of issue 3): sessions for two local
// users with an autorun program whose arguments hold spaces, quotes and $,
// a screenshot, the gateway's WebSocket with the ConnectionToken, the
// refusals (wrong and other-session tokens, a user without permission, a
// client over MaxConcurrentClients, path-escaping InitFiles), a permission
// change that takes effect, and a delete that leaves no process or socket.
func TestE2E_Sessions(t *testing.T) {
	e := MustStartEnv(t)
	uid1, home1 := mustUser(t, user1)
	uid2, _ := mustUser(t, user2)
	argsFile := filepath.Join(home1, "autorun-args.txt")
	os.Remove(argsFile)

	one := int64(1)
	created := e.MustCreate(t,
		api.CreateSessionRequest{Name: "e2e autorun", Owner: user1, Type: api.TypeVirtual,
			AutorunFile: "args.sh", AutorunFileArguments: autorunArgs},
		api.CreateSessionRequest{Name: "e2e one client", Owner: user2, Type: api.TypeVirtual,
			InitFile: "wm.sh", AutorunFile: "xterm.sh", MaxConcurrentClients: &one},
	)
	s1, s2 := created[0].Id, created[1].Id
	t0 := time.Now()
	e.MustWaitState(t, s1, api.StateReady, readyTimeout)
	e.MustWaitState(t, s2, api.StateReady, readyTimeout)
	t.Logf("both sessions READY %s after CreateSessions returned", time.Since(t0).Round(time.Millisecond))

	t.Run("AutorunArguments", func(t *testing.T) {
		want := strings.Join(autorunArgs, "\n") + "\n"
		var got []byte
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			if b, err := os.ReadFile(argsFile); err == nil {
				got = b
				if string(b) == want {
					break
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
		if string(got) != want {
			t.Fatalf("%s holds\n%q\nwant the AutorunFileArguments one per line, unchanged:\n%q", argsFile, got, want)
		}
		fi, err := os.Stat(argsFile)
		if err != nil {
			t.Fatal(err)
		}
		if owner := int(fi.Sys().(*syscall.Stat_t).Uid); owner != uid1 {
			t.Errorf("%s is owned by uid %d, want %s (%d): the autorun program runs as the owner", argsFile, owner, user1, uid1)
		}
	})

	t.Run("Screenshot", func(t *testing.T) {
		const maxW, maxH = 320, 240
		img := mustScreenshot(t, e, s1, maxW, maxH)
		b := img.Bounds()
		if b.Dx() > maxW || b.Dy() > maxH || (b.Dx() != maxW && b.Dy() != maxH) {
			t.Errorf("screenshot is %dx%d, want the desktop scaled to fit %dx%d (one side at the maximum)", b.Dx(), b.Dy(), maxW, maxH)
		}
	})

	// The owner's token opens the session through the gateway.
	d1 := e.MustConnectionData(t, s1, user1)
	t.Run("Gateway", func(t *testing.T) {
		if d1.Session.Id != s1 || d1.Session.State != api.StateReady {
			t.Errorf("connection data names session %s in state %s, want %s READY", d1.Session.Id, d1.Session.State, s1)
		}
		e.LocalURL(t, d1) // checks the URL's port, token and fragment
		c := e.MustConnect(t, s1, d1.ConnectionToken, "the owner")
		c.Close(websocket.StatusNormalClosure, "")
	})

	d2 := e.MustConnectionData(t, s2, user2)
	t.Run("RefusedTokens", func(t *testing.T) {
		e.MustRefuse(t, s1, "garbage", "a garbage token", http.StatusUnauthorized)
		e.MustRefuse(t, s1, d1.ConnectionToken+"x", "a token with a broken signature", http.StatusUnauthorized)
		e.MustRefuse(t, s1, d2.ConnectionToken, "another session's token", http.StatusForbidden)
		e.MustRefuse(t, s2, d1.ConnectionToken, "another session's token", http.StatusForbidden)
		expired := e.MustMintExpiredToken(t, s1, user1, user1)
		reason := e.MustRefuse(t, s1, expired, "the owner's token that expired an hour ago", http.StatusUnauthorized)
		if !strings.Contains(reason, "expired") {
			t.Errorf("refusal of an expired token says %q, want it to say expired", reason)
		}
	})

	t.Run("UserWithoutPermission", func(t *testing.T) {
		_, err := e.ConnectionData(t, s1, user2)
		var ae *api.Error
		if !errors.As(err, &ae) || ae.StatusCode != http.StatusBadRequest || !strings.Contains(ae.Message, "not allowed") {
			t.Fatalf("GetSessionConnectionData for %s, who has no permission on %s's session: %v, want a 400 \"not allowed\"", user2, user1, err)
		}
	})

	t.Run("UpdatePermissions", func(t *testing.T) {
		mustSetPermissions(t, e, s1, user1, permissions("%owner% allow builtin", user2+" allow display"))
		d := e.MustConnectionData(t, s1, user2)
		viewer := e.MustConnect(t, s1, d.ConnectionToken, user2+" after being granted display")

		// Revoking drops the live connection and refuses the same token.
		mustSetPermissions(t, e, s1, user1, permissions("%owner% allow builtin"))
		if code, err := waitClosed(viewer, 10*time.Second); code != websocket.StatusPolicyViolation {
			t.Errorf("%s's live connection after the revocation: %v (close code %d), want it closed with %d", user2, err, code, websocket.StatusPolicyViolation)
		}
		reason := e.MustRefuse(t, s1, d.ConnectionToken, user2+" after the revocation, with a token issued before it", http.StatusForbidden)
		if !strings.Contains(reason, "not allowed") {
			t.Errorf("refusal reason %q, want it to say the user is not allowed", reason)
		}
		if _, err := e.ConnectionData(t, s1, user2); err == nil {
			t.Errorf("GetSessionConnectionData for %s after the revocation succeeded", user2)
		}
		// The owner still connects.
		e.MustConnect(t, s1, d1.ConnectionToken, "the owner after the change").CloseNow()
	})

	t.Run("MaxConcurrentClients", func(t *testing.T) {
		first := e.MustConnect(t, s2, d2.ConnectionToken, "the first client")
		reason := e.MustRefuse(t, s2, d2.ConnectionToken, "a second client of a session with MaxConcurrentClients 1", http.StatusServiceUnavailable)
		if !strings.Contains(reason, "maximum") {
			t.Errorf("refusal reason %q, want it to name the maximum number of clients", reason)
		}
		first.Close(websocket.StatusNormalClosure, "")
		// The slot is free again once the first client is gone.
		deadline := time.Now().Add(5 * time.Second)
		for {
			c, status, reason := e.DialGateway(t, s2, d2.ConnectionToken)
			if c != nil {
				MustReadRFB(t, c)
				c.CloseNow()
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("a client after the first left: %d %q, want it bridged", status, reason)
			}
			time.Sleep(100 * time.Millisecond)
		}
	})

	t.Run("InitFileEscapes", func(t *testing.T) {
		// The broker refuses a path with "..".
		out, err := e.Client.CreateSessions(apiCtx(t), []api.CreateSessionRequest{
			{Name: "escape", Owner: user1, Type: api.TypeVirtual, InitFile: "../outside.sh"}})
		if err != nil {
			t.Fatalf("CreateSessions: %v, want a 200 with an UnsuccessfulList", err)
		}
		e.track(out.SuccessfulList)
		if len(out.SuccessfulList) != 0 || len(out.UnsuccessfulList) != 1 || !strings.Contains(out.UnsuccessfulList[0].FailureReason, "InitFile") {
			t.Errorf("CreateSessions with InitFile ../outside.sh: accepted %d, refused %+v; want one refusal naming InitFile", len(out.SuccessfulList), out.UnsuccessfulList)
		}

		// A symlink in the init folder that leads out of it passes the
		// broker; the agent refuses it and the session ends DELETED.
		s := e.MustCreate(t, api.CreateSessionRequest{Name: "escape link", Owner: user1, Type: api.TypeVirtual, InitFile: "escape.sh"})[0]
		got := e.MustWaitState(t, s.Id, api.StateDeleted, readyTimeout)
		if !strings.Contains(got.StateReason, "InitFile") {
			t.Errorf("session with InitFile escape.sh (a symlink out of the init folder) is DELETED with reason %q, want one naming InitFile", got.StateReason)
		}
		if ps := sessionProcesses(s.Id); len(ps) > 0 {
			t.Errorf("the refused session left processes:%s", describeProcs(ps))
		}
	})

	t.Run("Delete", func(t *testing.T) {
		x1, x2 := mustFindXvnc(t, s1), mustFindXvnc(t, s2)
		if x1.uid != uid1 || x2.uid != uid2 {
			t.Errorf("Xvnc runs as uid %d and %d, want the owners %d and %d", x1.uid, x2.uid, uid1, uid2)
		}
		before := len(leftovers(uid1, s1, x1.display))
		if before < 2 {
			t.Errorf("found %d processes of session %s before the delete, want Xvnc and its programs", before, s1)
		}
		e.MustDelete(t, s1, s2)
		for _, c := range []struct {
			id  string
			uid int
			x   xserver
		}{{s1, uid1, x1}, {s2, uid2, x2}} {
			dir := filepath.Dir(c.x.socket)
			remains := func() string {
				var what []string
				if ps := leftovers(c.uid, c.id, c.x.display); len(ps) > 0 {
					what = append(what, "processes of its owner on display :"+strconv.Itoa(c.x.display)+":"+describeProcs(ps))
				}
				if _, err := os.Lstat(c.x.socket); !errors.Is(err, os.ErrNotExist) {
					what = append(what, "its VNC socket "+c.x.socket)
				}
				if ents, err := os.ReadDir(dir); !errors.Is(err, os.ErrNotExist) {
					var names []string
					for _, ent := range ents {
						names = append(names, ent.Name())
					}
					what = append(what, fmt.Sprintf("its directory %s holding %q", dir, names))
				}
				return strings.Join(what, "; ")
			}
			// The driver lists a session until its teardown is done, so
			// when the broker shows DELETED nothing of it may remain.
			if r := remains(); r != "" {
				t.Errorf("session %s: when the broker showed DELETED these remained: %s", c.id, r)
			}
			deadline := time.Now().Add(deleteSettle)
			for {
				r := remains()
				if r == "" {
					break
				}
				if time.Now().After(deadline) {
					t.Errorf("session %s is DELETED, and %s after that these remain: %s", c.id, deleteSettle, r)
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
		// Its token no longer opens anything.
		e.MustRefuse(t, s1, d1.ConnectionToken, "the owner after the delete", http.StatusNotFound)
	})
}

// mustSetPermissions calls UpdateSessionPermissions and fails unless it
// succeeded.
func mustSetPermissions(tb testing.TB, e *Env, id, owner, file string) {
	tb.Helper()
	out, err := e.Client.UpdateSessionPermissions(apiCtx(tb), []api.UpdateSessionPermissionsRequest{{SessionId: id, Owner: owner, PermissionsFile: file}})
	if err != nil {
		tb.Fatalf("UpdateSessionPermissions: %v", err)
	}
	if len(out.UnsuccessfulList) > 0 || len(out.SuccessfulList) != 1 {
		tb.Fatalf("UpdateSessionPermissions: refused %+v", out.UnsuccessfulList)
	}
}

// mustScreenshot asks the broker for a screenshot of the session until one
// is not blank (the desktop's programs take a moment to draw), and returns
// it decoded.
func mustScreenshot(tb testing.TB, e *Env, id string, maxW, maxH int64) image.Image {
	tb.Helper()
	deadline := time.Now().Add(15 * time.Second)
	var last string
	for {
		out, err := e.Client.GetSessionScreenshots(apiCtx(tb), []api.GetSessionScreenshotRequest{{SessionId: id, MaxWidth: &maxW, MaxHeight: &maxH}})
		switch {
		case err != nil:
			last = err.Error()
		case len(out.UnsuccessfulList) > 0:
			last = out.UnsuccessfulList[0].FailureReason
		case len(out.SuccessfulList) != 1 || len(out.SuccessfulList[0].SessionScreenshot.Images) == 0:
			last = "an answer without an image"
		default:
			im := out.SuccessfulList[0].SessionScreenshot.Images[0]
			raw, err := base64.StdEncoding.DecodeString(im.Data)
			if err != nil {
				tb.Fatalf("screenshot Data is not base64: %v", err)
			}
			img, format, err := image.Decode(bytes.NewReader(raw))
			if err != nil {
				tb.Fatalf("screenshot (Format %q) does not decode as an image: %v", im.Format, err)
			}
			if !strings.EqualFold(format, im.Format) {
				tb.Errorf("screenshot Format is %q but the data is %s", im.Format, format)
			}
			if !blank(img) {
				return img
			}
			last = "a blank image (every pixel the same)"
		}
		if time.Now().After(deadline) {
			tb.Fatalf("no usable screenshot of session %s within 15 s: last %s", id, last)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// blank says whether every pixel of img has the same colour.
func blank(img image.Image) bool {
	b := img.Bounds()
	r0, g0, b0, _ := img.At(b.Min.X, b.Min.Y).RGBA()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, _ := img.At(x, y).RGBA()
			if r != r0 || g != g0 || bl != b0 {
				return false
			}
		}
	}
	return true
}
