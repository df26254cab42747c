package cgresolver

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"unicode"

	"github.com/berth-dev/berth/internal/broker"
)

// DNSMappingsFile is the file, in the broker's working path, that holds the
// server DNS mappings loaded with register-server-dns-mappings.
const DNSMappingsFile = "dns-mappings.json"

// Server ID types of a DNS mapping.
const (
	idTypeIP    = "Ip"
	idTypeID    = "Id"
	idTypeEC2ID = "Host.Aws.Ec2InstanceId"
)

// maxMappingsFile bounds the mapping files read.
const maxMappingsFile = 16 << 20

// DNSMapping maps a DCV server to the DNS names the Connection Gateway uses to
// reach it; its JSON form is the reference's register-server-dns-mappings
// file entry.
type DNSMapping struct {
	ServerIDType string   `json:"ServerIdType"`
	ServerID     string   `json:"ServerId"`
	DNSNames     DNSNames `json:"DnsNames"`
}

// DNSNames are the names of one server.
type DNSNames struct {
	InternalDNSName string `json:"InternalDnsName"`
	ExternalDNSName string `json:"ExternalDnsName,omitempty"`
}

// ParseDNSMappings reads a mapping file in the reference format: a JSON array
// of {"ServerIdType", "ServerId", "DnsNames": {"InternalDnsName",
// "ExternalDnsName"}}. It is strict: unknown fields, a missing ServerIdType,
// ServerId or InternalDnsName, an invalid name and a server listed twice are
// errors that name the entry (from 0) and the field.
func ParseDNSMappings(data []byte) ([]DNSMapping, error) {
	var raw []json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("dns mappings: must be a JSON array of mappings: %w", err)
	}
	out := make([]DNSMapping, 0, len(raw))
	seen := map[[2]string]int{}
	for i, r := range raw {
		var m DNSMapping
		dec := json.NewDecoder(bytes.NewReader(r))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&m); err != nil {
			return nil, fmt.Errorf("dns mappings: entry %d: %w", i, err)
		}
		if err := m.validate(); err != nil {
			return nil, fmt.Errorf("dns mappings: entry %d: %w", i, err)
		}
		if m.ServerIDType == idTypeIP {
			m.ServerID = netip.MustParseAddr(m.ServerID).Unmap().String()
		}
		key := [2]string{m.ServerIDType, m.ServerID}
		if j, dup := seen[key]; dup {
			return nil, fmt.Errorf("dns mappings: entry %d: ServerId: %s %q is already mapped by entry %d", i, m.ServerIDType, m.ServerID, j)
		}
		seen[key] = i
		out = append(out, m)
	}
	return out, nil
}

func (m *DNSMapping) validate() error {
	switch m.ServerIDType {
	case idTypeIP, idTypeID, idTypeEC2ID:
	case "":
		return errors.New("ServerIdType: is required")
	default:
		return fmt.Errorf("ServerIdType: %q is not one of Ip, Id, Host.Aws.Ec2InstanceId", truncateRunes(m.ServerIDType, 64))
	}
	switch {
	case m.ServerID == "":
		return errors.New("ServerId: is required")
	case len(m.ServerID) > 256:
		return errors.New("ServerId: longer than 256 characters")
	case strings.IndexFunc(m.ServerID, func(r rune) bool { return unicode.IsControl(r) || unicode.IsSpace(r) }) >= 0:
		return errors.New("ServerId: contains spaces or control characters")
	}
	if m.ServerIDType == idTypeIP {
		if _, err := netip.ParseAddr(m.ServerID); err != nil {
			return fmt.Errorf("ServerId: %q is not an IP address", m.ServerID)
		}
	}
	if m.DNSNames.InternalDNSName == "" {
		return errors.New("DnsNames.InternalDnsName: is required")
	}
	if err := validDNSName(m.DNSNames.InternalDNSName); err != nil {
		return fmt.Errorf("DnsNames.InternalDnsName: %w", err)
	}
	if m.DNSNames.ExternalDNSName != "" {
		if err := validDNSName(m.DNSNames.ExternalDNSName); err != nil {
			return fmt.Errorf("DnsNames.ExternalDnsName: %w", err)
		}
	}
	return nil
}

// validDNSName accepts a host name (RFC 1123 labels) or an IP address.
func validDNSName(n string) error {
	if _, err := netip.ParseAddr(n); err == nil {
		return nil
	}
	if len(n) > 253 {
		return errors.New("longer than 253 characters")
	}
	for _, label := range strings.Split(strings.TrimSuffix(n, "."), ".") {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("%q is not a valid DNS name", truncateRunes(n, 64))
		}
		for i, r := range label {
			ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' ||
				r == '-' && i > 0 && i < len(label)-1
			if !ok {
				return fmt.Errorf("%q is not a valid DNS name", truncateRunes(n, 64))
			}
		}
	}
	return nil
}

func truncateRunes(s string, n int) string {
	if r := []rune(s); len(r) > n {
		return string(r[:n]) + "…"
	}
	return s
}

