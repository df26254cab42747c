package agentproto

import "time"

// HostReport is an agent's description of its host and desktop service.
type HostReport struct {
	Hostname string `json:"hostname"`
	IP       string `json:"ip"`
	DNSName  string `json:"dns_name,omitempty"`
	// Port is the main port of the desktop service; 0 means the first endpoint's.
	Port       int        `json:"port,omitempty"`
	WebURLPath string     `json:"web_url_path"`
	Endpoints  []Endpoint `json:"endpoints,omitempty"`
	// Version is the version of the desktop service (DCV server, TigerVNC, ...).
	Version      string `json:"version"`
	AgentVersion string `json:"agent_version"`
	// Driver is the agent driver's name: "dcv", "vnc", "sim".
	Driver       string `json:"driver"`
	Healthy      bool   `json:"healthy"`
	HealthReason string `json:"health_reason,omitempty"`
	// MaxVirtualSessions and MaxConcurrentSessionsPerUser are 0 for unlimited.
	MaxVirtualSessions           int               `json:"max_virtual_sessions,omitempty"`
	MaxConcurrentSessionsPerUser int               `json:"max_concurrent_sessions_per_user,omitempty"`
	GLCapable                    bool              `json:"gl_capable,omitempty"`
	OS                           OS                `json:"os"`
	Memory                       Memory            `json:"memory"`
	AWS                          *AWS              `json:"aws,omitempty"`
	CPU                          CPU               `json:"cpu"`
	Load                         Load              `json:"load"`
	GPUs                         []GPU             `json:"gpus,omitempty"`
	LoggedInUsers                []string          `json:"logged_in_users,omitempty"`
	Tags                         map[string]string `json:"tags,omitempty"`
}

// Endpoint is one way to reach the desktop service.
type Endpoint struct {
	IP         string `json:"ip,omitempty"`
	Port       int    `json:"port"`
	WebURLPath string `json:"web_url_path,omitempty"`
	// Protocol is ProtocolHTTP or ProtocolQUIC.
	Protocol string `json:"protocol"`
}

// OS describes the operating system.
type OS struct {
	Family  string `json:"family"` // "linux", "windows", "darwin"
	Name    string `json:"name"`
	Version string `json:"version"`
	Kernel  string `json:"kernel,omitempty"`
	Build   string `json:"build,omitempty"`
}

// Memory holds memory and swap sizes in bytes.
type Memory struct {
	TotalBytes     int64 `json:"total_bytes"`
	UsedBytes      int64 `json:"used_bytes"`
	SwapTotalBytes int64 `json:"swap_total_bytes"`
	SwapUsedBytes  int64 `json:"swap_used_bytes"`
}

// AWS describes the EC2 instance the host runs on.
type AWS struct {
	Region       string `json:"region,omitempty"`
	InstanceType string `json:"instance_type,omitempty"`
	InstanceID   string `json:"instance_id,omitempty"`
	ImageID      string `json:"image_id,omitempty"`
}

// CPU describes the processors.
type CPU struct {
	Vendor string `json:"vendor"`
	Model  string `json:"model"`
	Arch   string `json:"arch"`
	// Count is the number of CPUs (sockets or logical CPUs, as the OS reports).
	Count       int `json:"count"`
	CoresPerCPU int `json:"cores_per_cpu"`
}

// Load holds the load averages.
type Load struct {
	One     float64 `json:"one"`
	Five    float64 `json:"five"`
	Fifteen float64 `json:"fifteen"`
}

// GPU is one graphics adapter.
type GPU struct {
	Vendor string `json:"vendor"`
	Model  string `json:"model"`
}

// Session is an agent's view of one of its sessions.
type Session struct {
	ID    string `json:"id"`
	Name  string `json:"name,omitempty"`
	Owner string `json:"owner"`
	// Type is "VIRTUAL" or "CONSOLE".
	Type string `json:"type"`
	// State is StateCreating, StateReady or StateDeleted.
	State                 string    `json:"state"`
	StateReason           string    `json:"state_reason,omitempty"`
	MaxConcurrentClients  int64     `json:"max_concurrent_clients,omitempty"`
	StorageRoot           string    `json:"storage_root,omitempty"`
	CreationTime          time.Time `json:"creation_time,omitzero"`
	LastDisconnectionTime time.Time `json:"last_disconnection_time,omitzero"`
	NumConnections        int64     `json:"num_connections"`
	// LastInputTime is the last keyboard or pointer input the agent saw in
	// the session (from a client, or inside the session), or a new client
	// connection; zero when none or unknown. It is coarse: an agent changes
	// it at most once per its activity interval. Since version 4.
	LastInputTime time.Time `json:"last_input_time,omitzero"`
	// OwnerGroups are the owner's groups in the host's name service (NSS),
	// looked up once per session; empty when unknown. Since version 4.
	OwnerGroups []string `json:"owner_groups,omitempty"`
}
