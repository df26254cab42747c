// Package cgresolver is the DCV Connection Gateway's session resolver on the
// broker (POST /resolveSession on the gateway-to-broker connector, 8447) and
// the server DNS mappings it answers with. It is not the agent's web gateway,
// which bridges browsers to VNC sessions: that is internal/gateway.
//
// A Connection Gateway asks where to reach a session's DCV server over a
// transport (HTTP or QUIC); Handler answers with the server's endpoint of that
// transport, named by its mapped internal DNS name when the operator loaded
// DNS mappings (register-server-dns-mappings). The mappings are a JSON file in
// the broker's working path, written atomically (WriteDNSMappings) and re-read
// by the running broker when it changes (DNSMappings).
package cgresolver
