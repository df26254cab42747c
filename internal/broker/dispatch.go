package broker

import (
	"context"
	"errors"
	"time"
)

// Command kinds sent to agents.
const (
	CommandCreate      = "create"
	CommandDelete      = "delete"
	CommandPermissions = "permissions"
	CommandScreenshot  = "screenshot"
	// CommandDisconnect closes the session's client connections (the
	// session keeps running).
	CommandDisconnect = "disconnect"
	// CommandNotify shows a message to the session's connected clients.
	CommandNotify = "notify"
)

// Command is an instruction for the agent of one server.
type Command struct {
	Kind      string
	SessionID string
	// Create is set for CommandCreate.
	Create *CreateCommand
	// Permissions is the permissions file text for CommandPermissions.
	Permissions string
	// Screenshot is set for CommandScreenshot.
	Screenshot *ScreenshotCommand
	// Notify is set for CommandNotify (and may be for CommandDisconnect:
	// the reason the clients see).
	Notify *NotifyCommand
}

// NotifyCommand is a message for a session's connected clients: a warning
// that a policy acts at Deadline.
type NotifyCommand struct {
	Message string
	// Policy names the policy ("session-max-lifetime-hours", ...).
	Policy   string
	Deadline time.Time
	// Extendable says the session's lifetime can still be extended (the
	// page offers an Extend button).
	Extendable bool
}

// CreateCommand asks an agent to start a session.
type CreateCommand struct {
	Name                 string
	Owner                string
	Type                 string
	MaxConcurrentClients int64
	StorageRoot          string
	Spec                 SessionSpec
}

// ScreenshotCommand asks an agent for a screenshot.
type ScreenshotCommand struct {
	MaxWidth  int
	MaxHeight int
	Format    string // "png" or "jpeg"
}

// Result is what an agent answered to a command.
type Result struct {
	// Images is set for screenshots.
	Images []Image
}

// Image is one captured screen.
type Image struct {
	Format       string
	Data         []byte
	CreationTime time.Time
	Primary      bool
}

// ErrAgentUnreachable means no live link to the server's agent exists.
var ErrAgentUnreachable = errors.New("agent unreachable")

// CommandError is a failure that the agent reported for a command; Reason is safe
// to show to API clients.
type CommandError struct{ Reason string }

// Error returns the message.
func (e *CommandError) Error() string { return e.Reason }

// Dispatcher sends commands to agents. Implemented by internal/agenthub.
type Dispatcher interface {
	// Dispatch sends cmd to the agent of serverID and waits for its result until
	// ctx is done. It returns ErrAgentUnreachable when the agent has no link,
	// a *CommandError when the agent reports a failure, or ctx.Err().
	Dispatch(ctx context.Context, serverID string, cmd Command) (*Result, error)
}

// SessionReport is an agent's view of one of its sessions.
type SessionReport struct {
	ID    string
	Name  string
	Owner string
	Type  string
	// State is READY, CREATING (still starting) or DELETED (ended on the host).
	State                 string
	StateReason           string
	MaxConcurrentClients  int64
	StorageRoot           string
	CreationTime          time.Time
	LastDisconnectionTime time.Time
	NumOfConnections      int64
	// LastInputTime is the last client input the agent saw (coarse: the
	// agent reports it at most once per its activity interval).
	LastInputTime time.Time
	// OwnerGroups are the owner's groups in the host's NSS, when the agent
	// reports them (a groups source may learn them).
	OwnerGroups []string
}
