package hooks

import (
	"strings"
	"time"
)

// Hook names one lifecycle moment, spelled as in Gunicorn.
type Hook string

// The hooks, in the order of a master's life.
const (
	OnStarting      Hook = "on_starting"      // master: before sockets and workers; once per instance
	OnReload        Hook = "on_reload"        // master: a reload begins
	WhenReady       Hook = "when_ready"       // master: a generation's workers all serve
	PreFork         Hook = "pre_fork"         // master: just before a worker is spawned
	PostFork        Hook = "post_fork"        // master: a worker process exists (pid known)
	PostWorkerInit  Hook = "post_worker_init" // worker sent READY=1 (or ready_delay passed)
	WorkerInt       Hook = "worker_int"       // a worker was asked to quit quickly (INT/QUIT)
	WorkerAbort     Hook = "worker_abort"     // a worker timed out and got SIGABRT
	PreExec         Hook = "pre_exec"         // master: before re-executing itself (upgrade)
	PreRequest      Hook = "pre_request"      // worker: before a request (SDK, aggregated)
	PostRequest     Hook = "post_request"     // worker: after a request (SDK, aggregated)
	ChildExit       Hook = "child_exit"       // master: a worker process was reaped
	WorkerExit      Hook = "worker_exit"      // master: a worker's slot is done with it
	NworkersChanged Hook = "nworkers_changed" // master: the target worker count changed
	OnExit          Hook = "on_exit"          // master: just before the master exits
)

// The run-once hooks: the lifecycle of [[singleton]] processes and
// [[schedule]] runs (package jobs), published like Gunicorn's.
const (
	SingletonStarted Hook = "singleton_started" // a singleton's process started (Job, PID)
	SingletonExited  Hook = "singleton_exited"  // a singleton's process was reaped (Job, PID, ExitCode, Signal, Reason)
	ScheduleStarted  Hook = "schedule_started"  // a schedule's run started (Job, RunID, ScheduledAt, PID)
	ScheduleFinished Hook = "schedule_finished" // a run ended or was skipped (Job, RunID, ExitCode, Signal, Duration, Result)
)

// All lists every hook: Gunicorn's in the order of a master's life, then
// the run-once hooks.
var All = []Hook{
	OnStarting, OnReload, WhenReady, PreFork, PostFork, PostWorkerInit,
	WorkerInt, WorkerAbort, PreExec, PreRequest, PostRequest, ChildExit,
	WorkerExit, NworkersChanged, OnExit,
	SingletonStarted, SingletonExited, ScheduleStarted, ScheduleFinished,
}

// Signal returns the hook's D-Bus signal name, CamelCase ("on_starting" →
// "OnStarting").
func (h Hook) Signal() string {
	var b strings.Builder
	for _, part := range strings.Split(string(h), "_") {
		if part == "" {
			continue
		}
		b.WriteString(strings.ToUpper(part[:1]))
		b.WriteString(part[1:])
	}
	return b.String()
}

// Blocking reports whether h holds up what follows it: its exec commands
// run synchronously (RunNow), and one with on_failure = "abort" that fails
// stops what the hook precedes (on_starting: the start; on_reload: the
// reload; pre_fork: that worker's spawn, retried with backoff; pre_exec:
// the upgrade). on_exit also runs synchronously, so it completes before
// the master exits, but cannot abort anything.
func (h Hook) Blocking() bool {
	switch h {
	case OnStarting, OnReload, PreFork, PreExec, OnExit:
		return true
	}
	return false
}

// Valid reports whether h is one of the hooks in All.
func (h Hook) Valid() bool {
	for _, k := range All {
		if k == h {
			return true
		}
	}
	return false
}

// Event is one occurrence of a hook. Fields a hook does not use are zero;
// WorkerID is -1 for hooks about the master.
type Event struct {
	// Hook is the moment that occurred.
	Hook Hook
	// Time is when it occurred.
	Time time.Time
	// Instance is the forkd instance's name (server.name).
	Instance string
	// Generation is the worker generation the event is about: the
	// worker's own for worker hooks; for the master's, the generation
	// serving or becoming ready.
	Generation uint64
	// WorkerID is the worker's slot, 0…N-1 (-1 for hooks about the
	// master).
	WorkerID int
	// PID is the worker's process id (0 before it exists, at pre_fork).
	PID int
	// ExitCode is the exit status of an exited worker (-1 if it was killed).
	ExitCode int
	// Signal is the signal that killed or is sent to a worker (0 if none).
	Signal int
	// Reason says why, in a word or a phrase: "timeout", "boot timeout",
	// "crashed", "reload", "scale down", "config error: …".
	Reason string
	// Workers is the target worker count (nworkers_changed: the new one).
	Workers int
	// OldWorkers is the previous target (nworkers_changed).
	OldWorkers int
	// Job is the singleton's or schedule's name (the run-once hooks).
	Job string
	// RunID identifies a schedule's run (FORKD_RUN_ID).
	RunID string
	// ScheduledAt is when a schedule's run was due (FORKD_SCHEDULED_AT).
	ScheduledAt time.Time
	// Duration is how long a finished run took.
	Duration time.Duration
	// Result is how a schedule's run ended: one of the jobs.Result values
	// (ok, failed, timeout, skipped, replaced).
	Result string
}

// Sink receives events. Emit must not block the caller.
type Sink interface {
	// Emit delivers the event, or queues it for delivery, and returns at
	// once.
	Emit(Event)
}

// Sinks fans an event out to several sinks, in order.
type Sinks []Sink

// Emit sends e to every sink.
func (s Sinks) Emit(e Event) {
	for _, sink := range s {
		sink.Emit(e)
	}
}

// Func adapts a Go callback to a Sink; the callback must not block.
type Func func(Event)

// Emit calls f(e).
func (f Func) Emit(e Event) { f(e) }
