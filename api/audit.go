package api

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// AuditTarget is one ID an audited call acted on: Kind is session, server,
// template, owner, user, client or webhook.
type AuditTarget struct {
	Kind string `json:"Kind"`
	Id   string `json:"Id"`
}

// AuditRecord is one record of berth's audit log (GET /berth/v1/audit): a
// state-changing call, who made it, on what, from where, when, with which
// result, and its place in the hash chain (docs/audit.md).
type AuditRecord struct {
	Seq  int64     `json:"Seq"`
	Time time.Time `json:"Time"`
	// ActorKind is client, external, portal, admin or anonymous; Actor the
	// API client ID, portal user or OS user.
	ActorKind string        `json:"ActorKind"`
	Actor     string        `json:"Actor"`
	Action    string        `json:"Action"`
	Targets   []AuditTarget `json:"Targets"`
	Source    string        `json:"Source"`
	// Result is ok, partial or failed; Status the HTTP status (absent for
	// admin commands); Error the error code or reason.
	Result   string `json:"Result"`
	Status   int    `json:"Status,omitempty"`
	Error    string `json:"Error,omitempty"`
	Detail   string `json:"Detail,omitempty"`
	Broker   string `json:"Broker,omitempty"`
	PrevHash string `json:"PrevHash"`
	Hash     string `json:"Hash"`
}

// DescribeAuditResponse is the answer to GET /berth/v1/audit. NextAfter, when
// not zero, is the after parameter of the next page.
type DescribeAuditResponse struct {
	Records   []AuditRecord `json:"Records"`
	NextAfter int64         `json:"NextAfter,omitempty"`
}

// AuditQuery selects audit records; zero fields select all.
type AuditQuery struct {
	Since, Until time.Time
	Client       string
	Session      string
	Action       string
	After        int64
	Limit        int
}

// DescribeAudit calls GET /berth/v1/audit (berth's extension, for admins):
// the audit log's records that q selects, oldest first.
func (c *Client) DescribeAudit(ctx context.Context, q AuditQuery) (*DescribeAuditResponse, error) {
	v := url.Values{}
	set := func(k, s string) {
		if s != "" {
			v.Set(k, s)
		}
	}
	if !q.Since.IsZero() {
		set("since", q.Since.UTC().Format(time.RFC3339))
	}
	if !q.Until.IsZero() {
		set("until", q.Until.UTC().Format(time.RFC3339))
	}
	set("client", q.Client)
	set("session", q.Session)
	set("action", q.Action)
	if q.After > 0 {
		set("after", strconv.FormatInt(q.After, 10))
	}
	if q.Limit > 0 {
		set("limit", strconv.Itoa(q.Limit))
	}
	path := "/berth/v1/audit"
	if len(v) > 0 {
		path += "?" + v.Encode()
	}
	var out DescribeAuditResponse
	return &out, c.call(ctx, http.MethodGet, path, nil, &out)
}
