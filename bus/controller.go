package bus

import (
	"context"
	"encoding/json"

	"github.com/forkd/forkd/jobs"
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
	// ListWorkers returns the live workers, with what each uses (Memory
	// and CPU, 0 where unknown) as of at most workers.UsageInterval ago.
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

// ListenerReader is implemented by a Controller that holds the listening
// sockets; it serves the Listeners property. A Controller without it has
// none to show: Listeners is an empty list. Listeners may be called from
// any goroutine; its error says which sockets' queues could not be read,
// and the list holds every socket regardless.
type ListenerReader interface {
	Listeners(ctx context.Context) ([]workers.Listener, error)
}

// JobRunner is implemented by a Controller that runs the instance's
// [[singleton]] processes and [[schedule]] jobs; it serves the RunNow and
// ListJobs methods. A Controller without it has no jobs: RunNow reports
// every name as unknown and ListJobs returns an empty list. Both methods may
// be called from any goroutine, concurrently, and return when ctx is done
// at the latest.
type JobRunner interface {
	// RunNow starts a run of the schedule called name at once, outside its
	// timing (which goes on unchanged), as its overlap policy allows, and
	// returns once the run started or the policy decided otherwise (the
	// run's schedule_started and schedule_finished events tell which). An
	// error wrapping jobs.ErrUnknown reports that no singleton or schedule
	// is called name; any other error says why nothing was started (for a
	// singleton's name, for one, if the runner does not restart it).
	RunNow(ctx context.Context, name string) error
	// ListJobs returns every singleton and schedule of the running config.
	ListJobs(ctx context.Context) ([]jobs.Info, error)
}

// Detailer is implemented by a Controller that can describe the instance
// in detail (package metrics/status): it serves the Details method, whose
// reply is the page as JSON. A Controller without it answers Details with
// org.freedesktop.DBus.Error.UnknownMethod, as a master that predates it. It may
// be called from any goroutine, concurrently, and returns when ctx is
// done at the latest.
type Detailer interface {
	// Details returns the instance's status page, as JSON.
	Details(ctx context.Context) (json.RawMessage, error)
}
