package apispec

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
)

// The samples below are built from the api wire types, so that a type and the
// documents disagreeing (a renamed tag, an int where a string is documented,
// a field that should be omitted) fails here before it fails a client.

var (
	created      = time.Date(2025, 3, 14, 9, 26, 53, 589_000_000, time.UTC)
	disconnected = created.Add(42 * time.Minute)
)

func sampleServer() *api.Server {
	return &api.Server{
		Id:             "c2VydmVyLTE=",
		Ip:             "10.0.0.12",
		Hostname:       "desk-12.example.internal",
		DefaultDnsName: "desk-12.example.internal",
		Port:           "8443",
		Endpoints: []api.Endpoint{
			{IpAddress: "10.0.0.12", Port: 8443, WebUrlPath: "/", Protocol: api.ProtocolHTTP},
			{IpAddress: "10.0.0.12", Port: 8443, Protocol: api.ProtocolQUIC},
		},
		WebUrlPath:                 "/",
		Version:                    "2023.1.16388",
		SessionManagerAgentVersion: "0.1.0",
		Availability:               api.AvailabilityUnavailable,
		UnavailabilityReason:       api.ReasonServerFull,
		ConsoleSessionCount:        0,
		VirtualSessionCount:        4,
		Host: api.Host{
			Os:     api.Os{Family: "linux", Name: "Debian GNU/Linux", Version: "12", KernelVersion: "6.1.0-18-amd64"},
			Memory: api.Memory{TotalBytes: 34359738368, UsedBytes: 8589934592},
			Swap:   api.Memory{TotalBytes: 2147483648, UsedBytes: 0},
			Aws: &api.Aws{
				Region:          "eu-west-1",
				EC2InstanceType: "g4dn.xlarge",
				EC2InstanceId:   "i-0123456789abcdef0",
				EC2ImageId:      "ami-0123456789abcdef0",
			},
			CpuInfo:        api.CpuInfo{Vendor: "GenuineIntel", ModelName: "Intel(R) Xeon(R) Platinum 8259CL", Architecture: "x86_64", NumberOfCpus: 4, PhysicalCoresPerCpu: 2},
			CpuLoadAverage: api.CpuLoadAverage{OneMinute: 0.42, FiveMinutes: 0.3, FifteenMinutes: 0.25},
			Gpus:           []api.Gpu{{Vendor: "NVIDIA Corporation", ModelName: "Tesla T4"}},
			LoggedInUsers:  []api.LoggedInUser{{Username: "alice"}},
		},
		Tags: []api.KeyValuePair{
			{Key: "dcv:os-family", Value: "linux"},
			{Key: "dcv:max-virtual-sessions", Value: "4"},
			{Key: "gpu", Value: "yes"},
		},
	}
}

// minimalServer is a server with every omitempty field empty and empty lists.
func minimalServer() *api.Server {
	return &api.Server{
		Id:           "srv-2",
		Ip:           "10.0.0.13",
		Hostname:     "desk-13",
		Port:         "8443",
		Endpoints:    []api.Endpoint{},
		WebUrlPath:   "/",
		Availability: api.AvailabilityAvailable,
		Host:         api.Host{Gpus: []api.Gpu{}, LoggedInUsers: []api.LoggedInUser{}},
		Tags:         []api.KeyValuePair{},
	}
}

func fullSession() api.Session {
	return api.Session{
		Id:                    "3b9d3b7a-5a52-4a5f-8d4a-0b6f7c2f9e11",
		Name:                  "design-review",
		Owner:                 "alice",
		Server:                sampleServer(),
		Type:                  api.TypeVirtual,
		MaxConcurrentClients:  2,
		State:                 api.StateReady,
		StateReason:           "ready since 09:27",
		CreationTime:          created,
		LastDisconnectionTime: &disconnected,
		NumOfConnections:      1,
		StorageRoot:           "%home%/storage",
	}
}

// placingSession is a session that has no server yet and was never connected:
// Server, Substate-less fields and LastDisconnectionTime are omitted.
func placingSession() api.Session {
	return api.Session{
		Id:           "a1",
		Name:         "queued",
		Owner:        "bob",
		Type:         api.TypeConsole,
		State:        api.StateCreating,
		Substate:     api.SubstateSessionPlacing,
		CreationTime: created,
	}
}

func ptr[T any](v T) *T { return &v }

