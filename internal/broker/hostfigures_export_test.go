package broker

// PutCachedServer puts srv in the server cache as a sync from the store
// does, e.g. a record another broker holds.
func (s *Service) PutCachedServer(srv *Server) { s.servers.put(srv) }
