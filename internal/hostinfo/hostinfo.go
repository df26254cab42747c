// Package hostinfo describes the host an agent runs on: operating system,
// memory, processors, load, graphics adapters, logged-in users, network
// identity and, on EC2, the instance. It fills an [agentproto.HostReport].
//
// Each probe is one small function in its own file (os.go, mem.go, cpu.go,
// load.go, gpu.go, users.go, net.go, aws.go), listed in one explicit map. A
// [Prober] runs them all and reads every file under its Root, so tests point it
// at a fixture tree. A probe that fails leaves its fields empty and is logged
// once; a report never fails as a whole.
//
// Only Linux is supported today; on other systems most probes find no files and
// report nothing.
package hostinfo

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/berth-dev/berth/internal/agentproto"
)

// probe fills some fields of r. It returns an error only for a real failure:
// a source that the host does not have (no utmp file, no PCI bus, no IMDS
// configured) is not one.
type probe func(ctx context.Context, p *Prober, r *agentproto.HostReport) error

// probes are every probe by name. Each fills fields that no other probe
// touches, so their order does not matter; Report runs them in name order.
var probes = map[string]probe{
	"aws":   probeAWS,
	"cpu":   probeCPU,
	"gpu":   probeGPU,
	"load":  probeLoad,
	"mem":   probeMemory,
	"net":   probeNet,
	"os":    probeOS,
	"users": probeUsers,
}

// Probes returns the names of all probes, sorted; these are the names that
// Prober.Skip takes.
func Probes() []string {
	names := make([]string, 0, len(probes))
	for n := range probes {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Prober fills host reports. Set the fields before the first Report and do not
// change them afterwards; the zero value probes the real machine. A Prober is
// safe for concurrent use and caches what does not change (EC2 instance data,
// graphics adapter names).
type Prober struct {
	// Root is the directory the probes read /proc, /sys, /etc and /var/run
	// from; "" means "/". Tests point it at a fixture tree.
	Root string
	// Skip names probes not to run (see Probes), e.g. "aws" off EC2.
	Skip []string
	// IMDSURL is the base URL of the EC2 instance metadata service; ""
	// means DefaultIMDSURL.
	IMDSURL string
	// IMDSTimeout bounds all the requests of one IMDS lookup together; 0
	// means DefaultIMDSTimeout. A lookup that fails is not tried again by
	// this Prober, so a host off EC2 pays it once.
	IMDSTimeout time.Duration
	// NvidiaSMI is the nvidia-smi program used to name NVIDIA GPUs. Empty
	// means "nvidia-smi" from PATH when Root is "/", and none otherwise.
	NvidiaSMI string
	// PreferredInterface names the network interface whose address the
	// report gives as IP (agent.conf's preferred_network_interface); "" means
	// the default route's interface. See probeNet for the whole order.
	PreferredInterface string
	// Interfaces lists the network interfaces; nil means SystemInterfaces.
	// Tests give a fixed list.
	Interfaces func() ([]NetInterface, error)
	// Logger receives each probe's first failure; nil discards them.
	Logger *slog.Logger

	mu     sync.Mutex      // guards failed, gpus and preferredProblem
	failed map[string]bool // probes whose failure has been logged
	gpus   gpuCache
	// preferredProblem is why PreferredInterface gave no address at the
	// last report ("" if it did), so that each problem is logged once.
	preferredProblem string

	awsMu sync.Mutex // held during the IMDS lookup
	aws   *awsCache  // nil until the lookup
}

// Report probes the host. Fields that no probe could fill stay empty; ctx
// bounds the probes that wait (IMDS, nvidia-smi), and failures after ctx is
// done are not logged.
func (p *Prober) Report(ctx context.Context) agentproto.HostReport {
	var r agentproto.HostReport
	for _, name := range Probes() {
		if slices.Contains(p.Skip, name) {
			continue
		}
		if err := probes[name](ctx, p, &r); err != nil && ctx.Err() == nil {
			p.logFailure(name, err)
		}
	}
	return r
}

// logFailure logs the first failure of a probe at warning level and later
// ones at debug level.
func (p *Prober) logFailure(name string, err error) {
	if p.Logger == nil {
		return
	}
	p.mu.Lock()
	first := !p.failed[name]
	if first {
		if p.failed == nil {
			p.failed = make(map[string]bool)
		}
		p.failed[name] = true
	}
	p.mu.Unlock()
	level := slog.LevelDebug
	if first {
		level = slog.LevelWarn
	}
	p.Logger.Log(context.Background(), level, "host probe failed; its fields stay empty", "probe", name, "err", err)
}

// path returns the file name under Root for an absolute path.
func (p *Prober) path(abs string) string {
	if p.Root == "" || p.Root == "/" {
		return abs
	}
	return filepath.Join(p.Root, abs)
}

// realRoot reports whether the Prober looks at the machine it runs on.
func (p *Prober) realRoot() bool {
	return p.Root == "" || p.Root == "/"
}

// readFile reads a file under Root.
func (p *Prober) readFile(abs string) ([]byte, error) {
	return os.ReadFile(p.path(abs))
}
