package dcv

import (
	"bufio"
	"os"
	"strconv"
	"strings"
)

// Defaults of the DCV server's [connectivity] settings.
const (
	DefaultWebPort  = 8443
	DefaultWebPath  = "/"
	DefaultQUICPort = 8443
)

// readINI reads an INI file such as dcv.conf into section → key → value.
// Keys and sections keep their case; values lose surrounding quotes ("...")
// and spaces. Comments start with '#' or ';'. A file that cannot be read
// gives nil.
func readINI(path string) map[string]map[string]string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	out := map[string]map[string]string{}
	section := ""
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		if line[0] == '[' {
			if end := strings.IndexByte(line, ']'); end > 0 {
				section = strings.TrimSpace(line[1:end])
			}
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if len(v) >= 2 && (v[0] == '"' && v[len(v)-1] == '"' || v[0] == '\'' && v[len(v)-1] == '\'') {
			v = v[1 : len(v)-1]
		}
		if out[section] == nil {
			out[section] = map[string]string{}
		}
		out[section][k] = v
	}
	return out
}

// Endpoints reads the DCV server's [connectivity] settings from dcv.conf
// (Config.ConfPath) now: web-port (default 8443), web-url-path (default
// "/"), and quic-port (default 8443) when enable-quic-frontend is true, else
// quicPort 0. A missing file or key gives the defaults.
func (d *Driver) Endpoints() (webPort int, webPath string, quicPort int) {
	c := readINI(d.cfg.ConfPath)["connectivity"]
	webPort = port(c["web-port"], DefaultWebPort)
	webPath = c["web-url-path"]
	if webPath == "" {
		webPath = DefaultWebPath
	}
	if !strings.HasPrefix(webPath, "/") {
		webPath = "/" + webPath
	}
	if b, err := strconv.ParseBool(strings.ToLower(c["enable-quic-frontend"])); err == nil && b {
		quicPort = port(c["quic-port"], DefaultQUICPort)
	}
	return webPort, webPath, quicPort
}

// port reads a port number; anything else gives def.
func port(s string, def int) int {
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 65535 {
		return def
	}
	return n
}
