package permfile_test

import (
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/berth-dev/berth/internal/permfile"
)

// mustParse parses text or fails the test.
func mustParse(tb testing.TB, text string) *permfile.File {
	tb.Helper()
	f, err := permfile.Parse(text)
	if err != nil {
		tb.Fatalf("Parse: %v", err)
	}
	return f
}

// resolver returns a GroupResolver over a fixed user → groups map. Users
// that are not in the map have no groups (a known answer, not "unknown").
func resolver(m map[string][]string) permfile.GroupResolver {
	return func(user string) []string {
		if g, ok := m[user]; ok {
			return g
		}
		return []string{}
	}
}

// docExample is the example of the DCV Administrator Guide, with the groups
// and aliases it refers to.
const docExample = `
[groups]
my-group=john, user:jane, group:observers, osgroup:guests
observers=mallory, bob

[aliases]
file-management=file-upload, file-download, clipboard-management

[permissions]
john allow display file-upload file-download
group:observers deny audio-in audio-out clipboard-management
osgroup:guests allow clipboard-management file-management
%owner% allow builtin
`

func TestFile_Allowed(t *testing.T) {
	osGroups := resolver(map[string][]string{"gus": {"guests"}, "bob": {"guests"}})
	tests := []struct {
		name    string
		text    string
		user    string
		owner   string
		feature string
		groups  permfile.GroupResolver
		want    bool
	}{
		{"owner gets builtin", docExample, "alice", "alice", "usb", nil, true},
		{"named user allowed", docExample, "john", "alice", "file-upload", nil, true},
		{"named user not given feature", docExample, "john", "alice", "keyboard", nil, false},
		{"stranger gets nothing", docExample, "eve", "alice", "display", osGroups, false},
		{"os group member allowed alias", docExample, "gus", "alice", "clipboard-paste", osGroups, true},
		{"os group member allowed nested alias", docExample, "gus", "alice", "file-download", osGroups, true},
		{"nil resolver optimistic for allow", docExample, "eve", "alice", "clipboard-copy", nil, true},
		{"resolver returning nil is unknown", docExample, "eve", "alice", "clipboard-copy", func(string) []string { return nil }, true},
		{"known non-member not allowed", docExample, "eve", "alice", "clipboard-copy", osGroups, false},
		{"deny wins over os group allow", docExample, "bob", "alice", "clipboard-copy", osGroups, false},
		{"deny wins over later allow", docExample, "bob", "bob", "audio-out", nil, false},
		{"deny leaves other features to owner", docExample, "bob", "bob", "display", nil, true},
		{"unknown feature", docExample, "alice", "alice", "teleport", nil, false},
		{"builtin is not a feature to ask for", docExample, "alice", "alice", "builtin", nil, false},
		{"empty user", "[permissions]\n%any% allow builtin", "", "", "display", nil, false},
		{"no owner means no %owner% match", "[permissions]\n%owner% allow builtin", "alice", "", "display", nil, false},
		{"any", "[permissions]\n%any% allow display", "zed", "alice", "display", nil, true},
		{"user: prefix", "[permissions]\nuser:zed allow display", "zed", "alice", "display", nil, true},
		{"names are case-sensitive", "[permissions]\nZed allow display", "zed", "alice", "display", nil, false},
		{"windows domain user", "[permissions]\nCORP\\zed allow display", `CORP\zed`, "alice", "display", nil, true},
		{
			"disallow then allow: later allow wins",
			"[permissions]\n%any% disallow display\nzed allow display",
			"zed", "alice", "display", nil, true,
		},
		{
			"allow then disallow: later disallow wins",
			"[permissions]\nzed allow builtin\n%any% disallow display",
			"zed", "alice", "display", nil, false,
		},
		{
			"disallow does not touch other features",
			"[permissions]\nzed allow builtin\n%any% disallow display",
			"zed", "alice", "mouse", nil, true,
		},
		{
			"deny then allow: deny wins",
			"[permissions]\n%any% deny display\n%owner% allow builtin",
			"alice", "alice", "display", nil, false,
		},
		{
			"os group deny ignored without resolver",
			"[permissions]\n%any% allow display\nosgroup:banned deny display",
			"zed", "alice", "display", nil, true,
		},
		{
			"os group deny applies with resolver",
			"[permissions]\n%any% allow display\nosgroup:banned deny display",
			"zed", "alice", "display", resolver(map[string][]string{"zed": {"banned"}}), false,
		},
		{
			"os group disallow ignored without resolver",
			"[permissions]\n%any% allow display\nosgroup:banned disallow display",
			"zed", "alice", "display", nil, true,
		},
		{
			"file group with os group member: optimistic allow",
			"[groups]\nops = osgroup:wheel\n[permissions]\ngroup:ops allow display",
			"zed", "alice", "display", nil, true,
		},
		{
			"file group with os group member: deny needs certainty",
			"[groups]\nops = osgroup:wheel\n[permissions]\n%any% allow display\ngroup:ops deny display",
			"zed", "alice", "display", nil, true,
		},
		{
			"file group with os group member: deny with resolver",
			"[groups]\nops = osgroup:wheel\n[permissions]\n%any% allow display\ngroup:ops deny display",
			"zed", "alice", "display", resolver(map[string][]string{"zed": {"wheel"}}), false,
		},
		{
			"nested groups",
			"[groups]\na = group:b\nb = group:c\nc = zed\n[permissions]\ngroup:a allow display",
			"zed", "alice", "display", nil, true,
		},
		{
			"group cycle terminates",
			"[groups]\na = group:b\nb = group:a, zed\n[permissions]\ngroup:a allow display",
			"yan", "alice", "display", nil, false,
		},
		{
			"group cycle still finds member",
			"[groups]\na = group:b\nb = group:a, zed\n[permissions]\ngroup:a allow display",
			"zed", "alice", "display", nil, true,
		},
		{
			"keyboard-sas needs keyboard",
			"[permissions]\n%any% allow keyboard-sas display",
			"zed", "alice", "keyboard-sas", nil, false,
		},
		{
			"keyboard-sas with keyboard",
			"[permissions]\n%any% allow keyboard-sas keyboard",
			"zed", "alice", "keyboard-sas", nil, true,
		},
		{
			"comma separated features",
			"[permissions]\n%any% allow display, mouse,keyboard",
			"zed", "alice", "keyboard", nil, true,
		},
		{
			"sections in any order",
			"[permissions]\ngroup:g allow view\n[aliases]\nview = display\n[groups]\ng = zed",
			"zed", "alice", "display", nil, true,
		},
		{
			"redefined clipboard-management",
			"[aliases]\nclipboard-management = clipboard-copy\n[permissions]\n%any% allow clipboard-management",
			"zed", "alice", "clipboard-paste", nil, false,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := mustParse(t, tt.text)
			if got := f.Allowed(tt.user, tt.owner, tt.feature, tt.groups); got != tt.want {
				t.Errorf("Allowed(%q, %q, %q) = %v, want %v", tt.user, tt.owner, tt.feature, got, tt.want)
			}
		})
	}
}

