package agenthub

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/berth-dev/berth/internal/agentproto"
	"github.com/berth-dev/berth/internal/broker"
)

// serverInfo converts an agent's host report; agentVersion (from the Hello)
// fills a report that lacks one.
func serverInfo(h *agentproto.HostReport, agentVersion string) broker.ServerInfo {
	info := broker.ServerInfo{
		Hostname:                     h.Hostname,
		IP:                           h.IP,
		DefaultDNSName:               h.DNSName,
		Port:                         h.Port,
		WebURLPath:                   h.WebURLPath,
		Version:                      h.Version,
		AgentVersion:                 h.AgentVersion,
		Driver:                       h.Driver,
		Healthy:                      h.Healthy,
		HealthReason:                 h.HealthReason,
		MaxVirtualSessions:           h.MaxVirtualSessions,
		MaxConcurrentSessionsPerUser: h.MaxConcurrentSessionsPerUser,
		GLCapable:                    h.GLCapable,
		Tags:                         h.Tags,
		Host: broker.Host{
			OSFamily:      h.OS.Family,
			OSName:        h.OS.Name,
			OSVersion:     h.OS.Version,
			KernelVersion: h.OS.Kernel,
			BuildNumber:   h.OS.Build,
			MemTotal:      h.Memory.TotalBytes,
			MemUsed:       h.Memory.UsedBytes,
			SwapTotal:     h.Memory.SwapTotalBytes,
			SwapUsed:      h.Memory.SwapUsedBytes,
			CPUVendor:     h.CPU.Vendor,
			CPUModel:      h.CPU.Model,
			CPUArch:       h.CPU.Arch,
			CPUs:          h.CPU.Count,
			CoresPerCPU:   h.CPU.CoresPerCPU,
			Load1:         h.Load.One,
			Load5:         h.Load.Five,
			Load15:        h.Load.Fifteen,
			LoggedInUsers: h.LoggedInUsers,
		},
	}
	if info.AgentVersion == "" {
		info.AgentVersion = agentVersion
	}
	if a := h.AWS; a != nil {
		info.Host.AWSRegion = a.Region
		info.Host.EC2InstanceType = a.InstanceType
		info.Host.EC2InstanceID = a.InstanceID
		info.Host.EC2ImageID = a.ImageID
	}
	for _, e := range h.Endpoints {
		info.Endpoints = append(info.Endpoints, broker.Endpoint{
			IPAddress: e.IP, Port: e.Port, WebURLPath: e.WebURLPath, Protocol: e.Protocol,
		})
	}
	if info.Port == 0 && len(h.Endpoints) > 0 {
		info.Port = h.Endpoints[0].Port
	}
	for _, g := range h.GPUs {
		info.Host.GPUs = append(info.Host.GPUs, broker.GPU{Vendor: g.Vendor, Model: g.Model})
	}
	return info
}

// sessionReports converts an agent's session list, keeping nil (unchanged) nil.
func sessionReports(ss []agentproto.Session) []broker.SessionReport {
	if ss == nil {
		return nil
	}
	out := make([]broker.SessionReport, len(ss))
	for i, s := range ss {
		out[i] = broker.SessionReport{
			ID:                    s.ID,
			Name:                  s.Name,
			Owner:                 s.Owner,
			Type:                  s.Type,
			State:                 s.State,
			StateReason:           s.StateReason,
			MaxConcurrentClients:  s.MaxConcurrentClients,
			StorageRoot:           s.StorageRoot,
			CreationTime:          s.CreationTime,
			LastDisconnectionTime: s.LastDisconnectionTime,
			NumOfConnections:      s.NumConnections,
			LastInputTime:         s.LastInputTime,
			OwnerGroups:           s.OwnerGroups,
		}
	}
	return out
}

