// Package agentproto defines the messages that a berth broker and its agents
// exchange over the agent WebSocket link (GET /agent/connect on the broker's agent
// port), how they are encoded, and the protocol version window.
//
// Every message is one WebSocket text message holding one JSON envelope:
//
//	{"type": "update", "id": "17", "body": {...}}
//
// The agent opens the link and sends [Hello] first; the broker answers [Welcome]
// (or a fatal [Error] and closes). Then the agent sends [Update] on every change
// and at least once per update interval, the broker answers each with [Ack], and
// the broker sends [Command] messages that the agent answers with [Result]
// messages carrying the same id. docs/protocol.md describes the protocol for
// people; this package is its definition.
//
// The package imports only the standard library, so both sides, and tools, can
// use it.
package agentproto

// ProtocolVersion is the version of the protocol that this code speaks. It is a
// single integer, bumped on every change to the messages or their meaning, and
// exchanged in [Hello] and [Welcome].
//
// History (keep docs/protocol.md in step):
//
//   - 1 (2026-11-25): initial protocol: hello, welcome, update, ack, command
//     (create, delete, permissions, screenshot), result, error.
//   - 2 (2026-12-06): welcome carries gateway_ca_key_id, the key ID of the
//     web gateway CA, so that agents replace a gateway certificate another CA
//     issued; result carries timeout (sent to version 1 agents' brokers too:
//     unknown fields are ignored).
//   - 3 (2026-12-07): incremental session reports: update carries seq (one
//     more per update of a link) and changes (the sessions that changed, ended
//     ones as DELETED) instead of the full list, which the agent sends only in
//     hello, after ack.resync (the broker saw a gap in seq) or after an ack
//     with an error; welcome carries fleet_size; update carries figures (load
//     averages, memory and swap in use) instead of the full host report when
//     only those changed; the agent leaves the id (and so the ack) off
//     heartbeats and figures-only updates while the broker spoke within half
//     its read timeout, and an ack tells of a gap or failure on such an
//     update as resync. Version 1 and 2 agents keep sending full lists and
//     reports, and the broker keeps reconciling them.
//   - 4 (2026-12-08): session lifetimes: a session carries last_input_time
//     (coarse: it changes at most once per the agent's activity interval)
//     and owner_groups (the owner's NSS groups); commands disconnect
//     (close the session's client connections, with an optional notify
//     body as the reason) and notify (a message for the connected clients:
//     message, policy, deadline, extendable). A broker sends the new
//     commands only on version 4 links; older agents ignore the new session
//     fields' absence, older brokers the fields.
//   - 5 (2026-12-07): fleet-scaled timing: welcome's update interval and
//     heartbeat timeout grow with the fleet past the broker's update rate
//     cap, and an ack may carry update_interval_ms and heartbeat_timeout_ms
//     to retime a link whose fleet grew or shrank since its welcome. A
//     broker sends them only on version 5 links.
const ProtocolVersion = 5

// MinProtocolVersion is the oldest agent protocol version a broker built from
// this code accepts. Brokers refuse a Hello whose version is outside
// [MinProtocolVersion, ProtocolVersion] with an [Error] of code
// [CodeVersionUnsupported]; so upgrade brokers before agents.
const MinProtocolVersion = 1

// MaxMessageSize is the largest encoded message either side sends or accepts:
// 32 MiB, so that a 4K PNG screenshot fits after base64. Set the WebSocket read
// limit to it.
const MaxMessageSize = 32 << 20

// SupportedVersion reports whether v is inside [MinProtocolVersion, ProtocolVersion].
func SupportedVersion(v int) bool {
	return v >= MinProtocolVersion && v <= ProtocolVersion
}