// exchange is one request and the answer a broker gave to it.
type exchange struct {
	name     string
	method   string
	path     string
	reqBody  any // marshalled to JSON unless nil or []byte
	reqCT    string
	status   int
	respCT   string
	respBody any // marshalled to JSON unless []byte
}

func (e exchange) request(t *testing.T) (*http.Request, []byte) {
	t.Helper()
	var body []byte
	switch b := e.reqBody.(type) {
	case nil:
	case []byte:
		body = b
	default:
		var err error
		if body, err = json.Marshal(b); err != nil {
			t.Fatal(err)
		}
	}
	// A client-side request to a broker on a random port, as tests make them.
	req := httptest.NewRequest(e.method, "https://127.0.0.1:54321"+e.path, bytes.NewReader(body))
	ct := e.reqCT
	if ct == "" && body != nil {
		ct = "application/json"
	}
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	req.Header.Set("Authorization", "Bearer not.a.token")
	return req, body
}

func (e exchange) response(t *testing.T) (http.Header, []byte) {
	t.Helper()
	body, ok := e.respBody.([]byte)
	if !ok {
		var err error
		if body, err = json.Marshal(e.respBody); err != nil {
			t.Fatal(err)
		}
	}
	ct := e.respCT
	if ct == "" {
		ct = "application/json"
	}
	return http.Header{"Content-Type": {ct}}, body
}

