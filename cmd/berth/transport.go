package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// maxBody caps an answer's size, as api.Client does.
const maxBody = 256 << 20

// maxDebugBody caps how much of a request body --debug shows.
const maxDebugBody = 2048

// transport wraps the HTTP client's transport: it keeps the raw body of the
// last API answer (so berth can print the broker's JSON as it came) and, with
// --debug, logs each request. It never logs the Authorization header, the
// token endpoint's bodies or any answer body (connection data holds tokens).
type transport struct {
	next     http.RoundTripper
	debug    io.Writer // nil: no logging
	tokenURL string

	mu   sync.Mutex
	last []byte
}

// isToken reports whether raw (a request URL) is the token endpoint.
func (t *transport) isToken(raw string) bool {
	u, err := url.Parse(raw)
	tu, err2 := url.Parse(t.tokenURL)
	if err != nil || err2 != nil {
		return false
	}
	return u.Scheme == tu.Scheme && u.Host == tu.Host && u.Path == tu.Path
}

// RoundTrip sends req, records the answer body and logs with --debug.
func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	token := t.isToken(req.URL.String())
	start := time.Now()
	if t.debug != nil {
		line := fmt.Sprintf("berth: debug: > %s %s", req.Method, redactURL(req.URL))
		switch {
		case token:
			line += " (client credentials not shown)"
		case req.GetBody != nil:
			if body, err := req.GetBody(); err == nil {
				b, _ := io.ReadAll(io.LimitReader(body, maxDebugBody+1))
				body.Close()
				if len(b) > maxDebugBody {
					b = append(b[:maxDebugBody], "..."...)
				}
				line += " " + string(b)
			}
		}
		fmt.Fprintln(t.debug, line)
	}
	resp, err := t.next.RoundTrip(req)
	if err != nil {
		if t.debug != nil {
			fmt.Fprintf(t.debug, "berth: debug: < error after %s: %v\n", time.Since(start).Round(time.Millisecond), err)
		}
		return resp, err
	}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		// A stream (berth watch): read by the caller as it comes.
		if t.debug != nil {
			fmt.Fprintf(t.debug, "berth: debug: < %s (%s, a stream)\n", resp.Status, time.Since(start).Round(time.Millisecond))
		}
		return resp, nil
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	if err != nil {
		return resp, err
	}
	if t.debug != nil {
		fmt.Fprintf(t.debug, "berth: debug: < %s (%s, %d bytes, request id %s)\n", resp.Status,
			time.Since(start).Round(time.Millisecond), len(body), orNone(requestID(body)))
	}
	if !token {
		t.mu.Lock()
		t.last = body
		t.mu.Unlock()
	}
	return resp, nil
}

// lastBody returns the raw body of the last API answer and forgets it.
func (t *transport) lastBody() []byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	b := t.last
	t.last = nil
	return b
}

// redactURL drops credentials and query values other than grant_type.
func redactURL(u *url.URL) string {
	c := *u
	c.User = nil
	if c.RawQuery != "" {
		q := c.Query()
		for k := range q {
			if k != "grant_type" {
				q.Set(k, "REDACTED")
			}
		}
		c.RawQuery = q.Encode()
	}
	return c.String()
}

// requestID pulls "RequestId" out of an answer for the debug log.
func requestID(body []byte) string {
	var v struct{ RequestId string }
	_ = json.Unmarshal(body, &v)
	return v.RequestId
}
