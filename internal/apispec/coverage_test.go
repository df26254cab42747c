package apispec

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/berth-dev/berth/api"
)

// TestBerthCoversReference is the guard that berth never drops or renames a path,
// operation, schema or field of Amazon's API, and never changes a type, format or
// request body shape. berth may add anything.
func TestBerthCoversReference(t *testing.T) {
	ref := MustReference(t)
	berth := MustBerth(t)
	problems := coverageProblems(ref.Spec(), berth.Spec())
	for _, p := range problems {
		t.Error(p)
	}
	if len(problems) > 0 {
		t.Logf("%d differences between %s and api/openapi.yaml; berth may add, never drop, rename or retype", len(problems), ReferenceFile)
	}
}

// TestCoverageProblems_Mutations makes sure the coverage check itself notices the
// kinds of drift it exists to catch, by breaking berth's document on purpose.
func TestCoverageProblems_Mutations(t *testing.T) {
	ref := MustReference(t).Spec()
	doc := string(api.OpenAPIDocument)
	tests := []struct {
		name    string
		old     string // text of api/openapi.yaml to replace, must occur exactly once
		new     string
		wantMsg string // substring of one reported problem
	}{
		{
			name:    "renamed property",
			old:     "        LastDisconnectionTime:\n",
			new:     "        LastDisconnectTime:\n",
			wantMsg: "Session.properties.LastDisconnectionTime: missing",
		},
		{
			name:    "changed format",
			old:     "        OneMinute:\n          description: \"Load average over 1 minute.\"\n          type: \"number\"\n          format: \"float\"\n",
			new:     "        OneMinute:\n          description: \"Load average over 1 minute.\"\n          type: \"number\"\n          format: \"double\"\n",
			wantMsg: `format "double", reference has "float"`,
		},
		{
			name:    "changed type",
			old:     "        Port:\n          description: \"Port of the first HTTP endpoint, as a string. Kept for old clients; read `Endpoints` instead.\"\n          type: \"string\"\n",
			new:     "        Port:\n          description: \"Port of the first HTTP endpoint, as a string. Kept for old clients; read `Endpoints` instead.\"\n          type: \"integer\"\n",
			wantMsg: `Server.properties.Port: type [integer], reference has [string]`,
		},
		{
			name:    "renamed operationId",
			old:     `operationId: "GetSessionConnectionData"`,
			new:     `operationId: "getSessionConnectionData"`,
			wantMsg: `operationId "getSessionConnectionData", reference has "GetSessionConnectionData"`,
		},
		{
			name: "batch body became an object",
			old: `              type: "array"
              maxItems: 1000
              items:
                $ref: "#/components/schemas/DeleteSessionRequestData"`,
			new: `              type: "object"
              properties:
                Items:
                  type: "array"
                  items:
                    $ref: "#/components/schemas/DeleteSessionRequestData"`,
			wantMsg: "POST /deleteSessions requestBody application/json: body is object, reference has array",
		},
		{
			name:    "dropped path",
			old:     "  /closeServers:\n    post:",
			new:     "  /closeServer:\n    post:",
			wantMsg: "POST /closeServers: missing",
		},
		{
			name:    "changed method",
			old:     "  /sessionPermissions:\n    put:",
			new:     "  /sessionPermissions:\n    post:",
			wantMsg: "PUT /sessionPermissions: missing",
		},
		{
			name:    "ref replaced by another schema",
			old:     "        Swap:\n          $ref: \"#/components/schemas/Swap\"",
			new:     "        Swap:\n          $ref: \"#/components/schemas/Memory\"",
			wantMsg: `Host.properties.Swap: $ref "#/components/schemas/Memory", reference has "#/components/schemas/Swap"`,
		},
		{
			name:    "dropped response",
			old:     "              schema:\n                $ref: \"#/components/schemas/OpenServersResponse\"",
			new:     "              schema:\n                $ref: \"#/components/schemas/CloseServersResponse\"",
			wantMsg: "POST /openServers response 200 application/json",
		},
		{
			name:    "dropped nullable",
			old:     "          format: \"int64\"\n          nullable: true\n        MaxHeight:",
			new:     "          format: \"int64\"\n        MaxHeight:",
			wantMsg: "GetSessionScreenshotRequestData.properties.MaxWidth: not nullable",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if n := strings.Count(doc, tt.old); n != 1 {
				t.Fatalf("api/openapi.yaml has %d copies of the text to replace, want 1:\n%s", n, tt.old)
			}
			mutated, err := Load([]byte(strings.Replace(doc, tt.old, tt.new, 1)))
			if err != nil {
				t.Fatalf("load mutated document: %v", err)
			}
			problems := coverageProblems(ref, mutated.Spec())
			for _, p := range problems {
				if strings.Contains(p, tt.wantMsg) {
					return
				}
			}
			t.Errorf("no problem mentions %q; got %d:\n%s", tt.wantMsg, len(problems), strings.Join(problems, "\n"))
		})
	}
}

