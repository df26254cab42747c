package broker

import "testing"

// TestServerFull checks SERVER_FULL: a linux server is full at its virtual limit
// (its console does not count), a windows server while its console runs;
// the per-user limit never makes a whole server full.
func TestServerFull(t *testing.T) {
	info := func(os string, maxVirtual, maxPerUser int) *ServerInfo {
		return &ServerInfo{MaxVirtualSessions: maxVirtual, MaxConcurrentSessionsPerUser: maxPerUser, Host: Host{OSFamily: os}}
	}
	tests := []struct {
		name string
		info *ServerInfo
		c    Counts
		want bool
	}{
		{"linux empty", info("linux", 2, 0), Counts{}, false},
		{"linux below the virtual limit", info("linux", 2, 0), Counts{Virtual: 1, Console: 1}, false},
		{"linux at the virtual limit", info("linux", 2, 0), Counts{Virtual: 2}, true},
		{"linux over the virtual limit", info("linux", 2, 0), Counts{Virtual: 3}, true},
		{"linux unlimited", info("linux", 0, 0), Counts{Virtual: 500}, false},
		{"linux with a console running", info("linux", 0, 0), Counts{Console: 1}, false},
		{"OS family unknown is linux", info("", 1, 0), Counts{Virtual: 1}, true},
		{"per-user limit reached by one owner", info("linux", 0, 1), Counts{Virtual: 3, ByOwner: map[string]int{"bob": 3}}, false},
		{"windows idle", info("windows", 1, 0), Counts{}, false},
		{"windows console running", info("windows", 0, 0), Counts{Console: 1}, true},
		{"windows ignores the virtual limit", info("windows", 1, 0), Counts{Virtual: 1}, false},
	}
	for _, tt := range tests {
		if got := serverFull(tt.info, tt.c); got != tt.want {
			t.Errorf("%s: serverFull = %v, want %v", tt.name, got, tt.want)
		}
	}
}
