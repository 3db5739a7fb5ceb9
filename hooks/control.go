package hooks

import (
	"context"
	"time"
)

// WorkerInfo describes one live worker process, as Controller.ListWorkers
// reports it.
type WorkerInfo struct {
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
}

// Status is the arbiter's state as the D-Bus properties show it.
type Status struct {
	// State is "starting", "running", "reloading" or "stopping".
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

// Controller is what the D-Bus methods need from the arbiter. Every method
// may be called from any goroutine, concurrently; each returns when ctx is
// done at the latest.
type Controller interface {
	// Reload starts a new generation and returns when the reload is done:
	// nil when the new generation serves, an error saying why when it
	// failed (the old generation keeps serving).
	Reload(ctx context.Context) error
	// SetWorkers sets the target worker count. An error wrapping
	// ErrInvalidArgs reports an out-of-range n.
	SetWorkers(ctx context.Context, n int) error
	// ListWorkers returns the live workers.
	ListWorkers(ctx context.Context) ([]WorkerInfo, error)
	// Status returns the arbiter's current state.
	Status(ctx context.Context) (Status, error)
}

// Upgrader is implemented by a Controller that can re-execute the master
// in place (USR2). Upgrade returns once the upgrade is under way (nil) or
// was refused; the master then re-executes itself, dropping its bus
// connection, and its successor announces itself with WhenReady.
type Upgrader interface {
	Upgrade(ctx context.Context) error
}
