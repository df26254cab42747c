package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// ExtendError is the broker's refusal of an extension: its HTTP status (a
// 4xx, or 503 while the broker cannot extend) and its message, which is
// safe to show to the user.
type ExtendError struct {
	Status  int
	Message string
}

// Error implements error.
func (e *ExtendError) Error() string { return e.Message }

// HTTPStatus is the status the web gateway answers the page with.
func (e *ExtendError) HTTPStatus() int { return e.Status }

// extendRequest is the body of POST /agent/sessions/{id}/extend.
type extendRequest struct {
	User      string `json:"user"`
	BySeconds int64  `json:"by_seconds"`
}

// extendResponse is its answer.
type extendResponse struct {
	Deadline time.Time `json:"deadline"`
}

// ExtendSession asks the broker to extend the lifetime of session id on
// behalf of user (the session page's user: the broker refuses anyone but
// the session's owner) by by (0: the broker's default), through POST
// /agent/sessions/{id}/extend on the broker's agent port with the agent
// client credentials of the running link (else the stored ones). It
// returns the session's new deadline. A refusal by the broker is an
// *ExtendError; other errors mean no broker could be asked.
func (a *Agent) ExtendSession(ctx context.Context, id, user string, by time.Duration) (time.Time, error) {
	if by < 0 {
		return time.Time{}, &ExtendError{Status: http.StatusBadRequest, Message: "by: must not be negative"}
	}
	eps, err := a.check()
	if err != nil {
		return time.Time{}, err
	}
	creds := a.state().creds.Load()
	if creds == nil {
		creds, _ = loadCredentials(a.StateDir)
	}
	if creds == nil {
		return time.Time{}, errors.New("extend session: the agent has no client credentials yet")
	}
	body, err := json.Marshal(extendRequest{User: user, BySeconds: int64(by / time.Second)})
	if err != nil {
		return time.Time{}, err
	}
	tr := &http.Transport{TLSClientConfig: a.TLSConfig.Clone(), TLSHandshakeTimeout: dialTimeout}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	var lastErr error
	for _, ep := range eps {
		u := strings.TrimSuffix(ep.register, "/register") + "/sessions/" + url.PathEscape(id) + "/extend"
		deadline, err := postExtend(ctx, hc, u, creds, body)
		var ee *ExtendError
		if err == nil || errors.As(err, &ee) && ee.Status != http.StatusServiceUnavailable {
			return deadline, err
		}
		lastErr = err
	}
	return time.Time{}, lastErr
}

// postExtend sends one extension request.
func postExtend(ctx context.Context, hc *http.Client, u string, creds *credentials, body []byte) (time.Time, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return time.Time{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.SetBasicAuth(creds.ClientID, creds.ClientSecret)
	resp, err := hc.Do(req)
	if err != nil {
		return time.Time{}, fmt.Errorf("extend session: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<10))
	if err != nil {
		return time.Time{}, fmt.Errorf("extend session: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		msg := strings.TrimSpace(string(data))
		if len(msg) > 500 {
			msg = msg[:500]
		}
		if msg == "" {
			msg = "the broker answered " + resp.Status
		}
		status := resp.StatusCode
		if status < 400 || status > 599 || status >= 500 && status != http.StatusServiceUnavailable {
			status = http.StatusBadGateway
		}
		return time.Time{}, &ExtendError{Status: status, Message: msg}
	}
	var out extendResponse
	if err := json.Unmarshal(data, &out); err != nil || out.Deadline.IsZero() {
		return time.Time{}, &ExtendError{Status: http.StatusBadGateway, Message: "the broker sent an unreadable answer"}
	}
	return out.Deadline, nil
}
