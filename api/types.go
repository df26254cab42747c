// Package api holds the public wire types of the Session Manager REST API and a typed
// Go client for it. It imports only the standard library, so portals, scripts and the
// berth CLI can depend on it without pulling in broker internals.
//
// Field names are PascalCase exactly as in Amazon's DCV Session Manager API document;
// berth may add fields but never renames or drops one.
package api

import (
	"encoding/json"
	"time"
)

// Session states.
const (
	StateCreating = "CREATING"
	StateReady    = "READY"
	StateDeleting = "DELETING"
	StateDeleted  = "DELETED"
	StateUnknown  = "UNKNOWN"
)

// Session substates.
const (
	SubstateSessionPlacing     = "SESSION_PLACING"
	SubstatePendingPreparation = "PENDING_PREPARATION"
)

// Session types.
const (
	TypeVirtual = "VIRTUAL"
	TypeConsole = "CONSOLE"
)

// Server availability and unavailability reasons.
const (
	AvailabilityAvailable   = "AVAILABLE"
	AvailabilityUnavailable = "UNAVAILABLE"

	ReasonServerFull         = "SERVER_FULL"
	ReasonServerClosed       = "SERVER_CLOSED"
	ReasonUnreachableAgent   = "UNREACHABLE_AGENT"
	ReasonUnhealthyDCVServer = "UNHEALTHY_DCV_SERVER"
	ReasonUnknown            = "UNKNOWN"
)

// FailureCodeServerNotFound is the FailureCode for an unknown server in Open/CloseServers.
const FailureCodeServerNotFound = "DCV_SERVER_NOT_FOUND"

// FailureCodeServerHasSessions is the FailureCode when CloseServers without Force finds sessions.
const FailureCodeServerHasSessions = "DCV_SERVER_HAS_SESSIONS"

// Endpoint protocols.
const (
	ProtocolHTTP = "HTTP"
	ProtocolQUIC = "QUIC"
)

// KeyValuePair is a generic key/value pair (tags, filters).
type KeyValuePair struct {
	Key   string `json:"Key"`
	Value string `json:"Value"`
}

// Endpoint is one way to reach a DCV (or berth gateway) server.
type Endpoint struct {
	IpAddress  string `json:"IpAddress,omitempty"`
	Port       int    `json:"Port"`
	WebUrlPath string `json:"WebUrlPath,omitempty"`
	Protocol   string `json:"Protocol"`
}

// Os describes the host's operating system.
type Os struct {
	Family        string `json:"Family,omitempty"`
	Name          string `json:"Name,omitempty"`
	Version       string `json:"Version,omitempty"`
	KernelVersion string `json:"KernelVersion,omitempty"`
	BuildNumber   string `json:"BuildNumber,omitempty"`
}

// Memory is a total/used pair in bytes, used for memory and swap.
type Memory struct {
	TotalBytes int64 `json:"TotalBytes"`
	UsedBytes  int64 `json:"UsedBytes"`
}

// Aws is the EC2 instance data of a host, when it runs on AWS.
type Aws struct {
	Region          string `json:"Region,omitempty"`
	EC2InstanceType string `json:"EC2InstanceType,omitempty"`
	EC2InstanceId   string `json:"EC2InstanceId,omitempty"`
	EC2ImageId      string `json:"EC2ImageId,omitempty"`
}

// CpuInfo describes the host's processors.
type CpuInfo struct {
	Vendor              string `json:"Vendor,omitempty"`
	ModelName           string `json:"ModelName,omitempty"`
	Architecture        string `json:"Architecture,omitempty"`
	NumberOfCpus        int    `json:"NumberOfCpus"`
	PhysicalCoresPerCpu int    `json:"PhysicalCoresPerCpu"`
}

// CpuLoadAverage holds the host's load averages.
type CpuLoadAverage struct {
	OneMinute      float64 `json:"OneMinute"`
	FiveMinutes    float64 `json:"FiveMinutes"`
	FifteenMinutes float64 `json:"FifteenMinutes"`
}

// Gpu is one graphics adapter of a host.
type Gpu struct {
	Vendor    string `json:"Vendor,omitempty"`
	ModelName string `json:"ModelName,omitempty"`
}

