package broker

import "time"

// Server is a desktop host as the broker keeps it: what its agent reported plus the
// broker's own state (open or closed, last contact).
type Server struct {
	Seq int64
	ID  string
	// AgentClientID is the agent client that registered the server; another agent
	// client may not take the same server ID.
	AgentClientID string
	Open          bool
	// LastSeen is the last message from the server's agent; zero when its link is down.
	LastSeen time.Time
	// BrokerID names the broker that holds the agent's link.
	BrokerID  string
	CreatedAt time.Time
	Info      ServerInfo
	// Version changes whenever UpsertServer or SetServerOpen changes the row
	// (kept by stores that implement ServerSyncer; zero otherwise).
	Version int64

	// tags are derived from Info when the broker caches the server (prepare);
	// servers with the same tags share the map.
	tags map[string]string
	// link is the server cache's mark of whether this broker holds the
	// server's link, shared by every version of the server the cache held
	// (serverCache.markLocked); nil for a server the cache never held.
	link *linkMark
}

// ServerInfo is the agent's report of its host.
type ServerInfo struct {
	Hostname                     string            `json:"hostname"`
	IP                           string            `json:"ip"`
	DefaultDNSName               string            `json:"dnsName,omitempty"`
	Port                         int               `json:"port"`
	WebURLPath                   string            `json:"webUrlPath"`
	Endpoints                    []Endpoint        `json:"endpoints"`
	Version                      string            `json:"version"`
	AgentVersion                 string            `json:"agentVersion"`
	Driver                       string            `json:"driver"`
	Healthy                      bool              `json:"healthy"`
	GLCapable                    bool              `json:"gl,omitempty"` // next to Healthy: no padding between
	HealthReason                 string            `json:"healthReason,omitempty"`
	MaxVirtualSessions           int               `json:"maxVirtualSessions"` // 0: unlimited
	MaxConcurrentSessionsPerUser int               `json:"maxSessionsPerUser"` // 0: unlimited
	Host                         Host              `json:"host"`
	Tags                         map[string]string `json:"tags,omitempty"`
}

// Endpoint is one way to reach the server's desktop service.
type Endpoint struct {
	IPAddress  string `json:"ip,omitempty"`
	Port       int    `json:"port"`
	WebURLPath string `json:"path,omitempty"`
	Protocol   string `json:"protocol"`
}

// Host is the hardware and OS part of a server report.
type Host struct {
	OSFamily        string   `json:"osFamily"`
	OSName          string   `json:"osName"`
	OSVersion       string   `json:"osVersion"`
	KernelVersion   string   `json:"kernel,omitempty"`
	BuildNumber     string   `json:"build,omitempty"`
	MemTotal        int64    `json:"memTotal"`
	MemUsed         int64    `json:"memUsed"`
	SwapTotal       int64    `json:"swapTotal"`
	SwapUsed        int64    `json:"swapUsed"`
	AWSRegion       string   `json:"awsRegion,omitempty"`
	EC2InstanceType string   `json:"ec2Type,omitempty"`
	EC2InstanceID   string   `json:"ec2Id,omitempty"`
	EC2ImageID      string   `json:"ec2Image,omitempty"`
	CPUVendor       string   `json:"cpuVendor"`
	CPUModel        string   `json:"cpuModel"`
	CPUArch         string   `json:"cpuArch"`
	CPUs            int      `json:"cpus"`
	CoresPerCPU     int      `json:"coresPerCpu"`
	Load1           float64  `json:"load1"`
	Load5           float64  `json:"load5"`
	Load15          float64  `json:"load15"`
	GPUs            []GPU    `json:"gpus,omitempty"`
	LoggedInUsers   []string `json:"users,omitempty"`
}

// GPU is one graphics adapter.
type GPU struct {
	Vendor string `json:"vendor"`
	Model  string `json:"model"`
}

// Counts is the load of one server as placement sees it.
type Counts struct {
	Virtual int
	Console int
	// ByOwner counts the active sessions of each owner.
	ByOwner map[string]int
}