func TestFile_Features(t *testing.T) {
	view := "[aliases]\nview-only = display, pointer, audio-out\n[permissions]\n%owner% allow builtin\n%any% allow view-only\n"
	tests := []struct {
		name        string
		text        string
		user, owner string
		want        []string
	}{
		{"viewer", view, "zed", "alice", []string{"audio-out", "display", "pointer"}},
		{"owner", view, "alice", "alice", permfile.BuiltinFeatures()},
		{"nothing", "[permissions]\n%owner% allow builtin", "zed", "alice", nil},
		{
			"builtin minus deny",
			"[permissions]\n%any% allow builtin\n%any% deny usb, webcam smartcard keyboard",
			"zed", "alice",
			slices.DeleteFunc(permfile.BuiltinFeatures(), func(s string) bool {
				return s == "usb" || s == "webcam" || s == "smartcard" || s == "keyboard" || s == "keyboard-sas"
			}),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := mustParse(t, tt.text).Features(tt.user, tt.owner, nil)
			keys := slices.Sorted(maps.Keys(got))
			if !slices.Equal(keys, tt.want) {
				t.Errorf("Features = %v, want %v", keys, tt.want)
			}
			for k, v := range got {
				if !v {
					t.Errorf("Features[%q] = false; the map should hold only allowed features", k)
				}
			}
		})
	}
}

func TestFile_CanConnect(t *testing.T) {
	f := mustParse(t, "[permissions]\n%owner% allow builtin\nzed allow mouse\nyan allow display")
	tests := []struct {
		user string
		want bool
	}{{"alice", true}, {"zed", false}, {"yan", true}, {"eve", false}}
	for _, tt := range tests {
		if got := f.CanConnect(tt.user, "alice", nil); got != tt.want {
			t.Errorf("CanConnect(%q) = %v, want %v", tt.user, got, tt.want)
		}
	}
}

