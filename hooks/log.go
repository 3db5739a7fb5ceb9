package hooks

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// NewLog returns a Sink that logs every event through l, synchronously (slog
// handlers are fast and do not wait on the network).
//
// Each event is one record whose message describes it ("hook worker_exit:
// worker 2 pid 1234 exited 1") and whose attributes are the event's fields
// that apply to its hook: hook, instance, generation, job, run_id,
// scheduled_at, worker_id, pid, exit_code, signal, reason, workers,
// old_workers, duration_usec, result (see the tables on Exec for which hook
// carries which). The record's time is the event's Time.
//
// Levels: Debug for the high-frequency pre_fork and post_fork, Warn for
// worker_abort (a worker timed out) and for a schedule's run that failed or
// timed out (schedule_finished with result failed or timeout), Info for the
// rest.
//
// A nil l logs nothing.
func NewLog(l *slog.Logger) Sink {
	if l == nil {
		l = slog.New(slog.DiscardHandler)
	}
	return logSink{handler: l.Handler()}
}

// logSink is the Sink NewLog returns.
type logSink struct {
	handler slog.Handler
}

// Emit logs e.
func (s logSink) Emit(e Event) {
	ctx := context.Background()
	level := eventLevel(e)
	if !s.handler.Enabled(ctx, level) {
		return
	}
	t := e.Time
	if t.IsZero() {
		t = time.Now()
	}
	r := slog.NewRecord(t, level, eventMessage(e), 0)
	for _, a := range eventAttrs(e) {
		if isEmpty(a.Value) {
			continue
		}
		r.AddAttrs(a)
	}
	// A handler's error has nowhere better to go than the handler itself.
	_ = s.handler.Handle(ctx, r)
}

// The fields an event may carry beyond hook, instance and generation.
type eventField uint

const (
	fieldWorkerID eventField = 1 << iota
	fieldPID
	fieldExitCode
	fieldSignal
	fieldReason
	fieldWorkers
	fieldOldWorkers
	fieldJob
	fieldRunID
	fieldScheduledAt
	fieldDuration
	fieldResult

	fieldsAll = fieldWorkerID | fieldPID | fieldExitCode | fieldSignal |
		fieldReason | fieldWorkers | fieldOldWorkers | fieldJob | fieldRunID |
		fieldScheduledAt | fieldDuration | fieldResult
)

// hookFields returns the fields that apply to hook h; an unknown hook gets
// them all.
func hookFields(h Hook) eventField {
	switch h {
	case OnStarting:
		return 0
	case OnReload, PreExec, OnExit:
		return fieldReason
	case WhenReady:
		return fieldWorkers
	case PreFork:
		return fieldWorkerID
	case PostFork, PostWorkerInit, PreRequest, PostRequest:
		return fieldWorkerID | fieldPID
	case WorkerInt:
		return fieldWorkerID | fieldPID | fieldSignal
	case WorkerAbort:
		return fieldWorkerID | fieldPID | fieldSignal | fieldReason
	case ChildExit, WorkerExit:
		return fieldWorkerID | fieldPID | fieldExitCode | fieldSignal | fieldReason
	case NworkersChanged:
		return fieldWorkers | fieldOldWorkers | fieldReason
	case SingletonStarted:
		return fieldJob | fieldPID
	case SingletonExited:
		return fieldJob | fieldPID | fieldExitCode | fieldSignal | fieldReason
	case ScheduleStarted:
		return fieldJob | fieldRunID | fieldScheduledAt | fieldPID
	case ScheduleFinished:
		return fieldJob | fieldRunID | fieldExitCode | fieldSignal | fieldDuration | fieldResult
	}
	return fieldsAll
}

// eventAttrs returns e's fields that apply to its hook, keyed in snake_case
// (hook, instance, generation, job, run_id, scheduled_at, worker_id, pid,
// exit_code, signal, reason, workers, old_workers, duration_usec, result), in
// that order. The exec and journal sinks derive their FORKD_* names from
// these keys.
func eventAttrs(e Event) []slog.Attr {
	f := hookFields(e.Hook)
	attrs := make([]slog.Attr, 0, 15)
	attrs = append(attrs,
		slog.String("hook", string(e.Hook)),
		slog.String("instance", e.Instance),
		slog.Uint64("generation", e.Generation),
	)
	if f&fieldJob != 0 {
		attrs = append(attrs, slog.String("job", e.Job))
	}
	if f&fieldRunID != 0 {
		attrs = append(attrs, slog.String("run_id", e.RunID))
	}
	if f&fieldScheduledAt != 0 {
		attrs = append(attrs, slog.Time("scheduled_at", e.ScheduledAt))
	}
	if f&fieldWorkerID != 0 {
		attrs = append(attrs, slog.Int("worker_id", e.WorkerID))
	}
	if f&fieldPID != 0 {
		attrs = append(attrs, slog.Int("pid", e.PID))
	}
	if f&fieldExitCode != 0 {
		attrs = append(attrs, slog.Int("exit_code", e.ExitCode))
	}
	if f&fieldSignal != 0 {
		attrs = append(attrs, slog.Int("signal", e.Signal))
	}
	if f&fieldReason != 0 {
		attrs = append(attrs, slog.String("reason", e.Reason))
	}
	if f&fieldWorkers != 0 {
		attrs = append(attrs, slog.Int("workers", e.Workers))
	}
	if f&fieldOldWorkers != 0 {
		attrs = append(attrs, slog.Int("old_workers", e.OldWorkers))
	}
	if f&fieldDuration != 0 {
		attrs = append(attrs, slog.Int64("duration_usec", max(e.Duration.Microseconds(), 0)))
	}
	if f&fieldResult != 0 {
		attrs = append(attrs, slog.String("result", e.Result))
	}
	return attrs
}

