package agent

import (
	"context"
	"time"

	"github.com/berth-dev/berth/internal/agentproto"
)

// Driver runs sessions on the host. Implemented by internal/driver/sim now, and
// by the real drivers (driver/vnc, driver/dcv) later. Optional capabilities are
// separate interfaces that the agent finds with a type assertion:
// [Screenshotter], [PermissionSetter], [Notifier], [HealthChecker],
// [Disconnecter] and [UserNotifier].
//
// Errors that Create, Delete and the capabilities return travel to the broker as
// the command's failure reason, which API clients see: keep them short, safe
// and lower-case.
type Driver interface {
	// Name names the driver in host reports: "sim", "vnc", "dcv".
	Name() string
	// Create starts a session and returns once it has started (it may still be
	// reported as CREATING afterwards) or has failed. It is idempotent: creating
	// an existing ID returns nil.
	Create(ctx context.Context, req CreateRequest) error
	// Delete ends a session. It is idempotent: deleting an unknown ID returns nil.
	Delete(ctx context.Context, id string) error
	// Sessions returns every session on the host.
	Sessions(ctx context.Context) ([]agentproto.Session, error)
}

// CreateRequest is what the broker asks of a new session.
type CreateRequest struct {
	ID                   string
	Name                 string
	Owner                string
	Type                 string // "VIRTUAL" or "CONSOLE"
	MaxConcurrentClients int64  // 0: unlimited
	StorageRoot          string
	DcvGlEnabled         bool
	// InitFile and AutorunFile are relative to the agent's init and autorun folders.
	InitFile             string
	AutorunFile          string
	AutorunFileArguments []string
	// PermissionsFile is the permissions file text to apply at start; empty for
	// the driver's default.
	PermissionsFile string
}

// Screenshotter is a Driver that can capture a session's screens.
type Screenshotter interface {
	// Screenshot returns the session's screens, scaled down to fit maxW × maxH
	// (0: no bound) and encoded in format (agentproto.FormatPNG or FormatJPEG).
	Screenshot(ctx context.Context, id string, maxW, maxH int, format string) ([]agentproto.Image, error)
}

// PermissionSetter is a Driver that can replace a running session's permissions.
type PermissionSetter interface {
	// SetPermissions applies the permissions file text to the session.
	SetPermissions(ctx context.Context, id, file string) error
}

// Notifier is a Driver that reports changes to its sessions (or health), so the
// agent can push an update at once instead of at the next interval.
type Notifier interface {
	// Notify registers f; the driver calls it, without holding its locks, after
	// any change. f does not block. The agent calls Notify once per Run.
	Notify(f func())
}

// HealthChecker is a Driver that knows whether its desktop service works.
// Without it a host is reported healthy.
type HealthChecker interface {
	// Health reports whether new sessions can start, and if not, why.
	Health(ctx context.Context) (ok bool, reason string)
}

// Notice is a message for a session's connected clients: a warning that a
// broker policy acts at Deadline, or why the clients are disconnected.
type Notice struct {
	Message string
	// Policy names the broker policy ("session-max-lifetime-hours", ...).
	Policy string
	// Deadline is when the policy acts; zero when it has no time.
	Deadline time.Time
	// Extendable says the session's lifetime can still be extended.
	Extendable bool
}

// Disconnecter is a Driver that can close a session's client connections
// (the broker's idle policy). The session keeps running.
type Disconnecter interface {
	// Disconnect closes every client connection of the session; reason
	// (Message may be empty) is what the clients are told.
	Disconnect(ctx context.Context, id string, reason Notice) error
}

// UserNotifier is a Driver that can show a message to a session's
// connected clients (the broker's warnings before a policy acts).
type UserNotifier interface {
	// NotifyUsers delivers n to every connected client of the session.
	NotifyUsers(ctx context.Context, id string, n Notice) error
}
