package jwks

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

const (
	// DefaultTimeout bounds one fetch of a key set: connection, TLS
	// handshake, request and the whole body.
	DefaultTimeout = 5 * time.Second
	// DefaultMinRefetch is the shortest time between two fetches of one
	// URL, whatever causes them.
	DefaultMinRefetch = 10 * time.Second
	// DefaultMaxWait is the longest a token waits for a fetch that its
	// unknown key started: an authorization server that accepts the
	// connection and never answers must not hold API requests for the
	// whole fetch timeout. The fetch goes on for the next tokens.
	DefaultMaxWait = time.Second
)

// ErrUnknownKey means the set holds no usable key of the kid asked for.
var ErrUnknownKey = errors.New("unknown key")

// ErrUnavailable means the set was never fetched: the server could not be
// reached, or what it served was refused.
var ErrUnavailable = errors.New("key set unavailable")

// CheckURL returns nil if u may be registered as a key set URL: an absolute
// https URL, or http for a loopback host (localhost, 127.0.0.0/8, ::1), with
// no user information or fragment, of at most 2048 bytes.
func CheckURL(u string) error {
	if u == "" {
		return errors.New("the URL is empty")
	}
	if len(u) > 2048 {
		return errors.New("the URL is longer than 2048 bytes")
	}
	p, err := url.Parse(u)
	if err != nil {
		return fmt.Errorf("%q is not a URL", clip(u))
	}
	switch {
	case p.Scheme != "https" && p.Scheme != "http" || p.Host == "" || p.Opaque != "":
		return fmt.Errorf("%q is not an absolute https URL such as https://idp.example.com/.well-known/jwks.json", clip(u))
	case p.User != nil:
		return errors.New("the URL must not hold a user name or password")
	case p.Fragment != "" || strings.Contains(u, "#"):
		return errors.New("the URL must not hold a fragment (#...)")
	case p.Scheme == "http" && !IsLoopback(p.Hostname()):
		return fmt.Errorf("%q is plain http: a key set must be fetched over https (http is accepted only for a loopback host such as 127.0.0.1 or localhost)", clip(u))
	}
	return nil
}

// IsLoopback reports whether host is "localhost" or a loopback address.
func IsLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// NewClient returns the HTTP client a Source fetches with: the system roots
// plus the PEM certificates of caBundle (may be empty), TLS 1.2 or later, the
// proxy of the environment (HTTPS_PROXY, NO_PROXY), timeout for the whole
// exchange (0: DefaultTimeout), and no redirects (a key set URL that
// redirects is refused: register the final URL).
func NewClient(caBundle []byte, timeout time.Duration) (*http.Client, error) {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if len(caBundle) > 0 && !pool.AppendCertsFromPEM(caBundle) {
		return nil, errors.New("the CA bundle holds no PEM certificate")
	}
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: timeout}).DialContext,
		TLSClientConfig:       &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout:   timeout,
		ResponseHeaderTimeout: timeout,
		MaxIdleConnsPerHost:   2,
		IdleConnTimeout:       90 * time.Second,
		ForceAttemptHTTP2:     true,
	}
	return &http.Client{Transport: tr, Timeout: timeout, CheckRedirect: noRedirects}, nil
}

