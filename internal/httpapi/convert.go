package httpapi

import (
	"context"
	"encoding/json"
	"net/http"
	"sort"
	"strconv"
	"sync"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/broker"
)

// converter turns broker values into wire values, converting each server once
// per response.
type converter struct {
	s       *Server
	r       *http.Request
	servers map[*broker.Server]*api.Server
}

func (s *Server) newConverter(r *http.Request) *converter {
	return &converter{s: s, r: r, servers: map[*broker.Server]*api.Server{}}
}

// sessionFields converts a session without its server.
func sessionFields(x *broker.Session) api.Session {
	out := api.Session{
		Id: x.ID, Name: x.Name, Owner: x.Owner, Type: x.Type, MaxConcurrentClients: x.MaxConcurrentClients,
		State: x.State, Substate: x.Substate, StateReason: x.StateReason, CreationTime: x.CreationTime.UTC(),
		NumOfConnections: x.NumOfConnections, StorageRoot: x.StorageRoot,
	}
	if !x.LastDisconnectionTime.IsZero() {
		t := x.LastDisconnectionTime.UTC()
		out.LastDisconnectionTime = &t
	}
	return out
}

func (c *converter) session(v broker.SessionView) api.Session {
	out := sessionFields(v.Session)
	if v.Server != nil {
		srv, ok := c.servers[v.Server]
		if !ok {
			conv := serverFromView(c.s.Service.ViewServer(c.r.Context(), v.Server))
			srv = &conv
			c.servers[v.Server] = srv
		}
		out.Server = srv
	}
	return out
}

// serverJSON caches the encoded form of each server, keyed by ID and checked
// against the server value and its availability so it is never stale.
type serverJSON struct {
	mu sync.Mutex
	m  map[string]*encodedServer
}

type encodedServer struct {
	srv              *broker.Server
	avail, reason    string
	virtual, console int
	raw              json.RawMessage
}

func (c *serverJSON) get(v *broker.ServerView) json.RawMessage {
	c.mu.Lock()
	e := c.m[v.ID]
	c.mu.Unlock()
	if e != nil && e.srv == v.Server && e.avail == v.Availability && e.reason == v.UnavailabilityReason &&
		e.virtual == v.VirtualSessions && e.console == v.ConsoleSessions {
		return e.raw
	}
	raw, err := json.Marshal(serverFromView(v))
	if err != nil {
		return nil
	}
	e = &encodedServer{srv: v.Server, avail: v.Availability, reason: v.UnavailabilityReason, virtual: v.VirtualSessions, console: v.ConsoleSessions, raw: raw}
	c.mu.Lock()
	if c.m == nil {
		c.m = make(map[string]*encodedServer)
	}
	if len(c.m) > 100000 {
		clear(c.m)
	}
	c.m[v.ID] = e
	c.mu.Unlock()
	return raw
}

// writeSessionPage writes a DescribeSessionsResponse. It is api's shape, built
// by hand so each server's cached encoding is spliced in as is: a page repeats
// a few servers many times, and encoding them is most of the work of a page.
func (s *Server) writeSessionPage(w http.ResponseWriter, ctx context.Context, list []broker.SessionView, next string) {
	buf := make([]byte, 0, 1024+len(list)*1400)
	buf = append(buf, `{"RequestId":`...)
	buf = appendString(buf, requestID())
	buf = append(buf, `,"Sessions":[`...)
	views := map[*broker.Server]json.RawMessage{}
	for i, v := range list {
		if i > 0 {
			buf = append(buf, ',')
		}
		var raw json.RawMessage
		if v.Server != nil {
			var ok bool
			if raw, ok = views[v.Server]; !ok {
				raw = s.serverCache.get(s.Service.ViewServer(ctx, v.Server))
				views[v.Server] = raw
			}
		}
		buf = appendSession(buf, v.Session, raw)
	}
	buf = append(buf, ']')
	if next != "" {
		buf = append(buf, `,"NextToken":`...)
		buf = appendString(buf, next)
	}
	buf = append(buf, '}')
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(buf)
}

// serverFromView converts a server with its availability to the wire form.
func serverFromView(v *broker.ServerView) api.Server {
	in := &v.Info
	h := &in.Host
	out := api.Server{
		Id: v.ID, Ip: in.IP, Hostname: in.Hostname, DefaultDnsName: in.DefaultDNSName,
		WebUrlPath: in.WebURLPath, Version: in.Version, SessionManagerAgentVersion: in.AgentVersion,
		Availability: v.Availability, UnavailabilityReason: v.UnavailabilityReason,
		ConsoleSessionCount: v.ConsoleSessions, VirtualSessionCount: v.VirtualSessions,
		Endpoints: make([]api.Endpoint, 0, len(in.Endpoints)),
		Tags:      make([]api.KeyValuePair, 0, len(v.Tags)),
		Host: api.Host{
			Os:             api.Os{Family: osFamily(h.OSFamily), Name: h.OSName, Version: h.OSVersion, KernelVersion: h.KernelVersion, BuildNumber: h.BuildNumber},
			Memory:         api.Memory{TotalBytes: h.MemTotal, UsedBytes: h.MemUsed},
			Swap:           api.Memory{TotalBytes: h.SwapTotal, UsedBytes: h.SwapUsed},
			CpuInfo:        api.CpuInfo{Vendor: h.CPUVendor, ModelName: h.CPUModel, Architecture: h.CPUArch, NumberOfCpus: h.CPUs, PhysicalCoresPerCpu: h.CoresPerCPU},
			CpuLoadAverage: api.CpuLoadAverage{OneMinute: h.Load1, FiveMinutes: h.Load5, FifteenMinutes: h.Load15},
			Gpus:           make([]api.Gpu, 0, len(h.GPUs)),
			LoggedInUsers:  make([]api.LoggedInUser, 0, len(h.LoggedInUsers)),
		},
	}
	if in.Port > 0 {
		out.Port = strconv.Itoa(in.Port)
	}
	if h.AWSRegion != "" || h.EC2InstanceID != "" {
		out.Host.Aws = &api.Aws{Region: h.AWSRegion, EC2InstanceType: h.EC2InstanceType, EC2InstanceId: h.EC2InstanceID, EC2ImageId: h.EC2ImageID}
	}
	for _, e := range in.Endpoints {
		out.Endpoints = append(out.Endpoints, api.Endpoint{IpAddress: e.IPAddress, Port: e.Port, WebUrlPath: e.WebURLPath, Protocol: e.Protocol})
	}
	for _, g := range h.GPUs {
		out.Host.Gpus = append(out.Host.Gpus, api.Gpu{Vendor: g.Vendor, ModelName: g.Model})
	}
	for _, u := range h.LoggedInUsers {
		out.Host.LoggedInUsers = append(out.Host.LoggedInUsers, api.LoggedInUser{Username: u})
	}
	keys := make([]string, 0, len(v.Tags))
	for k := range v.Tags {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		out.Tags = append(out.Tags, api.KeyValuePair{Key: k, Value: v.Tags[k]})
	}
	return out
}

func osFamily(f string) string {
	if f == "" {
		return "linux"
	}
	return f
}
