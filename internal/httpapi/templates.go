package httpapi

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/broker"
)

// Operation names of berth's own API under /berth/v1/ (templates and shares).
const (
	OpDescribeTemplates     = "DescribeTemplates"
	OpCreateTemplate        = "CreateTemplate"
	OpGetTemplate           = "GetTemplate"
	OpUpdateTemplate        = "UpdateTemplate"
	OpDeleteTemplate        = "DeleteTemplate"
	OpLaunchTemplate        = "LaunchTemplate"
	OpDescribeSessionShares = "DescribeSessionShares"
	OpShareSession          = "ShareSession"
)

// berthOperations are the operations of berth's own API.
func berthOperations() []string {
	return append([]string{OpDescribeTemplates, OpCreateTemplate, OpGetTemplate, OpUpdateTemplate, OpDeleteTemplate,
		OpLaunchTemplate, OpDescribeSessionShares, OpShareSession, OpDescribeQueue, OpDescribeAudit, OpDescribeCapacity, OpStreamEvents}, append(lifetimeOperations(), webhookOperations()...)...)
}

// berthRoutes registers berth's own API with api, the wrapper of every route.
func (s *Server) berthRoutes(api func(pattern, op string, h func(http.ResponseWriter, *http.Request) error)) {
	api("GET /berth/v1/templates", OpDescribeTemplates, s.describeTemplates)
	api("POST /berth/v1/templates", OpCreateTemplate, s.createTemplate)
	api("GET /berth/v1/templates/{id}", OpGetTemplate, s.getTemplate)
	api("PUT /berth/v1/templates/{id}", OpUpdateTemplate, s.updateTemplate)
	api("DELETE /berth/v1/templates/{id}", OpDeleteTemplate, s.deleteTemplate)
	api("POST /berth/v1/templates/{id}/launch", OpLaunchTemplate, s.launchTemplate)
	api("GET /berth/v1/sessions/{id}/shares", OpDescribeSessionShares, s.describeShares)
	api("PUT /berth/v1/sessions/{id}/shares", OpShareSession, s.shareSession)
	s.lifetimeRoutes(api)
	s.quotaRoutes(api)
	s.webhookRoutes(api)
	api("GET /berth/v1/events", OpStreamEvents, s.streamEvents) // events.go
	api("GET /berth/v1/audit", OpDescribeAudit, s.describeAudit)
	api("GET /berth/v1/capacity", OpDescribeCapacity, s.describeCapacity) // capacity.go
}

// berthError gives berth's own API the statuses that say what went wrong
// (404, 403, 409), where the Session Manager API answers 400 as Amazon's
// document does. Other errors go through statusOf.
func berthError(err error) error {
	code := broker.ErrorCode(err)
	status := 0
	switch {
	case errors.Is(err, broker.ErrConflict):
		status = http.StatusConflict
	case code == broker.CodeNotFound:
		status = http.StatusNotFound
	case code == broker.CodeForbidden:
		status = http.StatusForbidden
	case code == broker.CodeNotReady:
		status = http.StatusConflict
	default:
		return err
	}
	return &httpError{status: status, code: code, msg: err.Error()}
}

// maxQueryGroups caps the group parameters of GET /berth/v1/templates.
const maxQueryGroups = 1000

