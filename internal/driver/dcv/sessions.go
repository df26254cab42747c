package dcv

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/agentproto"
)

// dcvSession is a session object of `dcv list-sessions -j` and
// `dcv describe-session -j`; only the keys berth uses.
type dcvSession struct {
	ID                    string          `json:"id"`
	Owner                 string          `json:"owner"`
	Name                  string          `json:"name"`
	Type                  string          `json:"type"`
	NumConnections        json.RawMessage `json:"num-of-connections"`
	CreationTime          string          `json:"creation-time"`
	LastDisconnectionTime string          `json:"last-disconnection-time"`
	StorageRoot           string          `json:"storage-root"`
}

// session converts a DCV session object; every listed session is READY.
func (s *dcvSession) session() agentproto.Session {
	out := agentproto.Session{
		ID:          s.ID,
		Name:        s.Name,
		Owner:       s.Owner,
		Type:        strings.ToUpper(s.Type),
		State:       agentproto.StateReady,
		StorageRoot: s.StorageRoot,
	}
	if out.Type == "" {
		out.Type = "VIRTUAL"
	}
	out.NumConnections = parseCount(s.NumConnections)
	out.CreationTime = parseTime(s.CreationTime)
	out.LastDisconnectionTime = parseTime(s.LastDisconnectionTime)
	return out
}

// parseCount reads a number that DCV versions write as a number or a string.
func parseCount(raw json.RawMessage) int64 {
	var n int64
	if json.Unmarshal(raw, &n) == nil {
		return n
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		n, _ = strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	}
	return n
}

// parseTime reads DCV's timestamps ("2019-05-13T13:21:19.262883Z"); "" and
// unreadable values give the zero time.
func parseTime(s string) time.Time {
	if s == "" {
		return time.Time{}
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}
	}
	return t.UTC()
}

// list runs `dcv list-sessions -j`.
func (d *Driver) list(ctx context.Context) ([]agentproto.Session, error) {
	out, err := d.run(ctx, "list-sessions", "-j")
	if err != nil {
		return nil, err
	}
	var raw []dcvSession
	if err := json.Unmarshal(out, &raw); err != nil {
		return nil, fmt.Errorf("dcv list-sessions: unreadable output: %v", err)
	}
	list := make([]agentproto.Session, 0, len(raw))
	for i := range raw {
		if raw[i].ID == "" {
			continue
		}
		list = append(list, raw[i].session())
	}
	return list, nil
}

// errNoSession is describe's answer for a session the DCV server lacks.
var errNoSession = errors.New("session not found")

// Describe runs `dcv describe-session ID -j`. It returns an error wrapping
// a not-found error when the DCV server has no such session.
func (d *Driver) Describe(ctx context.Context, id string) (agentproto.Session, error) {
	if err := checkID(id); err != nil {
		return agentproto.Session{}, err
	}
	out, err := d.run(ctx, "describe-session", id, "-j")
	if err != nil {
		var ce *cmdError
		if errors.As(err, &ce) && ce.exit > 0 {
			// dcv exits non-zero for an unknown session; ask the list to
			// tell that apart from a server that does not answer.
			if list, lerr := d.list(ctx); lerr == nil && !containsID(list, id) {
				return agentproto.Session{}, fmt.Errorf("%w: %s", errNoSession, id)
			}
		}
		return agentproto.Session{}, err
	}
	var s dcvSession
	if err := json.Unmarshal(out, &s); err != nil {
		return agentproto.Session{}, fmt.Errorf("dcv describe-session: unreadable output: %v", err)
	}
	if s.ID == "" {
		s.ID = id
	}
	return s.session(), nil
}

func containsID(list []agentproto.Session, id string) bool {
	for _, s := range list {
		if s.ID == id {
			return true
		}
	}
	return false
}