// referenceExchanges has one successful exchange per operation of the
// reference document, with request and response built from the api types.
func referenceExchanges() []exchange {
	return []exchange{
		{
			name: "describeSessions full", method: "POST", path: "/describeSessions",
			reqBody: api.DescribeSessionsRequest{
				SessionIds: []string{"3b9d3b7a-5a52-4a5f-8d4a-0b6f7c2f9e11", "a1"},
				Filters:    []api.KeyValuePair{{Key: "owner", Value: "alice"}, {Key: "tag:gpu", Value: "yes"}},
				MaxResults: ptr(1000),
				NextToken:  "opaque",
			},
			status: 200,
			respBody: api.DescribeSessionsResponse{
				RequestId: "req-1",
				Sessions:  []api.Session{fullSession(), placingSession()},
				NextToken: "next",
			},
		},
		{
			name: "describeSessions without body", method: "POST", path: "/describeSessions",
			status:   200,
			respBody: api.DescribeSessionsResponse{RequestId: "req-2", Sessions: []api.Session{}},
		},
		{
			name: "describeServers", method: "POST", path: "/describeServers",
			reqBody: api.DescribeServersRequest{ServerIds: []string{"c2VydmVyLTE="}, MaxResults: ptr(1)},
			status:  200,
			respBody: api.DescribeServersResponse{
				RequestId: "req-3",
				Servers:   []api.Server{*sampleServer(), *minimalServer()},
				NextToken: "next",
			},
		},
		{
			name: "createSessions", method: "POST", path: "/createSessions",
			reqBody: []api.CreateSessionRequest{
				{
					Name: "design-review", Owner: "alice", Type: api.TypeVirtual, DcvGlEnabled: true,
					MaxConcurrentClients: ptr[int64](2), InitFile: "gnome.sh", AutorunFile: "run.sh",
					AutorunFileArguments: []string{"--fast"}, PermissionsFile: "W3Blcm1pc3Npb25zXQo=",
					Requirements: "tag:gpu = 'yes'", EnqueueRequest: true, DisableRetryOnFailure: true,
					StorageRoot: "%home%/storage",
				},
				{Name: "nowhere", Owner: "bob", Type: api.TypeConsole, InitFilePath: "old.sh", Requirements: "tag:nope = '1'"},
			},
			status: 200,
			respBody: api.CreateSessionsResponse{
				RequestId:      "req-4",
				SuccessfulList: []api.Session{placingSession()},
				UnsuccessfulList: []api.UnsuccessfulCreateSession{{
					CreateSessionRequestData: api.CreateSessionRequest{Name: "nowhere", Owner: "bob", Type: api.TypeConsole, InitFilePath: "old.sh", Requirements: "tag:nope = '1'"},
					FailureReason:            "No DCV server found for the given criteria",
				}},
			},
		},
		{
			name: "deleteSessions", method: "POST", path: "/deleteSessions",
			reqBody: []api.DeleteSessionRequest{{SessionId: "a1", Owner: "bob", Force: true}, {SessionId: "zz", Owner: "bob"}},
			status:  200,
			respBody: api.DeleteSessionsResponse{
				RequestId:        "req-5",
				SuccessfulList:   []api.DeleteSessionSuccess{{SessionId: "a1", State: api.StateDeleting}},
				UnsuccessfulList: []api.DeleteSessionFailure{{SessionId: "zz", FailureReason: "The requested dcvSession does not exist"}},
			},
		},
		{
			name: "updateSessionPermissions", method: "PUT", path: "/sessionPermissions",
			reqBody: []api.UpdateSessionPermissionsRequest{{SessionId: "a1", Owner: "bob", PermissionsFile: "W3Blcm1pc3Npb25zXQo="}},
			status:  200,
			respBody: api.UpdateSessionPermissionsResponse{
				RequestId:        "req-6",
				SuccessfulList:   []api.UpdateSessionPermissionsSuccess{{SessionId: "a1"}},
				UnsuccessfulList: []api.UpdateSessionPermissionsFailure{{SessionId: "zz", FailureReason: "session not found"}},
			},
		},
		{
			name: "GetSessionConnectionData", method: "GET", path: "/sessionConnectionData/3b9d3b7a-5a52-4a5f-8d4a-0b6f7c2f9e11/alice",
			status: 200,
			respBody: api.GetSessionConnectionDataResponse{
				Session:         fullSession(),
				ConnectionToken: "eyJhbGciOiJFUzI1NiJ9.eyJkY3ZTZXNzaW9uSWQiOiJhMSJ9.c2ln",
			},
		},
		{
			name: "GetSessionConnectionData escaped user", method: "GET", path: "/sessionConnectionData/a1/CORP%5Calice",
			status:   200,
			respBody: api.GetSessionConnectionDataResponse{Session: placingSession(), ConnectionToken: "t"},
		},
		{
			name: "getSessionScreenshots", method: "POST", path: "/getSessionScreenshots",
			reqBody: []api.GetSessionScreenshotRequest{{SessionId: "a1", MaxWidth: ptr[int64](640), MaxHeight: ptr[int64](480)}, {SessionId: "zz"}},
			status:  200,
			respBody: api.GetSessionScreenshotsResponse{
				RequestId: "req-7",
				SuccessfulList: []api.GetSessionScreenshotSuccess{{SessionScreenshot: api.SessionScreenshot{
					SessionId: "a1",
					Images: []api.SessionScreenshotImage{
						{Format: "png", Data: "iVBORw0KGgo=", CreationTime: created, Primary: true},
						{Format: "jpeg", Data: "/9j/4AAQ", CreationTime: created, Primary: false},
					},
				}}},
				UnsuccessfulList: []api.GetSessionScreenshotFailure{{
					GetSessionScreenshotRequestData: api.GetSessionScreenshotRequest{SessionId: "zz"},
					FailureReason:                   "Dcv session not found.",
				}},
			},
		},
		{
			name: "openServers", method: "POST", path: "/openServers",
			reqBody: []api.OpenServerRequest{{ServerId: "c2VydmVyLTE="}, {ServerId: "nope"}},
			status:  200,
			respBody: api.OpenServersResponse{
				RequestId:      "req-8",
				SuccessfulList: []api.ServerIdResult{{ServerId: "c2VydmVyLTE="}},
				UnsuccessfulList: []api.OpenServerFailure{{
					OpenServerRequestData: api.OpenServerRequest{ServerId: "nope"},
					FailureCode:           api.FailureCodeServerNotFound,
					FailureReason:         "Dcv server not found.",
				}},
			},
		},
		{
			name: "closeServers", method: "POST", path: "/closeServers",
			reqBody: []api.CloseServerRequest{{ServerId: "c2VydmVyLTE=", Force: true}, {ServerId: "busy"}},
			status:  200,
			respBody: api.CloseServersResponse{
				RequestId:      "req-9",
				SuccessfulList: []api.ServerIdResult{{ServerId: "c2VydmVyLTE="}},
				UnsuccessfulList: []api.CloseServerFailure{{
					CloseServerRequestData: api.CloseServerRequest{ServerId: "busy"},
					FailureCode:            api.FailureCodeServerHasSessions,
					FailureReason:          "server has running sessions",
				}},
			},
		},
	}
}

