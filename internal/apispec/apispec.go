// Package apispec loads OpenAPI documents of the client REST API and checks real
// HTTP traffic against them with kin-openapi.
//
// Two documents matter: berth's own (api.OpenAPIDocument, loaded by Berth) and
// Amazon's DCV Session Manager API 2023.0 that berth must stay wire-compatible
// with (loaded by Reference from testdata/, where it is kept with its licence).
// Tests of the HTTP API validate every response they receive against both:
//
//	doc, err := apispec.Berth()
//	...
//	if err := doc.ValidateResponse(req, reqBody, resp.StatusCode, resp.Header, body); err != nil {
//		t.Error(err)
//	}
//
// Routing ignores the scheme, host and port of a request, so a broker listening
// on https://127.0.0.1:<random port> matches documents that declare no servers.
// Security requirements are never enforced; validation is about shapes, not
// credentials.
package apispec

import (
	"bytes"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"

	"github.com/berth-dev/berth/api"
)

// ReferenceFile is the name of Amazon's API document in this package's
// testdata folder. It comes from the aws/dcv-access-console repository under
// the Apache License 2.0 (testdata/NOTICE).
const ReferenceFile = "amazon-dcv-session-manager-api-2023.0.yaml"

//go:embed testdata/amazon-dcv-session-manager-api-2023.0.yaml
var referenceDocument []byte

// ErrUndocumentedStatus is wrapped by the error ValidateResponse returns when the
// document lists no response (and no default or range such as 4XX) for the status
// code. Callers that tolerate extra codes (say, 401 against the reference, which
// documents only 200 and 400) check it with errors.Is.
var ErrUndocumentedStatus = errors.New("response status is not documented for the operation")

// ErrNoRoute is wrapped by the errors of ValidateRequest and ValidateResponse when
// the request's method and path match no operation of the document.
var ErrNoRoute = errors.New("no operation matches the request")

// Doc is a loaded, validated OpenAPI document with a router that matches requests
// by method and path only, as net/http.ServeMux does: each path segment must
// match, a {param} matches one non-empty segment (which may contain an escaped
// slash, %2F), a trailing slash makes a different path, and HEAD is routed to
// the GET operation when there is no HEAD one. A Doc is safe for concurrent use
// once loaded.
type Doc struct {
	// CheckRequest makes ValidateResponse also validate the request (path,
	// query, headers and reqBody, as ValidateRequest does) before the
	// response. It is off by default because tests of hostile input send
	// invalid requests on purpose and only want the shape of the answer
	// checked.
	CheckRequest bool

	spec   *openapi3.T
	routes []route
}

// Load parses an OpenAPI 3 document (YAML or JSON), validates it and builds its
// router. External $refs are not followed. It returns an error if the document
// does not parse or is not a valid OpenAPI document.
func Load(data []byte) (*Doc, error) {
	return load(data)
}

// load is Load with document validation options, which Reference uses to
// relax checks that Amazon's text does not pass.
func load(data []byte, opts ...openapi3.ValidationOption) (*Doc, error) {
	loader := openapi3.NewLoader()
	loader.IsExternalRefsAllowed = false
	spec, err := loader.LoadFromData(data)
	if err != nil {
		return nil, fmt.Errorf("load openapi document: %w", err)
	}
	if err := spec.Validate(loader.Context, opts...); err != nil {
		return nil, fmt.Errorf("validate openapi document: %w", err)
	}
	return &Doc{spec: spec, routes: newRoutes(spec)}, nil
}

// Berth loads berth's own document, api.OpenAPIDocument.
func Berth() (*Doc, error) {
	d, err := Load(api.OpenAPIDocument)
	if err != nil {
		return nil, fmt.Errorf("berth document: %w", err)
	}
	return d, nil
}

// Reference loads Amazon's DCV Session Manager API 2023.0 document, which
// the package embeds from testdata/ReferenceFile.
func Reference() (*Doc, error) {
	// The reference gives the boolean DeleteSessionRequestData.Force the
	// string default "false"; it is Amazon's text and stays as it is.
	d, err := load(referenceDocument, openapi3.DisableSchemaDefaultsValidation())
	if err != nil {
		return nil, fmt.Errorf("reference document %s: %w", ReferenceFile, err)
	}
	return d, nil
}

// Spec returns the parsed document. Callers must not modify it.
func (d *Doc) Spec() *openapi3.T { return d.spec }

// OperationID returns the operationId of the operation that req is routed to.
// The error wraps ErrNoRoute when no operation matches.
func (d *Doc) OperationID(req *http.Request) (string, error) {
	route, _, err := d.findRoute(req)
	if err != nil {
		return "", err
	}
	return route.Operation.OperationID, nil
}

