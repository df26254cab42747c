package api

import _ "embed" // for OpenAPIDocument

// OpenAPIDocument is berth's OpenAPI 3 description of the client REST API, in YAML.
// The broker serves it at /dcv-session-manager-api.yaml. It covers every path,
// operation, schema and field of Amazon's DCV Session Manager API 2023.0 with the
// same names, types and formats, and adds berth's error responses and its own
// endpoints (/oauth2/token, /.well-known/jwks.json, /health and the document itself).
// Treat it as read-only.
//
//go:embed openapi.yaml
var OpenAPIDocument []byte
