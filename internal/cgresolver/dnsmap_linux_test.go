package cgresolver

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// fsizeChildEnv makes the test binary, re-run by
// TestWriteDNSMappings_WriteFails, write the mappings under a file size
// limit.
const fsizeChildEnv = "BERTH_TEST_DNS_FSIZE_DIR"

// TestWriteDNSMappings_WriteFails writes a mapping file larger than the
// process may write (RLIMIT_FSIZE, set in a child process: the kernel
// refuses the write past the limit with EFBIG, as on a full file system) over
// a good one. The write must fail and the good file stay in place: a
// truncated file renamed into place would be JSON that does not parse, and
// describe-server-dns-mappings and a restarted broker would have no mappings.
func TestWriteDNSMappings_WriteFails(t *testing.T) {
	if dir := os.Getenv(fsizeChildEnv); dir != "" {
		writeUnderLimit(dir)
		return
	}
	dir := t.TempDir()
	good := []DNSMapping{{ServerIDType: "Id", ServerID: "srv-1", DNSNames: DNSNames{InternalDNSName: "good.internal"}}}
	if err := WriteDNSMappings(dir, good); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, DNSMappingsFile)
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command(os.Args[0], "-test.run=^TestWriteDNSMappings_WriteFails$", "-test.count=1")
	cmd.Env = append(os.Environ(), fsizeChildEnv+"="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v: %s", err, out)
	}
	if !bytes.Contains(out, []byte("write error: write dns mappings:")) || !bytes.Contains(out, []byte("file too large")) {
		t.Errorf("WriteDNSMappings did not report the failed write: %s", out)
	}
	after, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(after, before) {
		t.Fatalf("the mapping file was replaced by a failed write (%d bytes, was %d): %.80q…", len(after), len(before), after)
	}
	if list, err := LoadDNSMappings(dir); err != nil || len(list) != 1 || list[0].DNSNames.InternalDNSName != "good.internal" {
		t.Fatalf("mappings after the failed write: %v %v", list, err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() != DNSMappingsFile {
			t.Errorf("left behind: %s", e.Name())
		}
	}
}

// writeUnderLimit is the child of TestWriteDNSMappings_WriteFails: it writes
// about 40 KiB of mappings into dir with files limited to 4 KiB, and prints
// what WriteDNSMappings returned.
func writeUnderLimit(dir string) {
	var list []DNSMapping
	for i := range 400 {
		list = append(list, DNSMapping{ServerIDType: "Id", ServerID: fmt.Sprintf("srv-%d", i),
			DNSNames: DNSNames{InternalDNSName: fmt.Sprintf("desk-%d.internal", i)}})
	}
	lim := syscall.Rlimit{Cur: 4096, Max: 4096}
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
		fmt.Println("setrlimit:", err)
		os.Exit(1)
	}
	err := WriteDNSMappings(dir, list)
	fmt.Println("write error:", strings.ReplaceAll(fmt.Sprint(err), "\n", " "))
}