func TestDoc_ValidateResponse_APITypesMatchBothDocuments(t *testing.T) {
	docs := map[string]*Doc{"berth": MustBerth(t), "reference": MustReference(t)}
	covered := map[string]bool{}
	for _, e := range referenceExchanges() {
		for docName, doc := range docs {
			t.Run(docName+"/"+e.name, func(t *testing.T) {
				req, reqBody := e.request(t)
				id, err := doc.OperationID(req)
				if err != nil {
					t.Fatal(err)
				}
				if docName == "reference" {
					covered[id] = true
				}
				if err := doc.ValidateRequest(req, reqBody); err != nil {
					t.Errorf("request: %v", err)
				}
				header, body := e.response(t)
				if err := doc.ValidateResponse(req, reqBody, e.status, header, body); err != nil {
					t.Errorf("response: %v\nbody: %s", err, body)
				}
			})
		}
	}
	// Every operation of the reference has a sample.
	for _, item := range docs["reference"].Spec().Paths.Map() {
		for _, op := range item.Operations() {
			if !covered[op.OperationID] {
				t.Errorf("no sample exchange for reference operation %s", op.OperationID)
			}
		}
	}
}

func TestDoc_ValidateResponse_ErrorResponse(t *testing.T) {
	berth, ref := MustBerth(t), MustReference(t)
	req := httptest.NewRequest("POST", "https://127.0.0.1:54321/createSessions", strings.NewReader("{"))
	body, err := json.Marshal(api.ErrorResponse{Error: "request body is not a JSON array", Code: "invalid_request"})
	if err != nil {
		t.Fatal(err)
	}
	header := http.Header{"Content-Type": {"application/json; charset=utf-8"}}

	for _, status := range []int{400, 401, 404, 413, 429, 500, 503} {
		if err := berth.ValidateResponse(req, []byte("{"), status, header, body); err != nil {
			t.Errorf("berth, status %d: %v", status, err)
		}
	}
	// code is optional.
	if err := berth.ValidateResponse(req, nil, 400, header, []byte(`{"error":"bad"}`)); err != nil {
		t.Errorf("berth, error without code: %v", err)
	}
	// error is not.
	if err := berth.ValidateResponse(req, nil, 400, header, []byte(`{"code":"bad"}`)); err == nil {
		t.Error("berth accepted an ErrorResponse without error")
	}
	// The reference documents 400 without a body schema, and no 401.
	if err := ref.ValidateResponse(req, nil, 400, header, body); err != nil {
		t.Errorf("reference, status 400: %v", err)
	}
	err = ref.ValidateResponse(req, nil, 401, header, []byte(`{"error":"No authorization header"}`))
	if !errors.Is(err, ErrUndocumentedStatus) {
		t.Errorf("reference, status 401: got %v, want ErrUndocumentedStatus", err)
	}
	if err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("error %v does not name the status", err)
	}
}