// commandBody converts a broker command; the deadline is set at dispatch.
func commandBody(cmd broker.Command) (*agentproto.Command, error) {
	if !agentproto.ValidID(cmd.SessionID) {
		return nil, fmt.Errorf("dispatch %s: invalid session id", cmd.Kind)
	}
	c := &agentproto.Command{Kind: cmd.Kind, SessionID: cmd.SessionID}
	switch cmd.Kind {
	case broker.CommandCreate:
		cr := cmd.Create
		if cr == nil {
			return nil, errors.New("dispatch create: no create body")
		}
		c.Kind = agentproto.KindCreate
		c.Create = &agentproto.CreateCommand{
			Name:                 cr.Name,
			Owner:                cr.Owner,
			Type:                 cr.Type,
			MaxConcurrentClients: cr.MaxConcurrentClients,
			StorageRoot:          cr.StorageRoot,
			DcvGlEnabled:         cr.Spec.DcvGlEnabled,
			InitFile:             cr.Spec.InitFile,
			AutorunFile:          cr.Spec.AutorunFile,
			AutorunFileArguments: cr.Spec.AutorunFileArguments,
			PermissionsFile:      cr.Spec.PermissionsFile,
		}
	case broker.CommandDelete:
		c.Kind = agentproto.KindDelete
	case broker.CommandPermissions:
		c.Kind = agentproto.KindPermissions
		c.Permissions = &agentproto.PermissionsCommand{File: cmd.Permissions}
	case broker.CommandScreenshot:
		c.Kind = agentproto.KindScreenshot
		c.Screenshot = &agentproto.ScreenshotCommand{}
		if s := cmd.Screenshot; s != nil {
			c.Screenshot.MaxWidth = clamp(s.MaxWidth, 0, agentproto.MaxScreenshotSide)
			c.Screenshot.MaxHeight = clamp(s.MaxHeight, 0, agentproto.MaxScreenshotSide)
			switch s.Format {
			case "", agentproto.FormatPNG:
				c.Screenshot.Format = agentproto.FormatPNG
			case agentproto.FormatJPEG, "jpg":
				c.Screenshot.Format = agentproto.FormatJPEG
			default:
				return nil, fmt.Errorf("dispatch screenshot: unsupported format %q", s.Format)
			}
		}
	case broker.CommandDisconnect:
		c.Kind = agentproto.KindDisconnect
		if n := cmd.Notify; n != nil {
			c.Notify = notifyBody(n)
		}
	case broker.CommandNotify:
		if cmd.Notify == nil {
			return nil, errors.New("dispatch notify: no notify body")
		}
		c.Kind = agentproto.KindNotify
		c.Notify = notifyBody(cmd.Notify)
	default:
		return nil, fmt.Errorf("dispatch: unknown command kind %q", cmd.Kind)
	}
	return c, nil
}

// notifyBody converts a notify body, cutting a message longer than the
// protocol allows (at a rune boundary).
func notifyBody(n *broker.NotifyCommand) *agentproto.NotifyCommand {
	msg := n.Message
	if len(msg) > agentproto.MaxNotifyMessage {
		msg = strings.ToValidUTF8(msg[:agentproto.MaxNotifyMessage], "")
	}
	return &agentproto.NotifyCommand{Message: msg, Policy: n.Policy, Deadline: n.Deadline, Extendable: n.Extendable}
}

// minVersion is the oldest protocol version that knows a command kind.
func minVersion(kind string) int {
	switch kind {
	case agentproto.KindDisconnect, agentproto.KindNotify:
		return 4
	}
	return 1
}

func clamp(v, lo, hi int) int { return max(lo, min(v, hi)) }

// result converts an agent's result.
func result(r *agentproto.Result) (*broker.Result, error) {
	if !r.OK && r.Timeout {
		// The agent's copy of the deadline ran out just before the broker's.
		return nil, context.DeadlineExceeded
	}
	if !r.OK {
		reason := r.Error
		if reason == "" {
			reason = "agent reported a failure without a reason"
		}
		return nil, &broker.CommandError{Reason: reason}
	}
	out := &broker.Result{}
	for _, im := range r.Images {
		out.Images = append(out.Images, broker.Image{
			Format: im.Format, Data: im.Data, CreationTime: im.CreationTime, Primary: im.Primary,
		})
	}
	return out, nil
}