// coverageProblems lists every way in which doc fails to cover ref: a path,
// method, operationId, tag, parameter, request body, response, media type,
// security requirement or scheme, component schema or property that ref has
// and doc lacks or describes differently. Schemas are compared recursively,
// through $refs; doc may add properties, enums, bounds and required lists.
func coverageProblems(ref, doc *openapi3.T) []string {
	c := &coverage{ref: ref, doc: doc, seen: map[string]bool{}}
	c.checkSecurity()
	c.checkTags()
	c.checkPaths()
	c.checkComponents()
	sort.Strings(c.problems)
	return c.problems
}

type coverage struct {
	ref, doc *openapi3.T
	problems []string
	seen     map[string]bool // "refPointer|docPointer" pairs already compared
}

func (c *coverage) errorf(format string, args ...any) {
	c.problems = append(c.problems, fmt.Sprintf(format, args...))
}

func (c *coverage) checkSecurity() {
	for _, req := range c.ref.Security {
		if !slices.ContainsFunc(c.doc.Security, func(r openapi3.SecurityRequirement) bool { return sameRequirement(r, req) }) {
			c.errorf("global security: missing requirement %v", req)
		}
	}
	var refSchemes, docSchemes openapi3.SecuritySchemes
	if c.ref.Components != nil {
		refSchemes = c.ref.Components.SecuritySchemes
	}
	if c.doc.Components != nil {
		docSchemes = c.doc.Components.SecuritySchemes
	}
	for name, rs := range refSchemes {
		ds, ok := docSchemes[name]
		if !ok || ds.Value == nil {
			c.errorf("components.securitySchemes.%s: missing", name)
			continue
		}
		r, d := rs.Value, ds.Value
		if !strings.EqualFold(r.Type, d.Type) || !strings.EqualFold(r.Scheme, d.Scheme) || r.In != d.In || r.Name != d.Name {
			c.errorf("components.securitySchemes.%s: type=%s scheme=%s in=%s name=%s, reference has type=%s scheme=%s in=%s name=%s",
				name, d.Type, d.Scheme, d.In, d.Name, r.Type, r.Scheme, r.In, r.Name)
		}
	}
}

func sameRequirement(a, b openapi3.SecurityRequirement) bool {
	if len(a) != len(b) {
		return false
	}
	for k, scopes := range b {
		other, ok := a[k]
		if !ok || !slices.Equal(slices.Sorted(slices.Values(other)), slices.Sorted(slices.Values(scopes))) {
			return false
		}
	}
	return true
}

func (c *coverage) checkTags() {
	for _, rt := range c.ref.Tags {
		if c.doc.Tags.Get(rt.Name) == nil {
			c.errorf("tags: missing %q", rt.Name)
		}
	}
}

func (c *coverage) checkPaths() {
	if c.ref.Paths == nil {
		return
	}
	for _, path := range c.ref.Paths.InMatchingOrder() {
		rItem := c.ref.Paths.Value(path)
		var dItem *openapi3.PathItem
		if c.doc.Paths != nil {
			dItem = c.doc.Paths.Value(path)
		}
		for method, rOp := range rItem.Operations() {
			where := method + " " + path
			var dOp *openapi3.Operation
			if dItem != nil {
				dOp = dItem.GetOperation(method)
			}
			if dOp == nil {
				c.errorf("%s: missing", where)
				continue
			}
			c.checkOperation(where, rItem, rOp, dItem, dOp)
		}
	}
}

