package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"math/big"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseConstraints(t *testing.T) {
	tests := []struct {
		name    string
		in      []string
		dns     []string
		ips     []string
		wantErr string
	}{
		{name: "empty", in: []string{"", " "}},
		{name: "domains and ranges", in: []string{" Corp.Example. ", ".lab.example", "10.20.0.0/16", "fd00::/8"},
			dns: []string{".lab.example", "corp.example"}, ips: []string{"10.20.0.0/16", "fd00::/8"}},
		{name: "single addresses", in: []string{"192.0.2.7", "2001:db8::1"}, ips: []string{"192.0.2.7/32", "2001:db8::1/128"}},
		{name: "masked", in: []string{"10.1.2.3/8"}, ips: []string{"10.0.0.0/8"}},
		{name: "nested ranges collapse", in: []string{"10.1.0.0/16", "10.0.0.0/8"}, ips: []string{"10.0.0.0/8"}},
		{name: "duplicates", in: []string{"a.example", "A.example"}, dns: []string{"a.example"}},
		{name: "bad label", in: []string{"-bad.example"}, wantErr: "-bad.example"},
		{name: "wildcard", in: []string{"*.example"}, wantErr: "*.example"},
		{name: "url", in: []string{"https://x.example"}, wantErr: "https://x.example"},
		{name: "bad cidr", in: []string{"10.0.0.0/33"}, wantErr: "10.0.0.0/33"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseConstraints(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one naming %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(c.DNSDomains, ",") != strings.Join(tt.dns, ",") {
				t.Errorf("DNS = %v, want %v", c.DNSDomains, tt.dns)
			}
			var ips []string
			for _, p := range c.IPRanges {
				ips = append(ips, p.String())
			}
			if strings.Join(ips, ",") != strings.Join(tt.ips, ",") {
				t.Errorf("IPs = %v, want %v", ips, tt.ips)
			}
		})
	}
}