// LoggedInUser is a user logged in on a host.
type LoggedInUser struct {
	Username string `json:"Username"`
}

// Host is the hardware and OS report of a server.
type Host struct {
	Os             Os             `json:"Os"`
	Memory         Memory         `json:"Memory"`
	Swap           Memory         `json:"Swap"`
	Aws            *Aws           `json:"Aws,omitempty"`
	CpuInfo        CpuInfo        `json:"CpuInfo"`
	CpuLoadAverage CpuLoadAverage `json:"CpuLoadAverage"`
	Gpus           []Gpu          `json:"Gpus"`
	LoggedInUsers  []LoggedInUser `json:"LoggedInUsers"`
}

// Server is a desktop host known to the broker.
type Server struct {
	Id                         string         `json:"Id"`
	Ip                         string         `json:"Ip"`
	Hostname                   string         `json:"Hostname"`
	DefaultDnsName             string         `json:"DefaultDnsName,omitempty"`
	Port                       string         `json:"Port"`
	Endpoints                  []Endpoint     `json:"Endpoints"`
	WebUrlPath                 string         `json:"WebUrlPath"`
	Version                    string         `json:"Version"`
	SessionManagerAgentVersion string         `json:"SessionManagerAgentVersion"`
	Availability               string         `json:"Availability"`
	UnavailabilityReason       string         `json:"UnavailabilityReason,omitempty"`
	ConsoleSessionCount        int            `json:"ConsoleSessionCount"`
	VirtualSessionCount        int            `json:"VirtualSessionCount"`
	Host                       Host           `json:"Host"`
	Tags                       []KeyValuePair `json:"Tags"`
}

// Session is a desktop session managed by the broker.
type Session struct {
	Id                    string     `json:"Id"`
	Name                  string     `json:"Name"`
	Owner                 string     `json:"Owner"`
	Server                *Server    `json:"Server,omitempty"`
	Type                  string     `json:"Type"`
	MaxConcurrentClients  int64      `json:"MaxConcurrentClients,omitempty"`
	State                 string     `json:"State"`
	Substate              string     `json:"Substate,omitempty"`
	StateReason           string     `json:"StateReason,omitempty"`
	CreationTime          time.Time  `json:"CreationTime"`
	LastDisconnectionTime *time.Time `json:"LastDisconnectionTime,omitempty"`
	NumOfConnections      int64      `json:"NumOfConnections"`
	StorageRoot           string     `json:"StorageRoot,omitempty"`
}

// DescribeSessionsRequest is the body of POST /describeSessions.
type DescribeSessionsRequest struct {
	SessionIds []string       `json:"SessionIds,omitempty"`
	Filters    []KeyValuePair `json:"Filters,omitempty"`
	MaxResults *int           `json:"MaxResults,omitempty"`
	NextToken  string         `json:"NextToken,omitempty"`
}

// DescribeSessionsResponse is the answer to DescribeSessions.
type DescribeSessionsResponse struct {
	RequestId string    `json:"RequestId"`
	Sessions  []Session `json:"Sessions"`
	NextToken string    `json:"NextToken,omitempty"`
}

// DescribeServersRequest is the body of POST /describeServers.
type DescribeServersRequest struct {
	ServerIds  []string `json:"ServerIds,omitempty"`
	MaxResults *int     `json:"MaxResults,omitempty"`
	NextToken  string   `json:"NextToken,omitempty"`
}

// DescribeServersResponse is the answer to DescribeServers.
type DescribeServersResponse struct {
	RequestId string   `json:"RequestId"`
	Servers   []Server `json:"Servers"`
	NextToken string   `json:"NextToken,omitempty"`
}

