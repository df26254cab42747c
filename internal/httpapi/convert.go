package httpapi

import (
	"encoding/json"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"

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
// against the server value (the broker never mutates a cached *Server, so the
// value is its version) and its availability and counts, so it is never
// stale.
//
// It keeps only what pages use: an encoding no page used for two rounds of
// serverJSONRound is dropped, so that a broker whose servers no client lists
// holds no encodings (about 1.2 KB a server), nor the server values they were
// made from once the broker replaced them (a host report with new figures
// replaces a server's value). A weak pointer to the value would free those
// sooner, but its dereference cost DescribeSessions about a tenth of its
// rate against a bare handler.
type serverJSON struct {
	mu  sync.RWMutex
	m   map[string]*encodedServer // the encodings used this round
	old map[string]*encodedServer // those used last round and not yet in this one
	// round ends the round (rotate); nil while both maps are empty.
	round *time.Timer
}

type encodedServer struct {
	srv              *broker.Server // the value encoded
	avail, reason    string
	virtual, console int
	raw              json.RawMessage
}

// matches reports whether e is the encoding of v.
func (e *encodedServer) matches(v *broker.ServerView) bool {
	return e != nil && e.srv == v.Server && e.avail == v.Availability && e.reason == v.UnavailabilityReason &&
		e.virtual == v.VirtualSessions && e.console == v.ConsoleSessions
}

// maxCachedServers bounds serverJSON; past it the cache starts over.
const maxCachedServers = 100000

// serverJSONRound is how long a round of serverJSON lasts: an encoding
// unused for two rounds is dropped.
var serverJSONRound = 30 * time.Second

// fill sets raws[i] to the encoding of view(i), for i below len(raws): one
// read lock for the hits, and one write lock for the misses, encoded outside
// the lock, and for the hits of the last round, kept for this one.
func (c *serverJSON) fill(view func(int) *broker.ServerView, raws []json.RawMessage) {
	var fresh []*encodedServer
	missing := false
	c.mu.RLock()
	for i := range raws {
		v := view(i)
		if e := c.m[v.ID]; e.matches(v) {
			raws[i] = e.raw
		} else if e := c.old[v.ID]; e.matches(v) {
			raws[i] = e.raw
			fresh = append(fresh, e)
		} else {
			raws[i], missing = nil, true
		}
	}
	c.mu.RUnlock()
	if !missing && fresh == nil {
		return
	}
	for i := range raws {
		if raws[i] != nil {
			continue
		}
		v := view(i)
		raw, err := json.Marshal(serverFromView(v))
		if err != nil {
			continue // cannot happen: api.Server has no unencodable field
		}
		raws[i] = raw
		fresh = append(fresh, &encodedServer{srv: v.Server, avail: v.Availability,
			reason: v.UnavailabilityReason, virtual: v.VirtualSessions, console: v.ConsoleSessions, raw: raw})
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m)+len(fresh) > maxCachedServers {
		c.m = make(map[string]*encodedServer, len(fresh))
	}
	for _, e := range fresh {
		c.m[e.srv.ID] = e
		delete(c.old, e.srv.ID)
	}
	if c.round == nil {
		c.round = time.AfterFunc(serverJSONRound, c.rotate)
	}
}

// rotate ends a round: the encodings of the last one that this one did not
// use are dropped.
func (c *serverJSON) rotate() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.old, c.m = c.m, nil
	if len(c.old) == 0 {
		c.old, c.round = nil, nil
		return
	}
	c.round.Reset(serverJSONRound)
}

// pageScratch is the reusable state of writing one session page.
type pageScratch struct {
	buf  []byte
	raws []json.RawMessage // the encoding of each of the page's servers
}

// maxPooledPage is the largest page buffer kept for reuse (a page of 1,000
// sessions with their servers is about 1.3 MB).
const maxPooledPage = 4 << 20

var pagePool = sync.Pool{New: func() any { return &pageScratch{} }}

