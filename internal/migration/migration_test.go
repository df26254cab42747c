package migration_test

import (
	"io/fs"
	"testing"
	"testing/fstest"

	"github.com/berth-dev/berth/internal/migration"
)

func TestLoad(t *testing.T) {
	tests := []struct {
		name  string
		files []string
		want  []int
		ok    bool
	}{
		{"ordered by number", []string{"0010_b.sql", "0002_a.sql", "0001_init.sql"}, []int{1, 2, 10}, true},
		{"empty", nil, nil, true},
		{"no number", []string{"init.sql"}, nil, false},
		{"zero", []string{"0000_x.sql"}, nil, false},
		{"same version", []string{"0001_a.sql", "01_b.sql"}, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fsys := fstest.MapFS{"m": {Mode: fs.ModeDir | 0o755}}
			for _, f := range tt.files {
				fsys["m/"+f] = &fstest.MapFile{Data: []byte("-- " + f)}
			}
			ms, err := migration.Load(fsys, "m")
			if (err == nil) != tt.ok {
				t.Fatalf("Load: %v", err)
			}
			if len(ms) != len(tt.want) {
				t.Fatalf("got %d migrations, want %d", len(ms), len(tt.want))
			}
			for i, m := range ms {
				if m.Version != tt.want[i] || m.SQL != "-- "+m.Name {
					t.Errorf("migration %d: %+v", i, m)
				}
			}
		})
	}
}
