package broker

import "time"

// Session states and substates, as on the wire.
const (
	StateCreating = "CREATING"
	StateReady    = "READY"
	StateDeleting = "DELETING"
	StateDeleted  = "DELETED"
	StateUnknown  = "UNKNOWN"

	SubstatePlacing            = "SESSION_PLACING"
	SubstatePendingPreparation = "PENDING_PREPARATION"
)

// Session types.
const (
	TypeVirtual = "VIRTUAL"
	TypeConsole = "CONSOLE"
)

// Session is a desktop session as the broker keeps it.
type Session struct {
	// Seq orders sessions by creation; it is assigned by the store on insert and is
	// the key of DescribeSessions pagination.
	Seq   int64
	ID    string
	Name  string
	Owner string
	Type  string
	// ServerID is empty while the session waits for placement.
	ServerID              string
	State                 string
	Substate              string
	StateReason           string
	MaxConcurrentClients  int64
	StorageRoot           string
	CreationTime          time.Time
	LastDisconnectionTime time.Time // zero when never disconnected
	NumOfConnections      int64
	// LastInputTime is the last keyboard or pointer input of a client (or
	// inside the session), as the agent reports it; zero when none.
	LastInputTime time.Time
	// DueAt is the next time a lifetime policy may act on the session: the
	// earliest of its pending warnings and actions (zero: none). The core
	// sets it whenever it writes a READY session; the policy loop of the
	// leader broker reads the sessions due through the store's index.
	DueAt time.Time
	// Life is the session's lifetime bookkeeping: the extension granted and
	// the warnings sent (lifetime.go).
	Life SessionLife
	// UpdatedAt is the last change of State; DELETED sessions are purged relative to it.
	UpdatedAt time.Time
	// Spec is what the client asked for; it travels to the agent on create and retry.
	Spec SessionSpec
	// Attempts counts failed create attempts on servers.
	Attempts int
	// Excluded lists servers that already failed this session.
	Excluded []string
	// Enqueued is set while an EnqueueRequest session waits for a server.
	Enqueued bool
	// EnqueuedAt is when the session entered the queue.
	EnqueuedAt time.Time
	// Events are the events of this write of the session (its state,
	// its permissions): the stores insert them in the transaction that
	// writes the session, so that they are kept exactly when the change
	// is, and in its commit order. Transient: never read back.
	Events []*Event
}

// SessionSpec is the creation request of a session, kept for placement and retries.
type SessionSpec struct {
	DcvGlEnabled          bool     `json:"gl,omitempty"`
	InitFile              string   `json:"init,omitempty"`
	AutorunFile           string   `json:"autorun,omitempty"`
	AutorunFileArguments  []string `json:"args,omitempty"`
	PermissionsFile       string   `json:"perm,omitempty"` // decoded file text
	Requirements          string   `json:"req,omitempty"`
	EnqueueRequest        bool     `json:"enqueue,omitempty"`
	DisableRetryOnFailure bool     `json:"noretry,omitempty"`
	// Template is the ID of the template the session was launched from.
	Template string `json:"tpl,omitempty"`
	// TemplateLimits are the template's limits when it was launched.
	TemplateLimits *SessionLimits `json:"tpl_limits,omitempty"`
	// GPUs is the number of GPUs the session counts against GPU quotas:
	// its template's, else 1 for a DCV GL session, else 0.
	GPUs int `json:"gpus,omitempty"`
	// Groups are the owner's identity provider groups at launch (portal
	// launches), added to the broker's groups source.
	Groups []string `json:"groups,omitempty"`
}

// Active reports whether the session counts against its server's capacity.
func (s *Session) Active() bool { return s.State != StateDeleted }