// Delete implements agent.Driver with `dcv close-session ID`. Deleting a
// session the DCV server does not have returns nil.
func (d *Driver) Delete(ctx context.Context, id string) error {
	if err := checkID(id); err != nil {
		return nil // such a session cannot exist here
	}
	d.mu.Lock()
	d.closing[id] = true
	d.mu.Unlock()
	_, err := d.run(ctx, "close-session", id)
	if err != nil {
		var ce *cmdError
		if errors.As(err, &ce) && ce.exit > 0 {
			if list, lerr := d.list(ctx); lerr == nil && !containsID(list, id) {
				err = nil
			}
		}
	}
	if err != nil {
		d.mu.Lock()
		delete(d.closing, id)
		d.mu.Unlock()
		return err
	}
	d.removeScript(id)
	if changed, _ := d.refresh(ctx); changed {
		d.notify()
	}
	return nil
}

// Screenshot implements agent.Screenshotter with `dcv get-screenshot
// --max-width W --max-height H --format PNG|JPEG --primary -j ID`: one image,
// of the primary display.
func (d *Driver) Screenshot(ctx context.Context, id string, maxW, maxH int, format string) ([]agentproto.Image, error) {
	if err := checkID(id); err != nil {
		return nil, err
	}
	if format == "" {
		format = agentproto.FormatPNG
	}
	if format != agentproto.FormatPNG && format != agentproto.FormatJPEG {
		return nil, fmt.Errorf("unsupported screenshot format %q", format)
	}
	if maxW < 0 || maxH < 0 {
		return nil, errors.New("screenshot bounds must not be negative")
	}
	args := []string{"get-screenshot"}
	if maxW > 0 {
		args = append(args, "--max-width", strconv.Itoa(maxW))
	}
	if maxH > 0 {
		args = append(args, "--max-height", strconv.Itoa(maxH))
	}
	args = append(args, "--format", strings.ToUpper(format), "--primary", "-j", id)
	out, err := d.run(ctx, args...)
	if err != nil {
		return nil, err
	}
	var shot struct {
		Format string `json:"format"`
		Base64 string `json:"base64"`
	}
	if err := json.Unmarshal(out, &shot); err != nil {
		return nil, fmt.Errorf("dcv get-screenshot: unreadable output: %v", err)
	}
	data, err := base64.StdEncoding.DecodeString(strings.TrimSpace(shot.Base64))
	if err != nil || len(data) == 0 {
		return nil, errors.New("dcv get-screenshot: the image is not valid base64")
	}
	f := strings.ToLower(shot.Format)
	switch f {
	case "", "png":
		f = agentproto.FormatPNG
		if shot.Format == "" {
			f = format
		}
	case "jpeg", "jpg":
		f = agentproto.FormatJPEG
	default:
		return nil, fmt.Errorf("dcv get-screenshot: unexpected image format %q", shot.Format)
	}
	return []agentproto.Image{{Format: f, Data: data, CreationTime: time.Now().UTC(), Primary: true}}, nil
}

// SetPermissions implements agent.PermissionSetter with `dcv set-permissions
// --session ID --file FILE`, FILE a 0600 temporary copy of the text.
func (d *Driver) SetPermissions(ctx context.Context, id, file string) error {
	if err := checkID(id); err != nil {
		return err
	}
	path, err := d.writePermissions(file)
	if err != nil {
		return err
	}
	defer os.Remove(path)
	_, err = d.run(ctx, "set-permissions", "--session", id, "--file", path)
	return err
}

// writePermissions writes permissions file text to a new 0600 file in
// StateDir and returns its path; the caller removes it.
func (d *Driver) writePermissions(text string) (string, error) {
	f, err := os.CreateTemp(d.cfg.StateDir, "permissions-*.txt")
	if err != nil {
		return "", fmt.Errorf("write permissions file: %v", errors.Unwrap(err))
	}
	if _, err := f.WriteString(text); err != nil {
		f.Close()
		os.Remove(f.Name())
		return "", fmt.Errorf("write permissions file: %v", err)
	}
	if err := f.Close(); err != nil {
		os.Remove(f.Name())
		return "", fmt.Errorf("write permissions file: %v", err)
	}
	return f.Name(), nil
}
