package cgresolver

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"

	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/logattr"
)

// Sessions reads a session as clients see it (*broker.Service).
type Sessions interface {
	SessionForConnection(ctx context.Context, id string) (*broker.SessionView, error)
}

// Transport protocols of POST /resolveSession.
const (
	transportHTTP = "HTTP"
	transportQUIC = "QUIC"
)

// ResolveSessionResponse is the answer of POST /resolveSession, in the
// reference's field names.
type ResolveSessionResponse struct {
	SessionID         string `json:"SessionId"`
	TransportProtocol string `json:"TransportProtocol"`
	DcvServerEndpoint string `json:"DcvServerEndpoint"`
	Port              int    `json:"Port"`
	WebURLPath        string `json:"WebUrlPath"`
}

// Handler serves POST /resolveSession?sessionId=&transport=&clientIpAddress=
// for the DCV Connection Gateway: where to reach a READY session's DCV server
// over the transport, by its mapped internal DNS name when dns maps the
// server. An unknown, DELETED or not READY session gets 404, a server without
// an endpoint of the transport 404, a missing or invalid parameter 400 naming
// it, a store failure 503; errors are {"error": "..."}.
func Handler(sessions Sessions, dns *DNSMappings, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		id, transport, clientIP := q.Get("sessionId"), strings.ToUpper(q.Get("transport")), q.Get("clientIpAddress")
		switch {
		case id == "":
			resolveError(w, http.StatusBadRequest, "sessionId: is required")
			return
		case len(id) > 256:
			resolveError(w, http.StatusBadRequest, "sessionId: longer than 256 characters")
			return
		case transport == "":
			resolveError(w, http.StatusBadRequest, "transport: is required (HTTP or QUIC)")
			return
		case transport != transportHTTP && transport != transportQUIC:
			resolveError(w, http.StatusBadRequest, "transport: must be HTTP or QUIC")
			return
		case clientIP != "" && !validClientIP(clientIP):
			resolveError(w, http.StatusBadRequest, "clientIpAddress: is not an IP address")
			return
		}
		v, err := sessions.SessionForConnection(r.Context(), id)
		if err != nil {
			if broker.ErrorCode(err) == broker.CodeInternal {
				log.Error("resolve session: read session", logattr.SessionID, id, "err", err)
				resolveError(w, http.StatusServiceUnavailable, "could not read the session; retry")
				return
			}
			resolveError(w, http.StatusNotFound, fmt.Sprintf("session %q does not exist", id))
			return
		}
		if v.State != broker.StateReady || v.Server == nil {
			resolveError(w, http.StatusNotFound, fmt.Sprintf("session %q is %s, not READY", id, v.State))
			return
		}
		ep, ok := endpointFor(&v.Server.Info, transport)
		if !ok {
			resolveError(w, http.StatusNotFound, fmt.Sprintf("the server of session %q has no %s endpoint", id, transport))
			return
		}
		host := ep.IPAddress
		if host == "" {
			host = v.Server.Info.IP
		}
		if host == "" {
			host = v.Server.Info.Hostname
		}
		if names, ok := dns.Lookup(v.Server, ep.IPAddress); ok {
			host = names.InternalDNSName
		}
		resp := ResolveSessionResponse{SessionID: v.ID, TransportProtocol: transport, DcvServerEndpoint: host,
			Port: ep.Port, WebURLPath: ep.WebURLPath}
		log.Debug("resolved session", logattr.SessionID, id, "transport", transport, logattr.Remote, clientIP, "endpoint", host, "port", ep.Port)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_ = json.NewEncoder(w).Encode(resp)
	})
}

// endpointFor returns the server's endpoint of transport; a server that
// lists no endpoints but a port is reachable over HTTP on it.
func endpointFor(info *broker.ServerInfo, transport string) (broker.Endpoint, bool) {
	for _, e := range info.Endpoints {
		if strings.EqualFold(e.Protocol, transport) && e.Port > 0 {
			if e.WebURLPath == "" {
				e.WebURLPath = info.WebURLPath
			}
			return e, true
		}
	}
	if transport == transportHTTP && len(info.Endpoints) == 0 && info.Port > 0 {
		return broker.Endpoint{Port: info.Port, WebURLPath: info.WebURLPath, Protocol: transportHTTP}, true
	}
	return broker.Endpoint{}, false
}

// validClientIP accepts an IP address, with or without a port.
func validClientIP(s string) bool {
	if _, err := netip.ParseAddr(s); err == nil {
		return true
	}
	_, err := netip.ParseAddrPort(s)
	return err == nil
}

func resolveError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}
