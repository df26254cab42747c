package broker

import "strconv"

// prepare derives the tags and requirement properties of a server; it runs once
// before the server is published in the cache.
func (s *Server) prepare() {
	tags := SystemTags(&s.Info)
	for k, v := range s.Info.Tags {
		if _, sys := tags[k]; !sys {
			tags[k] = v
		}
	}
	s.tags = tags
	h := &s.Info.Host
	i := strconv.Itoa
	f := func(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
	n := func(v int64) string { return strconv.FormatInt(v, 10) }
	s.props = map[string]string{
		"Id":                                 s.ID,
		"Hostname":                           s.Info.Hostname,
		"Version":                            s.Info.Version,
		"SessionManagerAgentVersion":         s.Info.AgentVersion,
		"Host.Os.BuildNumber":                h.BuildNumber,
		"Host.Os.Family":                     osFamily(&s.Info),
		"Host.Os.KernelVersion":              h.KernelVersion,
		"Host.Os.Name":                       h.OSName,
		"Host.Os.Version":                    h.OSVersion,
		"Host.Memory.TotalBytes":             n(h.MemTotal),
		"Host.Memory.UsedBytes":              n(h.MemUsed),
		"Host.Swap.TotalBytes":               n(h.SwapTotal),
		"Host.Swap.UsedBytes":                n(h.SwapUsed),
		"Host.CpuLoadAverage.OneMinute":      f(h.Load1),
		"Host.CpuLoadAverage.FiveMinutes":    f(h.Load5),
		"Host.CpuLoadAverage.FifteenMinutes": f(h.Load15),
		"Host.Aws.Ec2InstanceId":             h.EC2InstanceID,
		"Host.Aws.Ec2InstanceType":           h.EC2InstanceType,
		"Host.Aws.Region":                    h.AWSRegion,
		"Host.Aws.Ec2ImageId":                h.EC2ImageID,
		"Host.CpuInfo.Architecture":          h.CPUArch,
		"Host.CpuInfo.ModelName":             h.CPUModel,
		"Host.CpuInfo.NumberOfCpus":          i(h.CPUs),
		"Host.CpuInfo.PhysicalCoresPerCpu":   i(h.CoresPerCPU),
		"Host.CpuInfo.Vendor":                h.CPUVendor,
	}
	for k, v := range s.props {
		if v == "" {
			delete(s.props, k) // an absent property matches only !=
		}
	}
}

// tagsOf returns the server's tags including system tags.
func (s *Service) tagsOf(srv *Server) map[string]string { return srv.tags }

func propsOf(srv *Server) map[string]string { return srv.props }