func (s *Server) describeTemplates(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	user, groups := q.Get("user"), q["group"]
	if len(groups) > maxQueryGroups {
		return &httpError{status: http.StatusBadRequest, code: broker.CodeInvalidInput,
			msg: fmt.Sprintf("group: at most %d groups, got %d", maxQueryGroups, len(groups))}
	}
	var (
		list []*broker.Template
		err  error
	)
	if user != "" || len(groups) > 0 {
		if user != "" {
			if err := broker.ValidateUserName("user", user); err != nil {
				return &httpError{status: http.StatusBadRequest, code: broker.CodeInvalidInput, msg: err.Error()}
			}
		}
		list, err = s.Service.TemplatesFor(r.Context(), user, groups)
	} else {
		list, err = s.Service.ListTemplates(r.Context())
	}
	if err != nil {
		return berthError(err)
	}
	resp := api.DescribeTemplatesResponse{RequestId: requestID(), Templates: make([]api.Template, len(list))}
	for i, t := range list {
		resp.Templates[i] = templateToAPI(t)
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}

func (s *Server) createTemplate(w http.ResponseWriter, r *http.Request) error {
	var in api.Template
	if err := decode(w, r, &in, false); err != nil {
		return err
	}
	t, err := s.Service.CreateTemplate(r.Context(), templateFromAPI(&in))
	if err != nil {
		return berthError(err)
	}
	writeJSON(w, http.StatusCreated, api.TemplateResponse{RequestId: requestID(), Template: templateToAPI(t)})
	return nil
}

func (s *Server) getTemplate(w http.ResponseWriter, r *http.Request) error {
	t, err := s.Service.GetTemplate(r.Context(), r.PathValue("id"))
	if err != nil {
		return berthError(err)
	}
	writeJSON(w, http.StatusOK, api.TemplateResponse{RequestId: requestID(), Template: templateToAPI(t)})
	return nil
}

func (s *Server) updateTemplate(w http.ResponseWriter, r *http.Request) error {
	var in api.Template
	if err := decode(w, r, &in, false); err != nil {
		return err
	}
	id := r.PathValue("id")
	if in.Id != "" && in.Id != id {
		return &httpError{status: http.StatusBadRequest, code: broker.CodeInvalidInput,
			msg: "Id: differs from the template ID of the path; leave it out"}
	}
	t := templateFromAPI(&in)
	t.ID = id
	out, err := s.Service.UpdateTemplate(r.Context(), t)
	if err != nil {
		return berthError(err)
	}
	writeJSON(w, http.StatusOK, api.TemplateResponse{RequestId: requestID(), Template: templateToAPI(out)})
	return nil
}

func (s *Server) deleteTemplate(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	if err := s.Service.DeleteTemplate(r.Context(), id); err != nil {
		return berthError(err)
	}
	writeJSON(w, http.StatusOK, api.DeleteTemplateResponse{RequestId: requestID(), TemplateId: id})
	return nil
}

func (s *Server) launchTemplate(w http.ResponseWriter, r *http.Request) error {
	var in api.LaunchTemplateRequest
	if err := decode(w, r, &in, false); err != nil {
		return err
	}
	if len(in.Groups) > maxQueryGroups {
		return &httpError{status: http.StatusBadRequest, code: broker.CodeInvalidInput,
			msg: fmt.Sprintf("Groups: at most %d groups, got %d", maxQueryGroups, len(in.Groups))}
	}
	res, err := s.Service.LaunchTemplate(r.Context(), r.PathValue("id"), in.Owner, in.Groups)
	if err != nil {
		return berthError(err)
	}
	resp := api.LaunchTemplateResponse{RequestId: requestID(), FailureReason: res.FailureReason}
	if res.Session != nil {
		sess := s.newConverter(r).session(broker.SessionView{Session: res.Session})
		resp.Session = &sess
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}

func (s *Server) describeShares(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	shares, err := s.Service.SharesOf(r.Context(), id)
	if err != nil {
		return berthError(err)
	}
	writeJSON(w, http.StatusOK, sharesResponse(id, shares))
	return nil
}

func (s *Server) shareSession(w http.ResponseWriter, r *http.Request) error {
	var in api.ShareSessionRequest
	if err := decode(w, r, &in, false); err != nil {
		return err
	}
	level, err := broker.ParseShareLevel(in.Level)
	if err != nil {
		return &httpError{status: http.StatusBadRequest, code: broker.CodeInvalidInput, msg: "Level: " + err.Error()}
	}
	id := r.PathValue("id")
	if err := s.Service.ShareSession(r.Context(), id, in.Owner, in.User, level); err != nil {
		return berthError(err)
	}
	shares, err := s.Service.SharesOf(r.Context(), id)
	if err != nil {
		return berthError(err)
	}
	writeJSON(w, http.StatusOK, sharesResponse(id, shares))
	return nil
}

func sharesResponse(id string, shares []broker.Share) api.SessionSharesResponse {
	resp := api.SessionSharesResponse{RequestId: requestID(), SessionId: id, Shares: make([]api.SessionShare, len(shares))}
	for i, sh := range shares {
		resp.Shares[i] = api.SessionShare{User: sh.User, Level: string(sh.Level)}
	}
	return resp
}

func templateFromAPI(in *api.Template) broker.Template {
	return broker.Template{
		Name: in.Name, Description: in.Description, Type: in.Type, Requirements: in.Requirements,
		InitFile: in.InitFile, AutorunFile: in.AutorunFile, AutorunFileArguments: in.AutorunFileArguments,
		MaxConcurrentClients: in.MaxConcurrentClients, DcvGlEnabled: in.DcvGlEnabled, StorageRoot: in.StorageRoot,
		Users: in.Users, Groups: in.Groups, Limits: limitsFromAPI(in.Limits), GPUs: in.GPUs,
	}
}

func templateToAPI(t *broker.Template) api.Template {
	ptr := func(x time.Time) *time.Time {
		if x.IsZero() {
			return nil
		}
		x = x.UTC()
		return &x
	}
	return api.Template{
		Id: t.ID, Name: t.Name, Description: t.Description, Type: t.Type, Requirements: t.Requirements,
		InitFile: t.InitFile, AutorunFile: t.AutorunFile, AutorunFileArguments: t.AutorunFileArguments,
		MaxConcurrentClients: t.MaxConcurrentClients, DcvGlEnabled: t.DcvGlEnabled, StorageRoot: t.StorageRoot,
		Users: t.Users, Groups: t.Groups, Limits: limitsToAPI(t.Limits), GPUs: t.GPUs,
		CreationTime: ptr(t.CreatedAt), UpdateTime: ptr(t.UpdatedAt),
	}
}