// ReadDNSMappingsFile reads and parses the mapping file at path, which an
// operator gives register-server-dns-mappings; a file larger than 16 MiB is
// refused unread. Parse errors are prefixed with path.
func ReadDNSMappingsFile(path string) ([]DNSMapping, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read dns mappings: %w", err)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxMappingsFile+1))
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("read dns mappings: %w", err)
	}
	if len(data) > maxMappingsFile {
		return nil, fmt.Errorf("read dns mappings: %s is larger than 16 MiB", path)
	}
	list, err := ParseDNSMappings(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return list, nil
}

// LoadDNSMappings returns the mappings stored in dir: none when there is no
// mapping file.
func LoadDNSMappings(dir string) ([]DNSMapping, error) {
	data, err := os.ReadFile(filepath.Join(dir, DNSMappingsFile))
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("read dns mappings: %w", err)
	}
	return ParseDNSMappings(data)
}

// WriteDNSMappings replaces the mapping file in dir atomically (mode 0600).
func WriteDNSMappings(dir string, list []DNSMapping) error {
	if list == nil {
		list = []DNSMapping{}
	}
	data, err := json.MarshalIndent(list, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, ".dns-mappings-*.tmp")
	if err != nil {
		return fmt.Errorf("write dns mappings: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after a successful rename this fails harmlessly
	// One err throughout: a failed write or sync must stop the rename, or a
	// truncated file would replace the good one.
	err = f.Chmod(0o600)
	if err == nil {
		_, err = f.Write(append(data, '\n'))
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write dns mappings: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, DNSMappingsFile)); err != nil {
		return fmt.Errorf("write dns mappings: %w", err)
	}
	return nil
}

// DescribedDNSMapping is the describe-server-dns-mappings form of a mapping:
// the same fields with camelCase keys.
type DescribedDNSMapping struct {
	ServerIDType string `json:"serverIdType"`
	ServerID     string `json:"serverId"`
	DNSNames     struct {
		InternalDNSName string `json:"internalDnsName"`
		ExternalDNSName string `json:"externalDnsName,omitempty"`
	} `json:"dnsNames"`
}

// Describe returns list in the describe-server-dns-mappings form (never nil).
func Describe(list []DNSMapping) []DescribedDNSMapping {
	rows := make([]DescribedDNSMapping, 0, len(list))
	for _, x := range list {
		var r DescribedDNSMapping
		r.ServerIDType, r.ServerID = x.ServerIDType, x.ServerID
		r.DNSNames.InternalDNSName, r.DNSNames.ExternalDNSName = x.DNSNames.InternalDNSName, x.DNSNames.ExternalDNSName
		rows = append(rows, r)
	}
	return rows
}

// DNSMappings is the running broker's view of the mapping file: it re-reads
// the file whenever it was replaced or modified (a stat per lookup). It is
// safe for concurrent use.
type DNSMappings struct {
	path string
	log  *slog.Logger

	mu   sync.Mutex
	info os.FileInfo // of the loaded file; nil: none loaded
	byID map[[2]string]DNSNames
}

// NewDNSMappings returns the view of the mapping file in dir.
func NewDNSMappings(dir string, log *slog.Logger) *DNSMappings {
	return &DNSMappings{path: filepath.Join(dir, DNSMappingsFile), log: log}
}

// refresh reloads the file if it changed. A file that does not parse leaves
// the last good mappings in place.
func (d *DNSMappings) refresh() {
	fi, err := os.Stat(d.path)
	if err != nil {
		if d.info != nil && errors.Is(err, os.ErrNotExist) {
			d.info, d.byID = nil, nil
			d.log.Info("dns mappings removed", "file", d.path)
		}
		return
	}
	if d.info != nil && os.SameFile(fi, d.info) && fi.ModTime().Equal(d.info.ModTime()) && fi.Size() == d.info.Size() {
		return
	}
	d.info = fi // also after a failure: do not re-read a bad file on every lookup
	data, err := os.ReadFile(d.path)
	if err == nil && len(data) > maxMappingsFile {
		err = errors.New("file larger than 16 MiB")
	}
	var list []DNSMapping
	if err == nil {
		list, err = ParseDNSMappings(data)
	}
	if err != nil {
		d.log.Error("dns mappings not reloaded; keeping the previous ones", "file", d.path, "err", err)
		return
	}
	m := make(map[[2]string]DNSNames, len(list))
	for _, x := range list {
		m[[2]string{x.ServerIDType, x.ServerID}] = x.DNSNames
	}
	d.byID = m
	d.log.Info("dns mappings loaded", "file", d.path, "count", len(list))
}

// Lookup returns the mapped names of srv: by server ID, then EC2 instance ID,
// then IP address (the server's, then ips in order).
func (d *DNSMappings) Lookup(srv *broker.Server, ips ...string) (DNSNames, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.refresh()
	if len(d.byID) == 0 || srv == nil {
		return DNSNames{}, false
	}
	if n, ok := d.byID[[2]string{idTypeID, srv.ID}]; ok {
		return n, true
	}
	if id := srv.Info.Host.EC2InstanceID; id != "" {
		if n, ok := d.byID[[2]string{idTypeEC2ID, id}]; ok {
			return n, true
		}
	}
	for _, ip := range append([]string{srv.Info.IP}, ips...) {
		a, err := netip.ParseAddr(ip)
		if err != nil {
			continue
		}
		if n, ok := d.byID[[2]string{idTypeIP, a.Unmap().String()}]; ok {
			return n, true
		}
	}
	return DNSNames{}, false
}
