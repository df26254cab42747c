package agent

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Files in Agent.StateDir.
const (
	serverIDFile    = "server-id"
	credentialsFile = "agent-credentials.json"
)

// LoadOrCreateServerID returns the server ID kept in stateDir, creating a random
// one on first use, so that the ID is stable across restarts and changes of
// hostname or IP. It creates stateDir (0700) if needed.
func LoadOrCreateServerID(stateDir string) (string, error) {
	if stateDir == "" {
		return "", errors.New("load server id: no state directory")
	}
	path := filepath.Join(stateDir, serverIDFile)
	data, err := os.ReadFile(path)
	if err == nil {
		id := strings.TrimSpace(string(data))
		if id == "" || len(id) > 256 {
			return "", fmt.Errorf("load server id: %s holds no valid id", path)
		}
		return id, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("load server id: %w", err)
	}
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("create server id: %w", err)
	}
	id := hex.EncodeToString(b[:])
	if err := writeFileAtomic(stateDir, serverIDFile, []byte(id+"\n")); err != nil {
		return "", fmt.Errorf("create server id: %w", err)
	}
	return id, nil
}

// credentials are the agent client credentials the broker issued at registration.
type credentials struct {
	ClientID     string `json:"client_id"`
	ClientSecret string `json:"client_secret"`
	IssuedAt     int64  `json:"client_id_issued_at,omitempty"`
}

// loadCredentials returns the stored credentials, or nil if there are none.
func loadCredentials(stateDir string) (*credentials, error) {
	if stateDir == "" {
		return nil, nil
	}
	data, err := os.ReadFile(filepath.Join(stateDir, credentialsFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("load agent credentials: %w", err)
	}
	var c credentials
	if err := json.Unmarshal(data, &c); err != nil || c.ClientID == "" || c.ClientSecret == "" {
		return nil, fmt.Errorf("load agent credentials: %s is malformed", filepath.Join(stateDir, credentialsFile))
	}
	return &c, nil
}

// saveCredentials stores c in a 0600 file; with no state directory it does nothing.
func saveCredentials(stateDir string, c *credentials) error {
	if stateDir == "" {
		return nil
	}
	data, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("save agent credentials: %w", err)
	}
	if err := writeFileAtomic(stateDir, credentialsFile, data); err != nil {
		return fmt.Errorf("save agent credentials: %w", err)
	}
	return nil
}

// removeCredentials deletes the stored credentials.
func removeCredentials(stateDir string) error {
	if stateDir == "" {
		return nil
	}
	err := os.Remove(filepath.Join(stateDir, credentialsFile))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove agent credentials: %w", err)
	}
	return nil
}

// writeFileAtomic writes dir/name with mode 0600 through a temporary file and a
// rename, so a crash never leaves a half-written file.
func writeFileAtomic(dir, name string, data []byte) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+name+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after the rename
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, name))
}
