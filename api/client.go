package api

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Client calls a broker's Session Manager API. It fetches an access token with
// the client-credentials grant, caches it and renews it before it expires.
type Client struct {
	// BrokerURL is the API base, e.g. https://broker:8443.
	BrokerURL string
	// AuthURL is the token endpoint; empty means BrokerURL + /oauth2/token.
	AuthURL string
	// ClientID and ClientSecret are the API client's credentials; with both
	// empty no token is sent (enable-authorization = false).
	ClientID, ClientSecret string
	// HTTPClient is used for every call; nil means a client with a 60 s timeout.
	HTTPClient *http.Client

	mu      sync.Mutex
	token   string
	expires time.Time
}

// NewHTTPClient returns an HTTP client that trusts the CA bundle at caFile (in
// addition to nothing else) or, with insecure, skips certificate verification.
func NewHTTPClient(caFile string, insecure bool) (*http.Client, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	switch {
	case insecure:
		cfg.InsecureSkipVerify = true
	case caFile != "":
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("read CA bundle: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA bundle %s holds no PEM certificate", caFile)
		}
		cfg.RootCAs = pool
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = cfg
	tr.MaxIdleConnsPerHost = 16
	return &http.Client{Transport: tr, Timeout: 60 * time.Second}, nil
}

// Error is a non-2xx answer from the broker or its token endpoint.
type Error struct {
	StatusCode int
	// Message is the broker's "error" text (or the raw body when not JSON).
	Message string
	// Code is berth's machine code, when the broker sent one.
	Code string
}

// Error returns the message.
func (e *Error) Error() string {
	return fmt.Sprintf("broker answered %d: %s", e.StatusCode, e.Message)
}

func (c *Client) http() *http.Client {
	if c.HTTPClient != nil {
		return c.HTTPClient
	}
	return &http.Client{Timeout: 60 * time.Second}
}

// Token returns a valid access token, fetching a new one when the cached one is
// within 20% of its lifetime from expiry.
func (c *Client) Token(ctx context.Context) (string, error) {
	if c.ClientID == "" && c.ClientSecret == "" {
		return "", nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.token != "" && time.Now().Before(c.expires) {
		return c.token, nil
	}
	u := c.AuthURL
	if u == "" {
		u = strings.TrimRight(c.BrokerURL, "/") + "/oauth2/token"
	}
	if !strings.Contains(u, "grant_type=") {
		sep := "?"
		if strings.Contains(u, "?") {
			sep = "&"
		}
		u += sep + "grant_type=client_credentials"
	}
	// The URL's query parameters (grant_type, and for example an audience
	// an external server asks for) go in the form body too: the broker and
	// dcvsm's users put them in the query string, but RFC 6749 servers such
	// as Ory Hydra read only the body.
	var form string
	if pu, err := url.Parse(u); err == nil {
		form = pu.Query().Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, strings.NewReader(form))
	if err != nil {
		return "", err
	}
	req.SetBasicAuth(url.QueryEscape(c.ClientID), url.QueryEscape(c.ClientSecret))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	var tr TokenResponse
	if err := c.do(req, &tr); err != nil {
		return "", fmt.Errorf("get access token: %w", err)
	}
	if tr.AccessToken == "" {
		return "", fmt.Errorf("get access token: the answer holds no access_token")
	}
	life := time.Duration(tr.ExpiresIn) * time.Second
	c.token, c.expires = tr.AccessToken, time.Now().Add(life*8/10)
	return c.token, nil
}

func (c *Client) do(req *http.Request, out any) error {
	resp, err := c.http().Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		e := &Error{StatusCode: resp.StatusCode, Message: strings.TrimSpace(string(body))}
		var er struct {
			Error       string `json:"error"`
			Code        string `json:"code"`
			Description string `json:"error_description"`
		}
		if json.Unmarshal(body, &er) == nil && er.Error != "" {
			e.Message, e.Code = er.Error, er.Code
			if er.Description != "" {
				e.Message += ": " + er.Description
			}
		}
		return e
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("decode answer: %w", err)
	}
	return nil
}

// call sends one API request with a bearer token.
func (c *Client) call(ctx context.Context, method, path string, in, out any) error {
	tok, err := c.Token(ctx)
	if err != nil {
		return err
	}
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.BrokerURL, "/")+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	return c.do(req, out)
}

