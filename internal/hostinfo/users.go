package hostinfo

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/berth-dev/berth/internal/agentproto"
)

// The glibc struct utmp on Linux (the same on x86_64, aarch64 and the other
// 64-bit ports, which keep 32-bit times in it for compatibility):
//
//	short   ut_type;         //   0
//	pid_t   ut_pid;          //   4
//	char    ut_line[32];     //   8
//	char    ut_id[4];        //  40
//	char    ut_user[32];     //  44
//	char    ut_host[256];    //  76
//	struct  exit_status;     // 332 (2 × short)
//	int32_t ut_session;      // 336
//	struct  { int32_t tv_sec, tv_usec; } ut_tv; // 340
//	int32_t ut_addr_v6[4];   // 348
//	char    __unused[20];    // 364
//	                         // 384 bytes
const (
	utmpRecordSize = 384
	utmpUserOffset = 44
	utmpUserSize   = 32
	utmpUserProc   = 7 // USER_PROCESS
)

// utmpFiles are where the utmp database lives, in the order tried.
var utmpFiles = []string{"/var/run/utmp", "/run/utmp"}

// probeUsers fills LoggedInUsers, sorted and without duplicates: the users of
// USER_PROCESS records in utmp or, on systems without utmp (recent
// distributions dropped it), of the open user sessions that systemd-logind
// lists in /run/systemd/sessions.
func probeUsers(_ context.Context, p *Prober, r *agentproto.HostReport) error {
	var (
		users []string
		err   error
		found bool
	)
	for _, name := range utmpFiles {
		var data []byte
		data, err = p.readFile(name)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("utmp: %w", err)
		}
		users, found = parseUtmp(data), true
		break
	}
	if !found {
		if users, err = p.logindUsers(); err != nil {
			return err
		}
	}
	slices.Sort(users)
	r.LoggedInUsers = slices.Compact(users)
	return nil
}

// parseUtmp returns the user names of the USER_PROCESS records in a utmp
// file, in file order and with duplicates. A trailing partial record is
// ignored.
func parseUtmp(data []byte) []string {
	var users []string
	for len(data) >= utmpRecordSize {
		rec := data[:utmpRecordSize]
		data = data[utmpRecordSize:]
		if int16(binary.NativeEndian.Uint16(rec[0:2])) != utmpUserProc {
			continue
		}
		user := rec[utmpUserOffset : utmpUserOffset+utmpUserSize]
		if i := bytes.IndexByte(user, 0); i >= 0 {
			user = user[:i]
		}
		if u := strings.TrimSpace(string(user)); u != "" {
			users = append(users, u)
		}
	}
	return users
}

// logindUsers returns the users of the sessions in /run/systemd/sessions
// whose CLASS is "user" and whose STATE is not "closing". Without that
// directory it returns none.
func (p *Prober) logindUsers() ([]string, error) {
	dir := p.path("/run/systemd/sessions")
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("logind sessions: %w", err)
	}
	var users []string
	for _, e := range entries {
		if !e.Type().IsRegular() || strings.HasSuffix(e.Name(), ".ref") {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			continue // the session ended meanwhile
		}
		kv := map[string]string{}
		sc := bufio.NewScanner(bytes.NewReader(data))
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), "="); ok {
				kv[k] = v
			}
		}
		if kv["CLASS"] == "user" && kv["STATE"] != "closing" && kv["USER"] != "" {
			users = append(users, kv["USER"])
		}
	}
	return users, nil
}