func (c *coverage) checkOperation(where string, rItem *openapi3.PathItem, r *openapi3.Operation, dItem *openapi3.PathItem, d *openapi3.Operation) {
	if r.OperationID != d.OperationID {
		c.errorf("%s: operationId %q, reference has %q", where, d.OperationID, r.OperationID)
	}
	if !slices.Equal(slices.Sorted(slices.Values(d.Tags)), slices.Sorted(slices.Values(r.Tags))) {
		c.errorf("%s: tags %v, reference has %v (tags name generated client classes)", where, d.Tags, r.Tags)
	}

	// Effective security: the operation's own, or the document's.
	rSec, dSec := c.ref.Security, c.doc.Security
	if r.Security != nil {
		rSec = *r.Security
	}
	if d.Security != nil {
		dSec = *d.Security
	}
	for _, req := range rSec {
		if !slices.ContainsFunc(dSec, func(x openapi3.SecurityRequirement) bool { return sameRequirement(x, req) }) {
			c.errorf("%s: security lacks requirement %v", where, req)
		}
	}

	// Parameters, declared on the path item or the operation.
	rParams := append(slices.Clone(rItem.Parameters), r.Parameters...)
	dParams := append(slices.Clone(dItem.Parameters), d.Parameters...)
	for _, rp := range rParams {
		if rp.Value == nil {
			continue
		}
		var dp *openapi3.Parameter
		for _, x := range dParams {
			if x.Value != nil && x.Value.Name == rp.Value.Name && x.Value.In == rp.Value.In {
				dp = x.Value
			}
		}
		pwhere := fmt.Sprintf("%s parameter %s %q", where, rp.Value.In, rp.Value.Name)
		if dp == nil {
			c.errorf("%s: missing", pwhere)
			continue
		}
		if dp.Required != rp.Value.Required {
			c.errorf("%s: required=%t, reference has %t", pwhere, dp.Required, rp.Value.Required)
		}
		c.compareSchema(pwhere, rp.Value.Schema, dp.Schema)
	}

	// Request body: same presence, same required flag, same media types and shapes.
	if r.RequestBody != nil && r.RequestBody.Value != nil {
		rb := r.RequestBody.Value
		if d.RequestBody == nil || d.RequestBody.Value == nil {
			c.errorf("%s requestBody: missing", where)
		} else {
			db := d.RequestBody.Value
			if db.Required != rb.Required {
				c.errorf("%s requestBody: required=%t, reference has %t", where, db.Required, rb.Required)
			}
			c.compareContent(where+" requestBody", rb.Content, db.Content)
		}
	}

	// Responses: every documented status with the same media types and schemas.
	if r.Responses == nil {
		return
	}
	for code, rr := range r.Responses.Map() {
		rwhere := fmt.Sprintf("%s response %s", where, code)
		var dr *openapi3.ResponseRef
		if d.Responses != nil {
			dr = d.Responses.Value(code)
		}
		if dr == nil || dr.Value == nil {
			c.errorf("%s: missing", rwhere)
			continue
		}
		if rr.Value == nil {
			continue
		}
		c.compareContent(rwhere, rr.Value.Content, dr.Value.Content)
		for name := range rr.Value.Headers {
			if _, ok := dr.Value.Headers[name]; !ok {
				c.errorf("%s: header %s missing", rwhere, name)
			}
		}
	}
}

func (c *coverage) compareContent(where string, r, d openapi3.Content) {
	for mime, rm := range r {
		dm, ok := d[mime]
		if !ok {
			c.errorf("%s %s: media type missing", where, mime)
			continue
		}
		if rm.Schema == nil {
			continue
		}
		if dm.Schema == nil {
			c.errorf("%s %s: schema missing", where, mime)
			continue
		}
		if rs, ds := shape(rm.Schema), shape(dm.Schema); rs != ds {
			c.errorf("%s %s: body is %s, reference has %s", where, mime, ds, rs)
		}
		c.compareSchema(where+" "+mime, rm.Schema, dm.Schema)
	}
}

// shape is "array" for a schema of type array and "object" otherwise; batch
// calls take bare arrays and the describe calls take objects.
func shape(s *openapi3.SchemaRef) string {
	if s.Value != nil && s.Value.Type.Is(openapi3.TypeArray) {
		return "array"
	}
	return "object"
}

