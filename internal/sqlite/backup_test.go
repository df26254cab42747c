package sqlite_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/berth-dev/berth/internal/broker"
)

// TestStore_Backup copies a store in use and opens the copy as a store with
// the same sessions.
func TestStore_Backup(t *testing.T) {
	dir := t.TempDir()
	s := MustOpen(t, filepath.Join(dir, "berth.db"))
	var ss []*broker.Session
	for i := range 50 {
		ss = append(ss, &broker.Session{ID: "s" + string(rune('A'+i)), Owner: "alice", Type: broker.TypeVirtual, State: broker.StateCreating})
	}
	if err := s.InsertSessions(t.Context(), ss); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, "backup", "copy.db")
	if err := os.Mkdir(filepath.Dir(dst), 0o700); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, path string
		ok         bool
	}{
		{"new file", dst, true},
		{"existing file", dst, false},
		{"the database itself", filepath.Join(dir, "berth.db"), false},
		{"missing directory", filepath.Join(dir, "nope", "x.db"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := s.Backup(t.Context(), tt.path)
			if (err == nil) != tt.ok {
				t.Fatalf("Backup(%s): %v", tt.path, err)
			}
		})
	}
	fi, err := os.Stat(dst)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("backup file: %v %v", fi, err)
	}
	if _, err := os.Stat(dst + ".partial"); !os.IsNotExist(err) {
		t.Fatalf("a partial file is left: %v", err)
	}
	c := MustOpen(t, dst)
	got, err := c.ListSessions(t.Context(), broker.SessionFilter{Owner: "alice"})
	if err != nil || len(got) != 50 {
		t.Fatalf("the copy has %d sessions (%v), want 50", len(got), err)
	}
}