// release returns p to the pool, dropping what it should not keep alive.
func (p *pageScratch) release() {
	if cap(p.buf) > maxPooledPage {
		p.buf = nil
	}
	clear(p.raws)
	p.raws = p.raws[:0]
	pagePool.Put(p)
}

// writeSessionPage writes a DescribeSessionsResponse. It is api's shape, built
// by hand so each server's cached encoding is spliced in as is: a page repeats
// servers, and encoding them was most of the work of a page. The broker views
// each distinct server of the page once, and the buffers are reused across
// requests.
func (s *Server) writeSessionPage(w http.ResponseWriter, page *broker.SessionPage) {
	p := pagePool.Get().(*pageScratch)
	defer p.release()
	p.raws = append(p.raws, make([]json.RawMessage, len(page.Servers))...)
	s.serverCache.fill(func(i int) *broker.ServerView { return &page.Servers[i] }, p.raws)

	list, next := page.Views, page.NextToken
	size := 128 + len(next)
	for i := range list {
		size += 400
		if k := page.ServerIndex[i]; k >= 0 {
			size += len(p.raws[k])
		}
	}
	buf := slices.Grow(p.buf[:0], size)
	buf = append(buf, `{"RequestId":`...)
	buf = appendString(buf, requestID())
	buf = append(buf, `,"Sessions":[`...)
	memos := page.Memos
	if len(memos) != len(list) {
		memos = nil
	}
	for i, v := range list {
		if i > 0 {
			buf = append(buf, ',')
		}
		var raw json.RawMessage
		if k := page.ServerIndex[i]; k >= 0 {
			raw = p.raws[k]
		}
		if memos == nil || memos[i] == nil {
			buf = appendSession(buf, v.Session, raw)
			continue
		}
		e := memos[i].Load()
		if e == nil {
			e = encodeSession(v.Session)
			memos[i].Store(e)
		}
		buf = appendEncoded(buf, e, raw)
	}
	p.buf = endPage(buf, next)
	writePage(w, p.buf)
}

// endPage closes a page's list and object, with NextToken when there is one.
func endPage(buf []byte, next string) []byte {
	buf = append(buf, ']')
	if next != "" {
		buf = append(buf, `,"NextToken":`...)
		buf = appendString(buf, next)
	}
	return append(buf, '}')
}

// writePage answers 200 with the JSON page buf.
func writePage(w http.ResponseWriter, buf []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(buf)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(buf) // Write does not keep buf: it may go back to the pool
}

// writeServerPage writes a DescribeServersResponse, api's shape built by
// hand from each server's cached encoding (serverJSON): a client that polls
// DescribeServers over a large fleet, as portals and the fleet benchmark
// do, costs the broker the servers that changed since its last page, not
// an encoding of every server on every page.
func (s *Server) writeServerPage(w http.ResponseWriter, list []*broker.ServerView, next string) {
	p := pagePool.Get().(*pageScratch)
	defer p.release()
	p.raws = append(p.raws, make([]json.RawMessage, len(list))...)
	s.serverCache.fill(func(i int) *broker.ServerView { return list[i] }, p.raws)
	size := 64 + len(next)
	for _, raw := range p.raws {
		if raw == nil { // not encodable: cannot happen; let encoding/json answer
			resp := api.DescribeServersResponse{RequestId: requestID(), Servers: make([]api.Server, len(list)), NextToken: next}
			for i, v := range list {
				resp.Servers[i] = serverFromView(v)
			}
			writeJSON(w, http.StatusOK, resp)
			return
		}
		size += len(raw) + 1
	}
	buf := slices.Grow(p.buf[:0], size)
	buf = append(buf, `{"RequestId":`...)
	buf = appendString(buf, requestID())
	buf = append(buf, `,"Servers":[`...)
	for i, raw := range p.raws {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = append(buf, raw...)
	}
	p.buf = endPage(buf, next)
	writePage(w, p.buf)
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
