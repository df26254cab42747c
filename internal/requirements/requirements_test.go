package requirements_test

import (
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/berth-dev/berth/internal/requirements"
)

// server is a Subject backed by maps; it records the property paths asked for.
type server struct {
	tags  map[string]string
	props map[string]string
	asked []string
}

func (s *server) Tag(key string) (string, bool) {
	v, ok := s.tags[key]
	return v, ok
}

func (s *server) Property(path string) (string, bool) {
	s.asked = append(s.asked, path)
	v, ok := s.props[path]
	return v, ok
}

func MustParse(tb testing.TB, src string) *requirements.Expr {
	tb.Helper()
	e, err := requirements.Parse(src)
	if err != nil {
		tb.Fatalf("Parse(%q): %v", src, err)
	}
	return e
}

func TestParse_String(t *testing.T) {
	tests := []struct {
		src, want string
	}{
		{"tag:a='x'", "tag:a = 'x'"},
		{"  tag:a   =   'x'  ", "tag:a = 'x'"},
		{"tag:a\t!=\r\n'x'", "tag:a != 'x'"},
		{"tag:a<1", "tag:a < 1"},
		{"tag:a<=1", "tag:a <= 1"},
		{"tag:a>1", "tag:a > 1"},
		{"tag:a>=1", "tag:a >= 1"},
		{"tag:a:='x'", "tag:a := 'x'"},
		{"tag:a :='x'", "tag:a := 'x'"},
		{"tag:dcv:os-family = 'linux'", "tag:dcv:os-family = 'linux'"},
		{"tag:dcv:max-virtual-sessions>=2", "tag:dcv:max-virtual-sessions >= 2"},
		{"tag:a.b/c_d-e:f='x'", "tag:a.b/c_d-e:f = 'x'"},
		{"tag:a: = 'x'", "tag:a: = 'x'"},
		{"tag:a=-5", "tag:a = -5"},
		{"tag:a=+5", "tag:a = +5"},
		{"tag:a = 1024E6", "tag:a = 1024E6"},
		{"tag:a = 2.5e-3", "tag:a = 2.5e-3"},
		{"tag:a = 1e+3", "tag:a = 1e+3"},
		{"tag:owner = 'o''neil'", "tag:owner = 'o''neil'"},
		{"tag:a = ''''", "tag:a = ''''"},
		{"tag:a = ''", "tag:a = ''"},
		{`tag:a = '"x"'`, `tag:a = '"x"'`},
		{"tag:a = 'x' AND tag:b = 'y'", "tag:a = 'x' and tag:b = 'y'"},
		{"tag:a = 'x' Or tag:b = 'y'", "tag:a = 'x' or tag:b = 'y'"},
		{"NOT tag:a = 'x'", "not tag:a = 'x'"},
		{"not not tag:a = 'x'", "not not tag:a = 'x'"},
		{"(tag:a = 'x')", "tag:a = 'x'"},
		{"((tag:a = 'x'))", "tag:a = 'x'"},
		{"not (tag:a = 'x')", "not tag:a = 'x'"},
		{"not(tag:a='x')and(tag:b='y')", "not tag:a = 'x' and tag:b = 'y'"},
		{"not (tag:a = 'x' or tag:b = 'y')", "not (tag:a = 'x' or tag:b = 'y')"},
		{"not (tag:a = 'x' and tag:b = 'y')", "not (tag:a = 'x' and tag:b = 'y')"},
		// Precedence: and binds tighter than or.
		{"tag:a=1 or tag:b=2 and tag:c=3", "tag:a = 1 or tag:b = 2 and tag:c = 3"},
		{"(tag:a=1 or tag:b=2) and tag:c=3", "(tag:a = 1 or tag:b = 2) and tag:c = 3"},
		{"tag:a=1 and (tag:b=2 or tag:c=3)", "tag:a = 1 and (tag:b = 2 or tag:c = 3)"},
		// Same-operator groups are flattened.
		{"tag:a=1 and (tag:b=2 and tag:c=3)", "tag:a = 1 and tag:b = 2 and tag:c = 3"},
		{"(tag:a=1 or tag:b=2) or (tag:c=3 or tag:d=4)", "tag:a = 1 or tag:b = 2 or tag:c = 3 or tag:d = 4"},
		{"tag:a='x'and tag:b='y'", "tag:a = 'x' and tag:b = 'y'"},
		// Server properties, both EC2 spellings.
		{"server:Id = 'i-1'", "server:Id = 'i-1'"},
		{"server:Host.Aws.EC2InstanceType = 'g4dn.xlarge'", "server:Host.Aws.Ec2InstanceType = 'g4dn.xlarge'"},
		{"server:Host.Aws.Ec2InstanceType = 'g4dn.xlarge'", "server:Host.Aws.Ec2InstanceType = 'g4dn.xlarge'"},
		{"server:Host.Aws.EC2InstanceId = 'i'", "server:Host.Aws.Ec2InstanceId = 'i'"},
		{"server:Host.Aws.EC2ImageId = 'ami'", "server:Host.Aws.Ec2ImageId = 'ami'"},
		{"server:Host.Memory.TotalBytes >= 1024E6", "server:Host.Memory.TotalBytes >= 1024E6"},
		{"server:Host.CpuInfo.NumberOfCpus>4", "server:Host.CpuInfo.NumberOfCpus > 4"},
		{"tag:x = 'é'", "tag:x = 'é'"},
	}
	for _, tt := range tests {
		t.Run(tt.src, func(t *testing.T) {
			e := MustParse(t, tt.src)
			if got := e.String(); got != tt.want {
				t.Errorf("String() = %q, want %q", got, tt.want)
			}
			again := MustParse(t, e.String())
			if got := again.String(); got != tt.want {
				t.Errorf("Parse(String()).String() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestParse_Errors(t *testing.T) {
	deep := func(n int) string {
		return strings.Repeat("(", n) + "tag:a = 1" + strings.Repeat(")", n)
	}
	tests := []struct {
		name     string
		src      string
		pos      int
		expected string // substring of SyntaxError.Expected
		found    string
	}{
		{"empty", "", 1, "an expression", "end of input"},
		{"blank", " \t\n ", 5, "an expression", "end of input"},
		{"keyword as value", "server:Id != and", 14, "a quoted string or a number", `"and"`},
		{"missing value", "tag:a =", 8, "a quoted string or a number", "end of input"},
		{"missing operator", "tag:a 'x'", 7, "an operator", `"'x'"`},
		{"double quotes", `tag:a = "x"`, 9, "a quoted string or a number", `"\""`},
		{"bare word value", "tag:a = linux", 9, "a quoted string or a number", `"linux"`},
		{"unterminated string", "tag:a = 'x", 9, "closing quote", "end of input"},
		{"unterminated after escape", "tag:a = 'x''", 9, "closing quote", "end of input"},
		{"contains number", "tag:a := 5", 10, ":= compares strings only", `"5"`},
		{"unknown property", "server:Host.Gpu = 'x'", 8, "known server property", `unknown server property "Host.Gpu"`},
		{"property wrong case", "server:host.os.family = 'x'", 8, "known server property", `unknown server property "host.os.family"`},
		{"empty server property", "server: = 'x'", 8, "server property", `" "`},
		{"empty tag key", "tag: = 'x'", 5, "a tag key", `" "`},
		{"tag without colon", "tag = 'x'", 1, "a comparison", `"tag"`},
		{"unknown operand", "label:a = 'x'", 1, "a comparison", `"label"`},
		{"upper-case TAG", "TAG:a = 'x'", 1, "a comparison", `"TAG"`},
		{"trailing and", "tag:a = 'x' and", 16, "a comparison", "end of input"},
		{"dangling or", "tag:a = 'x' or or tag:b = 'y'", 16, "a comparison", `"or"`},
		{"two comparisons", "tag:a = 'x' tag:b = 'y'", 13, `"and", "or" or end of input`, `"tag:b"`},
		{"unclosed paren", "(tag:a = 'x'", 13, `"and", "or" or ")"`, "end of input"},
		{"extra paren", "tag:a = 'x')", 12, `"and", "or" or end of input`, `")"`},
		{"empty parens", "()", 2, "a comparison", `")"`},
		{"bang alone", "tag:a ! 'x'", 7, "an operator", `"!"`},
		{"number without digits after e", "tag:a = 5e", 10, `"and", "or" or end of input`, `"e"`},
		{"not without operand", "not", 4, "a comparison", "end of input"},
		{"value first", "'x' = tag:a", 1, "a comparison", `"'x'"`},
		{"position counts characters", "tag:a = 'é' é", 13, `"and", "or" or end of input`, `"é"`},
		{"too deep parens", deep(65), 65, "at most 64 levels", `"("`},
		{"too deep not", strings.Repeat("not ", 65) + "tag:a = 1", 257, "at most 64 levels", `"not"`},
		{"hostile depth", strings.Repeat("(", 4000), 65, "at most 64 levels", `"("`},
		{"canonical form too long", strings.Repeat("tag:a=1 or ", 370) + "tag:a=1", 1, "in canonical form", "4819 bytes"},
		{"too long", "tag:a = '" + strings.Repeat("x", 5000) + "'", 4097, "at most 4096 bytes", "5010 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := requirements.Parse(tt.src)
			if err == nil {
				t.Fatalf("Parse(%.60q) = %.60q, want error", tt.src, e)
			}
			var se *requirements.SyntaxError
			if !errors.As(err, &se) {
				t.Fatalf("Parse(%.60q) error %T %v, want *SyntaxError", tt.src, err, err)
			}
			if se.Pos != tt.pos || !strings.Contains(se.Expected, tt.expected) || se.Found != tt.found {
				t.Errorf("Parse(%.60q) = %+v, want Pos %d, Expected containing %q, Found %s", tt.src, *se, tt.pos, tt.expected, tt.found)
			}
			if !strings.HasPrefix(err.Error(), "requirements: at position ") {
				t.Errorf("Error() = %q", err.Error())
			}
		})
	}
}

func TestParse_Limits(t *testing.T) {
	for _, src := range []string{
		strings.Repeat("(", 64) + "tag:a = 1" + strings.Repeat(")", 64),
		strings.Repeat("not ", 64) + "tag:a = 1",
		strings.Repeat("not (", 32) + "tag:a = 1" + strings.Repeat(")", 32),
		"tag:a = '" + strings.Repeat("x", 4096-10) + "'",
	} {
		if _, err := requirements.Parse(src); err != nil {
			t.Errorf("Parse(%.40q...): %v", src, err)
		}
	}
}

func TestSyntaxError_Error(t *testing.T) {
	_, err := requirements.Parse("server:Id != and")
	want := `requirements: at position 14: expected a quoted string or a number, found "and"`
	if err == nil || err.Error() != want {
		t.Errorf("Error() = %v, want %q", err, want)
	}
}

func TestExpr_Match(t *testing.T) {
	s := &server{
		tags: map[string]string{
			"pool":                     "gpu",
			"dcv:os-family":            "linux",
			"owner":                    "o'neil",
			"cpus":                     "16",
			"ratio":                    "2.5e-3",
			"version":                  "2023.1",
			"name":                     "alpha",
			"empty":                    "",
			"padded":                   " 8",
			"zero":                     "0",
			"octal":                    "007",
			"plus":                     "+5",
			"long":                     "1234567890123456",
			"huge":                     "1e400",
			"dot5":                     ".5",
			"hex":                      "0x10",
			"nan":                      "NaN",
			"under":                    "1_000",
			"dcv:max-virtual-sessions": "10",
		},
		props: map[string]string{
			"Id":                        "srv-1",
			"Host.Memory.TotalBytes":    "17179869184",
			"Host.Aws.Ec2InstanceType":  "g4dn.xlarge",
			"Host.Os.Family":            "linux",
			"Host.CpuInfo.NumberOfCpus": "8",
		},
	}
	tests := []struct {
		src  string
		want bool
	}{
		{"tag:pool = 'gpu'", true},
		{"tag:pool = 'GPU'", false},
		{"tag:pool != 'gpu'", false},
		{"tag:pool != 'cpu'", true},
		{"tag:dcv:os-family = 'linux'", true},
		{"tag:owner = 'o''neil'", true},
		{"tag:owner := ''''", true},
		{"tag:pool := 'p'", true},
		{"tag:pool := 'x'", false},
		{"tag:pool := ''", true},
		// Numeric comparisons.
		{"tag:cpus > 8", true},
		{"tag:cpus > 100", false},
		{"tag:cpus >= 16", true},
		{"tag:cpus = 16.0", true},
		{"tag:cpus = 1.6e1", true},
		{"tag:cpus = '16.0'", true},
		{"tag:cpus > '9'", true},
		{"tag:cpus < 1024E6", true},
		{"tag:ratio = 0.0025", true},
		{"tag:ratio < 0.003", true},
		{"tag:dcv:max-virtual-sessions >= 2", true},
		{"server:Host.Memory.TotalBytes >= 16E9", true},
		{"server:Host.Memory.TotalBytes < 16E9", false},
		{"tag:cpus > -1", true},
		{"tag:zero = 0", true},
		{"tag:zero = -0", true},
		{"tag:octal = 7", true},
		{"tag:plus = 5", true},
		{"tag:long = 1234567890123456", true},
		{"tag:long > 1234567890123455", true},
		{"tag:huge > 1e300", true},
		{"tag:dot5 = 0.5", false}, // ".5" is not a number: compared as strings
		{"tag:dot5 = '.5'", true},
		{"tag:hex = 16", false},
		{"tag:hex < 1", true}, // "0x10" < "1" as strings
		{"tag:nan = 0", false},
		{"tag:nan > 0", true}, // "NaN" vs "0" as strings
		{"tag:under = 1000", false},
		// String comparisons when either side is not a number.
		{"tag:version >= '2023.0'", true},
		{"tag:name < 'beta'", true},
		{"tag:name > 'Alpha'", true},
		{"tag:name <= 'alpha'", true},
		{"tag:name < 5", false},   // "alpha" vs "5" as strings: 'a' > '5'
		{"tag:padded = 8", false}, // " 8" is not a number
		{"tag:padded = ' 8'", true},
		{"tag:empty = ''", true},
		{"tag:empty != ''", false},
		// Missing tags and properties: only != is true.
		{"tag:missing = 'x'", false},
		{"tag:missing != 'x'", true},
		{"tag:missing < 1", false},
		{"tag:missing > 1", false},
		{"tag:missing := ''", false},
		{"not tag:missing = 'x'", true},
		{"server:Hostname = 'x'", false},
		{"server:Hostname != 'x'", true},
		// Properties and both EC2 spellings.
		{"server:Id = 'srv-1'", true},
		{"server:Host.Aws.EC2InstanceType = 'g4dn.xlarge'", true},
		{"server:Host.Aws.Ec2InstanceType := 'g4dn'", true},
		{"server:Host.CpuInfo.NumberOfCpus >= 8 and server:Host.Os.Family = 'linux'", true},
		// Boolean structure and precedence.
		{"tag:pool = 'gpu' and tag:cpus > 100", false},
		{"tag:pool = 'cpu' or tag:cpus > 8", true},
		{"tag:pool = 'x' or tag:pool = 'y' and tag:missing = 'z'", false},
		{"tag:pool = 'gpu' or tag:pool = 'y' and tag:missing = 'z'", true},
		{"(tag:pool = 'gpu' or tag:pool = 'y') and tag:missing = 'z'", false},
		{"not tag:pool = 'gpu' or tag:cpus = 16", true},
		{"not (tag:pool = 'gpu' or tag:cpus = 16)", false},
		{"not not tag:pool = 'gpu'", true},
		{"NOT tag:pool = 'cpu' AND tag:cpus = 16", true},
	}
	for _, tt := range tests {
		t.Run(tt.src, func(t *testing.T) {
			if got := MustParse(t, tt.src).Match(s); got != tt.want {
				t.Errorf("Match = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestExpr_Match_CanonicalProperty(t *testing.T) {
	s := &server{props: map[string]string{"Host.Aws.Ec2ImageId": "ami-1", "Host.Aws.Ec2InstanceId": "i-1"}}
	e := MustParse(t, "server:Host.Aws.EC2ImageId = 'ami-1' and server:Host.Aws.EC2InstanceId = 'i-1'")
	if !e.Match(s) {
		t.Error("Match = false, want true")
	}
	want := []string{"Host.Aws.Ec2ImageId", "Host.Aws.Ec2InstanceId"}
	if strings.Join(s.asked, ",") != strings.Join(want, ",") {
		t.Errorf("Property asked for %q, want %q", s.asked, want)
	}
}

func TestExpr_Concurrent(t *testing.T) {
	e := MustParse(t, "tag:pool = 'gpu' and server:Host.CpuInfo.NumberOfCpus >= 8 or not tag:x := 'y'")
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			s := &benchServer{
				tags:  map[string]string{"pool": "gpu"},
				props: map[string]string{"Host.CpuInfo.NumberOfCpus": "16"},
			}
			for range 1000 {
				if !e.Match(s) {
					t.Error("Match = false, want true")
					return
				}
				_ = e.String()
			}
		})
	}
	wg.Wait()
}

func TestExpr_Nil(t *testing.T) {
	var e *requirements.Expr
	if !e.Match(&server{}) || e.String() != "" {
		t.Error("nil Expr should match everything and print as empty")
	}
}

func TestCanonicalProperty(t *testing.T) {
	tests := []struct {
		path, want string
		ok         bool
	}{
		{"Id", "Id", true},
		{"Host.Os.Family", "Host.Os.Family", true},
		{"Host.Aws.Ec2InstanceId", "Host.Aws.Ec2InstanceId", true},
		{"Host.Aws.EC2InstanceId", "Host.Aws.Ec2InstanceId", true},
		{"Host.Aws.EC2InstanceType", "Host.Aws.Ec2InstanceType", true},
		{"Host.Aws.EC2ImageId", "Host.Aws.Ec2ImageId", true},
		{"Host.Aws.EC2Region", "", false},
		{"host.os.family", "", false},
		{"server:Id", "", false},
		{"", "", false},
	}
	for _, tt := range tests {
		got, ok := requirements.CanonicalProperty(tt.path)
		if got != tt.want || ok != tt.ok {
			t.Errorf("CanonicalProperty(%q) = %q, %v; want %q, %v", tt.path, got, ok, tt.want, tt.ok)
		}
	}
	for _, p := range requirements.Properties {
		if c, ok := requirements.CanonicalProperty(p); !ok || c != p {
			t.Errorf("CanonicalProperty(%q) = %q, %v", p, c, ok)
		}
		if _, err := requirements.Parse("server:" + p + " = 'x'"); err != nil {
			t.Errorf("Parse(server:%s): %v", p, err)
		}
	}
	if len(requirements.Properties) != 25 {
		t.Errorf("len(Properties) = %d, want 25", len(requirements.Properties))
	}
}

func BenchmarkMatch(b *testing.B) {
	e := MustParse(b, "tag:pool = 'gpu' and server:Host.CpuInfo.NumberOfCpus >= 8 and "+
		"(server:Host.Aws.EC2InstanceType := 'g4dn' or tag:dcv:os-family = 'windows') and not tag:draining = 'true'")
	s := &benchServer{
		tags:  map[string]string{"pool": "gpu", "dcv:os-family": "linux", "team": "render"},
		props: map[string]string{"Host.CpuInfo.NumberOfCpus": "16", "Host.Aws.Ec2InstanceType": "g4dn.xlarge"},
	}
	b.ReportAllocs()
	for b.Loop() {
		if !e.Match(s) {
			b.Fatal("no match")
		}
	}
}

// benchServer is a Subject without the recording of server.
type benchServer struct{ tags, props map[string]string }

func (s *benchServer) Tag(key string) (string, bool) {
	v, ok := s.tags[key]
	return v, ok
}

func (s *benchServer) Property(path string) (string, bool) {
	v, ok := s.props[path]
	return v, ok
}
