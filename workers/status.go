package workers

import (
	"fmt"
	"time"
)

// Status is the arbiter's state, as Options.Observe and Pool.Status report
// it and the D-Bus properties show it.
type Status struct {
	// State is "starting", "running", "reloading" or "stopping"
	// (StateStarting…).
	State string
	// Generation is the current generation.
	Generation uint64
	// Workers is the target worker count.
	Workers int
	// ReadyWorkers is how many workers of the current generation serve.
	ReadyWorkers int
	// Reloads counts the reloads begun (HUP, Reload), those refused before
	// a new generation started included.
	Reloads uint64
}

// Info describes one live worker process, as Pool.ListWorkers reports it.
type Info struct {
	// ID is the worker's stable slot, 0…N-1 (FORKD_WORKER_ID).
	ID int
	// PID is the worker's process id.
	PID int
	// Generation is the generation the worker belongs to.
	Generation uint64
	// State is "starting", "ready" or "stopping".
	State string
	// Started is when the worker process was started.
	Started time.Time
	// ReadyAt is when the worker became ready (zero: not yet).
	ReadyAt time.Time
	// Requests is the worker's latest FORKD_REQUESTS (0 until it reports
	// one); MaxRequests is the count at which it is recycled (0: never).
	Requests, MaxRequests uint64
	// Inflight is the requests the worker last reported in progress
	// (FORKD_REQUESTS_INFLIGHT): 0 idle, more busy, -1 never reported.
	Inflight int64
	// LastBeat is the worker's latest heartbeat or other sign of life the
	// notify socket timed (Pool.Snapshot only; zero when unknown).
	LastBeat time.Time
}

// StatusText is a one-line human summary of s, as sent in sd_notify STATUS=.
func StatusText(s Status) string {
	switch s.State {
	case StateStopping:
		return fmt.Sprintf("stopping, %d workers ready, generation %d", s.ReadyWorkers, s.Generation)
	case StateReloading:
		return fmt.Sprintf("reloading, %d/%d workers ready, generation %d", s.ReadyWorkers, s.Workers, s.Generation)
	default:
		return fmt.Sprintf("%d/%d workers ready, generation %d", s.ReadyWorkers, s.Workers, s.Generation)
	}
}
