package vnc

import (
	"context"
	"crypto/rand"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/agent"
	"github.com/berth-dev/berth/internal/agentproto"
	"github.com/berth-dev/berth/internal/poll"
)

// TestDriver_Console attaches a CONSOLE session to a running display of its
// owner (here an Xvnc standing in for the console's X server) and checks
// that deleting the session leaves that display alone.
func TestDriver_Console(t *testing.T) {
	if findX0() == "" {
		t.Skip("x0vncserver (tigervnc-scraping-server) is not installed")
	}
	d := newDriver(t, "")
	o, err := lookupOwner(testUser2)
	if err != nil {
		t.Fatal(err)
	}
	n := -1
	for i := 1; i < DefaultFirstDisplay; i++ {
		if !exists("/tmp/.X11-unix/X"+strconv.Itoa(i)) && !exists("/tmp/.X"+strconv.Itoa(i)+"-lock") && !abstractX11Sockets()[i] {
			n = i
			break
		}
	}
	if n < 0 {
		t.Skip("no free display below :10")
	}
	// The owner's console: an X server of theirs with a cookie in
	// ~/.Xauthority.
	xauth := o.home + "/.Xauthority"
	if old, err := os.ReadFile(xauth); err == nil {
		t.Cleanup(func() { os.WriteFile(xauth, old, 0o600) })
	} else {
		t.Cleanup(func() { os.Remove(xauth) })
	}
	cookie := make([]byte, 16)
	rand.Read(cookie)
	if err := os.WriteFile(xauth, xauthEntry(cookie), 0o600); err != nil {
		t.Fatal(err)
	}
	os.Chown(xauth, o.uid, o.gid)
	if err := d.prepareX11Dir(); err != nil {
		t.Fatal(err)
	}
	console := exec.Command(d.xvnc, ":"+strconv.Itoa(n), "-geometry", "800x600", "-rfbport", "-1", "-SecurityTypes", "None", "-nolisten", "tcp", "-auth", xauth)
	console.Env = d.env(o, n, xauth)
	console.Dir = o.home
	console.SysProcAttr = o.sysProcAttr()
	if err := console.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		console.Process.Signal(syscall.SIGTERM)
		console.Wait()
		removeXFiles(n, o.uid)
	})
	poll.Until(t, 20*time.Second, "the console display", func() bool { return exists("/tmp/.X11-unix/X" + strconv.Itoa(n)) })

	ctx := context.Background()
	if err := d.Create(ctx, agent.CreateRequest{ID: newID(t), Owner: testUser1, Type: "CONSOLE"}); err == nil || err.Error() != "no console display on this host" {
		t.Errorf("console of another user: %v", err)
	}
	id := newID(t)
	mustCreate(t, d, agent.CreateRequest{ID: id, Owner: testUser2, Type: "CONSOLE", AutorunFile: "sleep.sh"})
	info, _ := sessionInfo(t, d, id)
	if info.State != agentproto.StateReady || info.Type != "CONSOLE" {
		t.Fatalf("session = %+v", info)
	}
	rec, _ := d.recordOf(id)
	if rec.Display != n {
		t.Errorf("display %d, want %d", rec.Display, n)
	}
	checkOwnerProcess(t, rec.ServerPID, o.uid)
	if gs, ok := d.Session(id); !ok || gs.PID != rec.ServerPID || gs.UID != o.uid {
		t.Errorf("gateway view %+v", gs)
	}
	if err := rfbPing(rec.Socket, time.Now().Add(3*time.Second)); err != nil {
		t.Fatal(err)
	}
	if tcp := tcpListeners(t, rec.ServerPID); len(tcp) > 0 {
		t.Errorf("x0vncserver listens on TCP: %v", tcp)
	}
	imgs, err := d.Screenshot(ctx, id, 0, 0, agentproto.FormatPNG)
	if err != nil {
		t.Fatal(err)
	}
	if len(imgs) != 1 || len(imgs[0].Data) == 0 {
		t.Fatalf("screenshot %+v", imgs)
	}
	if err := d.Create(ctx, agent.CreateRequest{ID: newID(t), Owner: testUser2, Type: "CONSOLE"}); err == nil || !strings.Contains(err.Error(), "already has a session") {
		t.Errorf("second console session: %v", err)
	}
	if err := d.Delete(ctx, id); err != nil {
		t.Fatal(err)
	}
	if running(rec.ServerPID, rec.ServerStart) || running(rec.AutorunPID, 0) {
		t.Error("console session processes survive the delete")
	}
	if !running(console.Process.Pid, 0) || !exists("/tmp/.X11-unix/X"+strconv.Itoa(n)) {
		t.Error("deleting the session stopped the console display")
	}
}
