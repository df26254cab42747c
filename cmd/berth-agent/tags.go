package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// LoadTags reads the host's tags from the *.toml files in folder, in
// alphabetical order, each a list of `key = "value"` lines; a key in a later
// file overrides the same key in an earlier one. Numbers, booleans and dates
// are taken as their text; tables and arrays are errors. A folder that does
// not exist holds no tags; files whose names start with "." are skipped. The
// tags are read once at start-up, as the reference agent does.
func LoadTags(folder string) (map[string]string, error) {
	if folder == "" {
		return nil, nil
	}
	entries, err := os.ReadDir(folder)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read tags folder: %w", err)
	}
	tags := make(map[string]string)
	for _, e := range entries { // ReadDir sorts by name
		name := e.Name()
		if !strings.HasSuffix(name, ".toml") || strings.HasPrefix(name, ".") || e.IsDir() {
			continue
		}
		path := filepath.Join(folder, name)
		var raw map[string]any
		if _, err := toml.DecodeFile(path, &raw); err != nil {
			return nil, fmt.Errorf("tags file %s: %s", path, strings.TrimPrefix(err.Error(), "toml: "))
		}
		keys := make([]string, 0, len(raw))
		for k := range raw {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			v, err := tagValue(raw[k])
			if err != nil {
				return nil, fmt.Errorf("tags file %s: key %q: %w", path, k, err)
			}
			if strings.TrimSpace(k) == "" {
				return nil, fmt.Errorf("tags file %s: empty key", path)
			}
			tags[k] = v
		}
	}
	if len(tags) == 0 {
		return nil, nil
	}
	return tags, nil
}

// tagValue converts a TOML value to a tag's text.
func tagValue(v any) (string, error) {
	switch v := v.(type) {
	case string:
		return v, nil
	case int64:
		return strconv.FormatInt(v, 10), nil
	case float64:
		return strconv.FormatFloat(v, 'g', -1, 64), nil
	case bool:
		return strconv.FormatBool(v), nil
	case time.Time:
		return v.Format(time.RFC3339Nano), nil
	case map[string]any:
		return "", errors.New("a table is not a tag value (quote a key that holds dots)")
	default:
		return "", fmt.Errorf("a %T is not a tag value (want a string, number or boolean)", v)
	}
}
