package bus

import (
	"time"

	"github.com/forkd/forkd/hooks"
)

// signalArg is one argument of a hook signal: its name and D-Bus type, as in
// io.github.forkd.Manager1.xml, and its value taken from an Event.
type signalArg struct {
	name, sig string
	value     func(hooks.Event) any
}

var (
	argInstance   = signalArg{"instance", "s", func(e hooks.Event) any { return e.Instance }}
	argGeneration = signalArg{"generation", "t", func(e hooks.Event) any { return e.Generation }}
	argWorkerID   = signalArg{"worker_id", "i", func(e hooks.Event) any { return int32(e.WorkerID) }}
	argPID        = signalArg{"pid", "u", func(e hooks.Event) any { return toUint32(e.PID) }}
	argExitCode   = signalArg{"exit_code", "i", func(e hooks.Event) any { return int32(e.ExitCode) }}
	argSignal     = signalArg{"signal", "i", func(e hooks.Event) any { return int32(e.Signal) }}
	argReason     = signalArg{"reason", "s", func(e hooks.Event) any { return e.Reason }}
	argWorkers    = signalArg{"workers", "u", func(e hooks.Event) any { return toUint32(e.Workers) }}
	argOld        = signalArg{"old", "u", func(e hooks.Event) any { return toUint32(e.OldWorkers) }}
	argNew        = signalArg{"new", "u", func(e hooks.Event) any { return toUint32(e.Workers) }}

	// The run-once hooks' arguments.
	argJob          = signalArg{"name", "s", func(e hooks.Event) any { return e.Job }}
	argRunID        = signalArg{"run_id", "s", func(e hooks.Event) any { return e.RunID }}
	argScheduledAt  = signalArg{"scheduled_at", "s", func(e hooks.Event) any { return formatTime(e.ScheduledAt) }}
	argDurationUsec = signalArg{"duration_usec", "t", func(e hooks.Event) any { return uint64(max(e.Duration.Microseconds(), 0)) }}
	argResult       = signalArg{"result", "s", func(e hooks.Event) any { return e.Result }}
)

// formatTime formats t as RFC 3339 with nanoseconds and t's offset, as
// FORKD_SCHEDULED_AT is; the zero time is "".
func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.Format(time.RFC3339Nano)
}

// signalArgs returns the arguments of h's signal, in order. The run-once
// hooks' signals carry the arguments the interface was specified with, the
// job's name first; every other hook's starts with instance and generation.
func signalArgs(h hooks.Hook) []signalArg {
	switch h {
	case hooks.SingletonStarted:
		return []signalArg{argJob, argPID}
	case hooks.SingletonExited:
		return []signalArg{argJob, argPID, argExitCode, argSignal, argReason}
	case hooks.ScheduleStarted:
		return []signalArg{argJob, argRunID, argScheduledAt, argPID}
	case hooks.ScheduleFinished:
		return []signalArg{argJob, argRunID, argExitCode, argSignal, argDurationUsec, argResult}
	}
	common := []signalArg{argInstance, argGeneration}
	switch h {
	case hooks.WhenReady:
		return append(common, argWorkers)
	case hooks.PreFork:
		return append(common, argWorkerID)
	case hooks.PostFork, hooks.PostWorkerInit, hooks.PreRequest, hooks.PostRequest:
		return append(common, argWorkerID, argPID)
	case hooks.WorkerInt:
		return append(common, argWorkerID, argPID, argSignal)
	case hooks.WorkerAbort:
		return append(common, argWorkerID, argPID, argReason)
	case hooks.ChildExit, hooks.WorkerExit:
		return append(common, argWorkerID, argPID, argExitCode, argSignal, argReason)
	case hooks.NworkersChanged:
		return append(common, argOld, argNew)
	case hooks.OnExit:
		return append(common, argReason)
	}
	// OnStarting, OnReload, PreExec.
	return common
}

// signalBody returns the body of e's signal.
func signalBody(e hooks.Event) []any {
	args := signalArgs(e.Hook)
	body := make([]any, len(args))
	for i, a := range args {
		body[i] = a.value(e)
	}
	return body
}
