package agentproto

import "time"

// Message types, the "type" field of the envelope.
const (
	TypeHello   = "hello"   // agent → broker, first message
	TypeWelcome = "welcome" // broker → agent, answer to hello
	TypeUpdate  = "update"  // agent → broker, report or heartbeat
	TypeAck     = "ack"     // broker → agent, answer to update
	TypeCommand = "command" // broker → agent
	TypeResult  = "result"  // agent → broker, answer to command
	TypeError   = "error"   // either way, fatal: the sender closes the link
)

// Command kinds.
const (
	KindCreate      = "create"
	KindDelete      = "delete"
	KindPermissions = "permissions"
	KindScreenshot  = "screenshot"
	// KindDisconnect closes the session's client connections; the session
	// keeps running (version 4).
	KindDisconnect = "disconnect"
	// KindNotify shows a message to the session's connected clients
	// (version 4).
	KindNotify = "notify"
)

// Error codes of an [Error] message.
const (
	// CodeVersionUnsupported: the Hello's protocol version is outside the broker's window.
	CodeVersionUnsupported = "version_unsupported"
	// CodeBadMessage: a message could not be decoded or came out of order.
	CodeBadMessage = "bad_message"
	// CodeConflict: the server ID belongs to another agent client.
	CodeConflict = "conflict"
	// CodeReplaced: a newer link of the same server ID took over this one.
	CodeReplaced = "replaced"
	// CodeShuttingDown: the sender is stopping; reconnect (to another broker).
	CodeShuttingDown = "shutting_down"
	// CodeInternal: the broker could not record the agent; try again later.
	CodeInternal = "internal"
)

// Session states an agent reports.
const (
	StateCreating = "CREATING"
	StateReady    = "READY"
	StateDeleted  = "DELETED"
)

// Endpoint protocols.
const (
	ProtocolHTTP = "HTTP"
	ProtocolQUIC = "QUIC"
)

// Image formats of screenshots.
const (
	FormatPNG  = "png"
	FormatJPEG = "jpeg"
)

// Limits that Decode enforces besides [MaxMessageSize].
const (
	// MaxIDLength bounds request IDs, server IDs and session IDs.
	MaxIDLength = 256
	// MaxScreenshotSide bounds the requested screenshot width and height.
	MaxScreenshotSide = 16384
)

// Body is the body of one message type: one of *Hello, *Welcome, *Update, *Ack,
// *Command, *Result and *Error.
type Body interface {
	// MessageType returns the envelope type of the body, e.g. [TypeHello].
	MessageType() string
}

// Message is one decoded message: its envelope type, request ID and typed body.
type Message struct {
	Type string
	// ID correlates a command with its result and an update with its ack. It is
	// empty on messages that need no answer.
	ID   string
	Body Body
}

// Hello is the agent's first message.
type Hello struct {
	// ProtocolVersion is the agent's [ProtocolVersion]. Its name and type never
	// change, so a broker can always read it and refuse the agent cleanly.
	ProtocolVersion int        `json:"protocol_version"`
	ServerID        string     `json:"server_id"`
	AgentVersion    string     `json:"agent_version"`
	Host            HostReport `json:"host"`
	// Sessions is the full list of the host's sessions.
	Sessions []Session `json:"sessions"`
}

// Welcome is the broker's answer to an accepted [Hello].
type Welcome struct {
	// ProtocolVersion is the version the link speaks from now on.
	ProtocolVersion int `json:"protocol_version"`
	// UpdateIntervalMS is how often, at the latest, the broker expects an update
	// (milliseconds).
	UpdateIntervalMS int64 `json:"update_interval_ms"`
	// HeartbeatTimeoutMS is how long the broker waits for any message before it
	// closes the link (milliseconds). The agent may use it the other way round:
	// the broker acks the updates that have an ID, and an agent asks for an
	// ack often enough, so silence this long (plus an interval) means the
	// link is dead.
	HeartbeatTimeoutMS int64 `json:"heartbeat_timeout_ms"`
	// GatewayCAKeyID is the hex subject key ID of the CA that signs web
	// gateway certificates (POST /agent/certificate). An agent whose
	// gateway certificate names another authority key ID asks for a new
	// one. Since version 2; empty when the broker has no such CA.
	GatewayCAKeyID string `json:"gateway_ca_key_id,omitempty"`
	// FleetSize is the number of servers the broker knows of. An agent
	// spreads its reconnects over a window that grows with it, so that a
	// restarted broker is not hit by the whole fleet at once. Since version
	// 3; 0 when unknown.
	FleetSize int `json:"fleet_size,omitempty"`
}

