package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/broker"
)

// OpStreamEvents names GET /berth/v1/events (berth's extension,
// docs/events.md).
const OpStreamEvents = "StreamEvents"

// eventsHeartbeat is the period of the stream's comment lines, which keep
// proxies and load balancers from closing an idle stream.
const eventsHeartbeat = 15 * time.Second

// maxEventFilters bounds the type filters of one stream.
const maxEventFilters = 32

// eventFilter reads the stream's filters and resume point: the type
// (repeatable) and owner query parameters, and the Last-Event-ID header or,
// without it, the after query parameter.
func eventFilter(r *http.Request) (broker.EventFilter, error) {
	q := r.URL.Query()
	var f broker.EventFilter
	for k := range q {
		switch k {
		case "type", "owner", "after":
		default:
			return f, badRequest("%s: unknown query parameter (type, owner and after are known)", k)
		}
	}
	if len(q["type"]) > maxEventFilters {
		return f, badRequest("type: at most %d, got %d", maxEventFilters, len(q["type"]))
	}
	for _, t := range q["type"] {
		if !validEventType(t) {
			return f, badRequest("type: %q is not an event type (letters, digits, '_' and '.', optionally ending in \".*\")", t)
		}
		f.Types = append(f.Types, t)
	}
	if len(q["owner"]) > 1 {
		return f, badRequest("owner: given %d times, at most once", len(q["owner"]))
	}
	f.Owner = q.Get("owner")
	if len(f.Owner) > 256 {
		return f, badRequest("owner: at most 256 bytes")
	}
	after, field := r.Header.Get("Last-Event-ID"), "Last-Event-ID"
	if after == "" {
		after, field = q.Get("after"), "after"
	}
	if after != "" {
		id, err := strconv.ParseInt(strings.TrimSpace(after), 10, 64)
		if err != nil || id < 0 {
			return f, badRequest("%s: must be an event ID (an integer >= 0), got %q", field, after)
		}
		f.AfterID = id
	}
	return f, nil
}

// validEventType reports whether t may name an event type or a prefix.
func validEventType(t string) bool {
	t = strings.TrimSuffix(t, ".*")
	if t == "" || len(t) > 64 {
		return false
	}
	for _, c := range t {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '.':
		default:
			return false
		}
	}
	return true
}

func badRequest(format string, args ...any) error {
	return &httpError{status: http.StatusBadRequest, msg: fmt.Sprintf(format, args...), code: broker.CodeInvalidInput}
}

// eventToAPI converts an event for the wire.
func eventToAPI(e *broker.Event) api.Event {
	return api.Event{Id: e.ID, Time: e.Time.UTC(), Type: e.Type, SessionId: e.SessionID, ServerId: e.ServerID, Owner: e.Owner, Data: e.Data}
}

// writeEvent appends e to b as a server-sent event.
func writeEvent(b *bytes.Buffer, e *broker.Event) error {
	data, err := json.Marshal(eventToAPI(e))
	if err != nil {
		return err
	}
	fmt.Fprintf(b, "id: %d\nevent: %s\ndata: %s\n\n", e.ID, e.Type, data)
	return nil
}

// streamEvents serves GET /berth/v1/events: the events as server-sent
// events, after Last-Event-ID, until the client leaves. A client too slow
// to keep up is disconnected and resumes with Last-Event-ID.
func (s *Server) streamEvents(w http.ResponseWriter, r *http.Request) error {
	f, err := eventFilter(r)
	if err != nil {
		return err
	}
	sub, err := s.Service.Subscribe(r.Context(), f)
	if errors.Is(err, broker.ErrEventsOff) {
		return &httpError{status: http.StatusNotFound, msg: "events are not enabled on this broker", code: "EVENTS_DISABLED"}
	}
	if err != nil {
		return err
	}
	defer sub.Close()
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	var b bytes.Buffer
	b.WriteString(": berth events\nretry: 2000\n\n")
	flush := func() bool {
		if _, err := w.Write(b.Bytes()); err != nil {
			return false
		}
		b.Reset()
		return rc.Flush() == nil
	}
	if !flush() {
		return nil
	}
	beat := time.NewTicker(eventsHeartbeat)
	defer beat.Stop()
	for {
		select {
		case <-r.Context().Done():
			return nil
		case <-beat.C:
			b.WriteString(": keepalive\n\n")
		case e, ok := <-sub.C:
			if !ok {
				if err := sub.Err(); errors.Is(err, broker.ErrSubscriberSlow) {
					s.Logger.Warn("event stream closed: the client fell behind", "after", f.AfterID)
				} else if err != nil && r.Context().Err() == nil {
					s.Logger.Error("event stream", "err", err)
				}
				return nil
			}
			if err := writeEvent(&b, e); err != nil {
				return nil
			}
			// Write what else is waiting with it, up to a point.
		more:
			for b.Len() < 64<<10 {
				select {
				case e, ok := <-sub.C:
					if !ok {
						break more
					}
					if err := writeEvent(&b, e); err != nil {
						return nil
					}
				default:
					break more
				}
			}
		}
		if !flush() {
			return nil
		}
	}
}