// CreateSessionRequest is one item of the POST /createSessions array.
type CreateSessionRequest struct {
	Name                  string   `json:"Name"`
	Owner                 string   `json:"Owner"`
	Type                  string   `json:"Type"`
	DcvGlEnabled          bool     `json:"DcvGlEnabled,omitempty"`
	MaxConcurrentClients  *int64   `json:"MaxConcurrentClients,omitempty"`
	InitFilePath          string   `json:"InitFilePath,omitempty"`
	InitFile              string   `json:"InitFile,omitempty"`
	AutorunFile           string   `json:"AutorunFile,omitempty"`
	AutorunFileArguments  []string `json:"AutorunFileArguments,omitempty"`
	PermissionsFile       string   `json:"PermissionsFile,omitempty"`
	Requirements          string   `json:"Requirements,omitempty"`
	EnqueueRequest        bool     `json:"EnqueueRequest,omitempty"`
	DisableRetryOnFailure bool     `json:"DisableRetryOnFailure,omitempty"`
	StorageRoot           string   `json:"StorageRoot,omitempty"`
}

// UnsuccessfulCreateSession is a refused CreateSessions item.
type UnsuccessfulCreateSession struct {
	CreateSessionRequestData CreateSessionRequest `json:"CreateSessionRequestData"`
	FailureReason            string               `json:"FailureReason"`
}

// CreateSessionsResponse is the answer to CreateSessions.
type CreateSessionsResponse struct {
	RequestId        string                      `json:"RequestId"`
	SuccessfulList   []Session                   `json:"SuccessfulList"`
	UnsuccessfulList []UnsuccessfulCreateSession `json:"UnsuccessfulList"`
}

// DeleteSessionRequest is one item of the POST /deleteSessions array.
type DeleteSessionRequest struct {
	SessionId string `json:"SessionId"`
	Owner     string `json:"Owner"`
	Force     bool   `json:"Force,omitempty"`
}

// DeleteSessionSuccess is an accepted DeleteSessions item.
type DeleteSessionSuccess struct {
	SessionId string `json:"SessionId"`
	State     string `json:"State"`
}

// DeleteSessionFailure is a refused DeleteSessions item.
type DeleteSessionFailure struct {
	SessionId     string `json:"SessionId"`
	FailureReason string `json:"FailureReason"`
}

// DeleteSessionsResponse is the answer to DeleteSessions.
type DeleteSessionsResponse struct {
	RequestId        string                 `json:"RequestId"`
	SuccessfulList   []DeleteSessionSuccess `json:"SuccessfulList"`
	UnsuccessfulList []DeleteSessionFailure `json:"UnsuccessfulList"`
}

// UpdateSessionPermissionsRequest is one item of the PUT /sessionPermissions array.
type UpdateSessionPermissionsRequest struct {
	SessionId       string `json:"SessionId"`
	Owner           string `json:"Owner"`
	PermissionsFile string `json:"PermissionsFile"`
}

// UpdateSessionPermissionsSuccess is an accepted UpdateSessionPermissions item.
type UpdateSessionPermissionsSuccess struct {
	SessionId string `json:"SessionId"`
}

// UpdateSessionPermissionsFailure is a refused UpdateSessionPermissions item.
type UpdateSessionPermissionsFailure struct {
	SessionId     string `json:"SessionId"`
	FailureReason string `json:"FailureReason"`
}

// UpdateSessionPermissionsResponse is the answer to UpdateSessionPermissions.
type UpdateSessionPermissionsResponse struct {
	RequestId        string                            `json:"RequestId"`
	SuccessfulList   []UpdateSessionPermissionsSuccess `json:"SuccessfulList"`
	UnsuccessfulList []UpdateSessionPermissionsFailure `json:"UnsuccessfulList"`
}

// GetSessionConnectionDataResponse is the answer to GET /sessionConnectionData/{sessionId}/{user}.
type GetSessionConnectionDataResponse struct {
	Session         Session `json:"Session"`
	ConnectionToken string  `json:"ConnectionToken"`
}

// GetSessionScreenshotRequest is one item of the POST /getSessionScreenshots array.
type GetSessionScreenshotRequest struct {
	SessionId string `json:"SessionId"`
	MaxWidth  *int64 `json:"MaxWidth,omitempty"`
	MaxHeight *int64 `json:"MaxHeight,omitempty"`
}

// SessionScreenshotImage is one captured image.
type SessionScreenshotImage struct {
	Format       string    `json:"Format"`
	Data         string    `json:"Data"`
	CreationTime time.Time `json:"CreationTime"`
	Primary      bool      `json:"Primary"`
}

