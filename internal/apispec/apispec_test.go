package apispec

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/berth-dev/berth/api"
)

// TestReference_Embedded loads Amazon's document from the package's own
// testdata: the wire-compatibility checks run on a fresh clone with nothing
// beside it.
func TestReference_Embedded(t *testing.T) {
	d, err := Reference()
	if err != nil {
		t.Fatal(err)
	}
	if n := d.Spec().Paths.Len(); n < 9 {
		t.Errorf("reference document has %d paths, want Amazon's nine or more", n)
	}
	if _, err := os.Stat(filepath.Join("testdata", "NOTICE")); err != nil {
		t.Errorf("the reference document's licence notice is missing: %v", err)
	}
}

func TestLoad_Invalid(t *testing.T) {
	for name, doc := range map[string]string{
		"not yaml":       "openapi: [",
		"no info":        "openapi: 3.0.3\npaths: {}\n",
		"dangling ref":   "openapi: 3.0.3\ninfo: {title: t, version: '1'}\npaths:\n  /a:\n    get:\n      responses:\n        '200':\n          description: ok\n          content:\n            application/json:\n              schema: {$ref: '#/components/schemas/Nope'}\n",
		"external ref":   "openapi: 3.0.3\ninfo: {title: t, version: '1'}\npaths:\n  /a:\n    get:\n      responses:\n        '200': {$ref: 'other.yaml#/R'}\n",
		"bad schema":     "openapi: 3.0.3\ninfo: {title: t, version: '1'}\npaths: {}\ncomponents:\n  schemas:\n    X: {type: integer, default: nope}\n",
		"empty document": "",
	} {
		if _, err := Load([]byte(doc)); err == nil {
			t.Errorf("%s: Load succeeded", name)
		}
	}
}

func TestBerth_Document(t *testing.T) {
	d := MustBerth(t)
	spec := d.Spec()
	if spec.OpenAPI != "3.0.3" {
		t.Errorf("openapi = %q, want 3.0.3", spec.OpenAPI)
	}
	if len(spec.Servers) != 0 {
		t.Errorf("the document declares servers %v; the broker's address is the deployment's business", spec.Servers)
	}
	if !slices.ContainsFunc(spec.Security, func(r openapi3.SecurityRequirement) bool { _, ok := r["bearerAuth"]; return ok && len(r) == 1 }) {
		t.Errorf("global security = %v, want bearerAuth", spec.Security)
	}

	// The endpoints that must be reachable without a bearer token.
	public := map[string][]string{
		"POST /oauth2/token":                {"basicAuth"},
		"GET /.well-known/jwks.json":        nil,
		"GET /health":                       nil,
		"GET /dcv-session-manager-api.yaml": nil,
	}
	for key, want := range public {
		method, path, _ := strings.Cut(key, " ")
		item := spec.Paths.Value(path)
		if item == nil || item.GetOperation(method) == nil {
			t.Errorf("%s: missing", key)
			continue
		}
		sec := item.GetOperation(method).Security
		if sec == nil {
			t.Errorf("%s: inherits the bearer requirement", key)
			continue
		}
		var got []string
		for _, r := range *sec {
			for name := range r {
				got = append(got, name)
			}
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s: security schemes %v, want %v", key, got, want)
		}
	}

	// Every other operation documents ErrorResponse for each error status.
	errorStatuses := []string{"400", "401", "404", "413", "429", "500", "503"}
	for path, item := range spec.Paths.Map() {
		for method, op := range item.Operations() {
			if _, ok := public[method+" "+path]; ok {
				continue
			}
			if op.Security != nil {
				t.Errorf("%s %s: overrides the global bearer requirement", method, path)
			}
			for _, code := range errorStatuses {
				resp := op.Responses.Value(code)
				if resp == nil || resp.Value == nil {
					t.Errorf("%s %s: no %s response", method, path, code)
					continue
				}
				mt := resp.Value.Content.Get("application/json")
				if mt == nil || mt.Schema == nil || mt.Schema.Ref != "#/components/schemas/ErrorResponse" {
					t.Errorf("%s %s: %s response is not an ErrorResponse", method, path, code)
				}
			}
		}
	}
}

// TestBerth_EnumsMatchAPIConstants keeps the enums of the document and the
// constants of package api the same sets.
func TestBerth_EnumsMatchAPIConstants(t *testing.T) {
	schemas := MustBerth(t).Spec().Components.Schemas
	states := []string{api.StateCreating, api.StateReady, api.StateDeleting, api.StateDeleted, api.StateUnknown}
	tests := []struct {
		schema, property string
		want             []string
	}{
		{"Session", "State", states},
		{"Session", "Substate", []string{api.SubstateSessionPlacing, api.SubstatePendingPreparation}},
		{"Session", "Type", []string{api.TypeVirtual, api.TypeConsole}},
		{"DeleteSessionSuccessfulResponse", "State", states},
		{"Server", "Availability", []string{api.AvailabilityAvailable, api.AvailabilityUnavailable}},
		// EXISTING_LOGGED_IN_USER is Amazon's (Windows hosts); berth never sets it
		// but clients may see it from a mixed fleet's documentation.
		{"Server", "UnavailabilityReason", []string{api.ReasonServerFull, api.ReasonServerClosed, api.ReasonUnreachableAgent, api.ReasonUnhealthyDCVServer, "EXISTING_LOGGED_IN_USER", api.ReasonUnknown}},
		{"Endpoint", "Protocol", []string{api.ProtocolHTTP, api.ProtocolQUIC}},
	}
	for _, tt := range tests {
		s := schemas[tt.schema].Value.Properties[tt.property].Value
		var got []string
		for _, v := range s.Enum {
			got = append(got, v.(string))
		}
		slices.Sort(got)
		want := slices.Sorted(slices.Values(tt.want))
		if !slices.Equal(got, want) {
			t.Errorf("%s.%s enum = %v, want %v", tt.schema, tt.property, got, want)
		}
	}
	for _, name := range []string{"DescribeSessionsRequestData", "DescribeServersRequestData"} {
		s := schemas[name].Value.Properties["MaxResults"].Value
		if s.Min == nil || *s.Min != 1 || s.Max == nil || *s.Max != 1000 {
			t.Errorf("%s.MaxResults bounds = %v..%v, want 1..1000", name, s.Min, s.Max)
		}
	}
}
