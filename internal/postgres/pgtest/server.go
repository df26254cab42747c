package pgtest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Server is a private PostgreSQL server that one test owns, for tests that
// stop and start the database under a running broker. Its data directory is
// removed at cleanup.
type Server struct {
	// DSN connects to its database postgres as the superuser postgres.
	DSN  string
	Port int
	Dir  string // data directory (also holds the unix socket)

	bin     string // directory of initdb and pg_ctl
	runAs   string // user that owns and runs the server ("" for the current one)
	logPath string
}

// StartServer creates a PostgreSQL cluster in a new directory (initdb, trust
// authentication, 127.0.0.1 on a free port) and starts it; cleanup stops it and
// removes the directory. It skips the test when PostgreSQL's server programs
// are not installed, unless BERTH_TEST_PG_REQUIRED=1.
func StartServer(tb testing.TB) *Server {
	tb.Helper()
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(bins) == 0 {
		serverUnavailable(tb, "PostgreSQL's server programs (/usr/lib/postgresql/*/bin/initdb) are not installed")
	}
	sort.Strings(bins)
	s := &Server{bin: filepath.Dir(bins[len(bins)-1])}
	dir, err := os.MkdirTemp("", "berth-pg-")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	s.Dir = filepath.Join(dir, "data")
	s.logPath = filepath.Join(dir, "postgres.log")
	if os.Geteuid() == 0 {
		// initdb refuses to run as root: the server runs as postgres.
		u, err := user.Lookup("postgres")
		if err != nil {
			serverUnavailable(tb, "running as root and there is no postgres user to run a private PostgreSQL server")
		}
		s.runAs = "postgres"
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			tb.Fatal(err)
		}
		if err := os.Chmod(dir, 0o700); err != nil {
			tb.Fatal(err)
		}
	}
	s.run(tb, "initdb", "-D", s.Dir, "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	s.Port = ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	s.DSN = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", s.Port)
	s.Start(tb)
	tb.Cleanup(func() { s.Stop(tb) })
	return s
}

// Start starts the server (again) and waits until it accepts connections.
func (s *Server) Start(tb testing.TB) {
	tb.Helper()
	s.run(tb, "pg_ctl", "-D", s.Dir, "-l", s.logPath, "-w", "-t", "60", "start",
		"-o", fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300", s.Port, s.Dir))
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		conn, err := pgx.Connect(ctx, s.DSN)
		if err == nil {
			conn.Close(ctx)
			cancel()
			return
		}
		cancel()
		if time.Now().After(deadline) {
			tb.Fatalf("private PostgreSQL on port %d does not accept connections: %v", s.Port, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Stop stops the server (fast shutdown: open connections are closed). It is
// a no-op when the server is not running.
func (s *Server) Stop(tb testing.TB) {
	tb.Helper()
	if _, err := os.Stat(filepath.Join(s.Dir, "postmaster.pid")); err != nil {
		return
	}
	s.run(tb, "pg_ctl", "-D", s.Dir, "-w", "-t", "60", "-m", "fast", "stop")
}

// run runs one of PostgreSQL's programs as the server's user.
func (s *Server) run(tb testing.TB, prog string, args ...string) {
	tb.Helper()
	name := filepath.Join(s.bin, prog)
	if s.runAs != "" {
		args = append([]string{"-u", s.runAs, "--", name}, args...)
		name = "runuser"
	}
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		log, _ := os.ReadFile(s.logPath)
		tb.Fatalf("%s %v: %v\n%s\n%s", prog, args, err, out, log)
	}
}

// serverUnavailable skips the test, or fails it when BERTH_TEST_PG_REQUIRED=1.
func serverUnavailable(tb testing.TB, why string) {
	tb.Helper()
	if os.Getenv("BERTH_TEST_PG_REQUIRED") == "1" {
		tb.Fatal(why + " (BERTH_TEST_PG_REQUIRED=1)")
	}
	tb.Skip(why)
}
