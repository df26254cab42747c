// Package logattr names the log attributes that identify things, one name
// per thing, for every package that logs: a server is always server_id
// (never host_id), a session session_id, an agent client agent_id, and so
// on, so that one query follows a thing through the broker's and the
// agents' logs. internal/pkgdoc's TestLogAttributes fails on a log call
// that spells one of these names, or a synonym, as a string.
package logattr

const (
	// SessionID is a session's ID.
	SessionID = "session_id"
	// ServerID is a server's ID (the host an agent reports).
	ServerID = "server_id"
	// AgentID is an agent client's ID (from registration).
	AgentID = "agent_id"
	// ClientID is an API client's ID.
	ClientID = "client_id"
	// BrokerID is a broker's ID among brokers sharing one database.
	BrokerID = "broker_id"
	// Owner is a session's owner.
	Owner = "owner"
	// User is the user a connection or token is for.
	User = "user"
	// Remote is the network address of the other end of a connection.
	Remote = "remote"
)

// Synonyms are names that mean one of the attributes above, with the one
// to use instead.
var Synonyms = map[string]string{
	"host_id":         ServerID,
	"hostid":          ServerID,
	"serverid":        ServerID,
	"server":          ServerID,
	"sessionid":       SessionID,
	"session":         SessionID,
	"sid":             SessionID,
	"agent":           AgentID,
	"agentid":         AgentID,
	"agent_client_id": AgentID,
	"client_ip":       Remote,
	"remote_addr":     Remote,
	"peer":            Remote,
	"brokerid":        BrokerID,
}
