// Package agentcert is the broker's certificate service for the agents' web
// gateways, POST /agent/certificate on the agent port. A registered agent
// sends a certificate request and gets a server certificate from the web
// gateway CA, which is not the CA of the broker's own listeners and is
// name-constrained (RFC 5280), for names it reported in its host report and
// nothing else:
//
//   - a name the agent did not report is refused (403): an agent cannot get a
//     certificate for another host, a public site or the broker;
//   - a reported name that the CA's constraints do not permit, or that is one
//     of the broker's own names while the agent runs on another host, is left
//     out of the certificate, and the Berth-Omitted-Names header says which and
//     why; a request with nothing left is refused.
//
// The answer is the certificate followed by the CA certificate, both PEM.
package agentcert

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/logattr"
	"github.com/berth-dev/berth/internal/pki"
)

// MaxRequestBytes caps the size of a certificate request.
const MaxRequestBytes = 16 << 10

// CommonName is the subject common name of every gateway certificate. It is
// not a host name on purpose: verifiers then check names only against the
// subject alternative names, which the CA's constraints bound.
const CommonName = "berth web gateway"

// ErrUnknownServer is what Reports returns when the agent client has no
// server with that ID (or none at all).
var ErrUnknownServer = errors.New("unknown server")

// Authenticator checks agent client credentials and returns the client ID.
type Authenticator interface {
	AuthenticateAgent(ctx context.Context, id, secret string) (string, error)
}

// Reports returns the names by which the server serverID of the agent
// client agentClientID reported itself (all its servers when serverID is
// empty). It returns an error wrapping ErrUnknownServer when there is no
// such server.
type Reports interface {
	ReportedNames(ctx context.Context, agentClientID, serverID string) ([]string, error)
}

// Handler serves POST /agent/certificate.
type Handler struct {
	Auth    Authenticator
	Reports Reports
	// CA is the web gateway CA.
	CA *pki.CA
	// Validity is the lifetime of an issued certificate
	// (agent-certificate-validity-hours).
	Validity time.Duration
	// OwnNames returns the broker's own names (its host name, addresses and
	// certificate-names), which only an agent on the broker's own host may
	// have.
	OwnNames func() []string
	// IsLocal reports whether an address is one of the broker host's own;
	// nil means loopback addresses only.
	IsLocal func(netip.Addr) bool
	// Issued, if not nil, is called for each certificate issued.
	Issued func()
	Logger *slog.Logger
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	log := h.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	id, secret, ok := r.BasicAuth()
	if !ok {
		w.Header().Set("WWW-Authenticate", `Basic realm="berth agents"`)
		http.Error(w, "agent client credentials are required", http.StatusUnauthorized)
		return
	}
	clientID, err := h.Auth.AuthenticateAgent(r.Context(), id, secret)
	if err != nil {
		http.Error(w, "invalid agent client credentials", http.StatusUnauthorized)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxRequestBytes))
	if err != nil {
		http.Error(w, fmt.Sprintf("certificate request: larger than %d KiB", MaxRequestBytes>>10), http.StatusRequestEntityTooLarge)
		return
	}
	csr, err := pki.ParseCSR(body)
	if err != nil {
		http.Error(w, "certificate request: "+err.Error(), http.StatusBadRequest)
		return
	}
	serverID := r.URL.Query().Get("server_id")
	reported, err := h.Reports.ReportedNames(r.Context(), clientID, serverID)
	switch {
	case errors.Is(err, ErrUnknownServer) && serverID != "":
		http.Error(w, fmt.Sprintf("server_id: %q is not a server of this agent, or it has not linked yet", serverID), http.StatusForbidden)
		return
	case errors.Is(err, ErrUnknownServer):
		http.Error(w, "this agent has no server that reported its names: link first, then ask for a certificate (server_id)", http.StatusForbidden)
		return
	case err != nil:
		log.Warn("gateway certificate: cannot read the agent's report", logattr.AgentID, clientID, "err", err)
		http.Error(w, "the broker cannot read the agent's host report; try again later", http.StatusServiceUnavailable)
		return
	}
	names, omitted, err := h.decide(csr.Names, reported, remoteAddr(r))
	if err != nil {
		log.Warn("gateway certificate refused", logattr.AgentID, clientID, logattr.ServerID, serverID, "err", err)
		http.Error(w, err.Error(), http.StatusForbidden)
		return
	}
	cert, err := h.CA.SignServer(csr.PublicKey, names, CommonName, h.Validity)
	if err != nil {
		log.Error("gateway certificate: signing failed", logattr.AgentID, clientID, "err", err)
		http.Error(w, "the broker could not sign the certificate", http.StatusInternalServerError)
		return
	}
	if h.Issued != nil {
		h.Issued()
	}
	log.Info("issued gateway certificate", logattr.AgentID, clientID, logattr.ServerID, serverID,
		"names", strings.Join(names, ","), "omitted", strings.Join(omitted, "; "), "valid_for", h.Validity.String())
	if len(omitted) > 0 {
		w.Header().Set("Berth-Omitted-Names", strings.Join(omitted, "; "))
	}
	w.Header().Set("Content-Type", "application/x-pem-file")
	_, _ = w.Write(append(cert, h.CA.CertPEM...))
}

// decide returns the names to certify out of asked: each must be among
// reported (else the request is refused); those the CA does not permit, and
// the broker's own names unless from is the broker's host, are left out
// with a reason each.
func (h *Handler) decide(asked, reported []string, from netip.Addr) (names, omitted []string, err error) {
	rep := make([]string, len(reported))
	for i, n := range reported {
		rep[i] = pki.NormalizeName(n)
	}
	for _, n := range asked {
		if !slices.Contains(rep, n) {
			return nil, nil, fmt.Errorf("certificate request names %q, which this agent did not report (it reported: %s); the broker certifies only a host's own names", n, strings.Join(rep, ", "))
		}
	}
	local := from.IsValid() && (from.IsLoopback() || (h.IsLocal != nil && h.IsLocal(from)))
	var own []string
	if !local && h.OwnNames != nil {
		for _, n := range h.OwnNames() {
			own = append(own, pki.NormalizeName(n))
		}
	}
	c, _ := pki.ConstraintsOf(h.CA.Cert)
	for _, n := range asked {
		switch {
		case slices.Contains(own, n):
			omitted = append(omitted, n+": a name of the broker itself")
		case !c.Permits(n):
			omitted = append(omitted, n+": outside the web gateway CA's permitted subtrees (web-gateway-ca-permitted-subtrees)")
		default:
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		return nil, omitted, fmt.Errorf("none of the requested names can be certified: %s (the CA permits %s)", strings.Join(omitted, "; "), c)
	}
	return names, omitted, nil
}

// remoteAddr is the address of the request's peer, invalid if unknown.
func remoteAddr(r *http.Request) netip.Addr {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	a, _ := netip.ParseAddr(host)
	return a.WithZone("").Unmap()
}

// LocalAddrs reports whether a is an address of one of this host's
// interfaces. It lists them on each call: certificate requests are rare and
// addresses change.
func LocalAddrs(a netip.Addr) bool {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, x := range addrs {
		if n, ok := x.(*net.IPNet); ok {
			if b, ok := netip.AddrFromSlice(n.IP); ok && b.Unmap() == a {
				return true
			}
		}
	}
	return false
}
