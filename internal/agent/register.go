package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"time"
)

// registerTimeout bounds one registration request.
const registerTimeout = 15 * time.Second

// registerPatience bounds how long register keeps retrying a broker that
// sheds registrations (503, or 429 past its rate limit) with a Retry-After;
// the agent waits that long plus a random part of it again (so that a fleet
// refused at once does not come back at once), 1 s when none is named.
const registerPatience = 5 * time.Minute

// errRegistrationUnavailable means the broker does not serve /agent/register
// (it runs without agent authorization); the agent then connects anonymously.
var errRegistrationUnavailable = errors.New("broker offers no agent registration")

// retryLater is a refusal that names when to try again.
type retryLater struct {
	status string
	wait   time.Duration
}

func (e *retryLater) Error() string {
	return fmt.Sprintf("register agent: broker answered %s; retry in %s", e.status, e.wait)
}

// register obtains agent client credentials from the broker (RFC 7591 style):
// POST {"software_statement","client_name","server_id"} → 201 {"client_id",
// "client_secret","client_id_issued_at"}. The broker answers an agent that
// registers again for the same server ID before it ever linked (its answer
// was lost) with the same client and a new secret, so retries leave no
// unused clients behind. A 503 or 429 with Retry-After is retried after that
// wait and a jitter of up to as long again, on the same connection. A
// registration that succeeds leaves its connection idle in hc, for the
// caller's next request (the agent's link upgrades it: see connTransport);
// the caller closes hc's idle connections when done. A registration that
// fails closes them. The error never contains the statement or the secret.
func register(ctx context.Context, hc *http.Client, url, statement, clientName, serverID string) (*credentials, error) {
	deadline := time.Now().Add(registerPatience)
	for {
		c, err := registerOnce(ctx, hc, url, statement, clientName, serverID)
		var later *retryLater
		if !errors.As(err, &later) || time.Now().Add(later.wait).After(deadline) {
			if err != nil {
				hc.CloseIdleConnections()
			}
			return c, err
		}
		wait := later.wait + rand.N(later.wait+1)
		if !sleep(ctx, wait) {
			return nil, ctx.Err()
		}
	}
}

// registerOnce makes one registration request.
func registerOnce(ctx context.Context, hc *http.Client, url, statement, clientName, serverID string) (*credentials, error) {
	ctx, cancel := context.WithTimeout(ctx, registerTimeout)
	defer cancel()
	body, err := json.Marshal(map[string]string{"software_statement": statement, "client_name": clientName, "server_id": serverID})
	if err != nil {
		return nil, fmt.Errorf("register agent: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("register agent: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("register agent: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return nil, fmt.Errorf("register agent: read response: %w", err)
	}
	switch resp.StatusCode {
	case http.StatusCreated, http.StatusOK:
	case http.StatusNotFound, http.StatusMethodNotAllowed:
		return nil, errRegistrationUnavailable
	case http.StatusServiceUnavailable, http.StatusTooManyRequests:
		// At least 1 s (also when absent), at most a minute.
		wait := min(max(retryAfter(resp.Header, time.Now()), time.Second), time.Minute)
		return nil, &retryLater{status: resp.Status, wait: wait}
	default:
		var e struct {
			Error string `json:"error"`
		}
		_ = json.Unmarshal(data, &e)
		if e.Error == "" {
			e.Error = "no error code"
		}
		return nil, fmt.Errorf("register agent: broker answered %s (%.64q)", resp.Status, e.Error)
	}
	var c credentials
	if err := json.Unmarshal(data, &c); err != nil || c.ClientID == "" || c.ClientSecret == "" {
		return nil, errors.New("register agent: malformed broker response")
	}
	return &c, nil
}