// DescribeSessions calls POST /describeSessions.
func (c *Client) DescribeSessions(ctx context.Context, in DescribeSessionsRequest) (*DescribeSessionsResponse, error) {
	var out DescribeSessionsResponse
	return &out, c.call(ctx, http.MethodPost, "/describeSessions", in, &out)
}

// DescribeServers calls POST /describeServers.
func (c *Client) DescribeServers(ctx context.Context, in DescribeServersRequest) (*DescribeServersResponse, error) {
	var out DescribeServersResponse
	return &out, c.call(ctx, http.MethodPost, "/describeServers", in, &out)
}

// CreateSessions calls POST /createSessions.
func (c *Client) CreateSessions(ctx context.Context, in []CreateSessionRequest) (*CreateSessionsResponse, error) {
	var out CreateSessionsResponse
	return &out, c.call(ctx, http.MethodPost, "/createSessions", in, &out)
}

// DeleteSessions calls POST /deleteSessions.
func (c *Client) DeleteSessions(ctx context.Context, in []DeleteSessionRequest) (*DeleteSessionsResponse, error) {
	var out DeleteSessionsResponse
	return &out, c.call(ctx, http.MethodPost, "/deleteSessions", in, &out)
}

// UpdateSessionPermissions calls PUT /sessionPermissions.
func (c *Client) UpdateSessionPermissions(ctx context.Context, in []UpdateSessionPermissionsRequest) (*UpdateSessionPermissionsResponse, error) {
	var out UpdateSessionPermissionsResponse
	return &out, c.call(ctx, http.MethodPut, "/sessionPermissions", in, &out)
}

// GetSessionConnectionData calls GET /sessionConnectionData/{sessionId}/{user}.
func (c *Client) GetSessionConnectionData(ctx context.Context, sessionID, user string) (*GetSessionConnectionDataResponse, error) {
	var out GetSessionConnectionDataResponse
	p := "/sessionConnectionData/" + url.PathEscape(sessionID) + "/" + url.PathEscape(user)
	return &out, c.call(ctx, http.MethodGet, p, nil, &out)
}

// GetSessionScreenshots calls POST /getSessionScreenshots.
func (c *Client) GetSessionScreenshots(ctx context.Context, in []GetSessionScreenshotRequest) (*GetSessionScreenshotsResponse, error) {
	var out GetSessionScreenshotsResponse
	return &out, c.call(ctx, http.MethodPost, "/getSessionScreenshots", in, &out)
}

// OpenServers calls POST /openServers.
func (c *Client) OpenServers(ctx context.Context, in []OpenServerRequest) (*OpenServersResponse, error) {
	var out OpenServersResponse
	return &out, c.call(ctx, http.MethodPost, "/openServers", in, &out)
}

// CloseServers calls POST /closeServers.
func (c *Client) CloseServers(ctx context.Context, in []CloseServerRequest) (*CloseServersResponse, error) {
	var out CloseServersResponse
	return &out, c.call(ctx, http.MethodPost, "/closeServers", in, &out)
}

// DescribeTemplates calls GET /berth/v1/templates: every template, or with
// user or groups set those published to user or to one of groups.
func (c *Client) DescribeTemplates(ctx context.Context, user string, groups []string) (*DescribeTemplatesResponse, error) {
	q := url.Values{}
	if user != "" {
		q.Set("user", user)
	}
	for _, g := range groups {
		q.Add("group", g)
	}
	p := "/berth/v1/templates"
	if len(q) > 0 {
		p += "?" + q.Encode()
	}
	var out DescribeTemplatesResponse
	return &out, c.call(ctx, http.MethodGet, p, nil, &out)
}

// CreateTemplate calls POST /berth/v1/templates.
func (c *Client) CreateTemplate(ctx context.Context, in Template) (*TemplateResponse, error) {
	var out TemplateResponse
	return &out, c.call(ctx, http.MethodPost, "/berth/v1/templates", in, &out)
}

// GetTemplate calls GET /berth/v1/templates/{id}.
func (c *Client) GetTemplate(ctx context.Context, id string) (*TemplateResponse, error) {
	var out TemplateResponse
	return &out, c.call(ctx, http.MethodGet, "/berth/v1/templates/"+url.PathEscape(id), nil, &out)
}

// UpdateTemplate calls PUT /berth/v1/templates/{id}, replacing every field.
func (c *Client) UpdateTemplate(ctx context.Context, id string, in Template) (*TemplateResponse, error) {
	var out TemplateResponse
	return &out, c.call(ctx, http.MethodPut, "/berth/v1/templates/"+url.PathEscape(id), in, &out)
}

