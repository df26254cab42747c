package hostinfo

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/agentproto"
)

// nvidiaSMITimeout bounds one nvidia-smi run.
const nvidiaSMITimeout = 5 * time.Second

// pciIDsFiles are where distributions install the PCI ID database, in the
// order they are tried.
var pciIDsFiles = []string{"/usr/share/misc/pci.ids", "/usr/share/hwdata/pci.ids", "/usr/share/pci.ids"}

// pciDevice is one display-class device on the PCI bus.
type pciDevice struct {
	addr   string // "0000:01:00.0"
	vendor string // "10de", lower-case hex without 0x
	device string // "2204"
}

// gpuCache keeps the last GPU list with the devices it was built from, so
// that pci.ids is parsed and nvidia-smi run only when the devices change.
type gpuCache struct {
	key  string
	gpus []agentproto.GPU
}

// probeGPU fills GPUs with the display-class PCI devices (class 0x03xxxx:
// VGA, 3D and other display controllers), in bus order. Vendor and model
// names come from nvidia-smi for NVIDIA devices when it runs, else from the
// pci.ids database, else from a few well-known vendor IDs and the raw codes.
func probeGPU(ctx context.Context, p *Prober, r *agentproto.HostReport) error {
	devs, err := p.pciDisplayDevices()
	if err != nil {
		return err
	}
	if len(devs) == 0 {
		return nil
	}
	var key strings.Builder
	for _, d := range devs {
		fmt.Fprintf(&key, "%s=%s:%s;", d.addr, d.vendor, d.device)
	}
	p.mu.Lock()
	if p.gpus.key == key.String() {
		r.GPUs = slices.Clone(p.gpus.gpus)
		p.mu.Unlock()
		return nil
	}
	p.mu.Unlock()

	var errs []error
	names, err := p.pciNames(devs)
	if err != nil {
		errs = append(errs, err)
	}
	var smi map[string]string
	if slices.ContainsFunc(devs, func(d pciDevice) bool { return d.vendor == "10de" }) {
		if smi, err = p.nvidiaSMINames(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	gpus := make([]agentproto.GPU, 0, len(devs))
	for _, d := range devs {
		g := agentproto.GPU{Vendor: names[d.vendor], Model: names[d.vendor+":"+d.device]}
		if g.Vendor == "" {
			g.Vendor = knownPCIVendors[d.vendor]
		}
		if g.Vendor == "" {
			g.Vendor = "vendor 0x" + d.vendor
		}
		if n := smi[d.addr]; n != "" {
			g.Model = n
		}
		if g.Model == "" {
			g.Model = "device 0x" + d.device
		}
		gpus = append(gpus, g)
	}
	if ctx.Err() == nil { // an interrupted nvidia-smi is tried again next time
		p.mu.Lock()
		p.gpus = gpuCache{key: key.String(), gpus: gpus}
		p.mu.Unlock()
	}
	r.GPUs = slices.Clone(gpus)
	return errors.Join(errs...)
}

// pciDisplayDevices lists the display-class devices in
// /sys/bus/pci/devices, sorted by address. A host without a PCI bus in sysfs
// (a container, some VMs) has none.
func (p *Prober) pciDisplayDevices() ([]pciDevice, error) {
	dir := p.path("/sys/bus/pci/devices")
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("pci devices: %w", err)
	}
	var devs []pciDevice
	for _, e := range entries {
		attr := func(name string) string {
			b, _ := os.ReadFile(filepath.Join(dir, e.Name(), name))
			return strings.ToLower(strings.TrimPrefix(strings.TrimSpace(string(b)), "0x"))
		}
		if class := attr("class"); !strings.HasPrefix(class, "03") {
			continue
		}
		devs = append(devs, pciDevice{addr: strings.ToLower(e.Name()), vendor: attr("vendor"), device: attr("device")})
	}
	slices.SortFunc(devs, func(a, b pciDevice) int { return strings.Compare(a.addr, b.addr) })
	return devs, nil
}

// pciNames looks the devices up in the first pci.ids file found. It returns
// vendor names keyed "vvvv" and device names keyed "vvvv:dddd". No pci.ids
// file is no error.
func (p *Prober) pciNames(devs []pciDevice) (map[string]string, error) {
	for _, name := range pciIDsFiles {
		f, err := os.Open(p.path(name))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("pci.ids: %w", err)
		}
		defer f.Close()
		want := make(map[string]bool)
		for _, d := range devs {
			want[d.vendor] = true
			want[d.vendor+":"+d.device] = true
		}
		names, err := parsePCIIDs(f, want)
		if err != nil {
			return names, fmt.Errorf("pci.ids %s: %w", name, err)
		}
		return names, nil
	}
	return nil, nil
}

