package idptest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Environment variable that Binary reads.
const (
	// EnvIdP set to "off" skips the tests that need the identity provider;
	// anything else (or nothing) runs them, and a failed build fails them.
	EnvIdP = "BERTH_TEST_IDP"
)

// toolsDir is the Hydra tools module, relative to the repository root.
const toolsDir = "tools/hydra"

// buildTimeout bounds one build of Hydra (a cold one downloads about 440 MB
// of modules and compiles for about 4 minutes on two cores).
const buildTimeout = 20 * time.Minute

// built is the outcome of the one lookup or build of a test process.
var built struct {
	build, log sync.Once
	path       string
	took       time.Duration // the build's duration, 0 on a cache hit
	err        error
}

// Binary returns the path of a Hydra binary built from tools/hydra. It is
// built once per machine into the user's cache directory
// ($XDG_CACHE_HOME or ~/.cache)/berth/hydra-<hash>/hydra, where hash covers
// tools/hydra's go.mod and go.sum, under a file lock so that test processes
// running at the same time build it once. BERTH_TEST_IDP=off skips tb; a
// build that fails fails it.
func Binary(tb testing.TB) string {
	tb.Helper()
	if os.Getenv(EnvIdP) == "off" {
		tb.Skipf("%s=off: the tests against a real identity provider are skipped", EnvIdP)
	}
	built.build.Do(func() {
		built.path, built.took, built.err = buildCached(context.Background())
	})
	if built.err != nil {
		tb.Fatalf("idptest: build Hydra (set %s=off to skip these tests): %v", EnvIdP, built.err)
	}
	built.log.Do(func() {
		if built.took > 0 {
			tb.Logf("idptest: built Hydra into %s in %s", built.path, built.took.Round(time.Millisecond))
		} else {
			tb.Logf("idptest: Hydra from the cache, %s", built.path)
		}
	})
	return built.path
}

// CacheKey returns the hash that names Hydra's cache directory: the first 12
// hex digits of the SHA-256 of tools/hydra's go.mod and go.sum.
func CacheKey() (string, error) {
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	h := sha256.New()
	for _, f := range []string{"go.mod", "go.sum"} {
		b, err := os.ReadFile(filepath.Join(root, toolsDir, f))
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%s %d\n", f, len(b))
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))[:12], nil
}

// buildCached returns the cached binary, building it first if it is not
// there; took is the build's duration (0 when the cache had it).
func buildCached(ctx context.Context) (path string, took time.Duration, err error) {
	root, err := repoRoot()
	if err != nil {
		return "", 0, err
	}
	key, err := CacheKey()
	if err != nil {
		return "", 0, err
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", 0, err
	}
	dir := filepath.Join(cache, "berth", "hydra-"+key)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", 0, err
	}
	path = filepath.Join(dir, "hydra")
	unlock, err := lock(filepath.Join(dir, "lock"))
	if err != nil {
		return "", 0, err
	}
	defer unlock()
	if fi, err := os.Stat(path); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
		return path, 0, nil
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = "/usr/local/go/bin/go"
	}
	tmp := path + ".tmp"
	os.Remove(tmp)
	ctx, cancel := context.WithTimeout(ctx, buildTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, goBin, "build", "-C", filepath.Join(root, toolsDir),
		"-tags", "sqlite,sqlite_omit_load_extension", "-o", tmp, "github.com/ory/hydra/v2")
	// Hydra's SQLite (dsn: memory) needs cgo.
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	start := time.Now()
	out, err := cmd.CombinedOutput()
	took = time.Since(start)
	if err != nil {
		return "", 0, fmt.Errorf("%s build in %s (after %s): %v\n%s", goBin, toolsDir, took.Round(time.Second), err, out)
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", 0, err
	}
	return path, took, nil
}

// lock takes an exclusive flock on path, waiting for another process that
// holds it (building Hydra).
func lock(path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}

// repoRoot walks up from the working directory to the one that holds
// tools/hydra/go.mod.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, toolsDir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New(toolsDir + "/go.mod not found above the working directory")
		}
		dir = parent
	}
}
