package jobs

import (
	"errors"
	"time"
)

// ErrUnknown is wrapped by the errors of a request about a job name that no
// [[singleton]] or [[schedule]] of the running config has (bus.JobRunner's
// RunNow).
var ErrUnknown = errors.New("jobs: no such job")

// Kinds of job, as Info.Kind reports them.
const (
	KindSingleton = "singleton"
	KindSchedule  = "schedule"
)

// Results of a schedule's run, as Info.LastResult and the
// schedule_finished hook (hooks.Event.Result) report them.
const (
	ResultOK       = "ok"       // the run exited 0
	ResultFailed   = "failed"   // it exited non-zero, was killed, or could not start
	ResultTimeout  = "timeout"  // it outlived its timeout and was stopped
	ResultSkipped  = "skipped"  // it came due while the last run still ran (overlap = "skip")
	ResultReplaced = "replaced" // it was stopped for the next run (overlap = "replace")
)

// Info describes one singleton or schedule, as ListJobs and forkctl jobs
// report it.
type Info struct {
	// Name is the job's name.
	Name string
	// Kind is KindSingleton or KindSchedule.
	Kind string
	// State is where the job is: a singleton is "waiting" (to start with
	// the workers), "starting", "running", "backoff" (restarting after a
	// failure), "stopping" or, for a cluster singleton this forkd does not
	// hold, "campaigning"; a schedule is "idle", "running" or "queued"
	// (a run waits for the one running).
	State string
	// PID is the singleton's process, or the schedule's running run (0:
	// none).
	PID int
	// Timing says when a schedule runs ("every 5m0s", a cron expression
	// and its zone); "" for a singleton.
	Timing string
	// LastStart is when the singleton's process or the schedule's last
	// run started (zero: never).
	LastStart time.Time
	// LastResult is how the schedule's last run ended (a Result…
	// value), or why the singleton's last process exited ("" if none).
	LastResult string
	// NextDue is when the schedule's next run is due (zero for a
	// singleton, or a schedule that will not run again).
	NextDue time.Time
	// Starts counts the singleton's processes or the schedule's runs
	// started since forkd started (an upgrade keeps counting).
	Starts int
	// Scope is "instance" or "cluster" (config.Scope).
	Scope string
	// Holder is, for a cluster job, the forkd that holds the singleton or
	// claimed the schedule's last period (its cluster member name, e.g.
	// "host1/shop"); "" when none does or it is not known.
	Holder string
}
