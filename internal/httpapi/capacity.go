package httpapi

import (
	"net/http"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/broker"
)

// OpDescribeCapacity names GET /berth/v1/capacity (berth's extension).
const OpDescribeCapacity = "DescribeCapacity"

// describeCapacity answers the scaling signals (docs/autoscaling.md): the
// shortfall per requirement class and the idle servers.
func (s *Server) describeCapacity(w http.ResponseWriter, r *http.Request) error {
	c, err := s.Service.Capacity(r.Context())
	if err != nil {
		return berthError(err)
	}
	writeJSON(w, http.StatusOK, capacityToAPI(c, s.Service.Now()))
	return nil
}

// capacityToAPI converts the scaling signals for the wire; waits are
// counted up to now.
func capacityToAPI(c broker.Capacity, now time.Time) api.DescribeCapacityResponse {
	resp := api.DescribeCapacityResponse{RequestId: requestID(), CheckedAt: c.At.UTC(),
		IdleServerMinutes: c.IdleAfter.Minutes(), Shortfall: []api.CapacityShortfall{}, IdleServers: []api.IdleServer{}}
	for _, x := range c.Shortfall {
		e := api.CapacityShortfall{Class: x.Class.ID(), Type: x.Class.Type, DcvGlEnabled: x.Class.DcvGlEnabled,
			Requirements: x.Class.Requirements, Count: x.Count, Queued: x.Queued, Refused: x.Refused}
		if !x.OldestSince.IsZero() {
			at := x.OldestSince.UTC()
			e.OldestSince = &at
			e.OldestWaitSeconds = int64(max(now.Sub(at), 0) / time.Second)
		}
		resp.Shortfall = append(resp.Shortfall, e)
	}
	for _, x := range c.Idle {
		resp.IdleServers = append(resp.IdleServers, api.IdleServer{Id: x.ServerID, Hostname: x.Hostname,
			Ec2InstanceId: x.EC2InstanceID, AwsRegion: x.AWSRegion, IdleSince: x.IdleSince.UTC(),
			IdleSeconds: int64(max(now.Sub(x.IdleSince), 0) / time.Second)})
	}
	return resp
}
