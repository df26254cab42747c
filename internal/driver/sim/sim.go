// Package sim is a SIMULATED session driver for load simulation only: fleet
// benchmarks and broker tests that need many agents cheaply.
//
// ┌──────────────────────────────────────────────────────────────────────────┐
// │ sim runs no desktop. Its sessions are entries in a map and its           │
// │ screenshots are generated test patterns. It must NEVER stand in for a    │
// │ real driver (vnc, dcv) in end-to-end tests: a test that passes with sim  │
// │ proves nothing about sessions that users can open.                       │
// └──────────────────────────────────────────────────────────────────────────┘
//
// A Driver keeps its sessions in memory. CreateDelay makes creation take time
// (sessions are CREATING meanwhile), FailOwners makes creation fail for some
// owners (to exercise the broker's retries), SimulateExit makes a session vanish
// as when a desktop dies, and SetHealth makes the host unhealthy.
package sim

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/berth-dev/berth/internal/agent"
	"github.com/berth-dev/berth/internal/agentproto"
)

// Interface guards.
var (
	_ agent.Driver           = (*Driver)(nil)
	_ agent.Screenshotter    = (*Driver)(nil)
	_ agent.PermissionSetter = (*Driver)(nil)
	_ agent.Notifier         = (*Driver)(nil)
	_ agent.HealthChecker    = (*Driver)(nil)
)

// ErrNotFound is returned for an unknown session ID.
var ErrNotFound = errors.New("session not found")

// Default screen size of simulated sessions.
const (
	DefaultScreenWidth  = 1920
	DefaultScreenHeight = 1080
)

// Driver is a simulated driver. Set the exported fields before first use and do
// not change them afterwards; the zero value works.
type Driver struct {
	// CreateDelay is how long Create takes; the session is CREATING meanwhile.
	CreateDelay time.Duration
	// FailOwners maps an owner to the reason that creating any of their sessions
	// fails with (after CreateDelay).
	FailOwners map[string]string
	// ScreenWidth and ScreenHeight are the simulated screen size; 0 means
	// DefaultScreenWidth × DefaultScreenHeight.
	ScreenWidth, ScreenHeight int
	// Noise adds random noise to screenshots, so they compress like a busy real
	// desktop (megabytes at 4K) instead of a few kilobytes.
	Noise bool

	mu       sync.Mutex
	sessions map[string]*session
	// order holds the sessions sorted by ID, so that Sessions, which the
	// agent calls for every update, lists them without sorting.
	order     []*session
	notifiers []func()
	unhealthy string // health reason; "" is healthy
}

type session struct {
	info  agentproto.Session
	perms string
	// started is closed when Create has finished, with err set on failure.
	started chan struct{}
	err     error
}

// New returns a driver with no sessions.
func New() *Driver { return &Driver{} }

// Name implements agent.Driver.
func (d *Driver) Name() string { return "sim" }

// Create implements agent.Driver: the session is CREATING for CreateDelay, then
// READY, or gone with an error if its owner is in FailOwners or ctx ends first.
// Creating an existing ID waits for that session's start and returns nil if it
// started.
func (d *Driver) Create(ctx context.Context, req agent.CreateRequest) error {
	if !agentproto.ValidID(req.ID) {
		return errors.New("invalid session id")
	}
	d.mu.Lock()
	if s, ok := d.sessions[req.ID]; ok {
		d.mu.Unlock()
		select {
		case <-s.started:
			return s.err
		case <-ctx.Done():
			return fmt.Errorf("create session: %w", ctx.Err())
		}
	}
	typ := req.Type
	if typ == "" {
		typ = "VIRTUAL"
	}
	s := &session{
		info: agentproto.Session{
			ID:                   req.ID,
			Name:                 req.Name,
			Owner:                req.Owner,
			Type:                 typ,
			State:                agentproto.StateCreating,
			MaxConcurrentClients: req.MaxConcurrentClients,
			StorageRoot:          req.StorageRoot,
			CreationTime:         time.Now().UTC().Truncate(time.Millisecond),
		},
		perms:   req.PermissionsFile,
		started: make(chan struct{}),
	}
	if d.sessions == nil {
		d.sessions = make(map[string]*session)
	}
	d.sessions[req.ID] = s
	d.insertLocked(s)
	d.mu.Unlock()
	d.changed()

	err := d.start(ctx, req.Owner)
	d.mu.Lock()
	switch {
	case err != nil:
		if d.sessions[req.ID] == s {
			delete(d.sessions, req.ID)
			d.removeLocked(req.ID)
		}
	case d.sessions[req.ID] != s:
		err = errors.New("session deleted while starting")
	default:
		s.info.State = agentproto.StateReady
	}
	s.err = err
	close(s.started)
	d.mu.Unlock()
	d.changed()
	return err
}

