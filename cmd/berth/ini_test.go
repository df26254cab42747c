package main

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// iniMap flattens a parsed file for comparisons: "section.key" -> value.
func iniMap(f *iniFile) map[string]string {
	m := map[string]string{}
	for name, s := range f.sections {
		m["["+name+"]"] = ""
		for k, v := range s.keys {
			m[name+"."+k] = v.value
		}
	}
	return m
}

func TestParseINI(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want map[string]string
		err  string // substring of the error, "" for success
	}{
		{name: "empty", in: "", want: map[string]string{}},
		{name: "reference file", in: `[output]
# The formatting style for command output.
output-format = json
debug = true

[security]
no-verify-ssl = true
ca-bundle = ca-bundle.pem

[authentication]
auth-server-url = https://broker-host:8443/oauth2/token?grant_type=client_credentials
client-id = username
client-password = password

[broker]
url = https://broker-host:8443
`, want: map[string]string{
			"[output]": "", "output.output-format": "json", "output.debug": "true",
			"[security]": "", "security.no-verify-ssl": "true", "security.ca-bundle": "ca-bundle.pem",
			"[authentication]": "", "authentication.auth-server-url": "https://broker-host:8443/oauth2/token?grant_type=client_credentials",
			"authentication.client-id": "username", "authentication.client-password": "password",
			"[broker]": "", "broker.url": "https://broker-host:8443",
		}},
		{name: "colon delimiter and case-folded keys", in: "[broker]\nURL: https://b:8443\n", want: map[string]string{"[broker]": "", "broker.url": "https://b:8443"}},
		{name: "first delimiter wins", in: "[a]\nk = v=w:x\n", want: map[string]string{"[a]": "", "a.k": "v=w:x"}},
		{name: "password keeps # and ;", in: "[authentication]\nclient-password = p#ss;word # not a comment\n", want: map[string]string{"[authentication]": "", "authentication.client-password": "p#ss;word # not a comment"}},
		{name: "CRLF, BOM, indentation and ; comments", in: "\ufeff[broker]\r\n  ; comment\r\n  url = https://b\r\n", want: map[string]string{"[broker]": "", "broker.url": "https://b"}},
		{name: "empty value", in: "[a]\nk =\n", want: map[string]string{"[a]": "", "a.k": ""}},
		{name: "section names keep case", in: "[Broker]\nurl = x\n", want: map[string]string{"[Broker]": "", "Broker.url": "x"}},
		{name: "key before section", in: "url = x\n", err: "line 1: key \"url\" comes before any [section]"},
		{name: "unterminated section", in: "[broker\n", err: "line 1: section header \"[broker\" has no closing ]"},
		{name: "empty section", in: "[ ]\n", err: "line 1: empty section name"},
		{name: "no delimiter", in: "[a]\njust words\n", err: "line 2: expected key = value"},
		{name: "missing key", in: "[a]\n= v\n", err: "line 2: missing key before ="},
		{name: "duplicate key", in: "[a]\nk = 1\nK = 2\n", err: "line 3: key \"k\" is already set on line 2"},
		{name: "duplicate section", in: "[a]\n[b]\n[a]\n", err: "line 3: section [a] appears twice"},
		{name: "too large", in: "[a]\n" + strings.Repeat("#", maxINISize), err: "larger than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := parseINI([]byte(tt.in))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("parseINI error = %v, want it to contain %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseINI: %v", err)
			}
			if got := iniMap(f); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("parseINI = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestINIFile_Get(t *testing.T) {
	f, err := parseINI([]byte("[broker]\nurl = https://b\n"))
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := f.get("broker", "URL"); !ok || v.value != "https://b" || v.line != 2 {
		t.Errorf(`get("broker", "URL") = %+v, %v`, v, ok)
	}
	if _, ok := f.get("Broker", "url"); ok {
		t.Error("section names should be case-sensitive")
	}
	var nilFile *iniFile
	if _, ok := nilFile.get("broker", "url"); ok {
		t.Error("a nil file has no values")
	}
}

// formatINI writes f back in INI form, for the fuzz round trip.
func formatINI(f *iniFile) string {
	var b strings.Builder
	for _, name := range f.order {
		fmt.Fprintf(&b, "[%s]\n", name)
		s := f.sections[name]
		for _, k := range s.order {
			fmt.Fprintf(&b, "%s = %s\n", k, s.keys[k].value)
		}
	}
	return b.String()
}

// FuzzParseINI checks that parseINI never panics and that what it accepts
// survives a write and a second parse unchanged.
func FuzzParseINI(f *testing.F) {
	for _, seed := range []string{
		"",
		"[output]\noutput-format = json\ndebug = true\n",
		"[security]\nno-verify-ssl = true\nca-bundle = ca.pem\n",
		"[authentication]\nauth-server-url = https://h:8443/oauth2/token?grant_type=client_credentials\nclient-id = id\nclient-password = p#w;=:d\n",
		"[broker]\r\nurl: https://h:8443\r\n",
		"\ufeff# comment\n; comment\n[a]\n  k = v\n",
		"[a]\nk = 1\nk = 2\n",
		"k = v\n",
		"[a\n",
		"[]]\nx=\n",
		"[a]b]\n:=\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := parseINI(data)
		if err != nil {
			if p != nil {
				t.Fatal("parseINI returned a file with an error")
			}
			return
		}
		again, err := parseINI([]byte(formatINI(p)))
		if err != nil {
			t.Fatalf("reparse of %q: %v", formatINI(p), err)
		}
		if !reflect.DeepEqual(iniMap(p), iniMap(again)) || !reflect.DeepEqual(p.order, again.order) {
			t.Fatalf("round trip changed the file:\n%v\n%v", iniMap(p), iniMap(again))
		}
	})
}
