package broker

import "context"

// CheckScaling runs one check of the scaling signals, as the scaling loop
// does every ScalingConfig.Interval.
func (s *Service) CheckScaling(ctx context.Context) (Capacity, error) { return s.checkScaling(ctx, 0) }

// SetScalingEmitter makes the scaling signals emit their events to e
// instead of Service.Emit (nil: Service.Emit again).
func (s *Service) SetScalingEmitter(e interface {
	Emit(ctx context.Context, evs ...Event)
}) {
	s.scale.emit = e
}

// ProcessQueueNow runs one pass of the create queue.
func (s *Service) ProcessQueueNow(ctx context.Context) error { return s.processQueue(ctx) }