// start simulates starting a desktop for owner.
func (d *Driver) start(ctx context.Context, owner string) error {
	if d.CreateDelay > 0 {
		t := time.NewTimer(d.CreateDelay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return fmt.Errorf("create session: %w", ctx.Err())
		}
	}
	if reason, ok := d.FailOwners[owner]; ok {
		return errors.New(reason)
	}
	return nil
}

// Delete implements agent.Driver.
func (d *Driver) Delete(ctx context.Context, id string) error {
	d.remove(id)
	return nil
}

// SimulateExit makes a session vanish, as when its desktop dies; the agent
// reports the shorter list at once.
func (d *Driver) SimulateExit(id string) { d.remove(id) }

func (d *Driver) remove(id string) {
	d.mu.Lock()
	_, ok := d.sessions[id]
	delete(d.sessions, id)
	if ok {
		d.removeLocked(id)
	}
	d.mu.Unlock()
	if ok {
		d.changed()
	}
}

// Sessions implements agent.Driver.
func (d *Driver) Sessions(ctx context.Context) ([]agentproto.Session, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]agentproto.Session, len(d.order))
	for i, s := range d.order {
		out[i] = s.info
	}
	return out, nil
}

// insertLocked puts s into d.order at its place; d.mu is held.
func (d *Driver) insertLocked(s *session) {
	i, _ := slices.BinarySearchFunc(d.order, s.info.ID, bySessionID)
	d.order = slices.Insert(d.order, i, s)
}

// removeLocked takes the session with id out of d.order; d.mu is held.
func (d *Driver) removeLocked(id string) {
	if i, ok := slices.BinarySearchFunc(d.order, id, bySessionID); ok {
		d.order = slices.Delete(d.order, i, i+1)
	}
}

func bySessionID(s *session, id string) int { return strings.Compare(s.info.ID, id) }

// SetPermissions implements agent.PermissionSetter: it stores the text without
// checking it.
func (d *Driver) SetPermissions(ctx context.Context, id, file string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	s, ok := d.sessions[id]
	if !ok {
		return ErrNotFound
	}
	s.perms = file
	return nil
}

// Permissions returns the permissions text of a session, and whether it exists.
func (d *Driver) Permissions(id string) (string, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	s, ok := d.sessions[id]
	if !ok {
		return "", false
	}
	return s.perms, true
}

// Notify implements agent.Notifier.
func (d *Driver) Notify(f func()) {
	d.mu.Lock()
	d.notifiers = append(d.notifiers, f)
	d.mu.Unlock()
}

// Health implements agent.HealthChecker.
func (d *Driver) Health(ctx context.Context) (bool, string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.unhealthy == "", d.unhealthy
}

// SetHealth makes the simulated desktop service healthy or not; reason says why
// not.
func (d *Driver) SetHealth(ok bool, reason string) {
	if !ok && reason == "" {
		reason = "unhealthy"
	}
	if ok {
		reason = ""
	}
	d.mu.Lock()
	d.unhealthy = reason
	d.mu.Unlock()
	d.changed()
}

// changed calls the notifiers, without holding d.mu.
func (d *Driver) changed() {
	d.mu.Lock()
	fs := d.notifiers
	d.mu.Unlock()
	for _, f := range fs {
		f()
	}
}
