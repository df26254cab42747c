package hostinfo

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"runtime"
	"strconv"
	"strings"

	"github.com/berth-dev/berth/internal/agentproto"
)

// probeCPU fills CPU from /proc/cpuinfo: vendor and model name, the number of
// CPUs (distinct sockets, "physical id", at least 1), the physical cores per
// CPU ("cpu cores", else logical processors per socket) and the architecture
// as uname -m prints it.
func probeCPU(_ context.Context, p *Prober, r *agentproto.HostReport) error {
	r.CPU.Arch = unameArch(runtime.GOARCH)
	data, err := p.readFile("/proc/cpuinfo")
	if err != nil {
		return fmt.Errorf("cpuinfo: %w", err)
	}
	c, err := parseCPUInfo(data)
	if err != nil {
		return err
	}
	c.Arch = r.CPU.Arch
	r.CPU = c
	return nil
}

// unameArch maps a GOARCH to the machine name uname -m prints.
func unameArch(goarch string) string {
	switch goarch {
	case "amd64":
		return "x86_64"
	case "386":
		return "i686"
	case "arm64":
		return "aarch64"
	case "arm":
		return "armv7l"
	default: // ppc64le, s390x, riscv64, mips64, loong64 print as they are named
		return goarch
	}
}

// parseCPUInfo reads /proc/cpuinfo: one block of "key : value" lines per
// logical processor, blocks separated by blank lines. Arch is left empty.
func parseCPUInfo(data []byte) (agentproto.CPU, error) {
	var (
		c        agentproto.CPU
		logical  int
		sockets  = map[string]bool{}
		cores    int
		armImpl  string
		armPart  string
		firstSet = map[string]string{} // first value of each key
	)
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 1<<20) // "flags" lines are long
	for sc.Scan() {
		line := sc.Text()
		if strings.TrimSpace(line) == "" {
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if _, seen := firstSet[k]; !seen {
			firstSet[k] = v
		}
		switch k {
		case "processor":
			// "processor : 0" starts a block; old ARM kernels also print
			// "Processor : ARMv7 ..." once, which is not a processor.
			if _, err := strconv.Atoi(v); err == nil {
				logical++
			}
		case "physical id":
			sockets[v] = true
		case "cpu cores":
			if n, err := strconv.Atoi(v); err == nil && n > 0 && cores == 0 {
				cores = n
			}
		case "CPU implementer":
			armImpl = v
		case "CPU part":
			armPart = v
		}
	}
	if err := sc.Err(); err != nil {
		return c, fmt.Errorf("cpuinfo: %w", err)
	}
	if logical == 0 && len(firstSet) == 0 {
		return c, fmt.Errorf("cpuinfo: no processors listed")
	}
	c.Vendor = firstSet["vendor_id"]
	c.Model = firstSet["model name"]
	if c.Model == "" {
		c.Model = firstSet["cpu model"] // mips
	}
	if c.Model == "" {
		c.Model = firstSet["cpu"] // ppc64le: "POWER9 (architected), altivec supported"
	}
	if armImpl != "" {
		if c.Vendor == "" {
			c.Vendor = armVendor(armImpl)
		}
		if c.Model == "" {
			c.Model = armModel(armImpl, armPart)
		}
	}
	c.Count = max(len(sockets), 1)
	c.CoresPerCPU = cores
	if c.CoresPerCPU == 0 {
		c.CoresPerCPU = max(logical/c.Count, 1)
	}
	return c, nil
}

// armVendor names an ARM "CPU implementer" code as lscpu does.
func armVendor(impl string) string {
	switch strings.ToLower(impl) {
	case "0x41":
		return "ARM"
	case "0x42":
		return "Broadcom"
	case "0x43":
		return "Cavium"
	case "0x46":
		return "Fujitsu"
	case "0x48":
		return "HiSilicon"
	case "0x4e":
		return "NVIDIA"
	case "0x50":
		return "APM"
	case "0x51":
		return "Qualcomm"
	case "0x53":
		return "Samsung"
	case "0x61":
		return "Apple"
	case "0x69":
		return "Intel"
	case "0xc0":
		return "Ampere"
	}
	return "implementer " + impl
}

// armModel names an ARM core from its implementer and "CPU part" codes: the
// common server and board cores by name, others by their codes.
func armModel(impl, part string) string {
	if strings.EqualFold(impl, "0x41") {
		switch strings.ToLower(part) {
		case "0xd03":
			return "Cortex-A53"
		case "0xd07":
			return "Cortex-A57"
		case "0xd08":
			return "Cortex-A72"
		case "0xd0b":
			return "Cortex-A76"
		case "0xd0c":
			return "Neoverse-N1"
		case "0xd40":
			return "Neoverse-V1"
		case "0xd49":
			return "Neoverse-N2"
		case "0xd4f":
			return "Neoverse-V2"
		}
	}
	if part == "" {
		return ""
	}
	return "part " + part
}