func TestDefault(t *testing.T) {
	d := permfile.Default()
	same := mustParse(t, "[permissions]\n%owner% allow builtin\n")
	for _, user := range []string{"alice", "bob", ""} {
		for _, feature := range append(permfile.BuiltinFeatures(), "nope") {
			if got, want := d.Allowed(user, "alice", feature, nil), same.Allowed(user, "alice", feature, nil); got != want {
				t.Errorf("Default().Allowed(%q, alice, %q) = %v, want %v", user, feature, got, want)
			}
		}
	}
	if !d.CanConnect("alice", "alice", nil) || d.CanConnect("bob", "alice", nil) {
		t.Error("Default: only the owner may connect")
	}
}

func TestFile_Imports(t *testing.T) {
	f := mustParse(t, "#import /etc/dcv/a.perm\n#import\t..\\b.perm\n# import is a comment\n#imported comment\n[permissions]\n%owner% allow builtin")
	want := []string{"/etc/dcv/a.perm", `..\b.perm`}
	if got := f.Imports(); !slices.Equal(got, want) {
		t.Errorf("Imports() = %q, want %q", got, want)
	}
	if got := permfile.Default().Imports(); len(got) != 0 {
		t.Errorf("Default().Imports() = %q, want none", got)
	}
}

func TestParse_Accepts(t *testing.T) {
	tests := []struct{ name, text string }{
		{"empty", ""},
		{"doc example", docExample},
		{"comments", "; semicolon\n# hash\n   ; indented\n[permissions]\n%owner% allow builtin\n"},
		{"crlf", "[permissions]\r\n%owner% allow builtin\r\n"},
		{"byte order mark", "\uFEFF[permissions]\n%owner% allow builtin"},
		{"section case", "[Permissions]\n%owner% allow builtin"},
		{"spaced header", "[ permissions ]\n%owner% allow builtin"},
		{"empty group", "[groups]\nnobody =\n[permissions]\ngroup:nobody allow display"},
		{"trailing comma", "[groups]\ng = a, b,\n"},
		{"user named like a verb", "[permissions]\ndeny allow display"},
		{"repeated section", "[permissions]\n%owner% allow display\n[permissions]\n%any% deny usb"},
		{"unused alias", "[aliases]\nx = display"},
		{"all verbs", "[permissions]\na allow display\nb disallow display\nc deny display"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := permfile.Parse(tt.text); err != nil {
				t.Errorf("Parse: %v", err)
			}
		})
	}
}

func TestParse_Errors(t *testing.T) {
	tests := []struct {
		name     string
		text     string
		wantLine int
		wantMsg  string
	}{
		{"unknown section", "[permissions]\n%owner% allow builtin\n[users]", 3, `unknown section "[users]" (want [groups], [aliases] or [permissions])`},
		{"unclosed header", "[permissions", 1, `section header "[permissions" has no closing ]`},
		{"outside section", "; c\n%owner% allow builtin", 2, `"%owner% allow builtin" is outside a section ([groups], [aliases] or [permissions])`},
		{"unknown feature", "[permissions]\n%owner% allow display teleport", 2, `unknown feature or alias "teleport"`},
		{"unknown alias member", "[aliases]\nx = display, warp", 2, `unknown feature or alias "warp"`},
		{"alias cycle", "[aliases]\na = b\nb = a", 2, `alias "a" includes itself`},
		{"alias self", "[aliases]\na = display, a", 2, `alias "a" includes itself`},
		{"alias named like feature", "[aliases]\ndisplay = mouse", 2, `alias "display" has the name of a feature`},
		{"alias named builtin", "[aliases]\nbuiltin = mouse", 2, `alias "builtin" has the name of a feature`},
		{"duplicate alias", "[aliases]\na = mouse\na = display", 3, `alias "a" is already defined on line 2`},
		{"duplicate group", "[groups]\ng = a\n\ng = b", 4, `group "g" is already defined on line 2`},
		{"bad verb", "[permissions]\n%owner% permit builtin", 2, `unknown rule "permit" (want allow, disallow or deny)`},
		{"missing actor", "[permissions]\nallow display", 2, `missing actor before "allow"`},
		{"verb alone", "[permissions]\ndeny", 2, `missing actor before "deny"`},
		{"missing rule", "[permissions]\njohn", 2, `missing rule after "john" (want allow, disallow or deny)`},
		{"missing features", "[permissions]\njohn allow", 2, `missing features after "allow"`},
		{"only commas", "[permissions]\njohn allow , ,", 2, `missing features after "allow"`},
		{"undefined group actor", "[permissions]\n\ngroup:ghosts allow display", 3, `undefined group "ghosts"`},
		{"undefined group member", "[groups]\ng = group:ghosts", 2, `undefined group "ghosts"`},
		{"empty group name", "[permissions]\ngroup: allow display", 2, `"group:" names no one`},
		{"empty osgroup name", "[groups]\ng = osgroup:", 2, `"osgroup:" names no one`},
		{"unknown reference", "[permissions]\n%admin% allow display", 2, `unknown reference "%admin%" (want %owner% or %any%)`},
		{"owner as member", "[groups]\ng = %owner%", 2, `%owner% cannot be a group member`},
		{"group without equals", "[groups]\ng a, b", 2, `want group = MEMBER, MEMBER, ...`},
		{"alias without name", "[aliases]\n= display", 2, `alias definition without a name`},
		{"group name with space", "[groups]\nmy group = a", 2, `bad group name "my group"`},
		{"member with space", "[groups]\ng = a b", 2, `bad name "a b"`},
		{"import without file", "#import\n", 1, `#import without a file`},
		{"NUL byte", "[permissions]\n%owner% allow\x00 builtin", 2, "NUL byte"},
		{"invalid UTF-8", "[permissions]\n\n%owner% allow builtin \xff", 3, "not valid UTF-8"},
		{"too large", "[permissions]\n" + strings.Repeat("; padding padding padding\n", permfile.MaxSize/26+1), 0, "larger than 65536 bytes"},
		{"long value truncated", "[permissions]\n%owner% allow " + strings.Repeat("x", 100), 2, `unknown feature or alias "` + strings.Repeat("x", 40) + `..."`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := permfile.Parse(tt.text)
			var se *permfile.SyntaxError
			if !errors.As(err, &se) {
				t.Fatalf("Parse: got %v, %v; want a *SyntaxError", f, err)
			}
			if se.Line != tt.wantLine || se.Msg != tt.wantMsg {
				t.Errorf("Parse: got line %d %q\nwant line %d %q", se.Line, se.Msg, tt.wantLine, tt.wantMsg)
			}
		})
	}
}