// UpdateInterval returns UpdateIntervalMS as a duration.
func (w *Welcome) UpdateInterval() time.Duration {
	return time.Duration(w.UpdateIntervalMS) * time.Millisecond
}

// HeartbeatTimeout returns HeartbeatTimeoutMS as a duration.
func (w *Welcome) HeartbeatTimeout() time.Duration {
	return time.Duration(w.HeartbeatTimeoutMS) * time.Millisecond
}

// Update is the agent's report of a change, or a heartbeat.
type Update struct {
	// An update's envelope ID asks for an [Ack]. From version 3 an agent
	// leaves it off heartbeats and figures-only updates while it heard from
	// the broker within half its read timeout; the broker tells of a gap or
	// failure on such an update with the next ack (Resync).
	//
	// Seq numbers the updates of a link: 1 for the first update after the
	// Hello, then one more for each update, heartbeats included. The broker
	// applies Changes only on top of the update numbered one less; after a
	// gap it asks for the full list ([Ack].Resync). Since version 3; 0 from
	// older agents.
	Seq uint64 `json:"seq,omitempty"`
	// Host is the new host report; nil when unchanged.
	Host *HostReport `json:"host,omitempty"`
	// Figures carries the host's volatile figures when they are all that
	// changed in the host report since the broker last got it (version 3):
	// the broker applies them on top of the last full report. An update
	// carries Host or Figures, never both; nil when Host is sent or nothing
	// changed.
	Figures *HostFigures `json:"figures,omitempty"`
	// Sessions is the full session list; nil (absent or null on the wire) when
	// unchanged, empty ([] on the wire) when the host has no sessions. From
	// version 3 on the agent sends it only after the broker asked for it
	// ([Ack].Resync) or failed to record an update ([Ack].Error).
	Sessions []Session `json:"sessions,omitzero"`
	// Changes holds the sessions that changed since the previous update
	// (version 3): new or changed sessions as they are now, and ended ones
	// with State [StateDeleted]. An update carries Sessions or Changes, never
	// both; nil or empty when nothing changed.
	Changes []Session `json:"changes,omitempty"`
}

// HostFigures are the figures of a [HostReport] that move all the time on a
// real host: the load averages and the memory and swap in use.
type HostFigures struct {
	Load            Load  `json:"load"`
	MemoryUsedBytes int64 `json:"memory_used_bytes"`
	SwapUsedBytes   int64 `json:"swap_used_bytes"`
}

// Figures returns the volatile figures of r.
func (r *HostReport) Figures() HostFigures {
	return HostFigures{Load: r.Load, MemoryUsedBytes: r.Memory.UsedBytes, SwapUsedBytes: r.Memory.SwapUsedBytes}
}

// SetFigures sets the volatile figures of r to f.
func (r *HostReport) SetFigures(f HostFigures) {
	r.Load, r.Memory.UsedBytes, r.Memory.SwapUsedBytes = f.Load, f.MemoryUsedBytes, f.SwapUsedBytes
}

// Ack is the broker's answer to an update, with the update's ID.
type Ack struct {
	// Error is set when the broker could not record the update; the agent then
	// sends its full host report and session list with the next update.
	Error string `json:"error,omitempty"`
	// Resync asks the agent for its full session list (and host report) with
	// the next update: the broker cannot apply changes on top of what it has,
	// because the update's Seq did not follow the last one it applied. Since
	// version 3.
	Resync bool `json:"resync,omitempty"`
	// UpdateIntervalMS and HeartbeatTimeoutMS, when set, replace the
	// welcome's: the broker retimes the link because its fleet grew or
	// shrank (a large fleet reports less often, so that the broker's load
	// stays bounded). The agent re-arms its update timer at once. Since
	// version 5; 0 when unchanged.
	UpdateIntervalMS   int64 `json:"update_interval_ms,omitempty"`
	HeartbeatTimeoutMS int64 `json:"heartbeat_timeout_ms,omitempty"`
}

// UpdateInterval returns UpdateIntervalMS as a duration.
func (a *Ack) UpdateInterval() time.Duration {
	return time.Duration(a.UpdateIntervalMS) * time.Millisecond
}

// HeartbeatTimeout returns HeartbeatTimeoutMS as a duration.
func (a *Ack) HeartbeatTimeout() time.Duration {
	return time.Duration(a.HeartbeatTimeoutMS) * time.Millisecond
}