// ValidateResponse checks that a response (status, headers and body bytes) is
// one that the document allows for the operation req is routed to: the status is
// documented, the Content-Type is one the document lists for it, declared
// response headers that are present are well formed, and the body matches the
// schema. reqBody is the body req was sent with; it is only looked at when
// CheckRequest is set. req.Body is never read.
//
// The error wraps ErrNoRoute when req matches no operation, and
// ErrUndocumentedStatus when status is not documented for it.
func (d *Doc) ValidateResponse(req *http.Request, reqBody []byte, status int, header http.Header, body []byte) error {
	route, params, err := d.findRoute(req)
	if err != nil {
		return err
	}
	op := route.Operation
	if op.Responses == nil || (op.Responses.Status(status) == nil && op.Responses.Default() == nil) {
		return fmt.Errorf("%s %s (%s): status %d: %w", req.Method, req.URL.Path, op.OperationID, status, ErrUndocumentedStatus)
	}
	opts := filterOptions()
	in := &openapi3filter.RequestValidationInput{
		Request:    withBody(req, reqBody),
		PathParams: params,
		Route:      route,
		Options:    opts,
	}
	if d.CheckRequest {
		if err := openapi3filter.ValidateRequest(context.Background(), in); err != nil {
			return fmt.Errorf("%s %s (%s): request: %w", req.Method, req.URL.Path, op.OperationID, err)
		}
	}
	if header == nil {
		header = http.Header{}
	}
	out := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: in,
		Status:                 status,
		Header:                 header,
		Options:                opts,
	}
	out.SetBodyBytes(body)
	if err := openapi3filter.ValidateResponse(context.Background(), out); err != nil {
		return fmt.Errorf("%s %s (%s): status %d: %w", req.Method, req.URL.Path, op.OperationID, status, err)
	}
	return nil
}

// ValidateRequest checks a request against the operation it is routed to: path
// and query parameters, headers, and body (the bytes in body; req.Body is never
// read). Security requirements are not checked. The error wraps ErrNoRoute when
// req matches no operation.
func (d *Doc) ValidateRequest(req *http.Request, body []byte) error {
	route, params, err := d.findRoute(req)
	if err != nil {
		return err
	}
	in := &openapi3filter.RequestValidationInput{
		Request:    withBody(req, body),
		PathParams: params,
		Route:      route,
		Options:    filterOptions(),
	}
	if err := openapi3filter.ValidateRequest(context.Background(), in); err != nil {
		return fmt.Errorf("%s %s (%s): %w", req.Method, req.URL.Path, route.Operation.OperationID, err)
	}
	return nil
}

// filterOptions are the kin-openapi filter options of every validation.
func filterOptions() *openapi3filter.Options {
	return &openapi3filter.Options{
		IncludeResponseStatus: true,
		MultiError:            true,
		// Never write defaults into what is validated: the reference's
		// string default for a boolean would fail its own schema.
		SkipSettingDefaults: true,
		AuthenticationFunc:  openapi3filter.NoopAuthenticationFunc,
	}
}

// route is one operation with its path template split into segments.
type route struct {
	segments []string // "{name}" for a parameter
	literals int      // segments that are not parameters
	route    *routers.Route
}

// newRoutes lists the operations of spec, the most literal paths first so that
// /a/b wins over /a/{x}.
func newRoutes(spec *openapi3.T) []route {
	var rs []route
	if spec.Paths == nil {
		return nil
	}
	for path, item := range spec.Paths.Map() {
		segs := strings.Split(strings.TrimPrefix(path, "/"), "/")
		lits := 0
		for _, s := range segs {
			if !isParam(s) {
				lits++
			}
		}
		for method, op := range item.Operations() {
			rs = append(rs, route{
				segments: segs,
				literals: lits,
				route:    &routers.Route{Spec: spec, Path: path, PathItem: item, Method: method, Operation: op},
			})
		}
	}
	sort.SliceStable(rs, func(i, j int) bool {
		if rs[i].literals != rs[j].literals {
			return rs[i].literals > rs[j].literals
		}
		return rs[i].route.Path < rs[j].route.Path
	})
	return rs
}

// isParam reports whether a path template segment is a whole-segment parameter.
// Templates that mix text and parameters in one segment are matched literally.
func isParam(seg string) bool {
	return len(seg) > 2 && seg[0] == '{' && seg[len(seg)-1] == '}' && !strings.ContainsAny(seg[1:len(seg)-1], "{}")
}

// findRoute matches req by method and path, ignoring scheme, host and port.
func (d *Doc) findRoute(req *http.Request) (*routers.Route, map[string]string, error) {
	if req == nil || req.URL == nil {
		return nil, nil, fmt.Errorf("nil request: %w", ErrNoRoute)
	}
	segs := strings.Split(strings.TrimPrefix(req.URL.EscapedPath(), "/"), "/")
	pathMatched := false
	var get *routers.Route
	var getParams map[string]string
	for _, r := range d.routes {
		params, ok := matchSegments(r.segments, segs)
		if !ok {
			continue
		}
		pathMatched = true
		if r.route.Method == req.Method {
			return r.route, params, nil
		}
		if r.route.Method == http.MethodGet && get == nil {
			get, getParams = r.route, params
		}
	}
	// As net/http.ServeMux does, a GET operation also serves HEAD.
	if req.Method == http.MethodHead && get != nil {
		return get, getParams, nil
	}
	why := "no path matches"
	if pathMatched {
		why = "the path has no operation for the method"
	}
	return nil, nil, fmt.Errorf("%s %s: %w: %s", req.Method, req.URL.Path, ErrNoRoute, why)
}

// matchSegments matches escaped request path segments against a template and
// returns the unescaped parameter values.
func matchSegments(template, segs []string) (map[string]string, bool) {
	if len(template) != len(segs) {
		return nil, false
	}
	params := map[string]string{}
	for i, t := range template {
		v, err := url.PathUnescape(segs[i])
		if err != nil {
			return nil, false
		}
		if isParam(t) {
			if v == "" {
				return nil, false
			}
			params[t[1:len(t)-1]] = v
			continue
		}
		if v != t {
			return nil, false
		}
	}
	return params, true
}

// withBody returns a shallow copy of req whose body reads body, so validation
// never consumes the caller's request.
func withBody(req *http.Request, body []byte) *http.Request {
	r := req.Clone(req.Context())
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.ContentLength = int64(len(body))
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	return r
}
