package requirements

// Properties lists the canonical paths of the server properties that a
// requirements expression may reference as server:PATH.
var Properties = []string{
	"Id",
	"Hostname",
	"Version",
	"SessionManagerAgentVersion",
	"Host.Os.BuildNumber",
	"Host.Os.Family",
	"Host.Os.KernelVersion",
	"Host.Os.Name",
	"Host.Os.Version",
	"Host.Memory.TotalBytes",
	"Host.Memory.UsedBytes",
	"Host.Swap.TotalBytes",
	"Host.Swap.UsedBytes",
	"Host.CpuLoadAverage.OneMinute",
	"Host.CpuLoadAverage.FiveMinutes",
	"Host.CpuLoadAverage.FifteenMinutes",
	"Host.Aws.Ec2InstanceId",
	"Host.Aws.Ec2InstanceType",
	"Host.Aws.Region",
	"Host.Aws.Ec2ImageId",
	"Host.CpuInfo.Architecture",
	"Host.CpuInfo.ModelName",
	"Host.CpuInfo.NumberOfCpus",
	"Host.CpuInfo.PhysicalCoresPerCpu",
	"Host.CpuInfo.Vendor",
}

// canonicalProperties maps every accepted spelling to its canonical path. It is
// built from a private copy so that changes to the exported Properties slice
// cannot change what Parse accepts.
var canonicalProperties = func() map[string]string {
	m := make(map[string]string, len(Properties)+3)
	for _, p := range Properties {
		m[p] = p
	}
	// The JSON of DescribeServers spells these with "EC2"; accept both.
	m["Host.Aws.EC2InstanceId"] = "Host.Aws.Ec2InstanceId"
	m["Host.Aws.EC2InstanceType"] = "Host.Aws.Ec2InstanceType"
	m["Host.Aws.EC2ImageId"] = "Host.Aws.Ec2ImageId"
	return m
}()

// CanonicalProperty maps a property path as written (either Ec2 spelling) to
// its canonical name ("Host.Aws.Ec2InstanceId"); ok is false for unknown
// properties. Paths are case-sensitive apart from the two Ec2/EC2 spellings.
func CanonicalProperty(path string) (canonical string, ok bool) {
	canonical, ok = canonicalProperties[path]
	return canonical, ok
}