func (c *coverage) checkComponents() {
	var rSchemas, dSchemas openapi3.Schemas
	if c.ref.Components != nil {
		rSchemas = c.ref.Components.Schemas
	}
	if c.doc.Components != nil {
		dSchemas = c.doc.Components.Schemas
	}
	for _, name := range sortedKeys(rSchemas) {
		ds, ok := dSchemas[name]
		if !ok {
			c.errorf("components.schemas.%s: missing", name)
			continue
		}
		c.compareSchemaValue(name, rSchemas[name].Value, ds.Value)
	}
}

// compareSchema compares two schema references found at the same place.
// Where the reference names a component, doc must name the same component
// (generated clients name model classes after components); the components
// themselves are compared by checkComponents.
func (c *coverage) compareSchema(where string, r, d *openapi3.SchemaRef) {
	if r == nil {
		return
	}
	if d == nil {
		c.errorf("%s: schema missing", where)
		return
	}
	if r.Ref != "" {
		if d.Ref != r.Ref {
			c.errorf("%s: $ref %q, reference has %q", where, d.Ref, r.Ref)
		}
		// Same component name: covered by checkComponents. Different: compare
		// the values anyway, to report field-level differences too.
		if d.Ref == r.Ref {
			return
		}
	}
	key := fmt.Sprintf("%p|%p", r.Value, d.Value)
	if c.seen[key] {
		return
	}
	c.seen[key] = true
	c.compareSchemaValue(where, r.Value, d.Value)
}

func (c *coverage) compareSchemaValue(where string, r, d *openapi3.Schema) {
	if r == nil {
		return
	}
	if d == nil {
		c.errorf("%s: schema missing", where)
		return
	}
	rTypes, dTypes := r.Type.Slice(), d.Type.Slice()
	switch {
	case len(rTypes) > 0:
		if !slices.Equal(slices.Sorted(slices.Values(rTypes)), slices.Sorted(slices.Values(dTypes))) {
			c.errorf("%s: type %v, reference has %v", where, dTypes, rTypes)
		}
	case len(dTypes) > 0:
		// The reference leaves some object schemas untyped; saying
		// "object" where it lists properties adds nothing new.
		if !(len(r.Properties) > 0 && slices.Equal(dTypes, []string{openapi3.TypeObject})) {
			c.errorf("%s: type %v, reference has none", where, dTypes)
		}
	}
	if r.Format != d.Format {
		c.errorf("%s: format %q, reference has %q", where, d.Format, r.Format)
	}
	if r.Nullable && !d.Nullable {
		c.errorf("%s: not nullable, reference is", where)
	}
	for _, v := range r.Enum {
		if !slices.Contains(d.Enum, v) && len(d.Enum) > 0 {
			c.errorf("%s: enum lacks %v", where, v)
		}
	}
	for _, req := range r.Required {
		if !slices.Contains(d.Required, req) {
			c.errorf("%s: %s not required, reference requires it", where, req)
		}
	}
	if r.Items != nil {
		c.compareSchema(where+".items", r.Items, d.Items)
	}
	for _, name := range sortedKeys(r.Properties) {
		pwhere := where + ".properties." + name
		dp, ok := d.Properties[name]
		if !ok {
			c.errorf("%s: missing", pwhere)
			continue
		}
		c.compareSchema(pwhere, r.Properties[name], dp)
	}
	for kind, pair := range map[string][2]openapi3.SchemaRefs{
		"allOf": {r.AllOf, d.AllOf},
		"anyOf": {r.AnyOf, d.AnyOf},
		"oneOf": {r.OneOf, d.OneOf},
	} {
		if len(pair[0]) != len(pair[1]) {
			c.errorf("%s: %d %s schemas, reference has %d", where, len(pair[1]), kind, len(pair[0]))
			continue
		}
		for i := range pair[0] {
			c.compareSchema(fmt.Sprintf("%s.%s[%d]", where, kind, i), pair[0][i], pair[1][i])
		}
	}
	if r.AdditionalProperties.Schema != nil {
		c.compareSchema(where+".additionalProperties", r.AdditionalProperties.Schema, d.AdditionalProperties.Schema)
	}
}

func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}
