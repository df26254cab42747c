package api

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// CreateWebhookRequest is the body of POST /berth/v1/webhooks.
type CreateWebhookRequest struct {
	// Url receives the deliveries: https, or http to a loopback address.
	Url string `json:"Url"`
	// EventTypes selects the events delivered ("session.state", or a prefix
	// "session.*"); empty means every event.
	EventTypes []string `json:"EventTypes,omitempty"`
	// Secret keys the Berth-Signature HMAC; generated when empty.
	Secret string `json:"Secret,omitempty"`
}

// Webhook is a registered endpoint and its delivery state.
type Webhook struct {
	Id         string    `json:"Id"`
	Url        string    `json:"Url"`
	EventTypes []string  `json:"EventTypes"`
	CreatedAt  time.Time `json:"CreatedAt"`
	// State is ENABLED or DISABLED (after sustained failure: DisabledReason).
	State          string `json:"State"`
	DisabledReason string `json:"DisabledReason,omitempty"`
	// LastEventId is the ID of the last event the endpoint acknowledged.
	LastEventId int64 `json:"LastEventId"`
	// FailedAttempts counts the failed tries of the next event since
	// FailingSince; NextAttemptAt is when it is tried again.
	FailedAttempts int        `json:"FailedAttempts"`
	FailingSince   *time.Time `json:"FailingSince,omitempty"`
	NextAttemptAt  *time.Time `json:"NextAttemptAt,omitempty"`
	LastError      string     `json:"LastError,omitempty"`
	// Secret is only in the answer to the webhook's creation.
	Secret string `json:"Secret,omitempty"`
}

// WebhookResponse answers POST and GET /berth/v1/webhooks/{id}.
type WebhookResponse struct {
	RequestId string  `json:"RequestId"`
	Webhook   Webhook `json:"Webhook"`
}

// DescribeWebhooksResponse answers GET /berth/v1/webhooks.
type DescribeWebhooksResponse struct {
	RequestId string    `json:"RequestId"`
	Webhooks  []Webhook `json:"Webhooks"`
}

// DeleteWebhookResponse answers DELETE /berth/v1/webhooks/{id}.
type DeleteWebhookResponse struct {
	RequestId string `json:"RequestId"`
	Id        string `json:"Id"`
}

// WebhookDelivery is one attempt in a webhook's delivery log.
type WebhookDelivery struct {
	EventId   int64     `json:"EventId"`
	EventType string    `json:"EventType"`
	Attempt   int       `json:"Attempt"`
	Time      time.Time `json:"Time"`
	// StatusCode is the receiver's HTTP status, 0 when none came.
	StatusCode int    `json:"StatusCode"`
	Error      string `json:"Error,omitempty"`
	DurationMs int64  `json:"DurationMs"`
	Delivered  bool   `json:"Delivered"`
}

// DescribeWebhookDeliveriesResponse answers
// GET /berth/v1/webhooks/{id}/deliveries: newest first.
type DescribeWebhookDeliveriesResponse struct {
	RequestId  string            `json:"RequestId"`
	Deliveries []WebhookDelivery `json:"Deliveries"`
}

// CreateWebhook calls POST /berth/v1/webhooks; the answer holds the secret,
// shown this once.
func (c *Client) CreateWebhook(ctx context.Context, in CreateWebhookRequest) (*WebhookResponse, error) {
	var out WebhookResponse
	return &out, c.call(ctx, http.MethodPost, "/berth/v1/webhooks", in, &out)
}

// DescribeWebhooks calls GET /berth/v1/webhooks.
func (c *Client) DescribeWebhooks(ctx context.Context) (*DescribeWebhooksResponse, error) {
	var out DescribeWebhooksResponse
	return &out, c.call(ctx, http.MethodGet, "/berth/v1/webhooks", nil, &out)
}

// GetWebhook calls GET /berth/v1/webhooks/{id}.
func (c *Client) GetWebhook(ctx context.Context, id string) (*WebhookResponse, error) {
	var out WebhookResponse
	return &out, c.call(ctx, http.MethodGet, "/berth/v1/webhooks/"+url.PathEscape(id), nil, &out)
}

// DeleteWebhook calls DELETE /berth/v1/webhooks/{id}.
func (c *Client) DeleteWebhook(ctx context.Context, id string) (*DeleteWebhookResponse, error) {
	var out DeleteWebhookResponse
	return &out, c.call(ctx, http.MethodDelete, "/berth/v1/webhooks/"+url.PathEscape(id), nil, &out)
}

// DescribeWebhookDeliveries calls GET /berth/v1/webhooks/{id}/deliveries;
// limit 0 means the server's default (100).
func (c *Client) DescribeWebhookDeliveries(ctx context.Context, id string, limit int) (*DescribeWebhookDeliveriesResponse, error) {
	var out DescribeWebhookDeliveriesResponse
	p := "/berth/v1/webhooks/" + url.PathEscape(id) + "/deliveries"
	if limit > 0 {
		p += "?limit=" + strconv.Itoa(limit)
	}
	return &out, c.call(ctx, http.MethodGet, p, nil, &out)
}