func TestSyntaxError_Error(t *testing.T) {
	tests := []struct {
		err  *permfile.SyntaxError
		want string
	}{
		{&permfile.SyntaxError{Line: 3, Msg: "bad"}, "permissions file line 3: bad"},
		{&permfile.SyntaxError{Msg: "too big"}, "permissions file: too big"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
}

func TestBuiltinFeatures(t *testing.T) {
	got := permfile.BuiltinFeatures()
	if !slices.IsSorted(got) || len(got) != 23 || !slices.Contains(got, "display") {
		t.Errorf("BuiltinFeatures() = %q", got)
	}
	got[0] = "changed"
	if permfile.BuiltinFeatures()[0] == "changed" {
		t.Error("BuiltinFeatures returns its internal slice")
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		docExample,
		"[permissions]\n%owner% allow builtin\n",
		"#import x\n[groups]\na=group:b\nb=group:a,osgroup:c\n[permissions]\ngroup:a disallow display\n",
		"[aliases]\na=b\nb=a\n",
		"[permissions]\n%any% deny keyboard\nzed allow keyboard-sas\n",
	} {
		f.Add(s)
	}
	features := append(permfile.BuiltinFeatures(), "builtin", "nope")
	f.Fuzz(func(t *testing.T, text string) {
		pf, err := permfile.Parse(text)
		if err != nil {
			var se *permfile.SyntaxError
			if !errors.As(err, &se) {
				t.Fatalf("Parse: error %v is not a *SyntaxError", err)
			}
			if se.Line < 0 || se.Line > strings.Count(text, "\n")+1 {
				t.Fatalf("Parse: line %d out of range", se.Line)
			}
			return
		}
		if len(text) > permfile.MaxSize || strings.IndexByte(text, 0) >= 0 || !utf8.ValidString(text) {
			t.Fatalf("Parse accepted input it must reject")
		}
		unknown := func(string) []string { return nil }
		none := func(string) []string { return []string{} }
		for _, user := range []string{"zed", "alice", ""} {
			optimistic := pf.Features(user, "alice", unknown)
			certain := pf.Features(user, "alice", none)
			for _, feat := range features {
				got := pf.Allowed(user, "alice", feat, nil)
				if got != optimistic[feat] {
					t.Fatalf("Allowed(%q, %q) = %v, Features says %v", user, feat, got, optimistic[feat])
				}
				if certain[feat] && !slices.Contains(permfile.BuiltinFeatures(), feat) {
					t.Fatalf("Features has %q", feat)
				}
			}
			if user == "" && len(optimistic) != 0 {
				t.Fatalf("empty user got %v", optimistic)
			}
			if optimistic["keyboard-sas"] && !optimistic["keyboard"] {
				t.Fatal("keyboard-sas without keyboard")
			}
		}
	})
}
