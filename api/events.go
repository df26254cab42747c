package api

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Event is one event of GET /berth/v1/events (berth's extension,
// docs/events.md): the data of a server-sent event whose id is Id and whose
// event name is Type.
type Event struct {
	Id        int64          `json:"Id"`
	Time      time.Time      `json:"Time"`
	Type      string         `json:"Type"`
	SessionId string         `json:"SessionId,omitempty"`
	ServerId  string         `json:"ServerId,omitempty"`
	Owner     string         `json:"Owner,omitempty"`
	Data      map[string]any `json:"Data,omitempty"`
}

// WatchRequest selects the events of WatchEvents.
type WatchRequest struct {
	// Types keeps events of these types ("session.*" matches a prefix).
	Types []string
	// Owner keeps the events of one owner's sessions.
	Owner string
	// After resumes after this event ID (0: from the oldest kept).
	After int64
}

// MaxEventBytes bounds one event's line on the stream.
const MaxEventBytes = 1 << 20

// ErrStreamEnded means the broker closed the stream (a restart, or this
// reader fell too far behind); WatchEvents' caller resumes after the last
// event it received.
var ErrStreamEnded = errors.New("the broker closed the event stream")

// WatchEvents reads GET /berth/v1/events and calls fn with each event, in
// ID order, until ctx ends (nil), fn fails (its error) or the stream ends
// (ErrStreamEnded, or the transport's error). The stream itself has no time
// limit: the client's Transport is used without its Timeout. To resume,
// call it again with After set to the last event's Id.
func (c *Client) WatchEvents(ctx context.Context, in WatchRequest, fn func(Event) error) error {
	tok, err := c.Token(ctx)
	if err != nil {
		return err
	}
	q := url.Values{}
	for _, t := range in.Types {
		q.Add("type", t)
	}
	if in.Owner != "" {
		q.Set("owner", in.Owner)
	}
	u := strings.TrimRight(c.BrokerURL, "/") + "/berth/v1/events"
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "text/event-stream")
	if in.After > 0 {
		req.Header.Set("Last-Event-ID", strconv.FormatInt(in.After, 10))
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	hc := *c.http()
	hc.Timeout = 0
	resp, err := hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		e := &Error{StatusCode: resp.StatusCode, Message: strings.TrimSpace(string(body))}
		var er struct {
			Error string `json:"error"`
			Code  string `json:"code"`
		}
		if json.Unmarshal(body, &er) == nil && er.Error != "" {
			e.Message, e.Code = er.Error, er.Code
		}
		return e
	}
	err = ReadEvents(resp.Body, fn)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// ReadEvents parses a text/event-stream of berth events from r and calls fn
// with each, until r ends (ErrStreamEnded) or fn or the read fails.
func ReadEvents(r io.Reader, fn func(Event) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), MaxEventBytes)
	var data strings.Builder
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if data.Len() == 0 {
				continue
			}
			var e Event
			if err := json.Unmarshal([]byte(data.String()), &e); err != nil {
				return fmt.Errorf("decode event: %w", err)
			}
			data.Reset()
			if err := fn(e); err != nil {
				return err
			}
		case strings.HasPrefix(line, "data:"):
			if data.Len() > 0 {
				data.WriteByte('\n')
			}
			data.WriteString(strings.TrimPrefix(strings.TrimPrefix(line, "data:"), " "))
		}
		// id:, event:, retry: and comments (heartbeats) need nothing: the
		// data holds the ID and the type.
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return ErrStreamEnded
}
