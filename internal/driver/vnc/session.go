package vnc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"time"

	"github.com/berth-dev/berth/internal/agent"
	"github.com/berth-dev/berth/internal/agentproto"
	"github.com/berth-dev/berth/internal/permfile"
)

// recordVersion is the version of the state file format.
const recordVersion = 1

// record is what the driver keeps about a session in StateDir/sessions/ID.json:
// enough to report, screenshot, bridge and delete it after an agent restart.
// The server, bus (the session's dbus-daemon), init and autorun processes
// each lead their own session and process group, so their PIDs are also
// their PGIDs.
type record struct {
	Version     int    `json:"version"`
	ID          string `json:"id"`
	Name        string `json:"name,omitempty"`
	Owner       string `json:"owner"`
	Type        string `json:"type"`
	UID         int    `json:"uid"`
	GID         int    `json:"gid"`
	Home        string `json:"home"`
	Display     int    `json:"display"`
	ServerPID   int    `json:"server_pid"`   // Xvnc (x0vncserver for CONSOLE)
	ServerStart uint64 `json:"server_start"` // its start time in clock ticks, against PID reuse
	InitPID     int    `json:"init_pid,omitempty"`
	AutorunPID  int    `json:"autorun_pid,omitempty"`
	BusPID      int    `json:"bus_pid,omitempty"`
	Dir         string `json:"dir"`    // /run/user/UID/berth-ID
	Socket      string `json:"socket"` // the VNC unix socket
	Cookie      string `json:"cookie"` // the X authority file
	// CookieHex is the VIRTUAL session's X cookie: the agent never reads it
	// back from the owner's directory.
	CookieHex   string    `json:"cookie_hex,omitempty"`
	Log         string    `json:"log"`
	MaxClients  int64     `json:"max_clients,omitempty"`
	StorageRoot string    `json:"storage_root,omitempty"`
	Created     time.Time `json:"created"`
	Permissions string    `json:"permissions,omitempty"`
	// Ready is set once the session was READY and its programs started; a
	// record without it belongs to a start that never finished.
	Ready bool `json:"ready"`
	// Request is the create request as the broker sent it.
	Request agent.CreateRequest `json:"request"`
}

// session is a live session of the driver.
type session struct {
	rec   record
	perms *permfile.File
	state string // StateCreating or StateReady
	// deleting is set once Delete (or the death of its X server) began; the
	// session is no longer listed nor bridged.
	deleting bool
	// started is closed when Create's start has finished; startErr then holds
	// its failure. cancelStart stops a start under way.
	started     chan struct{}
	startErr    error
	cancelStart context.CancelFunc

	conns          int
	lastDisconnect time.Time

	// input is the last input the driver knows of (activity.go);
	// reportedInput is what Sessions reports as LastInputTime, changed at
	// reportedAt, at most once per activity interval.
	input         time.Time
	reportedInput time.Time
	reportedAt    time.Time
	// groups are the owner's NSS groups, looked up once.
	groups []string

	// pamEnv is the environment of the server's PAM session, for the
	// session's other programs.
	pamEnv []string

	// procs are the session's processes the monitor watches: the server and
	// (for processes this Driver started) bus, init and autorun, to reap
	// them.
	procs []*proc
}

// proc is a watched process.
type proc struct {
	pid   int
	start uint64 // start time (clock ticks), 0 if unknown
	role  string // "server", "bus", "init", "autorun"

	mu    sync.Mutex
	child bool // started by this Driver: reap it with wait4; guarded by mu
	done  bool // guarded by mu
}

func (s *session) infoLocked() agentproto.Session {
	return agentproto.Session{
		ID:                    s.rec.ID,
		Name:                  s.rec.Name,
		Owner:                 s.rec.Owner,
		Type:                  s.rec.Type,
		State:                 s.state,
		MaxConcurrentClients:  s.rec.MaxClients,
		StorageRoot:           s.rec.StorageRoot,
		CreationTime:          s.rec.Created,
		LastDisconnectionTime: s.lastDisconnect,
		NumConnections:        int64(s.conns),
		LastInputTime:         s.reportedInput,
		OwnerGroups:           s.groups,
	}
}

// idPattern is what the driver accepts as a session ID: it names files and
// directories, and the VNC socket path must stay under 108 bytes.
var idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`)

func validID(id string) bool { return idPattern.MatchString(id) }

func (d *Driver) recordPath(id string) string { return filepath.Join(d.stateDir, id+".json") }

// saveRecord writes the session's state file atomically (0600).
func (d *Driver) saveRecord(r *record) error {
	r.Version = recordVersion
	data, err := json.MarshalIndent(r, "", "\t")
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(d.stateDir, "."+r.ID+".*.tmp")
	if err != nil {
		return fmt.Errorf("save session state: %w", err)
	}
	tmp := f.Name()
	_, err = f.Write(append(data, '\n'))
	if err == nil {
		err = f.Chmod(0o600)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, d.recordPath(r.ID))
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("save session state: %w", err)
	}
	return nil
}

// loadRecords reads every state file; files it cannot read are removed.
func (d *Driver) loadRecords() []record {
	entries, err := os.ReadDir(d.stateDir)
	if err != nil {
		d.log.Error("read session state", "err", err)
		return nil
	}
	var out []record
	for _, e := range entries {
		name := e.Name()
		if filepath.Ext(name) == ".tmp" {
			os.Remove(filepath.Join(d.stateDir, name))
			continue
		}
		if filepath.Ext(name) != ".json" || !e.Type().IsRegular() {
			continue
		}
		p := filepath.Join(d.stateDir, name)
		data, err := os.ReadFile(p)
		var r record
		if err == nil {
			err = json.Unmarshal(data, &r)
		}
		if err == nil && (r.Version != recordVersion || !validID(r.ID) || r.ID+".json" != name) {
			err = errors.New("unexpected content")
		}
		if err != nil {
			d.log.Warn("dropping unreadable session state file", "file", p, "err", err)
			os.Remove(p)
			continue
		}
		out = append(out, r)
	}
	return out
}
