// Command fakedcv is a recorded stand-in for Amazon DCV's `dcv` command, for
// the dcv driver's contract tests only: Amazon DCV cannot be installed where
// berth is tested. It is never shipped and must not be used as a DCV server.
//
// It checks each argument list against the documented syntax of the
// subcommands the driver uses (an unknown option, a missing or bad value, or
// a wrong number of arguments exits 2 with a message on stderr), keeps its
// sessions in a JSON file, and replays the documented -j outputs with their
// real key names (describe-session's keys; get-screenshot's "format" and
// "base64").
//
// Environment:
//
//	FAKEDCV_STATE  the JSON state file (required)
//	FAKEDCV_LOG    a file that receives one JSON array per invocation: its arguments
//	FAKEDCV_FAIL   "SUBCOMMAND:MESSAGE": that subcommand prints MESSAGE on stderr and exits 1
//	FAKEDCV_HANG   "SUBCOMMAND": that subcommand sleeps until killed
package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// session is a DCV session with describe-session's keys.
type session struct {
	ID                    string    `json:"id"`
	Owner                 string    `json:"owner"`
	User                  string    `json:"user,omitempty"`
	Name                  string    `json:"name"`
	Type                  string    `json:"type"`
	NumConnections        int       `json:"num-of-connections"`
	CreationTime          string    `json:"creation-time"`
	LastDisconnectionTime string    `json:"last-disconnection-time"`
	LicensingMode         string    `json:"licensing-mode"`
	Licenses              []license `json:"licenses"`
	StorageRoot           string    `json:"storage-root"`
	X11Display            string    `json:"x11-display,omitempty"`
	X11Authority          string    `json:"x11-authority,omitempty"`
	DisplayLayout         []layout  `json:"display-layout"`
	// Recorded by the fake (not DCV keys): what create-session was given.
	FakeGL                   string `json:"fake-gl,omitempty"`
	FakeInit                 string `json:"fake-init,omitempty"`
	FakeMaxConcurrentClients int    `json:"fake-max-concurrent-clients,omitempty"`
	FakePermissions          string `json:"fake-permissions,omitempty"`
}

type license struct {
	Product        string `json:"product"`
	Status         string `json:"status"`
	CheckTimestamp string `json:"check-timestamp"`
	ExpirationDate string `json:"expiration-date"`
}

type layout struct {
	Width  int `json:"width"`
	Height int `json:"height"`
	X      int `json:"x"`
	Y      int `json:"y"`
}

type state struct {
	Sessions []*session `json:"sessions"`
}

func main() {
	args := os.Args[1:]
	if p := os.Getenv("FAKEDCV_LOG"); p != "" {
		b, _ := json.Marshal(args)
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err == nil {
			f.Write(append(b, '\n'))
			f.Close()
		}
	}
	if len(args) == 0 {
		usage("no command given")
	}
	sub := args[0]
	if h := os.Getenv("FAKEDCV_HANG"); h == sub {
		for {
			time.Sleep(time.Hour)
		}
	}
	if f := os.Getenv("FAKEDCV_FAIL"); f != "" {
		if s, msg, _ := strings.Cut(f, ":"); s == sub {
			fmt.Fprintln(os.Stderr, msg)
			os.Exit(1)
		}
	}
	cmds := map[string]func([]string){
		"create-session":   createSession,
		"close-session":    closeSession,
		"list-sessions":    listSessions,
		"describe-session": describeSession,
		"get-screenshot":   getScreenshot,
		"set-permissions":  setPermissions,
	}
	f, ok := cmds[sub]
	if !ok {
		usage(fmt.Sprintf("unknown command %q", sub))
	}
	f(args[1:])
}

// usage reports a syntax error the way a CLI does: exit status 2.
func usage(msg string) {
	fmt.Fprintln(os.Stderr, "fakedcv: "+msg)
	os.Exit(2)
}

// fail reports an operation error: exit status 1.
func fail(format string, a ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", a...)
	os.Exit(1)
}

// spec is a subcommand's options: name → takes a value.
type spec map[string]bool

