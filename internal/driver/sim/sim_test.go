package sim_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/jpeg"
	"image/png"
	"maps"
	"slices"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/berth-dev/berth/internal/agent"
	"github.com/berth-dev/berth/internal/agentproto"
	"github.com/berth-dev/berth/internal/driver/sim"
)

func TestDriver_Lifecycle(t *testing.T) {
	ctx := context.Background()
	var d sim.Driver // the zero value works
	var changes atomic.Int32
	d.Notify(func() { changes.Add(1) })

	req := agent.CreateRequest{ID: "s1", Name: "one", Owner: "alice", MaxConcurrentClients: 2, StorageRoot: "/home/alice", PermissionsFile: "p"}
	if err := d.Create(ctx, req); err != nil {
		t.Fatal(err)
	}
	if err := d.Create(ctx, req); err != nil {
		t.Fatalf("second create: %v", err)
	}
	list, _ := d.Sessions(ctx)
	if len(list) != 1 {
		t.Fatalf("sessions = %+v", list)
	}
	s := list[0]
	if s.ID != "s1" || s.Name != "one" || s.Owner != "alice" || s.Type != "VIRTUAL" || s.State != agentproto.StateReady ||
		s.MaxConcurrentClients != 2 || s.StorageRoot != "/home/alice" || s.CreationTime.IsZero() {
		t.Errorf("session = %+v", s)
	}
	if p, ok := d.Permissions("s1"); !ok || p != "p" {
		t.Errorf("permissions = %q %v", p, ok)
	}
	if err := d.SetPermissions(ctx, "s1", "q"); err != nil {
		t.Fatal(err)
	}
	if p, _ := d.Permissions("s1"); p != "q" {
		t.Errorf("permissions = %q", p)
	}
	if err := d.SetPermissions(ctx, "nope", "q"); !errors.Is(err, sim.ErrNotFound) {
		t.Errorf("permissions of unknown session: %v", err)
	}
	if err := d.Delete(ctx, "s1"); err != nil {
		t.Fatal(err)
	}
	if err := d.Delete(ctx, "s1"); err != nil {
		t.Fatalf("second delete: %v", err)
	}
	if list, _ := d.Sessions(ctx); len(list) != 0 {
		t.Errorf("sessions after delete = %+v", list)
	}
	if changes.Load() < 3 { // creating, ready, deleted
		t.Errorf("%d change notifications", changes.Load())
	}
	if err := d.Create(ctx, agent.CreateRequest{ID: "bad\x00id"}); err == nil {
		t.Error("invalid id accepted")
	}
}

// TestDriver_CreateDelayAndFailure runs on the synctest clock: the session is
// CREATING while Create waits out CreateDelay.
func TestDriver_CreateDelayAndFailure(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		d := sim.New()
		d.CreateDelay = 200 * time.Millisecond
		d.FailOwners = map[string]string{"eve": "user eve is locked"}

		start := time.Now()
		done := make(chan error, 1)
		go func() { done <- d.Create(ctx, agent.CreateRequest{ID: "s1", Owner: "u"}) }()
		synctest.Wait() // Create waits out CreateDelay
		if list, _ := d.Sessions(ctx); len(list) != 1 || list[0].State != agentproto.StateCreating {
			t.Errorf("while starting: %+v", list)
		}
		// A second Create of the same ID waits for the first.
		if err := d.Create(ctx, agent.CreateRequest{ID: "s1", Owner: "u"}); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if took := time.Since(start); took != d.CreateDelay {
			t.Errorf("Create took %s, want CreateDelay %s", took, d.CreateDelay)
		}
		if list, _ := d.Sessions(ctx); list[0].State != agentproto.StateReady {
			t.Errorf("after start: %+v", list)
		}

		if err := d.Create(ctx, agent.CreateRequest{ID: "s2", Owner: "eve"}); err == nil || err.Error() != "user eve is locked" {
			t.Errorf("failing owner: %v", err)
		}
		cctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
		defer cancel()
		if err := d.Create(cctx, agent.CreateRequest{ID: "s3", Owner: "u"}); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("cancelled create: %v", err)
		}
		if list, _ := d.Sessions(ctx); len(list) != 1 {
			t.Errorf("failed sessions left behind: %+v", list)
		}
	})
}

func TestDriver_SimulateExitAndHealth(t *testing.T) {
	ctx := context.Background()
	d := sim.New()
	var changes atomic.Int32
	d.Notify(func() { changes.Add(1) })
	d.Create(ctx, agent.CreateRequest{ID: "s1"})
	before := changes.Load()
	d.SimulateExit("s1")
	if list, _ := d.Sessions(ctx); len(list) != 0 || changes.Load() != before+1 {
		t.Errorf("after exit: %+v, %d notifications", list, changes.Load()-before)
	}
	if ok, _ := d.Health(ctx); !ok {
		t.Error("unhealthy at start")
	}
	d.SetHealth(false, "xvnc missing")
	if ok, reason := d.Health(ctx); ok || reason != "xvnc missing" {
		t.Errorf("health = %v %q", ok, reason)
	}
	d.SetHealth(true, "ignored")
	if ok, reason := d.Health(ctx); !ok || reason != "" {
		t.Errorf("health = %v %q", ok, reason)
	}
}