// DeleteTemplate calls DELETE /berth/v1/templates/{id}.
func (c *Client) DeleteTemplate(ctx context.Context, id string) (*DeleteTemplateResponse, error) {
	var out DeleteTemplateResponse
	return &out, c.call(ctx, http.MethodDelete, "/berth/v1/templates/"+url.PathEscape(id), nil, &out)
}

// LaunchTemplate calls POST /berth/v1/templates/{id}/launch.
func (c *Client) LaunchTemplate(ctx context.Context, id string, in LaunchTemplateRequest) (*LaunchTemplateResponse, error) {
	var out LaunchTemplateResponse
	return &out, c.call(ctx, http.MethodPost, "/berth/v1/templates/"+url.PathEscape(id)+"/launch", in, &out)
}

// DescribeSessionShares calls GET /berth/v1/sessions/{id}/shares.
func (c *Client) DescribeSessionShares(ctx context.Context, sessionID string) (*SessionSharesResponse, error) {
	var out SessionSharesResponse
	return &out, c.call(ctx, http.MethodGet, "/berth/v1/sessions/"+url.PathEscape(sessionID)+"/shares", nil, &out)
}

// ShareSession calls PUT /berth/v1/sessions/{id}/shares and returns the
// session's shares after the change.
func (c *Client) ShareSession(ctx context.Context, sessionID string, in ShareSessionRequest) (*SessionSharesResponse, error) {
	var out SessionSharesResponse
	return &out, c.call(ctx, http.MethodPut, "/berth/v1/sessions/"+url.PathEscape(sessionID)+"/shares", in, &out)
}

// ConnectionURL builds the browser URL of a session from its connection data:
// https://{Ip}:{Port}{WebUrlPath}?authToken={ConnectionToken}#{SessionId}.
func ConnectionURL(d *GetSessionConnectionDataResponse) string {
	s := d.Session
	host, port, path := "", 0, ""
	if s.Server != nil {
		host, path = s.Server.Ip, s.Server.WebUrlPath
		for _, e := range s.Server.Endpoints {
			if e.Protocol == ProtocolHTTP {
				port = e.Port
				if e.WebUrlPath != "" {
					path = e.WebUrlPath
				}
				break
			}
		}
		if port == 0 {
			fmt.Sscan(s.Server.Port, &port)
		}
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	return fmt.Sprintf("https://%s:%d%s?authToken=%s#%s", host, port, path, url.QueryEscape(d.ConnectionToken), s.Id)
}

// ExtendSession calls POST /berth/v1/sessions/{id}/extend (berth's
// extension): it pushes the session's max-lifetime deadline by by (0: the
// broker's default) and returns the new deadline.
func (c *Client) ExtendSession(ctx context.Context, sessionID string, by time.Duration, owner string) (*ExtendSessionResponse, error) {
	in := ExtendSessionRequest{Owner: owner}
	if by != 0 {
		in.By = json.RawMessage(strconv.Quote(by.String()))
	}
	var out ExtendSessionResponse
	return &out, c.call(ctx, http.MethodPost, "/berth/v1/sessions/"+url.PathEscape(sessionID)+"/extend", in, &out)
}

// DescribeQueue calls GET /berth/v1/queue (berth's extension): the
// sessions waiting in the create queue, in the order it serves them, and
// why each waits.
func (c *Client) DescribeQueue(ctx context.Context) (*DescribeQueueResponse, error) {
	var out DescribeQueueResponse
	return &out, c.call(ctx, http.MethodGet, "/berth/v1/queue", nil, &out)
}

// DescribeCapacity calls GET /berth/v1/capacity (berth's extension): the
// scaling signals, the shortfall per requirement class and the idle servers.
func (c *Client) DescribeCapacity(ctx context.Context) (*DescribeCapacityResponse, error) {
	var out DescribeCapacityResponse
	return &out, c.call(ctx, http.MethodGet, "/berth/v1/capacity", nil, &out)
}

// SessionLifetime calls GET /berth/v1/sessions/{id}/lifetime (berth's
// extension): the session's lifetime deadlines.
func (c *Client) SessionLifetime(ctx context.Context, sessionID string) (*SessionLifetimeResponse, error) {
	var out SessionLifetimeResponse
	return &out, c.call(ctx, http.MethodGet, "/berth/v1/sessions/"+url.PathEscape(sessionID)+"/lifetime", nil, &out)
}