// parse splits args into options and positional arguments, accepting
// "--opt value" and "--opt=value".
func parse(args []string, s spec) (map[string]string, []string) {
	opts := map[string]string{}
	var pos []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") || a == "-" {
			pos = append(pos, a)
			continue
		}
		name, val, hasVal := strings.Cut(a, "=")
		takes, ok := s[name]
		if !ok {
			usage(fmt.Sprintf("unknown option %s", name))
		}
		if _, dup := opts[name]; dup {
			usage(fmt.Sprintf("option %s given twice", name))
		}
		switch {
		case takes && !hasVal:
			if i+1 >= len(args) {
				usage(fmt.Sprintf("option %s needs a value", name))
			}
			i++
			val = args[i]
		case !takes && hasVal:
			usage(fmt.Sprintf("option %s takes no value", name))
		}
		opts[name] = val
	}
	return opts, pos
}

func onePositional(pos []string, what string) string {
	if len(pos) != 1 {
		usage(fmt.Sprintf("expected exactly one %s, got %d arguments", what, len(pos)))
	}
	return pos[0]
}

func wantJSON(opts map[string]string) bool {
	_, j := opts["-j"]
	_, js := opts["--json"]
	return j || js
}

func createSession(args []string) {
	opts, pos := parse(args, spec{"--type": true, "--name": true, "--user": true, "--owner": true,
		"--permissions-file": true, "--storage-root": true, "--gl": true, "--max-concurrent-clients": true, "--init": true})
	id := onePositional(pos, "session id")
	typ := opts["--type"]
	switch typ {
	case "":
		typ = "console"
	case "virtual", "console":
	default:
		usage(fmt.Sprintf("--type must be console or virtual, not %q", typ))
	}
	if n := opts["--name"]; len([]rune(n)) > 256 {
		usage("--name is longer than 256 characters")
	}
	if g, ok := opts["--gl"]; ok && g != "on" && g != "off" {
		usage(fmt.Sprintf("--gl must be on or off, not %q", g))
	}
	if typ == "console" {
		for _, o := range []string{"--user", "--gl", "--init"} {
			if _, ok := opts[o]; ok {
				usage(o + " is only for virtual sessions")
			}
		}
	}
	mcc := 0
	if v, ok := opts["--max-concurrent-clients"]; ok {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			usage(fmt.Sprintf("--max-concurrent-clients must be a number, not %q", v))
		}
		mcc = n
	}
	var perms string
	if p, ok := opts["--permissions-file"]; ok {
		b, err := os.ReadFile(p)
		if err != nil {
			fail("Could not read permissions file %s", p)
		}
		perms = string(b)
	}
	if p, ok := opts["--init"]; ok {
		fi, err := os.Stat(p)
		if err != nil || fi.Mode().Perm()&0o111 == 0 {
			fail("Init script %s is not an executable file", p)
		}
	}
	owner := opts["--owner"]
	if owner == "" {
		owner = "root"
	}
	withState(func(st *state) {
		for _, s := range st.Sessions {
			if s.ID == id {
				fail("Could not create session. Session with id '%s' already exists", id)
			}
			if typ == "console" && s.Type == "console" {
				fail("Could not create session. A console session already exists")
			}
		}
		s := &session{
			ID: id, Owner: owner, User: opts["--user"], Name: opts["--name"], Type: typ,
			CreationTime:  time.Now().UTC().Format("2006-01-02T15:04:05.000000Z"),
			LicensingMode: "DEMO", Licenses: []license{{Product: "dcv", Status: "LICENSED", CheckTimestamp: "", ExpirationDate: ""}},
			StorageRoot: opts["--storage-root"], DisplayLayout: []layout{{Width: 800, Height: 600}},
			FakeGL: opts["--gl"], FakeInit: opts["--init"], FakeMaxConcurrentClients: mcc, FakePermissions: perms,
		}
		if typ == "virtual" {
			s.X11Display = ":1"
			s.X11Authority = "/run/user/1000/dcv/" + id + ".xauth"
		}
		st.Sessions = append(st.Sessions, s)
	})
}

func closeSession(args []string) {
	_, pos := parse(args, spec{})
	id := onePositional(pos, "session id")
	withState(func(st *state) {
		for i, s := range st.Sessions {
			if s.ID == id {
				st.Sessions = append(st.Sessions[:i], st.Sessions[i+1:]...)
				return
			}
		}
		fail("Could not close session. Session '%s' does not exist", id)
	})
}

func listSessions(args []string) {
	opts, pos := parse(args, spec{"-j": false, "--json": false})
	if len(pos) != 0 {
		usage("list-sessions takes no arguments")
	}
	withState(func(st *state) {
		if wantJSON(opts) {
			out, _ := json.MarshalIndent(nonNil(st.Sessions), "", "  ")
			fmt.Println(string(out))
			return
		}
		for _, s := range st.Sessions {
			fmt.Printf("Session: '%s' (owner:%s type:%s name:'%s')\n", s.ID, s.Owner, s.Type, s.Name)
		}
	})
}