func TestDriver_Screenshot(t *testing.T) {
	ctx := context.Background()
	d := sim.New()
	d.Create(ctx, agent.CreateRequest{ID: "a"})
	d.Create(ctx, agent.CreateRequest{ID: "b"})
	tests := []struct {
		maxW, maxH, w, h int
		format           string
	}{
		{0, 0, 1920, 1080, agentproto.FormatPNG},
		{640, 0, 640, 360, agentproto.FormatPNG},
		{0, 540, 960, 540, agentproto.FormatJPEG},
		{400, 400, 400, 225, agentproto.FormatJPEG},
		{4000, 4000, 1920, 1080, agentproto.FormatPNG}, // never scaled up
	}
	for _, tt := range tests {
		ims, err := d.Screenshot(ctx, "a", tt.maxW, tt.maxH, tt.format)
		if err != nil {
			t.Fatal(err)
		}
		if len(ims) != 1 || ims[0].Format != tt.format || !ims[0].Primary {
			t.Fatalf("images = %+v", ims)
		}
		var img image.Image
		if tt.format == agentproto.FormatPNG {
			img, err = png.Decode(bytes.NewReader(ims[0].Data))
		} else {
			img, err = jpeg.Decode(bytes.NewReader(ims[0].Data))
		}
		if err != nil {
			t.Fatal(err)
		}
		if b := img.Bounds(); b.Dx() != tt.w || b.Dy() != tt.h {
			t.Errorf("max %dx%d: got %dx%d, want %dx%d", tt.maxW, tt.maxH, b.Dx(), b.Dy(), tt.w, tt.h)
		}
	}
	// The pattern is visible (not one flat colour) and differs between sessions.
	a, _ := d.Screenshot(ctx, "a", 320, 0, agentproto.FormatPNG)
	b, _ := d.Screenshot(ctx, "b", 320, 0, agentproto.FormatPNG)
	if bytes.Equal(a[0].Data, b[0].Data) {
		t.Error("two sessions give the same image")
	}
	img, _ := png.Decode(bytes.NewReader(a[0].Data))
	colors := map[[3]uint32]bool{}
	for x := 0; x < 320; x += 7 {
		r, g, bl, _ := img.At(x, 10).RGBA()
		colors[[3]uint32{r, g, bl}] = true
	}
	if len(colors) < 4 {
		t.Errorf("only %d colours along a row", len(colors))
	}

	if _, err := d.Screenshot(ctx, "nope", 0, 0, agentproto.FormatPNG); !errors.Is(err, sim.ErrNotFound) {
		t.Errorf("unknown session: %v", err)
	}
	if _, err := d.Screenshot(ctx, "a", 0, 0, "gif"); err == nil {
		t.Error("gif accepted")
	}
}

func BenchmarkScreenshot4KNoise(b *testing.B) {
	ctx := context.Background()
	d := sim.New()
	d.ScreenWidth, d.ScreenHeight, d.Noise = 3840, 2160, true
	d.Create(ctx, agent.CreateRequest{ID: "a"})
	for b.Loop() {
		ims, err := d.Screenshot(ctx, "a", 0, 0, agentproto.FormatPNG)
		if err != nil {
			b.Fatal(err)
		}
		b.SetBytes(int64(len(ims[0].Data)))
	}
}

// TestDriver_SessionsInIDOrder: Sessions lists the sessions in ID order
// (the agent then sorts nothing) whatever the order of creates, deletes,
// exits and failed creates.
func TestDriver_SessionsInIDOrder(t *testing.T) {
	ctx := context.Background()
	d := sim.New()
	d.FailOwners = map[string]string{"mallory": "no such user"}
	want := map[string]bool{}
	for i := range 200 {
		id := fmt.Sprintf("s%03d", (i*37)%200) // every ID once, out of order
		owner := "alice"
		if i%11 == 0 {
			owner = "mallory"
		}
		if err := d.Create(ctx, agent.CreateRequest{ID: id, Owner: owner}); err == nil {
			want[id] = true
		}
		switch {
		case i%7 == 3:
			_ = d.Delete(ctx, id)
			delete(want, id)
		case i%13 == 5:
			d.SimulateExit(id)
			delete(want, id)
		}
	}
	list, err := d.Sessions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range list {
		got = append(got, s.ID)
	}
	wantIDs := slices.Sorted(maps.Keys(want))
	if !slices.Equal(got, wantIDs) {
		t.Errorf("Sessions IDs =\n%v\nwant\n%v", got, wantIDs)
	}
}
