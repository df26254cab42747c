package httpapi

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/webhook"
)

// Operation names of the webhook API (berth's extension).
const (
	OpCreateWebhook             = "CreateWebhook"
	OpDescribeWebhooks          = "DescribeWebhooks"
	OpGetWebhook                = "GetWebhook"
	OpDeleteWebhook             = "DeleteWebhook"
	OpDescribeWebhookDeliveries = "DescribeWebhookDeliveries"
)

// WebhookRegistry registers webhooks; *webhook.Registry implements it.
type WebhookRegistry interface {
	Create(ctx context.Context, s webhook.Spec) (*webhook.Webhook, error)
	List(ctx context.Context) ([]*webhook.Webhook, error)
	Get(ctx context.Context, id string) (*webhook.Webhook, error)
	Delete(ctx context.Context, id string) error
	Deliveries(ctx context.Context, id string, limit int) ([]*webhook.Delivery, error)
}

// webhookOperations are the operations of the webhook API.
func webhookOperations() []string {
	return []string{OpCreateWebhook, OpDescribeWebhooks, OpGetWebhook, OpDeleteWebhook, OpDescribeWebhookDeliveries}
}

// webhookRoutes registers the webhook API with api.
func (s *Server) webhookRoutes(api func(pattern, op string, h func(http.ResponseWriter, *http.Request) error)) {
	api("POST /berth/v1/webhooks", OpCreateWebhook, s.createWebhook)
	api("GET /berth/v1/webhooks", OpDescribeWebhooks, s.describeWebhooks)
	api("GET /berth/v1/webhooks/{id}", OpGetWebhook, s.getWebhook)
	api("DELETE /berth/v1/webhooks/{id}", OpDeleteWebhook, s.deleteWebhook)
	api("GET /berth/v1/webhooks/{id}/deliveries", OpDescribeWebhookDeliveries, s.describeWebhookDeliveries)
}

// webhooks returns the registry, or an error when the broker has none.
func (s *Server) webhooks() (WebhookRegistry, error) {
	if s.Webhooks == nil {
		return nil, &httpError{status: http.StatusNotFound, code: broker.CodeNotFound, msg: "webhooks are not enabled on this broker"}
	}
	return s.Webhooks, nil
}

func (s *Server) createWebhook(w http.ResponseWriter, r *http.Request) error {
	reg, err := s.webhooks()
	if err != nil {
		return err
	}
	var in api.CreateWebhookRequest
	if err := decode(w, r, &in, false); err != nil {
		return err
	}
	h, err := reg.Create(r.Context(), webhook.Spec{URL: in.Url, Types: in.EventTypes, Secret: in.Secret})
	if err != nil {
		return berthError(err)
	}
	out := webhookToAPI(h)
	out.Secret = h.Secret
	writeJSON(w, http.StatusCreated, api.WebhookResponse{RequestId: requestID(), Webhook: out})
	return nil
}

func (s *Server) describeWebhooks(w http.ResponseWriter, r *http.Request) error {
	reg, err := s.webhooks()
	if err != nil {
		return err
	}
	hs, err := reg.List(r.Context())
	if err != nil {
		return berthError(err)
	}
	resp := api.DescribeWebhooksResponse{RequestId: requestID(), Webhooks: make([]api.Webhook, len(hs))}
	for i, h := range hs {
		resp.Webhooks[i] = webhookToAPI(h)
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}

func (s *Server) getWebhook(w http.ResponseWriter, r *http.Request) error {
	reg, err := s.webhooks()
	if err != nil {
		return err
	}
	h, err := reg.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		return berthError(err)
	}
	writeJSON(w, http.StatusOK, api.WebhookResponse{RequestId: requestID(), Webhook: webhookToAPI(h)})
	return nil
}

func (s *Server) deleteWebhook(w http.ResponseWriter, r *http.Request) error {
	reg, err := s.webhooks()
	if err != nil {
		return err
	}
	id := r.PathValue("id")
	if err := reg.Delete(r.Context(), id); err != nil {
		return berthError(err)
	}
	writeJSON(w, http.StatusOK, api.DeleteWebhookResponse{RequestId: requestID(), Id: id})
	return nil
}

func (s *Server) describeWebhookDeliveries(w http.ResponseWriter, r *http.Request) error {
	reg, err := s.webhooks()
	if err != nil {
		return err
	}
	limit := 0
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			return &httpError{status: http.StatusBadRequest, code: broker.CodeInvalidInput, msg: "limit: must be a number from 1 to 1000"}
		}
		limit = n
	}
	ds, err := reg.Deliveries(r.Context(), r.PathValue("id"), limit)
	if err != nil {
		return berthError(err)
	}
	resp := api.DescribeWebhookDeliveriesResponse{RequestId: requestID(), Deliveries: make([]api.WebhookDelivery, len(ds))}
	for i, d := range ds {
		resp.Deliveries[i] = api.WebhookDelivery{EventId: d.EventID, EventType: d.EventType, Attempt: d.Attempt,
			Time: d.Time.UTC(), StatusCode: d.Status, Error: d.Error, DurationMs: d.Duration.Milliseconds(), Delivered: d.OK()}
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}

// webhookToAPI converts a webhook for the wire, without its secret.
func webhookToAPI(h *webhook.Webhook) api.Webhook {
	out := api.Webhook{Id: h.ID, Url: h.URL, EventTypes: h.Types, CreatedAt: h.CreatedAt.UTC(), State: h.State,
		DisabledReason: h.DisabledReason, LastEventId: h.Cursor, FailedAttempts: h.Attempts, LastError: h.LastError,
		FailingSince: timePtr(h.FailingSince), NextAttemptAt: timePtr(h.NextAttempt)}
	if out.EventTypes == nil {
		out.EventTypes = []string{}
	}
	return out
}

// timePtr returns t in UTC, nil for the zero time.
func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}