func TestConstraints_Permits(t *testing.T) {
	c, err := ParseConstraints([]string{"corp.example", ".lab.example", "10.0.0.0/8", "fd00::/8"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		want bool
	}{
		{"corp.example", true},
		{"desk1.corp.example", true},
		{"DESK1.Corp.Example.", true},
		{"xcorp.example", false},
		{"corp.example.evil", false},
		{"lab.example", false}, // a leading dot permits only names below
		{"gpu1.lab.example", true},
		{"www.google.com", false},
		{"localhost", false},
		{"10.1.2.3", true},
		{"11.1.2.3", false},
		{"127.0.0.1", false},
		{"fd00::5", true},
		{"::1", false},
		{"::ffff:10.1.2.3", true}, // IPv4-mapped: certificates carry the IPv4 form
	}
	for _, tt := range tests {
		if got := c.Permits(tt.name); got != tt.want {
			t.Errorf("Permits(%q) = %v, want %v", tt.name, got, tt.want)
		}
	}
	if (Constraints{}).Permits("10.1.2.3") || (Constraints{}).Permits("a.example") {
		t.Error("the zero Constraints permit a name")
	}
}

func TestDefaultConstraints(t *testing.T) {
	c := DefaultConstraints()
	for _, n := range []string{"10.9.8.7", "172.20.0.1", "192.168.1.1", "100.64.0.9", "fd12::1"} {
		if !c.Permits(n) {
			t.Errorf("the defaults do not permit private address %s", n)
		}
	}
	for _, n := range []string{"127.0.0.1", "::1", "localhost", "8.8.8.8", "www.google.com", "169.254.169.254"} {
		if c.Permits(n) {
			t.Errorf("the defaults permit %s", n)
		}
	}
}

// gatewayCA makes a name-constrained CA in a temporary directory.
func gatewayCA(t *testing.T, subtrees ...string) (*CA, string) {
	t.Helper()
	dir := t.TempDir()
	keyPEM, err := LoadOrCreateKeyFile(filepath.Join(dir, "gateway-ca.key"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := ParseConstraints(subtrees)
	if err != nil {
		t.Fatal(err)
	}
	ca, changed, err := ConstrainedCA(keyPEM, filepath.Join(dir, "gateway-ca.pem"), c)
	if err != nil || !changed {
		t.Fatalf("ConstrainedCA: changed %v, %v", changed, err)
	}
	return ca, dir
}

func TestConstrainedCA(t *testing.T) {
	ca, dir := gatewayCA(t, "fleet.example", "10.0.0.0/8")
	// The name constraints extension (2.5.29.30) is present and critical.
	var critical bool
	for _, e := range ca.Cert.Extensions {
		if e.Id.Equal(asn1.ObjectIdentifier{2, 5, 29, 30}) {
			critical = e.Critical
		}
	}
	if !critical {
		t.Error("the name constraints extension is missing or not critical")
	}
	if !ca.Cert.PermittedDNSDomainsCritical || !ca.Cert.MaxPathLenZero || !ca.Cert.IsCA {
		t.Errorf("CA flags: critical %v, max path len zero %v, CA %v", ca.Cert.PermittedDNSDomainsCritical, ca.Cert.MaxPathLenZero, ca.Cert.IsCA)
	}
	if len(ca.Cert.ExtKeyUsage) != 1 || ca.Cert.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth {
		t.Errorf("CA extended key usage = %v, want server auth only", ca.Cert.ExtKeyUsage)
	}
	if fi, err := os.Stat(filepath.Join(dir, "gateway-ca.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("gateway-ca.key: %v %v", fi, err)
	}
	keyPEM, _ := os.ReadFile(filepath.Join(dir, "gateway-ca.key"))
	c, _ := ParseConstraints([]string{"fleet.example", "10.0.0.0/8"})

	// The same key and constraints: the same certificate.
	again, changed, err := ConstrainedCA(keyPEM, filepath.Join(dir, "gateway-ca.pem"), c)
	if err != nil || changed || !again.Cert.Equal(ca.Cert) {
		t.Fatalf("reload: changed %v, same %v, %v", changed, again != nil && again.Cert.Equal(ca.Cert), err)
	}
	// New constraints: a new certificate for the same key and subject, so
	// that leaves issued under the old one verify under the new one.
	leafPEM, err := ca.SignServer(mustKey(t).Public(), []string{"desk1.fleet.example", "10.1.2.3"}, "berth web gateway", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c2, _ := ParseConstraints([]string{"fleet.example", "10.0.0.0/8", "192.168.0.0/16"})
	wider, changed, err := ConstrainedCA(keyPEM, filepath.Join(dir, "gateway-ca.pem"), c2)
	if err != nil || !changed {
		t.Fatalf("new constraints: changed %v, %v", changed, err)
	}
	if got, _ := ConstraintsOf(wider.Cert); !got.Equal(c2) {
		t.Errorf("new certificate's constraints = %v, want %v", got, c2)
	}
	if wider.KeyID() != ca.KeyID() || !bytes.Equal(wider.Cert.RawSubject, ca.Cert.RawSubject) {
		t.Error("the new certificate has another key ID or subject")
	}
	if _, err := parseLeaf(t, leafPEM).Verify(x509.VerifyOptions{Roots: pool(wider.Cert), DNSName: "desk1.fleet.example"}); err != nil {
		t.Errorf("a leaf of the old certificate under the new one: %v", err)
	}
}

// TestConstrainedCA_Verification signs certificates with the gateway CA's
// key directly, as a broker bug or a stolen signing path would, and checks
// that Go's and OpenSSL's verifiers refuse every one that names something
// outside the constraints, while they accept one inside.
func TestConstrainedCA_Verification(t *testing.T) {
	ca, dir := gatewayCA(t, "fleet.example", "10.0.0.0/8")
	caFile := filepath.Join(dir, "gateway-ca.pem")
	tests := []struct {
		name  string
		dns   []string
		ips   []string
		check string // the name to verify for
		ok    bool
	}{
		{"inside", []string{"desk1.fleet.example"}, []string{"10.1.2.3"}, "desk1.fleet.example", true},
		{"inside, by address", nil, []string{"10.1.2.3"}, "10.1.2.3", true},
		{"public site", []string{"www.google.com"}, nil, "www.google.com", false},
		{"localhost", []string{"localhost"}, nil, "localhost", false},
		{"loopback address", nil, []string{"127.0.0.1"}, "127.0.0.1", false},
		{"one name outside taints the rest", []string{"desk1.fleet.example", "broker.corp.example"}, nil, "desk1.fleet.example", false},
		{"address outside", nil, []string{"192.0.2.10"}, "192.0.2.10", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			leaf := signUnchecked(t, ca, tt.dns, tt.ips)
			_, err := leaf.Verify(x509.VerifyOptions{Roots: pool(ca.Cert), DNSName: tt.check, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
			if (err == nil) != tt.ok {
				t.Errorf("Go verify for %s: err = %v, want ok %v", tt.check, err, tt.ok)
			}
			leafFile := filepath.Join(t.TempDir(), "leaf.pem")
			if err := os.WriteFile(leafFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.Raw}), 0o600); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command("openssl", "verify", "-purpose", "sslserver", "-CAfile", caFile, leafFile).CombinedOutput()
			if (err == nil) != tt.ok {
				t.Errorf("openssl verify: %v: %s, want ok %v", err, out, tt.ok)
			}
			if !tt.ok && err == nil {
				return
			}
			if !tt.ok && !strings.Contains(string(out), "constraint") && !strings.Contains(string(out), "permitted") {
				t.Errorf("openssl refused for another reason than the name constraints: %s", out)
			}
		})
	}
}

// signUnchecked signs a server certificate for names with ca's key, without
// any of the broker's checks.
func signUnchecked(t *testing.T, ca *CA, dns, ips []string) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "berth web gateway"},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     dns,
	}
	for _, s := range ips {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.IP(netip.MustParseAddr(s).AsSlice()))
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, mustKey(t).Public(), ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestParseCSR_Refuses(t *testing.T) {
	key := mustKey(t)
	withEmail, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: []string{"a.example"}, EmailAddresses: []string{"x@a.example"}}, key)
	many := make([]string, MaxCSRNames+1)
	for i := range many {
		many[i] = "h" + big.NewInt(int64(i)).String() + ".example"
	}
	tests := []struct {
		name string
		csr  []byte
		want string
	}{
		{"e-mail address", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: withEmail}), "e-mail"},
		{"too many names", mustCSR(t, key, many), "exceed"},
		{"bad name", mustCSR(t, key, []string{"a b.example"}), "invalid name"},
		{"certificate instead", []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), "CERTIFICATE REQUEST"},
	}
	for _, tt := range tests {
		if _, err := ParseCSR(tt.csr); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: err = %v, want %q", tt.name, err, tt.want)
		}
	}
}

func mustKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func pool(certs ...*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}

func parseLeaf(t *testing.T, certPEM []byte) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode(certPEM)
	if b == nil {
		t.Fatal("no PEM")
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
