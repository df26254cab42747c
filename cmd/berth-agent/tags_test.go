package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestLoadTags(t *testing.T) {
	dir := t.TempDir()
	mustWrite(t, filepath.Join(dir, "10-site.toml"), "site = \"paris\"\nrack = \"r1\"\ngpu = \"none\"\n")
	mustWrite(t, filepath.Join(dir, "20-gpu.toml"), "# later files win\ngpu = \"t4\"\nram_gb = 64\nssd = true\nratio = 1.5\n\"dcv:pool\" = 'cad'\n\"a.b\" = \"dotted key\"\n")
	mustWrite(t, filepath.Join(dir, "05-first.toml"), "site = \"lyon\"\n")
	mustWrite(t, filepath.Join(dir, "notes.txt"), "site = \"ignored\"\n")
	mustWrite(t, filepath.Join(dir, ".30-editor.toml"), "site = \"ignored\"\n")
	mustWrite(t, filepath.Join(dir, "sub.toml", "x.toml"), "site = \"ignored\"\n") // a directory
	got, err := LoadTags(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"site": "paris", "rack": "r1", "gpu": "t4", "ram_gb": "64", "ssd": "true", "ratio": "1.5",
		"dcv:pool": "cad", "a.b": "dotted key",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("tags (-want +got):\n%s", diff)
	}

	for _, tt := range []struct{ name, file, want string }{
		{"array", "zones = [\"a\", \"b\"]\n", `key "zones": a []interface {} is not a tag value`},
		{"table", "[site]\nname = \"x\"\n", `key "site": a table is not a tag value`},
		{"dotted", "site.name = \"x\"\n", `key "site": a table`},
		{"syntax", "site = \n", "line 1"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d := t.TempDir()
			mustWrite(t, filepath.Join(d, "bad.toml"), tt.file)
			_, err := LoadTags(d)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "bad.toml") {
				t.Errorf("err = %v, want one naming bad.toml and %q", err, tt.want)
			}
		})
	}
	t.Run("missing folder", func(t *testing.T) {
		got, err := LoadTags(filepath.Join(dir, "nope"))
		if err != nil || got != nil {
			t.Errorf("got %v, %v; want no tags", got, err)
		}
	})
	t.Run("empty folder", func(t *testing.T) {
		got, err := LoadTags(t.TempDir())
		if err != nil || got != nil {
			t.Errorf("got %v, %v; want no tags", got, err)
		}
	})
}
