package httpapi

import (
	"net/http"
	"sort"
	"strconv"

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

func (c *converter) session(v broker.SessionView) api.Session {
	x := v.Session
	out := api.Session{
		Id: x.ID, Name: x.Name, Owner: x.Owner, Type: x.Type, MaxConcurrentClients: x.MaxConcurrentClients,
		State: x.State, Substate: x.Substate, StateReason: x.StateReason, CreationTime: x.CreationTime.UTC(),
		NumOfConnections: x.NumOfConnections, StorageRoot: x.StorageRoot,
	}
	if !x.LastDisconnectionTime.IsZero() {
		t := x.LastDisconnectionTime.UTC()
		out.LastDisconnectionTime = &t
	}
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