func TestDoc_ValidateResponse_Rejects(t *testing.T) {
	berth := MustBerth(t)
	ref := MustReference(t)
	describe := func() *http.Request {
		return httptest.NewRequest("POST", "https://127.0.0.1:54321/describeSessions", nil)
	}
	jsonCT := http.Header{"Content-Type": {"application/json"}}
	session := func(mutate func(m map[string]any)) []byte {
		b, err := json.Marshal(api.DescribeSessionsResponse{RequestId: "r", Sessions: []api.Session{fullSession()}})
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		mutate(m["Sessions"].([]any)[0].(map[string]any))
		if b, err = json.Marshal(m); err != nil {
			t.Fatal(err)
		}
		return b
	}
	tests := []struct {
		name       string
		doc        *Doc
		status     int
		header     http.Header
		body       []byte
		wantUndocd bool
	}{
		{name: "unknown State", doc: berth, status: 200, header: jsonCT, body: session(func(m map[string]any) { m["State"] = "RUNNING" })},
		{name: "lower-case Type", doc: berth, status: 200, header: jsonCT, body: session(func(m map[string]any) { m["Type"] = "virtual" })},
		{name: "bad CreationTime", doc: berth, status: 200, header: jsonCT, body: session(func(m map[string]any) { m["CreationTime"] = "yesterday" })},
		{name: "bad CreationTime (reference)", doc: ref, status: 200, header: jsonCT, body: session(func(m map[string]any) { m["CreationTime"] = "yesterday" })},
		{name: "numeric Server.Port (reference)", doc: ref, status: 200, header: jsonCT, body: session(func(m map[string]any) { m["Server"].(map[string]any)["Port"] = 8443 })},
		{name: "missing Id", doc: berth, status: 200, header: jsonCT, body: session(func(m map[string]any) { delete(m, "Id") })},
		{name: "null LastDisconnectionTime", doc: berth, status: 200, header: jsonCT, body: session(func(m map[string]any) { m["LastDisconnectionTime"] = nil })},
		{name: "null Sessions", doc: berth, status: 200, header: jsonCT, body: []byte(`{"RequestId":"r","Sessions":null}`)},
		{name: "null Sessions (reference)", doc: ref, status: 200, header: jsonCT, body: []byte(`{"RequestId":"r","Sessions":null}`)},
		{name: "no Content-Type", doc: berth, status: 200, header: http.Header{}, body: []byte(`{"RequestId":"r","Sessions":[]}`)},
		{name: "text/plain", doc: berth, status: 200, header: http.Header{"Content-Type": {"text/plain"}}, body: []byte(`{"RequestId":"r","Sessions":[]}`)},
		{name: "not JSON", doc: berth, status: 200, header: jsonCT, body: []byte(`{"RequestId":`)},
		{name: "status 418", doc: berth, status: 418, header: jsonCT, body: []byte(`{"error":"teapot"}`), wantUndocd: true},
		{name: "status 201", doc: ref, status: 201, header: jsonCT, body: []byte(`{}`), wantUndocd: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.doc.ValidateResponse(describe(), nil, tt.status, tt.header, tt.body)
			if err == nil {
				t.Fatalf("accepted %s", tt.body)
			}
			if got := errors.Is(err, ErrUndocumentedStatus); got != tt.wantUndocd {
				t.Errorf("errors.Is(err, ErrUndocumentedStatus) = %t, want %t; err: %v", got, tt.wantUndocd, err)
			}
		})
	}
}

func TestDoc_ValidateResponse_NoRoute(t *testing.T) {
	berth := MustBerth(t)
	for _, tc := range []struct{ method, path string }{
		{"POST", "/nope"},
		{"GET", "/describeSessions"},
		{"POST", "/sessionConnectionData/a/b"},
		{"GET", "/sessionConnectionData/a"},
		{"GET", "/sessionConnectionData/a/"},
		{"GET", "/sessionConnectionData//b"},
		{"GET", "/sessionConnectionData/a/b/c"},
		{"POST", "/describeSessions/"},
		{"GET", "/health/"},
		{"HEAD", "/describeSessions"},
		{"DELETE", "/health"},
	} {
		req := httptest.NewRequest(tc.method, "https://127.0.0.1:1"+tc.path, nil)
		err := berth.ValidateResponse(req, nil, 200, http.Header{"Content-Type": {"application/json"}}, []byte(`{}`))
		if !errors.Is(err, ErrNoRoute) {
			t.Errorf("%s %s: got %v, want ErrNoRoute", tc.method, tc.path, err)
		}
	}
}