func nonNil(s []*session) []*session {
	if s == nil {
		return []*session{}
	}
	return s
}

func describeSession(args []string) {
	opts, pos := parse(args, spec{"-j": false, "--json": false})
	id := onePositional(pos, "session id")
	withState(func(st *state) {
		s := find(st, id)
		if wantJSON(opts) {
			out, _ := json.MarshalIndent(s, "", "  ")
			fmt.Println(string(out))
			return
		}
		fmt.Printf("Session:\n\tid: %s\n\towner: %s\n\tname: %s\n", s.ID, s.Owner, s.Name)
	})
}

func find(st *state, id string) *session {
	for _, s := range st.Sessions {
		if s.ID == id {
			return s
		}
	}
	fail("Could not find session '%s'", id)
	return nil
}

func getScreenshot(args []string) {
	opts, pos := parse(args, spec{"--max-width": true, "--max-height": true, "--format": true,
		"--primary": false, "-j": false, "--json": false, "--output": true, "-o": true})
	id := onePositional(pos, "session id")
	w, h := 800, 600
	for o, dim := range map[string]*int{"--max-width": &w, "--max-height": &h} {
		if v, ok := opts[o]; ok {
			n, err := strconv.Atoi(v)
			if err != nil || n <= 0 {
				usage(fmt.Sprintf("%s must be a positive number, not %q", o, v))
			}
			*dim = min(*dim, n)
		}
	}
	format := opts["--format"]
	if format == "" {
		format = "PNG"
	}
	if format != "PNG" && format != "JPEG" {
		usage(fmt.Sprintf("--format must be JPEG or PNG, not %q", format))
	}
	withState(func(st *state) { find(st, id) })
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			img.Set(x, y, color.RGBA{uint8(x), uint8(y), 0x80, 0xff})
		}
	}
	var buf bytes.Buffer
	if format == "PNG" {
		png.Encode(&buf, img)
	} else {
		jpeg.Encode(&buf, img, nil)
	}
	if o, ok := opts["--output"]; ok {
		os.WriteFile(o, buf.Bytes(), 0o644)
		return
	}
	if wantJSON(opts) {
		out, _ := json.Marshal(map[string]string{"format": strings.ToLower(format), "base64": base64.StdEncoding.EncodeToString(buf.Bytes())})
		fmt.Println(string(out))
		return
	}
	os.Stdout.Write(buf.Bytes())
}

func setPermissions(args []string) {
	opts, pos := parse(args, spec{"--session": true, "--none": false, "--reset-builtin": false, "--file": true})
	if len(pos) != 0 {
		usage("set-permissions takes no positional arguments")
	}
	id, ok := opts["--session"]
	if !ok {
		usage("--session is required")
	}
	n := 0
	for _, o := range []string{"--none", "--reset-builtin", "--file"} {
		if _, ok := opts[o]; ok {
			n++
		}
	}
	if n != 1 {
		usage("exactly one of --none, --reset-builtin and --file is required")
	}
	var text string
	if p, ok := opts["--file"]; ok {
		b, err := os.ReadFile(p)
		if err != nil {
			fail("Could not read permissions file %s", p)
		}
		text = string(b)
	}
	withState(func(st *state) { find(st, id).FakePermissions = text })
}

// withState runs f on the state file under an exclusive lock and saves it.
func withState(f func(*state)) {
	p := os.Getenv("FAKEDCV_STATE")
	if p == "" {
		fail("FAKEDCV_STATE is not set")
	}
	fd, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		fail("open state: %v", err)
	}
	defer fd.Close()
	if err := syscall.Flock(int(fd.Fd()), syscall.LOCK_EX); err != nil {
		fail("lock state: %v", err)
	}
	var st state
	if b, _ := os.ReadFile(p); len(b) > 0 {
		if err := json.Unmarshal(b, &st); err != nil {
			fail("read state: %v", err)
		}
	}
	f(&st)
	b, _ := json.MarshalIndent(&st, "", "  ")
	if err := fd.Truncate(0); err != nil {
		fail("write state: %v", err)
	}
	if _, err := fd.WriteAt(b, 0); err != nil {
		fail("write state: %v", err)
	}
}