// parsePCIIDs reads the pci.ids format and returns the names of the wanted
// vendors ("vvvv") and devices ("vvvv:dddd"):
//
//	vvvv  Vendor name
//	<TAB>dddd  Device name
//	<TAB><TAB>ssss ssss  Subsystem name
//
// It stops at the class list ("C xx  Class name") that follows the devices.
func parsePCIIDs(r io.Reader, want map[string]bool) (map[string]string, error) {
	names := make(map[string]string)
	sc := bufio.NewScanner(r)
	vendor := ""
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		if strings.HasPrefix(line, "C ") {
			break
		}
		switch {
		case line[0] != '\t':
			id, name, ok := pciIDLine(line)
			if !ok {
				vendor = ""
				continue
			}
			vendor = id
			if want[id] {
				names[id] = name
			}
		case len(line) > 1 && line[1] != '\t' && vendor != "":
			id, name, ok := pciIDLine(line[1:])
			if ok && want[vendor+":"+id] {
				names[vendor+":"+id] = name
			}
		}
	}
	return names, sc.Err()
}

// pciIDLine splits "xxxx  Name".
func pciIDLine(s string) (id, name string, ok bool) {
	id, name, ok = strings.Cut(s, " ")
	if !ok || len(id) != 4 {
		return "", "", false
	}
	return strings.ToLower(id), strings.TrimSpace(name), true
}

// nvidiaSMINames runs nvidia-smi and returns the GPU names keyed by PCI address
// in sysfs form ("0000:01:00.0"). Without nvidia-smi it returns nothing.
func (p *Prober) nvidiaSMINames(ctx context.Context) (map[string]string, error) {
	prog := p.NvidiaSMI
	if prog == "" {
		if !p.realRoot() {
			return nil, nil
		}
		var err error
		if prog, err = exec.LookPath("nvidia-smi"); err != nil {
			return nil, nil
		}
	}
	ctx, cancel := context.WithTimeout(ctx, nvidiaSMITimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, prog, "--query-gpu=pci.bus_id,name", "--format=csv,noheader").Output()
	if err != nil {
		return nil, fmt.Errorf("nvidia-smi: %w", err)
	}
	return parseNvidiaSMI(out), nil
}

// parseNvidiaSMI reads "00000000:01:00.0, NVIDIA H100 80GB HBM3" lines.
func parseNvidiaSMI(out []byte) map[string]string {
	m := make(map[string]string)
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		bus, name, ok := strings.Cut(sc.Text(), ",")
		name = strings.TrimSpace(name)
		if !ok || name == "" {
			continue
		}
		if addr, ok := sysfsPCIAddr(strings.TrimSpace(bus)); ok {
			m[addr] = name
		}
	}
	return m
}

// sysfsPCIAddr turns nvidia-smi's "00000000:01:00.0" (8-digit domain) into
// sysfs's "0000:01:00.0".
func sysfsPCIAddr(bus string) (string, bool) {
	var dom, b, dev, fn uint64
	if _, err := fmt.Sscanf(strings.ToLower(bus), "%x:%x:%x.%x", &dom, &b, &dev, &fn); err != nil {
		return "", false
	}
	return fmt.Sprintf("%04x:%02x:%02x.%x", dom, b, dev, fn), true
}

// knownPCIVendors names the vendors of common display adapters for hosts
// without a pci.ids file (names as pci.ids spells them).
var knownPCIVendors = map[string]string{
	"1002": "Advanced Micro Devices, Inc. [AMD/ATI]",
	"1013": "Cirrus Logic",
	"102b": "Matrox Electronics Systems Ltd.",
	"10de": "NVIDIA Corporation",
	"1414": "Microsoft Corporation",
	"15ad": "VMware",
	"1a03": "ASPEED Technology, Inc.",
	"1af4": "Red Hat, Inc.",
	"1d0f": "Amazon.com, Inc.",
	"8086": "Intel Corporation",
}
