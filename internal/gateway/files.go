package gateway

import "net/http"

// fileRoutes adds the files panel's endpoints (the session's storage root)
// to mux.
func (s *Server) fileRoutes(mux *http.ServeMux) {}