// SessionScreenshot is the set of images captured for one session.
type SessionScreenshot struct {
	SessionId string                   `json:"SessionId"`
	Images    []SessionScreenshotImage `json:"Images"`
}

// GetSessionScreenshotSuccess is an answered GetSessionScreenshots item.
type GetSessionScreenshotSuccess struct {
	SessionScreenshot SessionScreenshot `json:"SessionScreenshot"`
}

// GetSessionScreenshotFailure is a refused GetSessionScreenshots item.
type GetSessionScreenshotFailure struct {
	GetSessionScreenshotRequestData GetSessionScreenshotRequest `json:"GetSessionScreenshotRequestData"`
	FailureReason                   string                      `json:"FailureReason"`
}

// GetSessionScreenshotsResponse is the answer to GetSessionScreenshots.
type GetSessionScreenshotsResponse struct {
	RequestId        string                        `json:"RequestId"`
	SuccessfulList   []GetSessionScreenshotSuccess `json:"SuccessfulList"`
	UnsuccessfulList []GetSessionScreenshotFailure `json:"UnsuccessfulList"`
}

// OpenServerRequest is one item of the POST /openServers array.
type OpenServerRequest struct {
	ServerId string `json:"ServerId"`
}

// CloseServerRequest is one item of the POST /closeServers array.
type CloseServerRequest struct {
	ServerId string `json:"ServerId"`
	Force    bool   `json:"Force,omitempty"`
}

// ServerIdResult is an accepted Open/CloseServers item.
type ServerIdResult struct {
	ServerId string `json:"ServerId"`
}

// OpenServerFailure is a refused OpenServers item.
type OpenServerFailure struct {
	OpenServerRequestData OpenServerRequest `json:"OpenServerRequestData"`
	FailureCode           string            `json:"FailureCode"`
	FailureReason         string            `json:"FailureReason"`
}

// CloseServerFailure is a refused CloseServers item.
type CloseServerFailure struct {
	CloseServerRequestData CloseServerRequest `json:"CloseServerRequestData"`
	FailureCode            string             `json:"FailureCode"`
	FailureReason          string             `json:"FailureReason"`
}

// OpenServersResponse is the answer to OpenServers.
type OpenServersResponse struct {
	RequestId        string              `json:"RequestId"`
	SuccessfulList   []ServerIdResult    `json:"SuccessfulList"`
	UnsuccessfulList []OpenServerFailure `json:"UnsuccessfulList"`
}

// CloseServersResponse is the answer to CloseServers.
type CloseServersResponse struct {
	RequestId        string               `json:"RequestId"`
	SuccessfulList   []ServerIdResult     `json:"SuccessfulList"`
	UnsuccessfulList []CloseServerFailure `json:"UnsuccessfulList"`
}

// TokenResponse is the answer of POST /oauth2/token.
type TokenResponse struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int64  `json:"expires_in"`
}

// ErrorResponse is the body of every non-2xx answer. Error is the human message
// (as the reference's {"error": "..."}); Code is berth's stable machine code.
type ErrorResponse struct {
	Error string `json:"error"`
	Code  string `json:"code,omitempty"`
}

// Share levels of berth's session shares (PUT /berth/v1/sessions/{id}/shares).
const (
	ShareNone = "none" // removes the user's share
	ShareView = "view" // display only
	ShareFull = "full" // display, keyboard, mouse and clipboard
)