// noRedirects makes a client return a redirect instead of following it.
func noRedirects(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// Options tune a Source. Zero values take the defaults noted.
type Options struct {
	// Client fetches the set (NewClient(nil, 0)). The Source never follows
	// redirects, whatever the client's CheckRedirect.
	Client *http.Client
	// MinRefetch is the shortest time between two fetches
	// (DefaultMinRefetch).
	MinRefetch time.Duration
	// MaxWait is the longest Key waits for a fetch (DefaultMaxWait).
	MaxWait time.Duration
	// Now returns the current time (time.Now).
	Now func() time.Time
	// Logger receives a line per fetch that changed the set or failed
	// (slog.Default()).
	Logger *slog.Logger
}

// Status is what a Source knows of its set, for metrics and logs.
type Status struct {
	URL string
	// FetchedAt is when the last successful fetch ended; zero: never.
	FetchedAt time.Time
	// Keys is the number of usable keys cached.
	Keys int
	// Err is the error of the last fetch when it failed; nil otherwise.
	Err error
}

// Source is the cached key set of one URL. Key serves tokens from the cache
// and fetches the set again when a token names a key it lacks; Refresh
// fetches it again when it is old. Fetches of one Source never overlap and
// start at most once per MinRefetch; a caller waits for one at most until its
// context ends (and the fetch itself at most its client's timeout). While
// fetching fails, the keys of the last good fetch keep verifying. It is safe
// for concurrent use.
type Source struct {
	url        string
	client     *http.Client
	minRefetch time.Duration
	maxWait    time.Duration
	now        func() time.Time
	log        *slog.Logger

	mu        sync.Mutex
	set       *Set          // guarded by mu; nil until a fetch works
	fetchedAt time.Time     // last successful fetch
	triedAt   time.Time     // start of the last fetch
	lastErr   error         // error of the last fetch, nil if it worked
	inflight  chan struct{} // closed when the running fetch ends; nil if none
}

// NewSource returns the cache of the key set at u (see CheckURL).
func NewSource(u string, opts Options) *Source {
	s := &Source{url: u, minRefetch: opts.MinRefetch, maxWait: opts.MaxWait, now: opts.Now, log: opts.Logger}
	if opts.Client == nil {
		s.client, _ = NewClient(nil, 0)
	} else {
		c := *opts.Client
		c.CheckRedirect = noRedirects
		s.client = &c
	}
	if s.minRefetch <= 0 {
		s.minRefetch = DefaultMinRefetch
	}
	if s.maxWait <= 0 {
		s.maxWait = DefaultMaxWait
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	return s
}

// URL is the key set's URL.
func (s *Source) URL() string { return s.url }

// Cached returns the cached key named kid, or nil; it never fetches.
func (s *Source) Cached(kid string) *Key {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.set.Key(kid)
}

// Key returns the key named kid. If the cache lacks it, it fetches the set
// again, unless a fetch started less than MinRefetch ago, and waits for that
// fetch, at most MaxWait or until ctx ends (the fetch goes on). The error wraps ErrUnknownKey when the set holds
// no usable key of that name, and ErrUnavailable when no fetch ever worked
// (or ctx ended first); it says why (a skipped key's reason, the last fetch
// error).
func (s *Source) Key(ctx context.Context, kid string) (*Key, error) {
	if k := s.Cached(kid); k != nil {
		return k, nil
	}
	if done := s.Fetch(); done != nil {
		t := time.NewTimer(s.maxWait)
		defer t.Stop()
		select {
		case <-done:
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %s: waiting for the key set: %w", ErrUnavailable, s.url, ctx.Err())
		case <-t.C:
			return nil, fmt.Errorf("%w: %s: the key set did not arrive within %s (still fetching)", ErrUnavailable, s.url, s.maxWait)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if k := s.set.Key(kid); k != nil {
		return k, nil
	}
	return nil, s.missLocked(kid)
}

// missLocked says why kid is not in the set. s.mu must be held.
func (s *Source) missLocked(kid string) error {
	if s.set == nil {
		if s.lastErr != nil {
			return fmt.Errorf("%w: %s: %w", ErrUnavailable, s.url, s.lastErr)
		}
		return fmt.Errorf("%w: %s: not fetched yet", ErrUnavailable, s.url)
	}
	why := ""
	if r := s.set.SkipReason(kid); r != "" {
		why = "; the set holds it but it was refused: " + r
	}
	if s.lastErr != nil {
		why += "; the last fetch failed: " + s.lastErr.Error()
	}
	return fmt.Errorf("%w: %s has no usable key %q%s", ErrUnknownKey, s.url, clip(kid), why)
}

// Fetch starts a fetch of the set unless one is running (then it returns
// that one) or one started less than MinRefetch ago (then it returns nil).
// The channel it returns is closed when the fetch ends.
func (s *Source) Fetch() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fetchLocked(s.now())
}

// Refresh starts a fetch, as Fetch does, if the last successful one is older
// than maxAge (or there was none) and the last attempt older than retry;
// otherwise it returns nil. The broker calls it regularly, so that a set
// changes without waiting for a token that names a new key.
func (s *Source) Refresh(maxAge, retry time.Duration) <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if s.inflight != nil {
		return s.inflight
	}
	if !s.fetchedAt.IsZero() && since(s.fetchedAt, now) < maxAge {
		return nil
	}
	if !s.triedAt.IsZero() && since(s.triedAt, now) < retry {
		return nil
	}
	return s.fetchLocked(now)
}

// since is now-t, where a clock set back counts as a long time.
func since(t, now time.Time) time.Duration {
	if now.Before(t) {
		return time.Duration(1<<63 - 1)
	}
	return now.Sub(t)
}

func (s *Source) fetchLocked(now time.Time) <-chan struct{} {
	if s.inflight != nil {
		return s.inflight
	}
	if !s.triedAt.IsZero() && since(s.triedAt, now) < s.minRefetch {
		return nil
	}
	s.triedAt = now
	done := make(chan struct{})
	s.inflight = done
	go s.fetch(done)
	return done
}

// fetch gets the set, stores the result and closes done. It runs on its own
// context: a caller that stops waiting does not cancel it for the others.
func (s *Source) fetch(done chan struct{}) {
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout())
	defer cancel()
	start := time.Now()
	set, err := s.get(ctx)
	took := time.Since(start).Round(time.Millisecond)

	s.mu.Lock()
	old := s.set
	s.lastErr = err
	if err == nil {
		s.set = set
		s.fetchedAt = s.now()
	}
	s.inflight = nil
	keys := s.set.Len()
	s.mu.Unlock()
	// The line is out before the waiters go on.
	defer close(done)

	switch {
	case err != nil && old != nil:
		s.log.Warn("auth server key set fetch failed; the cached keys keep verifying",
			"auth_server", s.url, "err", err, "cached_keys", keys, "took", took)
	case err != nil:
		s.log.Warn("auth server key set fetch failed; its tokens are refused until it works",
			"auth_server", s.url, "err", err, "took", took)
	case !slices.Equal(old.IDs(), set.IDs()):
		s.log.Info("auth server key set fetched", "auth_server", s.url, "keys", set.IDs(),
			"skipped", skippedStrings(set.Skipped()), "took", took)
	default:
		s.log.Debug("auth server key set fetched; no change", "auth_server", s.url, "keys", keys, "took", took)
	}
}

func skippedStrings(sk []Skipped) []string {
	out := make([]string, len(sk))
	for i, k := range sk {
		out[i] = k.String()
	}
	return out
}

// timeout bounds a fetch's context: the client's own timeout, or
// DefaultTimeout when it has none.
func (s *Source) timeout() time.Duration {
	if s.client.Timeout > 0 {
		return s.client.Timeout
	}
	return DefaultTimeout
}

// get fetches and parses the set.
func (s *Source) get(ctx context.Context) (*Set, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url, nil)
	if err != nil {
		return nil, fmt.Errorf("fetch: %w", err)
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, context.DeadlineExceeded) {
			return nil, fmt.Errorf("fetch: no answer within %s: %w", s.timeout(), err)
		}
		return nil, fmt.Errorf("fetch: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg := resp.Status
		if loc := resp.Header.Get("Location"); loc != "" && resp.StatusCode >= 300 && resp.StatusCode < 400 {
			msg += " to " + clip(loc) + " (redirects are not followed: register the final URL)"
		}
		return nil, fmt.Errorf("fetch: the server answered %s", msg)
	}
	if resp.ContentLength > MaxDocumentBytes {
		return nil, fmt.Errorf("fetch: the key set is %s bytes, over the limit of %d", strconv.FormatInt(resp.ContentLength, 10), MaxDocumentBytes)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxDocumentBytes+1))
	if err != nil {
		return nil, fmt.Errorf("fetch: read the key set: %w", err)
	}
	if len(body) > MaxDocumentBytes {
		return nil, fmt.Errorf("fetch: the key set is over the limit of %d bytes", MaxDocumentBytes)
	}
	return Parse(body)
}

// Status returns what the Source knows of its set.
func (s *Source) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Status{URL: s.url, FetchedAt: s.fetchedAt, Keys: s.set.Len(), Err: s.lastErr}
}
