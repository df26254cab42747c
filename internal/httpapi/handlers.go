package httpapi

import (
	"crypto/rand"
	"encoding/base64"
	"net/http"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/broker"
)

func requestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	var out [36]byte
	j := 0
	for i, c := range b {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			out[j] = '-'
			j++
		}
		out[j], out[j+1] = hexDigits[c>>4], hexDigits[c&0xF]
		j += 2
	}
	return string(out[:])
}

func (s *Server) describeSessions(w http.ResponseWriter, r *http.Request) error {
	var req api.DescribeSessionsRequest
	if err := decode(w, r, &req, true); err != nil {
		return err
	}
	q := broker.DescribeQuery{SessionIDs: req.SessionIds, NextToken: req.NextToken}
	if req.MaxResults != nil {
		q.MaxResults = *req.MaxResults
		if q.MaxResults == 0 {
			q.MaxResults = -1 // explicit 0 is out of range
		}
	}
	for _, f := range req.Filters {
		q.Filters = append(q.Filters, [2]string{f.Key, f.Value})
	}
	page, err := s.Service.DescribeSessionsPage(r.Context(), q)
	if err != nil {
		return err
	}
	defer page.Release()
	s.writeSessionPage(w, page)
	return nil
}

func (s *Server) describeServers(w http.ResponseWriter, r *http.Request) error {
	var req api.DescribeServersRequest
	if err := decode(w, r, &req, true); err != nil {
		return err
	}
	max := 0
	if req.MaxResults != nil {
		max = *req.MaxResults
		if max == 0 {
			max = -1
		}
	}
	list, next, err := s.Service.DescribeServers(r.Context(), req.ServerIds, max, req.NextToken)
	if err != nil {
		return err
	}
	s.writeServerPage(w, list, next)
	return nil
}

