package cgresolver

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/berth-dev/berth/internal/broker"
)

func TestDNSMappings_Lookup(t *testing.T) {
	dir := t.TempDir()
	d := NewDNSMappings(dir, slog.New(slog.DiscardHandler))
	srv := &broker.Server{ID: "srv-1", Info: broker.ServerInfo{IP: "10.0.0.5"}}
	srv.Info.Host.EC2InstanceID = "i-0abc"
	if _, ok := d.Lookup(srv); ok {
		t.Fatal("a mapping without a file")
	}
	write := func(list []DNSMapping) {
		t.Helper()
		if err := WriteDNSMappings(dir, list); err != nil {
			t.Fatal(err)
		}
	}
	m := func(typ, id, name string) DNSMapping {
		return DNSMapping{ServerIDType: typ, ServerID: id, DNSNames: DNSNames{InternalDNSName: name}}
	}
	for _, tc := range []struct {
		list []DNSMapping
		ips  []string
		want string
	}{
		{[]DNSMapping{m("Ip", "10.0.0.5", "ip"), m("Host.Aws.Ec2InstanceId", "i-0abc", "ec2"), m("Id", "srv-1", "id")}, nil, "id"},
		{[]DNSMapping{m("Ip", "10.0.0.5", "ip"), m("Host.Aws.Ec2InstanceId", "i-0abc", "ec2")}, nil, "ec2"},
		{[]DNSMapping{m("Ip", "10.0.0.5", "ip")}, nil, "ip"},
		{[]DNSMapping{m("Ip", "192.0.2.1", "endpoint-ip")}, []string{"192.0.2.1"}, "endpoint-ip"},
		{[]DNSMapping{m("Ip", "::ffff:10.0.0.5", "mapped")}, nil, "mapped"},
		{[]DNSMapping{m("Id", "srv-2", "other")}, nil, ""},
	} {
		write(tc.list)
		n, ok := d.Lookup(srv, tc.ips...)
		if ok != (tc.want != "") || n.InternalDNSName != tc.want {
			t.Errorf("%v: got %q %v, want %q", tc.list, n.InternalDNSName, ok, tc.want)
		}
	}

	// A file that does not parse keeps the last good mappings.
	write([]DNSMapping{m("Id", "srv-1", "good")})
	if n, _ := d.Lookup(srv); n.InternalDNSName != "good" {
		t.Fatalf("got %q", n.InternalDNSName)
	}
	path := filepath.Join(dir, DNSMappingsFile)
	if err := os.WriteFile(path, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if n, _ := d.Lookup(srv); n.InternalDNSName != "good" {
		t.Fatalf("after a bad file: %q", n.InternalDNSName)
	}
	// A removed file removes the mappings.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if _, ok := d.Lookup(srv); ok {
		t.Fatal("mapping survived the file's removal")
	}
}

func TestParseDNSMappings_Normalizes(t *testing.T) {
	list, err := ParseDNSMappings([]byte(`[{"ServerIdType":"Ip","ServerId":"::ffff:10.0.0.5","DnsNames":{"InternalDnsName":"a.b"}}]`))
	if err != nil || len(list) != 1 || list[0].ServerID != "10.0.0.5" {
		t.Fatalf("%v %v", list, err)
	}
	if _, err := ParseDNSMappings([]byte(`[{"ServerIdType":"Ip","ServerId":"10.0.0.5","DnsNames":{"InternalDnsName":"a.b"}},
		{"ServerIdType":"Ip","ServerId":"::ffff:10.0.0.5","DnsNames":{"InternalDnsName":"c.d"}}]`)); err == nil {
		t.Fatal("the same address twice was accepted")
	}
}
