package hooks

// busArg is one argument of a hook signal: its name and D-Bus type, as in
// io.github.forkd.Manager1.xml, and its value taken from an Event.
type busArg struct {
	name, sig string
	value     func(Event) any
}

var (
	argInstance   = busArg{"instance", "s", func(e Event) any { return e.Instance }}
	argGeneration = busArg{"generation", "t", func(e Event) any { return e.Generation }}
	argWorkerID   = busArg{"worker_id", "i", func(e Event) any { return int32(e.WorkerID) }}
	argPID        = busArg{"pid", "u", func(e Event) any { return busUint32(e.PID) }}
	argExitCode   = busArg{"exit_code", "i", func(e Event) any { return int32(e.ExitCode) }}
	argSignal     = busArg{"signal", "i", func(e Event) any { return int32(e.Signal) }}
	argReason     = busArg{"reason", "s", func(e Event) any { return e.Reason }}
	argWorkers    = busArg{"workers", "u", func(e Event) any { return busUint32(e.Workers) }}
	argOld        = busArg{"old", "u", func(e Event) any { return busUint32(e.OldWorkers) }}
	argNew        = busArg{"new", "u", func(e Event) any { return busUint32(e.Workers) }}
)

// signalArgs returns the arguments of h's signal, in order.
func signalArgs(h Hook) []busArg {
	common := []busArg{argInstance, argGeneration}
	switch h {
	case WhenReady:
		return append(common, argWorkers)
	case PreFork:
		return append(common, argWorkerID)
	case PostFork, PostWorkerInit, PreRequest, PostRequest:
		return append(common, argWorkerID, argPID)
	case WorkerInt:
		return append(common, argWorkerID, argPID, argSignal)
	case WorkerAbort:
		return append(common, argWorkerID, argPID, argReason)
	case ChildExit, WorkerExit:
		return append(common, argWorkerID, argPID, argExitCode, argSignal, argReason)
	case NworkersChanged:
		return append(common, argOld, argNew)
	case OnExit:
		return append(common, argReason)
	}
	// OnStarting, OnReload, PreExec.
	return common
}

// signalBody returns the body of e's signal.
func signalBody(e Event) []any {
	args := signalArgs(e.Hook)
	body := make([]any, len(args))
	for i, a := range args {
		body[i] = a.value(e)
	}
	return body
}