// Template is a session template, berth's own API under /berth/v1/templates:
// a launchable recipe of CreateSessions fields, published to users and groups.
type Template struct {
	// Id is assigned by the broker; ignored in a create or update body.
	Id                   string   `json:"Id,omitempty"`
	Name                 string   `json:"Name"`
	Description          string   `json:"Description,omitempty"`
	Type                 string   `json:"Type"`
	Requirements         string   `json:"Requirements,omitempty"`
	InitFile             string   `json:"InitFile,omitempty"`
	AutorunFile          string   `json:"AutorunFile,omitempty"`
	AutorunFileArguments []string `json:"AutorunFileArguments,omitempty"`
	MaxConcurrentClients int64    `json:"MaxConcurrentClients,omitempty"`
	DcvGlEnabled         bool     `json:"DcvGlEnabled,omitempty"`
	StorageRoot          string   `json:"StorageRoot,omitempty"`
	// Users and Groups are who the template is published to: OS user
	// names, and identity provider groups.
	Users  []string `json:"Users,omitempty"`
	Groups []string `json:"Groups,omitempty"`
	// Limits are the template's lifetime policies and quotas (absent:
	// none of its own).
	Limits *TemplateLimits `json:"Limits,omitempty"`
	// GPUs is what each session of the template counts against GPU quotas
	// (0 to 64).
	GPUs int `json:"GPUs,omitempty"`
	// CreationTime and UpdateTime are set by the broker.
	CreationTime *time.Time `json:"CreationTime,omitempty"`
	UpdateTime   *time.Time `json:"UpdateTime,omitempty"`
}

// TemplateLimits are a template's lifetime policies and quotas. Each field
// is 0 or absent (unset: the groups' or the broker's value applies), a
// positive value, or -1 (off for the template's sessions). MaxSessions and
// MaxGPUs cap the template's sessions of all owners together.
type TemplateLimits struct {
	IdleTimeoutMinutes         float64 `json:"IdleTimeoutMinutes,omitempty"`
	DisconnectedTimeoutMinutes float64 `json:"DisconnectedTimeoutMinutes,omitempty"`
	MaxLifetimeHours           float64 `json:"MaxLifetimeHours,omitempty"`
	MaxExtensionHours          float64 `json:"MaxExtensionHours,omitempty"`
	MaxSessions                int     `json:"MaxSessions,omitempty"`
	MaxGPUs                    int     `json:"MaxGPUs,omitempty"`
}

// TemplateResponse is the answer to creating, reading or updating a template.
type TemplateResponse struct {
	RequestId string   `json:"RequestId"`
	Template  Template `json:"Template"`
}

// DescribeTemplatesResponse is the answer to GET /berth/v1/templates.
type DescribeTemplatesResponse struct {
	RequestId string     `json:"RequestId"`
	Templates []Template `json:"Templates"`
}

// DeleteTemplateResponse is the answer to DELETE /berth/v1/templates/{id}.
type DeleteTemplateResponse struct {
	RequestId  string `json:"RequestId"`
	TemplateId string `json:"TemplateId"`
}

// LaunchTemplateRequest is the body of POST /berth/v1/templates/{id}/launch:
// the user who will own the session and the groups they are in.
type LaunchTemplateRequest struct {
	Owner  string   `json:"Owner"`
	Groups []string `json:"Groups,omitempty"`
}

// LaunchTemplateResponse is the answer to a launch: the session, as
// CreateSessions answers it, or why none could be created.
type LaunchTemplateResponse struct {
	RequestId     string   `json:"RequestId"`
	Session       *Session `json:"Session,omitempty"`
	FailureReason string   `json:"FailureReason,omitempty"`
}

// SessionShare is one user's access to another owner's session.
type SessionShare struct {
	User  string `json:"User"`
	Level string `json:"Level"`
}

// ShareSessionRequest is the body of PUT /berth/v1/sessions/{id}/shares.
type ShareSessionRequest struct {
	Owner string `json:"Owner"`
	User  string `json:"User"`
	Level string `json:"Level"`
}

// SessionSharesResponse lists a session's shares.
type SessionSharesResponse struct {
	RequestId string         `json:"RequestId"`
	SessionId string         `json:"SessionId"`
	Shares    []SessionShare `json:"Shares"`
}

// ExtendSessionRequest is the body of POST /berth/v1/sessions/{id}/extend
// (berth's extension).
type ExtendSessionRequest struct {
	// By is the extension asked for: a Go duration ("2h", "90m") or a
	// number of seconds; empty takes the broker's
	// session-extension-default-hours.
	By json.RawMessage `json:"By,omitempty"`
	// Owner, when set, must be the session's owner.
	Owner string `json:"Owner,omitempty"`
}

// ExtendSessionResponse answers an extension: the session's new deadline.
type ExtendSessionResponse struct {
	RequestId string    `json:"RequestId"`
	SessionId string    `json:"SessionId"`
	ExpiresAt time.Time `json:"ExpiresAt"`
}

