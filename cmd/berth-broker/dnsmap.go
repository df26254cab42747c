package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/berth-dev/berth/internal/cgresolver"
)

// registerDNSMappings is the register-server-dns-mappings admin command.
func registerDNSMappings(_ context.Context, m *Main, a []string, out io.Writer) error {
	if a[0] == "" {
		return usageError("--file-path is required")
	}
	list, err := cgresolver.ReadDNSMappingsFile(a[0])
	if err != nil {
		return err
	}
	if err := cgresolver.WriteDNSMappings(m.Config.WorkingPath, list); err != nil {
		return err
	}
	fmt.Fprintf(out, "Successfully loaded %d server id - dns name mappings from file %s\n", len(list), a[0])
	return nil
}

// describeDNSMappings is the describe-server-dns-mappings admin command: it
// prints the loaded mappings as a JSON array with camelCase keys.
func describeDNSMappings(_ context.Context, m *Main, _ []string, out io.Writer) error {
	list, err := cgresolver.LoadDNSMappings(m.Config.WorkingPath)
	if err != nil {
		return err
	}
	b, err := json.MarshalIndent(cgresolver.Describe(list), "", "  ")
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "%s\n", b)
	return nil
}
