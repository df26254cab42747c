package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"
)

// registerTimeout bounds one registration request.
const registerTimeout = 15 * time.Second

// errRegistrationUnavailable means the broker does not serve /agent/register
// (it runs without agent authorization); the agent then connects anonymously.
var errRegistrationUnavailable = errors.New("broker offers no agent registration")

// register obtains agent client credentials from the broker (RFC 7591 style):
// POST {"software_statement","client_name"} → 201 {"client_id","client_secret",
// "client_id_issued_at"}. The error never contains the statement or the secret.
func register(ctx context.Context, hc *http.Client, url, statement, clientName string) (*credentials, error) {
	ctx, cancel := context.WithTimeout(ctx, registerTimeout)
	defer cancel()
	body, err := json.Marshal(map[string]string{"software_statement": statement, "client_name": clientName})
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