// isEmpty reports whether v is an empty string or the zero time: a field
// the log and the journal leave out.
func isEmpty(v slog.Value) bool {
	switch v.Kind() {
	case slog.KindString:
		return v.String() == ""
	case slog.KindTime:
		return v.Time().IsZero()
	}
	return false
}

// eventLevel returns how loud e is: Debug for the high-frequency pre_fork and
// post_fork, Warn for worker_abort and for a schedule's run that failed or
// timed out, Info otherwise.
func eventLevel(e Event) slog.Level {
	switch e.Hook {
	case PreFork, PostFork:
		return slog.LevelDebug
	case WorkerAbort:
		return slog.LevelWarn
	case ScheduleFinished:
		if e.Result == resultFailed || e.Result == resultTimeout {
			return slog.LevelWarn
		}
	}
	return slog.LevelInfo
}

// The schedule_finished results that eventLevel and eventMessage tell
// apart (jobs.Result…; package jobs is not imported here).
const (
	resultFailed  = "failed"
	resultTimeout = "timeout"
	resultSkipped = "skipped"
)

// eventMessage describes e in one line for people: "hook worker_exit: worker
// 2 pid 1234 exited 1 (crashed)".
func eventMessage(e Event) string {
	var b strings.Builder
	b.WriteString("hook ")
	b.WriteString(string(e.Hook))
	b.WriteString(": ")
	worker := func() { fmt.Fprintf(&b, "worker %d pid %d", e.WorkerID, e.PID) }
	exited := func() {
		if e.ExitCode < 0 && e.Signal != 0 {
			fmt.Fprintf(&b, "killed by %s", signalName(e.Signal))
		} else {
			fmt.Fprintf(&b, "exited %d", e.ExitCode)
		}
	}
	run := func() {
		fmt.Fprintf(&b, "schedule %s", e.Job)
		if e.RunID != "" {
			fmt.Fprintf(&b, " run %s", e.RunID)
		}
	}
	switch e.Hook {
	case OnStarting:
		fmt.Fprintf(&b, "instance %s starting", e.Instance)
	case OnReload:
		fmt.Fprintf(&b, "instance %s reloading from generation %d", e.Instance, e.Generation)
	case WhenReady:
		if e.Workers == 1 {
			fmt.Fprintf(&b, "generation %d ready with 1 worker", e.Generation)
		} else {
			fmt.Fprintf(&b, "generation %d ready with %d workers", e.Generation, e.Workers)
		}
	case PreFork:
		fmt.Fprintf(&b, "spawning worker %d of generation %d", e.WorkerID, e.Generation)
	case PostFork:
		worker()
		b.WriteString(" spawned")
	case PostWorkerInit:
		worker()
		b.WriteString(" ready")
	case WorkerInt:
		worker()
		fmt.Fprintf(&b, " asked to quit with %s", signalName(e.Signal))
	case WorkerAbort:
		worker()
		fmt.Fprintf(&b, " aborted with %s", signalName(e.Signal))
	case PreExec:
		fmt.Fprintf(&b, "instance %s re-executing the master", e.Instance)
	case PreRequest, PostRequest:
		worker()
	case ChildExit, WorkerExit:
		worker()
		b.WriteString(" ")
		exited()
	case NworkersChanged:
		fmt.Fprintf(&b, "workers %d -> %d", e.OldWorkers, e.Workers)
	case OnExit:
		fmt.Fprintf(&b, "instance %s exiting", e.Instance)
	case SingletonStarted:
		fmt.Fprintf(&b, "singleton %s pid %d started", e.Job, e.PID)
	case SingletonExited:
		fmt.Fprintf(&b, "singleton %s pid %d ", e.Job, e.PID)
		exited()
	case ScheduleStarted:
		run()
		fmt.Fprintf(&b, " pid %d started", e.PID)
		if !e.ScheduledAt.IsZero() {
			fmt.Fprintf(&b, ", due %s", e.ScheduledAt.Format(time.RFC3339))
		}
	case ScheduleFinished:
		run()
		if e.Result == resultSkipped {
			b.WriteString(" skipped")
			break
		}
		fmt.Fprintf(&b, " %s after %s: ", orUnknown(e.Result), e.Duration.Round(time.Millisecond))
		exited()
	default:
		fmt.Fprintf(&b, "instance %s generation %d", e.Instance, e.Generation)
	}
	if e.Reason != "" && hookFields(e.Hook)&fieldReason != 0 {
		fmt.Fprintf(&b, " (%s)", e.Reason)
	}
	return b.String()
}

// orUnknown returns s, or "unknown" when s is empty.
func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// signalName returns "SIGTERM" for 15, or "signal N" for a number the
// system has no name for.
func signalName(sig int) string {
	if name := unix.SignalName(syscall.Signal(sig)); name != "" {
		return name
	}
	return "signal " + strconv.Itoa(sig)
}