// SessionLifetimeResponse is a session's lifetime deadlines (GET
// /berth/v1/sessions/{id}/lifetime). A deadline is absent where its
// policy is off or does not apply now (the idle one while no client is
// connected, the disconnected one while one is).
type SessionLifetimeResponse struct {
	RequestId            string     `json:"RequestId"`
	SessionId            string     `json:"SessionId"`
	ExpiresAt            *time.Time `json:"ExpiresAt,omitempty"`
	ExtensionSeconds     int64      `json:"ExtensionSeconds"`
	ExtensionLeftSeconds int64      `json:"ExtensionLeftSeconds"`
	IdleDisconnectAt     *time.Time `json:"IdleDisconnectAt,omitempty"`
	DisconnectedDeleteAt *time.Time `json:"DisconnectedDeleteAt,omitempty"`
	LastInputTime        *time.Time `json:"LastInputTime,omitempty"`
	NumOfConnections     int64      `json:"NumOfConnections"`
}

// QueueEntry is one session waiting in the create queue (GET /berth/v1/queue).
type QueueEntry struct {
	// Position is the session's place in the queue's order, round-robin
	// across owners (1: placed next when it fits).
	Position   int        `json:"Position"`
	SessionId  string     `json:"SessionId"`
	Owner      string     `json:"Owner"`
	EnqueuedAt *time.Time `json:"EnqueuedAt,omitempty"`
	// Reason is why it waits: the quota it would exceed now ("quota: user
	// alice has 4 of 4 sessions (session-max-sessions-per-user)"), or that
	// no server has room for it.
	Reason string `json:"Reason"`
}

// CapacityShortfall is one requirement class of the requests that no open,
// healthy server can take (GET /berth/v1/capacity, docs/autoscaling.md).
type CapacityShortfall struct {
	// Class is a short stable name of the class: the class label of the
	// berth_broker_capacity_shortfall_* gauges and of scaling.shortfall events.
	Class        string `json:"Class"`
	Type         string `json:"Type"`
	DcvGlEnabled bool   `json:"DcvGlEnabled"`
	// Requirements is the class's Requirements expression in canonical
	// form ("" for none).
	Requirements string `json:"Requirements"`
	// Count is Queued + Refused: queued sessions that fit no server, and
	// creates refused for want of a server within the last minutes.
	Count   int `json:"Count"`
	Queued  int `json:"Queued"`
	Refused int `json:"Refused"`
	// OldestSince is when the oldest of them was queued or refused;
	// OldestWaitSeconds how long ago that was.
	OldestSince       *time.Time `json:"OldestSince,omitempty"`
	OldestWaitSeconds int64      `json:"OldestWaitSeconds"`
}

// IdleServer is an open server without sessions for the broker's
// scaling-idle-server-minutes.
type IdleServer struct {
	Id       string `json:"Id"`
	Hostname string `json:"Hostname"`
	// Ec2InstanceId and AwsRegion are what the server's agent reported on EC2.
	Ec2InstanceId string    `json:"Ec2InstanceId,omitempty"`
	AwsRegion     string    `json:"AwsRegion,omitempty"`
	IdleSince     time.Time `json:"IdleSince"`
	IdleSeconds   int64     `json:"IdleSeconds"`
}

// DescribeCapacityResponse is the answer to GET /berth/v1/capacity: the
// scaling signals.
type DescribeCapacityResponse struct {
	RequestId string `json:"RequestId"`
	// CheckedAt is when the broker computed the signals.
	CheckedAt         time.Time           `json:"CheckedAt"`
	IdleServerMinutes float64             `json:"IdleServerMinutes"`
	Shortfall         []CapacityShortfall `json:"Shortfall"`
	IdleServers       []IdleServer        `json:"IdleServers"`
}

// DescribeQueueResponse is the answer to GET /berth/v1/queue: the waiting
// sessions in the order the queue serves them.
type DescribeQueueResponse struct {
	RequestId string       `json:"RequestId"`
	Queue     []QueueEntry `json:"Queue"`
}
