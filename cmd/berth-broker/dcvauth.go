package main

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/oauth"
)

// Limits of the DCV token verifier.
const (
	// dcvAuthMaxBody bounds the form a DCV server posts.
	dcvAuthMaxBody = 16 << 10
	// dcvAuthRate and dcvAuthBurst are the token bucket of each client address.
	dcvAuthRate  = 20
	dcvAuthBurst = 40
	// dcvAuthMaxAddrs bounds the addresses the limiter remembers.
	dcvAuthMaxAddrs = 10000
)

// connectionVerifier checks ConnectionTokens (*oauth.Authority).
type connectionVerifier interface {
	VerifyConnectionToken(ctx context.Context, token string) (*oauth.ConnectionClaims, error)
}

// sessionReader reads a session as clients see it (*broker.Service).
type sessionReader interface {
	SessionForConnection(ctx context.Context, id string) (*broker.SessionView, error)
}

// dcvAuthHandler serves POST /agent/validate-authentication-token on the agent
// port: the DCV server's external authenticator (dcv.conf [security]
// auth-token-verifier). The DCV server posts a form with sessionId,
// authenticationToken and clientAddress, and reads the XML answer: the status
// is always 200, even when refusing (including over the rate limit), because
// DCV only looks at the body.
func dcvAuthHandler(tokens connectionVerifier, sessions sessionReader, lim *addrLimiter, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, dcvAuthMaxBody+1))
		if err != nil {
			writeAuthNo(w, "could not read the request")
			return
		}
		if len(body) > dcvAuthMaxBody {
			writeAuthNo(w, "request larger than 16 KiB")
			return
		}
		form, err := url.ParseQuery(string(body))
		key := clientKey(form.Get("clientAddress"), r.RemoteAddr)
		if !lim.allow(key, time.Now()) {
			log.Warn("dcv token verification rate limited", "client_address", key)
			writeAuthNo(w, "too many requests")
			return
		}
		if err != nil {
			writeAuthNo(w, "malformed form body")
			return
		}
		sessionID, token := form.Get("sessionId"), form.Get("authenticationToken")
		switch {
		case sessionID == "":
			writeAuthNo(w, "sessionId is required")
			return
		case token == "":
			writeAuthNo(w, "authenticationToken is required")
			return
		}
		claims, err := tokens.VerifyConnectionToken(r.Context(), token)
		if err != nil {
			var te *oauth.TokenError
			if errors.As(err, &te) {
				log.Info("dcv token refused", "session_id", sessionID, "client_address", key, "reason", te.Reason)
				writeAuthNo(w, "authentication token refused: "+te.Reason)
				return
			}
			log.Error("dcv token verification failed", "session_id", sessionID, "err", err)
			writeAuthNo(w, "could not verify the token; retry")
			return
		}
		if claims.SessionID != sessionID {
			log.Info("dcv token refused", "session_id", sessionID, "client_address", key, "reason", "token for another session")
			writeAuthNo(w, "the token is for another session")
			return
		}
		v, err := sessions.SessionForConnection(r.Context(), sessionID)
		if err != nil {
			if broker.ErrorCode(err) == broker.CodeInternal {
				log.Error("dcv token verification: read session", "session_id", sessionID, "err", err)
				writeAuthNo(w, "could not read the session; retry")
				return
			}
			writeAuthNo(w, "the session does not exist")
			return
		}
		if v.State != broker.StateReady {
			writeAuthNo(w, "the session is "+v.State+", not READY")
			return
		}
		log.Debug("dcv token accepted", "session_id", sessionID, "user", claims.User, "client_address", key)
		var b bytes.Buffer
		b.WriteString(`<auth result="yes"><username>`)
		_ = xml.EscapeText(&b, []byte(claims.User))
		b.WriteString(`</username></auth>`)
		writeAuthXML(w, b.Bytes())
	})
}

func writeAuthNo(w http.ResponseWriter, msg string) {
	var b bytes.Buffer
	b.WriteString(`<auth result="no"><message>`)
	_ = xml.EscapeText(&b, []byte(msg))
	b.WriteString(`</message></auth>`)
	writeAuthXML(w, b.Bytes())
}

func writeAuthXML(w http.ResponseWriter, body []byte) {
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}

// clientKey is the address the rate limit applies to: the end client's
// address as the DCV server reports it, else the caller's IP.
func clientKey(clientAddress, remoteAddr string) string {
	a := clientAddress
	if a == "" {
		a = remoteAddr
	}
	if h, _, err := net.SplitHostPort(a); err == nil {
		a = h
	}
	if len(a) > 64 {
		a = a[:64]
	}
	return a
}

// addrLimiter is a token bucket per address with a bounded number of
// addresses. It is safe for concurrent use.
type addrLimiter struct {
	rate  float64 // tokens per second
	burst float64
	max   int

	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newAddrLimiter(rate, burst float64, maxAddrs int) *addrLimiter {
	return &addrLimiter{rate: rate, burst: burst, max: maxAddrs, buckets: make(map[string]*bucket)}
}

// allow takes a token from key's bucket and reports whether there was one.
func (l *addrLimiter) allow(key string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[key]
	if b == nil {
		if len(l.buckets) >= l.max {
			l.evict(now)
		}
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[key] = b
	}
	if el := now.Sub(b.last).Seconds(); el > 0 {
		b.tokens = min(l.burst, b.tokens+el*l.rate)
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// evict forgets the buckets that have refilled (forgetting them changes
// nothing); if none has, it forgets the one idle the longest.
func (l *addrLimiter) evict(now time.Time) {
	full := time.Duration(l.burst / l.rate * float64(time.Second))
	var oldKey string
	var oldest time.Time
	for k, b := range l.buckets {
		if now.Sub(b.last) >= full {
			delete(l.buckets, k)
			continue
		}
		if oldKey == "" || b.last.Before(oldest) {
			oldKey, oldest = k, b.last
		}
	}
	if len(l.buckets) >= l.max && oldKey != "" {
		delete(l.buckets, oldKey)
	}
}