// Command is an instruction from the broker; the envelope ID identifies it and
// comes back on its [Result].
type Command struct {
	Kind      string `json:"kind"`
	SessionID string `json:"session_id"`
	// TimeoutMS is the time left until the broker's deadline when the command was
	// sent (milliseconds); 0 means none. It is relative so that clock skew between
	// broker and agent does not matter.
	TimeoutMS   int64               `json:"timeout_ms,omitempty"`
	Create      *CreateCommand      `json:"create,omitempty"`
	Permissions *PermissionsCommand `json:"permissions,omitempty"`
	Screenshot  *ScreenshotCommand  `json:"screenshot,omitempty"`
	// Notify is the body of a notify command, and optionally of a
	// disconnect command (the reason the clients see). Since version 4.
	Notify *NotifyCommand `json:"notify,omitempty"`
}

// Timeout returns TimeoutMS as a duration.
func (c *Command) Timeout() time.Duration {
	return time.Duration(c.TimeoutMS) * time.Millisecond
}

// CreateCommand is the body of a create command.
type CreateCommand struct {
	Name                 string   `json:"name"`
	Owner                string   `json:"owner"`
	Type                 string   `json:"type"`
	MaxConcurrentClients int64    `json:"max_concurrent_clients,omitempty"`
	StorageRoot          string   `json:"storage_root,omitempty"`
	DcvGlEnabled         bool     `json:"gl_enabled,omitempty"`
	InitFile             string   `json:"init_file,omitempty"`
	AutorunFile          string   `json:"autorun_file,omitempty"`
	AutorunFileArguments []string `json:"autorun_file_arguments,omitempty"`
	// PermissionsFile is the permissions file text to apply at start.
	PermissionsFile string `json:"permissions_file,omitempty"`
}

// PermissionsCommand is the body of a permissions command.
type PermissionsCommand struct {
	// File is the permissions file text.
	File string `json:"file"`
}

// ScreenshotCommand is the body of a screenshot command.
type ScreenshotCommand struct {
	// MaxWidth and MaxHeight bound the image size; 0 means the screen size.
	MaxWidth  int `json:"max_width,omitempty"`
	MaxHeight int `json:"max_height,omitempty"`
	// Format is FormatPNG or FormatJPEG; empty means FormatPNG.
	Format string `json:"format,omitempty"`
}

// NotifyCommand is a message for a session's connected clients: a warning
// that a policy acts at Deadline, or (with a disconnect command) why the
// clients are being disconnected.
type NotifyCommand struct {
	// Message is the text the clients show.
	Message string `json:"message"`
	// Policy names the broker policy ("session-max-lifetime-hours", ...);
	// empty when none.
	Policy string `json:"policy,omitempty"`
	// Deadline is when the policy acts; zero when it has no time.
	Deadline time.Time `json:"deadline,omitzero"`
	// Extendable says the session's lifetime can still be extended: the
	// page offers an Extend button.
	Extendable bool `json:"extendable,omitempty"`
}

// MaxNotifyMessage bounds NotifyCommand.Message (bytes).
const MaxNotifyMessage = 4096

// Result is the agent's answer to a command, with the command's ID.
type Result struct {
	OK bool `json:"ok"`
	// Error is the failure reason when !OK; it is shown to API clients.
	Error string `json:"error,omitempty"`
	// Timeout is set with !OK when the command's deadline passed on the agent
	// (the broker then reports its own deadline, as if it had run out first).
	Timeout bool `json:"timeout,omitempty"`
	// Images holds screenshots.
	Images []Image `json:"images,omitempty"`
}

// Image is one captured screen. Data travels as base64.
type Image struct {
	Format       string    `json:"format"`
	Data         []byte    `json:"data"`
	CreationTime time.Time `json:"creation_time,omitzero"`
	Primary      bool      `json:"primary,omitempty"`
}

// Error is a fatal error; its sender closes the link after it.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message,omitempty"`
	// MinVersion and MaxVersion are the broker's window, set with
	// CodeVersionUnsupported.
	MinVersion int `json:"min_version,omitempty"`
	MaxVersion int `json:"max_version,omitempty"`
}

// Error implements error, so that a received Error can be returned as one.
func (e *Error) Error() string {
	if e.Message == "" {
		return e.Code
	}
	return e.Code + ": " + e.Message
}

// MessageType implements Body.
func (*Hello) MessageType() string { return TypeHello }

// MessageType implements Body.
func (*Welcome) MessageType() string { return TypeWelcome }

// MessageType implements Body.
func (*Update) MessageType() string { return TypeUpdate }

// MessageType implements Body.
func (*Ack) MessageType() string { return TypeAck }

// MessageType implements Body.
func (*Command) MessageType() string { return TypeCommand }

// MessageType implements Body.
func (*Result) MessageType() string { return TypeResult }

// MessageType implements Body.
func (*Error) MessageType() string { return TypeError }
