package broker

import (
	"slices"
	"strconv"
	"strings"
	"sync"
)

// A broker caches every server it knows, and a fleet's servers mostly
// report the same OS, CPU, versions and tags. prepare keeps the cached
// server compact: the strings that servers share are interned (one copy for
// the fleet instead of one per server), identical tag sets share one map,
// and the requirement properties are read from the server's fields when
// placement asks (Property) rather than kept in a map per server.

// prepare derives the tags of a server and makes its shared values
// canonical; it runs once before the server is published in the cache, on
// a Server that nothing else holds yet (its slices may be shared with an
// older copy, and are not written).
func (s *Server) prepare() {
	s.BrokerID = interned.str(s.BrokerID)
	in := &s.Info
	for _, p := range []*string{
		&in.WebURLPath, &in.Version, &in.AgentVersion, &in.Driver, &in.HealthReason,
		&in.Host.OSFamily, &in.Host.OSName, &in.Host.OSVersion, &in.Host.KernelVersion, &in.Host.BuildNumber,
		&in.Host.AWSRegion, &in.Host.EC2InstanceType, &in.Host.EC2ImageID,
		&in.Host.CPUVendor, &in.Host.CPUModel, &in.Host.CPUArch,
	} {
		*p = interned.str(*p)
	}
	if len(in.Endpoints) > 0 {
		eps := slices.Clone(in.Endpoints)
		for i := range eps {
			eps[i].WebURLPath = interned.str(eps[i].WebURLPath)
			eps[i].Protocol = interned.str(eps[i].Protocol)
		}
		in.Endpoints = eps
	}
	if len(in.Host.GPUs) > 0 {
		gpus := slices.Clone(in.Host.GPUs)
		for i := range gpus {
			gpus[i] = GPU{Vendor: interned.str(gpus[i].Vendor), Model: interned.str(gpus[i].Model)}
		}
		in.Host.GPUs = gpus
	}
	if in.Tags != nil {
		in.Tags = interned.tags(in.Tags)
	}
	tags := SystemTags(in)
	for k, v := range in.Tags {
		if _, sys := tags[k]; !sys {
			tags[k] = v
		}
	}
	s.tags = interned.tags(tags)
}

// tagsOf returns the server's tags including system tags. The map may be
// shared with other servers: callers must not modify it.
func (s *Service) tagsOf(srv *Server) map[string]string { return srv.tags }

// Property returns the server's requirement property at a canonical path
// ("Id", "Host.Os.Family", "Host.CpuInfo.NumberOfCpus", ...). An empty
// value is absent (it matches only !=), as is an unknown path.
func (s *Server) Property(path string) (string, bool) {
	h := &s.Info.Host
	var v string
	switch path {
	case "Id":
		v = s.ID
	case "Hostname":
		v = s.Info.Hostname
	case "Version":
		v = s.Info.Version
	case "SessionManagerAgentVersion":
		v = s.Info.AgentVersion
	case "Host.Os.BuildNumber":
		v = h.BuildNumber
	case "Host.Os.Family":
		v = osFamily(&s.Info)
	case "Host.Os.KernelVersion":
		v = h.KernelVersion
	case "Host.Os.Name":
		v = h.OSName
	case "Host.Os.Version":
		v = h.OSVersion
	case "Host.Memory.TotalBytes":
		v = strconv.FormatInt(h.MemTotal, 10)
	case "Host.Memory.UsedBytes":
		v = strconv.FormatInt(h.MemUsed, 10)
	case "Host.Swap.TotalBytes":
		v = strconv.FormatInt(h.SwapTotal, 10)
	case "Host.Swap.UsedBytes":
		v = strconv.FormatInt(h.SwapUsed, 10)
	case "Host.CpuLoadAverage.OneMinute":
		v = strconv.FormatFloat(h.Load1, 'g', -1, 64)
	case "Host.CpuLoadAverage.FiveMinutes":
		v = strconv.FormatFloat(h.Load5, 'g', -1, 64)
	case "Host.CpuLoadAverage.FifteenMinutes":
		v = strconv.FormatFloat(h.Load15, 'g', -1, 64)
	case "Host.Aws.Ec2InstanceId":
		v = h.EC2InstanceID
	case "Host.Aws.Ec2InstanceType":
		v = h.EC2InstanceType
	case "Host.Aws.Region":
		v = h.AWSRegion
	case "Host.Aws.Ec2ImageId":
		v = h.EC2ImageID
	case "Host.CpuInfo.Architecture":
		v = h.CPUArch
	case "Host.CpuInfo.ModelName":
		v = h.CPUModel
	case "Host.CpuInfo.NumberOfCpus":
		v = strconv.Itoa(h.CPUs)
	case "Host.CpuInfo.PhysicalCoresPerCpu":
		v = strconv.Itoa(h.CoresPerCPU)
	case "Host.CpuInfo.Vendor":
		v = h.CPUVendor
	}
	return v, v != ""
}

// Limits of the intern table: past maxInterned entries it starts afresh
// (values already handed out stay valid, only their sharing with later
// servers is lost), so values that servers stopped reporting do not stay
// forever. Long strings and large tag sets are not interned.
const (
	maxInterned    = 4096
	maxInternedLen = 256
	maxInternTags  = 32
)

// interned is the broker's intern table for cached servers.
var interned internTable

// internTable hands out one canonical copy of equal strings and one shared
// map for equal tag sets.
type internTable struct {
	mu      sync.Mutex
	strs    map[string]string
	tagSets map[string]map[string]string
}

// str returns the canonical copy of v.
func (t *internTable) str(v string) string {
	if v == "" || len(v) > maxInternedLen {
		return v
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if c, ok := t.strs[v]; ok {
		return c
	}
	t.roomLocked()
	v = strings.Clone(v) // do not keep a decoded report's buffer alive
	t.strs[v] = v
	return v
}

// tags returns a map equal to m that servers with the same tags share:
// nobody may modify it. Its keys and values are canonical strings.
func (t *internTable) tags(m map[string]string) map[string]string {
	if len(m) > maxInternTags {
		return m
	}
	keys := make([]string, 0, len(m))
	n := 0
	for k, v := range m {
		if len(k) > maxInternedLen || len(v) > maxInternedLen {
			return m
		}
		keys = append(keys, k)
		n += len(k) + len(v)
	}
	slices.Sort(keys)
	b := make([]byte, 0, n+8*len(keys))
	for _, k := range keys { // length-prefixed: no two tag sets share a key
		b = strconv.AppendInt(b, int64(len(k)), 10)
		b = append(b, ':')
		b = append(b, k...)
		v := m[k]
		b = strconv.AppendInt(b, int64(len(v)), 10)
		b = append(b, ':')
		b = append(b, v...)
	}
	key := string(b)
	t.mu.Lock()
	defer t.mu.Unlock()
	if c, ok := t.tagSets[key]; ok {
		return c
	}
	t.roomLocked()
	c := make(map[string]string, len(m))
	for k, v := range m {
		c[t.strLocked(k)] = t.strLocked(v)
	}
	t.tagSets[key] = c
	return c
}

func (t *internTable) strLocked(v string) string {
	if c, ok := t.strs[v]; ok {
		return c
	}
	v = strings.Clone(v)
	t.strs[v] = v
	return v
}

// roomLocked starts the table afresh when it is full (or new).
func (t *internTable) roomLocked() {
	if t.strs == nil || len(t.strs)+len(t.tagSets) >= maxInterned {
		t.strs = make(map[string]string)
		t.tagSets = make(map[string]map[string]string)
	}
}