func (s *Server) createSessions(w http.ResponseWriter, r *http.Request) error {
	items, err := decodeBatch[api.CreateSessionRequest](w, r)
	if err != nil {
		return err
	}
	reqs := make([]broker.CreateRequest, len(items))
	for i, it := range items {
		init := it.InitFile
		if init == "" {
			init = it.InitFilePath
		}
		reqs[i] = broker.CreateRequest{
			Name: it.Name, Owner: it.Owner, Type: it.Type, DcvGlEnabled: it.DcvGlEnabled,
			MaxConcurrentClients: it.MaxConcurrentClients, InitFile: init, AutorunFile: it.AutorunFile,
			AutorunFileArguments: it.AutorunFileArguments, PermissionsFile: it.PermissionsFile,
			Requirements: it.Requirements, EnqueueRequest: it.EnqueueRequest,
			DisableRetryOnFailure: it.DisableRetryOnFailure, StorageRoot: it.StorageRoot,
		}
	}
	res, err := s.Service.CreateSessions(r.Context(), reqs)
	if err != nil {
		return err
	}
	resp := api.CreateSessionsResponse{RequestId: requestID(), SuccessfulList: []api.Session{}, UnsuccessfulList: []api.UnsuccessfulCreateSession{}}
	cv := s.newConverter(r)
	for i, x := range res {
		if x.Session != nil {
			resp.SuccessfulList = append(resp.SuccessfulList, cv.session(broker.SessionView{Session: x.Session}))
			continue
		}
		resp.UnsuccessfulList = append(resp.UnsuccessfulList, api.UnsuccessfulCreateSession{CreateSessionRequestData: items[i], FailureReason: x.FailureReason})
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}

func (s *Server) deleteSessions(w http.ResponseWriter, r *http.Request) error {
	items, err := decodeBatch[api.DeleteSessionRequest](w, r)
	if err != nil {
		return err
	}
	reqs := make([]broker.DeleteRequest, len(items))
	for i, it := range items {
		reqs[i] = broker.DeleteRequest{SessionID: it.SessionId, Owner: it.Owner, Force: it.Force}
	}
	resp := api.DeleteSessionsResponse{RequestId: requestID(), SuccessfulList: []api.DeleteSessionSuccess{}, UnsuccessfulList: []api.DeleteSessionFailure{}}
	for _, x := range s.Service.DeleteSessions(r.Context(), reqs) {
		if x.FailureReason != "" {
			resp.UnsuccessfulList = append(resp.UnsuccessfulList, api.DeleteSessionFailure{SessionId: x.SessionID, FailureReason: x.FailureReason})
			continue
		}
		resp.SuccessfulList = append(resp.SuccessfulList, api.DeleteSessionSuccess{SessionId: x.SessionID, State: x.State})
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}

func (s *Server) updatePermissions(w http.ResponseWriter, r *http.Request) error {
	items, err := decodeBatch[api.UpdateSessionPermissionsRequest](w, r)
	if err != nil {
		return err
	}
	reqs := make([]broker.PermissionsRequest, len(items))
	for i, it := range items {
		reqs[i] = broker.PermissionsRequest{SessionID: it.SessionId, Owner: it.Owner, PermissionsFile: it.PermissionsFile}
	}
	resp := api.UpdateSessionPermissionsResponse{RequestId: requestID(), SuccessfulList: []api.UpdateSessionPermissionsSuccess{}, UnsuccessfulList: []api.UpdateSessionPermissionsFailure{}}
	for i, reason := range s.Service.UpdateSessionPermissions(r.Context(), reqs) {
		if reason != "" {
			resp.UnsuccessfulList = append(resp.UnsuccessfulList, api.UpdateSessionPermissionsFailure{SessionId: items[i].SessionId, FailureReason: reason})
			continue
		}
		resp.SuccessfulList = append(resp.SuccessfulList, api.UpdateSessionPermissionsSuccess{SessionId: items[i].SessionId})
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}

func (s *Server) connectionData(w http.ResponseWriter, r *http.Request) error {
	cd, err := s.Service.GetSessionConnectionData(r.Context(), r.PathValue("sessionId"), r.PathValue("user"))
	if err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, api.GetSessionConnectionDataResponse{Session: s.newConverter(r).session(cd.View), ConnectionToken: cd.Token})
	return nil
}

func (s *Server) screenshots(w http.ResponseWriter, r *http.Request) error {
	items, err := decodeBatch[api.GetSessionScreenshotRequest](w, r)
	if err != nil {
		return err
	}
	reqs := make([]broker.ScreenshotRequest, len(items))
	for i, it := range items {
		reqs[i] = broker.ScreenshotRequest{SessionID: it.SessionId, MaxWidth: it.MaxWidth, MaxHeight: it.MaxHeight}
	}
	resp := api.GetSessionScreenshotsResponse{RequestId: requestID(), SuccessfulList: []api.GetSessionScreenshotSuccess{}, UnsuccessfulList: []api.GetSessionScreenshotFailure{}}
	for i, x := range s.Service.GetSessionScreenshots(r.Context(), reqs) {
		if x.FailureReason != "" {
			resp.UnsuccessfulList = append(resp.UnsuccessfulList, api.GetSessionScreenshotFailure{GetSessionScreenshotRequestData: items[i], FailureReason: x.FailureReason})
			continue
		}
		shot := api.SessionScreenshot{SessionId: items[i].SessionId, Images: []api.SessionScreenshotImage{}}
		for _, img := range x.Images {
			shot.Images = append(shot.Images, api.SessionScreenshotImage{Format: img.Format, Data: base64.StdEncoding.EncodeToString(img.Data), CreationTime: img.CreationTime.UTC(), Primary: img.Primary})
		}
		resp.SuccessfulList = append(resp.SuccessfulList, api.GetSessionScreenshotSuccess{SessionScreenshot: shot})
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}

func (s *Server) openServers(w http.ResponseWriter, r *http.Request) error {
	items, err := decodeBatch[api.OpenServerRequest](w, r)
	if err != nil {
		return err
	}
	ids := make([]string, len(items))
	for i, it := range items {
		ids[i] = it.ServerId
	}
	resp := api.OpenServersResponse{RequestId: requestID(), SuccessfulList: []api.ServerIdResult{}, UnsuccessfulList: []api.OpenServerFailure{}}
	for i, x := range s.Service.OpenServers(r.Context(), ids) {
		if x.FailureCode != "" {
			resp.UnsuccessfulList = append(resp.UnsuccessfulList, api.OpenServerFailure{OpenServerRequestData: items[i], FailureCode: x.FailureCode, FailureReason: x.FailureReason})
			continue
		}
		resp.SuccessfulList = append(resp.SuccessfulList, api.ServerIdResult{ServerId: x.ServerID})
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}

func (s *Server) closeServers(w http.ResponseWriter, r *http.Request) error {
	items, err := decodeBatch[api.CloseServerRequest](w, r)
	if err != nil {
		return err
	}
	ids := make([]string, len(items))
	force := make([]bool, len(items))
	for i, it := range items {
		ids[i], force[i] = it.ServerId, it.Force
	}
	resp := api.CloseServersResponse{RequestId: requestID(), SuccessfulList: []api.ServerIdResult{}, UnsuccessfulList: []api.CloseServerFailure{}}
	for i, x := range s.Service.CloseServers(r.Context(), ids, force) {
		if x.FailureCode != "" {
			resp.UnsuccessfulList = append(resp.UnsuccessfulList, api.CloseServerFailure{CloseServerRequestData: items[i], FailureCode: x.FailureCode, FailureReason: x.FailureReason})
			continue
		}
		resp.SuccessfulList = append(resp.SuccessfulList, api.ServerIdResult{ServerId: x.ServerID})
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}