func TestDoc_ValidateResponse_IgnoresHostAndPort(t *testing.T) {
	berth, ref := MustBerth(t), MustReference(t)
	body := []byte(`{"RequestId":"r","Servers":[]}`)
	header := http.Header{"Content-Type": {"application/json"}}
	// Client-side (absolute URL), and server-side (path only, Host header) requests.
	server := httptest.NewRequest("POST", "/describeServers", nil)
	server.Host = "broker.example:8443"
	client, err := http.NewRequest("POST", "https://[::1]:61234/describeServers", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, req := range []*http.Request{server, client, httptest.NewRequest("POST", "http://localhost/describeServers", nil)} {
		for name, doc := range map[string]*Doc{"berth": berth, "reference": ref} {
			if err := doc.ValidateResponse(req, nil, 200, header, body); err != nil {
				t.Errorf("%s, %s: %v", name, req.URL, err)
			}
		}
	}
}

func TestDoc_ValidateResponse_RequestBodyOptIn(t *testing.T) {
	berth := MustBerth(t)
	req := httptest.NewRequest("POST", "https://127.0.0.1:54321/createSessions", nil)
	req.Header.Set("Content-Type", "application/json")
	bad := []byte(`{"Name":"not an array"}`)
	header := http.Header{"Content-Type": {"application/json"}}
	resp := []byte(`{"error":"request body must be a JSON array","code":"invalid_request"}`)

	if err := berth.ValidateResponse(req, bad, 400, header, resp); err != nil {
		t.Errorf("default: request body was checked: %v", err)
	}
	strict := *berth
	strict.CheckRequest = true
	if err := strict.ValidateResponse(req, bad, 400, header, resp); err == nil {
		t.Error("CheckRequest: invalid request body accepted")
	}
	if err := strict.ValidateResponse(req, []byte(`[{"Name":"n","Owner":"o","Type":"VIRTUAL"}]`), 400, header, resp); err != nil {
		t.Errorf("CheckRequest: valid request rejected: %v", err)
	}
}

func TestDoc_ValidateRequest(t *testing.T) {
	berth, ref := MustBerth(t), MustReference(t)
	tests := []struct {
		name      string
		method    string
		path      string
		ct        string
		body      string
		berthOK   bool
		refOK     bool
		basicAuth bool
	}{
		{name: "batch as object", method: "POST", path: "/createSessions", body: `{"Name":"a","Owner":"b","Type":"VIRTUAL"}`},
		{name: "batch missing", method: "POST", path: "/deleteSessions"},
		{name: "batch ok", method: "POST", path: "/deleteSessions", body: `[{"SessionId":"a","Owner":"b"}]`, berthOK: true, refOK: true},
		{name: "unknown request field", method: "POST", path: "/openServers", body: `[{"ServerId":"a","Future":1}]`, berthOK: true, refOK: true},
		// The reference gives DescribeSessionsRequestData no type, so any JSON passes it.
		{name: "describe as array", method: "POST", path: "/describeSessions", body: `[]`, refOK: true},
		{name: "describe empty object", method: "POST", path: "/describeSessions", body: `{}`, berthOK: true, refOK: true},
		{name: "MaxResults 0", method: "POST", path: "/describeSessions", body: `{"MaxResults":0}`, refOK: true},
		{name: "MaxResults 1001", method: "POST", path: "/describeServers", body: `{"MaxResults":1001}`, refOK: true},
		{name: "MaxResults 1000", method: "POST", path: "/describeServers", body: `{"MaxResults":1000}`, berthOK: true, refOK: true},
		{name: "MaxResults string", method: "POST", path: "/describeServers", body: `{"MaxResults":"10"}`},
		{name: "screenshot null MaxWidth", method: "POST", path: "/getSessionScreenshots", body: `[{"SessionId":"a","MaxWidth":null}]`, berthOK: true, refOK: true},
		{name: "not JSON", method: "POST", path: "/closeServers", body: `[{`},
		{name: "token in query", method: "POST", path: "/oauth2/token?grant_type=client_credentials", ct: "application/x-www-form-urlencoded", basicAuth: true, berthOK: true},
		{name: "token in form", method: "POST", path: "/oauth2/token", ct: "application/x-www-form-urlencoded", body: "grant_type=client_credentials", basicAuth: true, berthOK: true},
		{name: "token wrong grant", method: "POST", path: "/oauth2/token?grant_type=password", ct: "application/x-www-form-urlencoded", basicAuth: true},
		{name: "token with form credentials", method: "POST", path: "/oauth2/token", ct: "application/x-www-form-urlencoded", body: "grant_type=client_credentials&client_id=c&client_secret=s", berthOK: true},
		{name: "batch of 1000", method: "POST", path: "/openServers", body: "[" + strings.Repeat(`{"ServerId":"s"},`, 999) + `{"ServerId":"s"}]`, berthOK: true, refOK: true},
		{name: "batch of 1001", method: "POST", path: "/openServers", body: "[" + strings.Repeat(`{"ServerId":"s"},`, 1000) + `{"ServerId":"s"}]`, refOK: true},
		{name: "health", method: "GET", path: "/health", berthOK: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for name, c := range map[string]struct {
				doc *Doc
				ok  bool
			}{"berth": {berth, tt.berthOK}, "reference": {ref, tt.refOK}} {
				req := httptest.NewRequest(tt.method, "https://127.0.0.1:54321"+tt.path, nil)
				ct := tt.ct
				if ct == "" {
					ct = "application/json"
				}
				if tt.body != "" || tt.ct != "" {
					req.Header.Set("Content-Type", ct)
				}
				if tt.basicAuth {
					req.SetBasicAuth("client", "secret")
				}
				err := c.doc.ValidateRequest(req, []byte(tt.body))
				if name == "reference" && errors.Is(err, ErrNoRoute) && !c.ok {
					continue // a berth-only endpoint
				}
				if (err == nil) != c.ok {
					t.Errorf("%s: err = %v, want ok=%t", name, err, c.ok)
				}
			}
		})
	}
}

