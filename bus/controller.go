package bus

import (
	"context"

	"github.com/forkd/forkd/workers"
)

// Controller is what the D-Bus methods need from the arbiter. Every method
// may be called from any goroutine, concurrently; each returns when ctx is
// done at the latest.
type Controller interface {
	// Reload starts a new generation and returns when the reload is done:
	// nil when the new generation serves, an error saying why when it
	// failed (the old generation keeps serving).
	Reload(ctx context.Context) error
	// SetWorkers sets the target worker count. An error wrapping
	// workers.ErrOutOfRange reports an out-of-range n.
	SetWorkers(ctx context.Context, n int) error
	// ListWorkers returns the live workers.
	ListWorkers(ctx context.Context) ([]workers.Info, error)
	// Status returns the arbiter's current state.
	Status(ctx context.Context) (workers.Status, error)
}

// Upgrader is implemented by a Controller that can re-execute the master
// in place (USR2). Upgrade returns once the upgrade is under way (nil) or
// was refused; the master then re-executes itself, dropping its bus
// connection, and its successor announces itself with WhenReady.
type Upgrader interface {
	Upgrade(ctx context.Context) error
}