func TestDoc_ValidateResponse_BerthEndpoints(t *testing.T) {
	berth := MustBerth(t)
	tokenReq := func() *http.Request {
		r := httptest.NewRequest("POST", "https://127.0.0.1:54321/oauth2/token?grant_type=client_credentials", nil)
		r.SetBasicAuth("client", "secret")
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		return r
	}
	get := func(path string) *http.Request {
		return httptest.NewRequest("GET", "https://127.0.0.1:54321"+path, nil)
	}
	j := "application/json"
	tests := []struct {
		name   string
		req    *http.Request
		status int
		ct     string
		body   any
		ok     bool
	}{
		{"token", tokenReq(), 200, j, api.TokenResponse{AccessToken: "eyJ.x.y", TokenType: "Bearer", ExpiresIn: 3600}, true},
		{"token without expires_in", tokenReq(), 200, j, map[string]any{"access_token": "a", "token_type": "Bearer"}, false},
		{"token bad grant", tokenReq(), 400, j, map[string]string{"error": "unsupported_grant_type", "error_description": "only client_credentials is supported"}, true},
		{"token bad client", tokenReq(), 401, j, map[string]string{"error": "invalid_client"}, true},
		{"token rate limited", tokenReq(), 429, j, api.ErrorResponse{Error: "slow down", Code: "rate_limited"}, true},
		{"jwks", get("/.well-known/jwks.json"), 200, j, map[string]any{"keys": []map[string]string{
			{"kty": "EC", "kid": "k1", "use": "sig", "alg": "ES256", "crv": "P-256", "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
			{"kty": "RSA", "kid": "k2", "use": "sig", "alg": "RS256", "n": "0vx7", "e": "AQAB"},
		}}, true},
		{"jwks without keys", get("/.well-known/jwks.json"), 200, j, map[string]any{}, false},
		{"health ok", get("/health"), 200, j, map[string]string{"status": "ok"}, true},
		{"health unhealthy", get("/health"), 503, j, map[string]string{"status": "unhealthy", "error": "store: database is locked"}, true},
		{"health unknown status", get("/health"), 200, j, map[string]string{"status": "fine"}, false},
		{"health HEAD", httptest.NewRequest("HEAD", "/health", nil), 200, j, []byte{}, true},
		{"health HEAD undocumented status", httptest.NewRequest("HEAD", "/health", nil), 418, j, []byte{}, false},
		{"jwks server_error", get("/.well-known/jwks.json"), 500, j, map[string]string{"error": "server_error"}, true},
		{"token server_error", tokenReq(), 500, j, map[string]string{"error": "server_error"}, true},
		{"document", get("/dcv-session-manager-api.yaml"), 200, "application/yaml", api.OpenAPIDocument, true},
		{"document as json", get("/dcv-session-manager-api.yaml"), 200, j, api.OpenAPIDocument, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body, ok := tt.body.([]byte)
			if !ok {
				var err error
				if body, err = json.Marshal(tt.body); err != nil {
					t.Fatal(err)
				}
			}
			err := berth.ValidateResponse(tt.req, nil, tt.status, http.Header{"Content-Type": {tt.ct}}, body)
			if (err == nil) != tt.ok {
				t.Errorf("err = %v, want ok=%t", err, tt.ok)
			}
		})
	}
}

func TestDoc_OperationID(t *testing.T) {
	berth := MustBerth(t)
	for path, want := range map[string]string{
		"GET /sessionConnectionData/s/u":     "GetSessionConnectionData",
		"PUT /sessionPermissions":            "updateSessionPermissions",
		"POST /oauth2/token":                 "createToken",
		"GET /dcv-session-manager-api.yaml":  "getApiDocument",
		"GET /.well-known/jwks.json":         "getJwks",
		"GET /sessionConnectionData/a%2Fb/c": "GetSessionConnectionData",
	} {
		method, p, _ := strings.Cut(path, " ")
		got, err := berth.OperationID(httptest.NewRequest(method, p, nil))
		if err != nil || got != want {
			t.Errorf("%s: got %q, %v; want %q", path, got, err, want)
		}
	}
}
