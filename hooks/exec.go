package hooks

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultExecTimeout is how long a Command may run when its Timeout is zero.
const DefaultExecTimeout = 30 * time.Second

// execKillDelay is how long a command that was sent SIGTERM (at its timeout,
// or because its context ended) has to exit before its process group gets
// SIGKILL. It also bounds how long the end of a killed command's output is
// waited for, while its killed group dies.
const execKillDelay = 5 * time.Second

// execQueueLen is how many events Exec.Emit queues before it drops.
const execQueueLen = 128

// maxOutputLine is the longest output line logged as one record; longer
// lines are split.
const maxOutputLine = 16 << 10

// Command is a command run at a hook's moment: an exec hook.
type Command struct {
	// Hook is the moment the command runs at.
	Hook Hook
	// Argv is the program (looked up in PATH when it has no slash) and its
	// arguments; no shell is involved.
	Argv []string
	// Timeout bounds the command's run; at the timeout its process group is
	// sent SIGTERM, then SIGKILL shortly after, and the run counts as a
	// failure. Zero means DefaultExecTimeout.
	Timeout time.Duration
	// Abort makes the command's failure abort what the hook precedes. It
	// matters only for commands run with Exec.RunNow (the blocking hooks
	// on_starting, on_reload, pre_fork and pre_exec).
	Abort bool
}

// CommandError reports an exec hook command that failed.
type CommandError struct {
	// Hook is the hook the command ran for.
	Hook Hook
	// Argv is the command.
	Argv []string
	// TimedOut reports whether the command was killed at its timeout.
	TimedOut bool
	// Timeout is the command's timeout.
	Timeout time.Duration
	// Err is what went wrong: an *exec.ExitError for a command that ran
	// and failed, or the error that kept it from starting.
	Err error
}

// Error names the hook, the command and its exit status.
func (e *CommandError) Error() string {
	if e.TimedOut {
		return fmt.Sprintf("hooks: %s command %q timed out after %s: %v", e.Hook, e.Argv, e.Timeout, e.Err)
	}
	return fmt.Sprintf("hooks: %s command %q failed: %v", e.Hook, e.Argv, e.Err)
}

// Unwrap returns Err.
func (e *CommandError) Unwrap() error { return e.Err }

// ExitCode returns the command's exit status, or -1 when it did not exit on
// its own (killed by a signal, or never started).
func (e *CommandError) ExitCode() int {
	var exit *exec.ExitError
	if errors.As(e.Err, &exit) {
		return exit.ExitCode()
	}
	return -1
}

// Exec is the Sink that runs exec hooks: for each event, the commands
// configured for its hook, one at a time, in order.
//
// A command's environment is the master's environment plus the event's
// fields. Every command gets FORKD_HOOK, FORKD_INSTANCE and FORKD_GENERATION;
// the rest only where they apply:
//
//	hook                            FORKD_WORKER_ID  FORKD_PID  FORKD_EXIT_CODE  FORKD_SIGNAL  FORKD_REASON  FORKD_WORKERS  FORKD_OLD_WORKERS
//	on_starting
//	on_reload, pre_exec, on_exit                                                               yes
//	when_ready                                                                                               yes
//	pre_fork                        yes
//	post_fork, post_worker_init,    yes              yes
//	  pre_request, post_request
//	worker_int                      yes              yes                         yes
//	worker_abort                    yes              yes                         yes           yes
//	child_exit, worker_exit         yes              yes        yes              yes           yes
//	nworkers_changed                                                                           yes           yes            yes
//
// The run-once hooks, about [[singleton]] processes and [[schedule]] runs,
// name the job in FORKD_JOB:
//
//	hook                FORKD_JOB  FORKD_RUN_ID  FORKD_SCHEDULED_AT  FORKD_PID  FORKD_EXIT_CODE  FORKD_SIGNAL  FORKD_REASON  FORKD_DURATION_USEC  FORKD_RESULT
//	singleton_started   yes                                          yes
//	singleton_exited    yes                                          yes        yes              yes           yes
//	schedule_started    yes        yes           yes                 yes
//	schedule_finished   yes        yes                                          yes              yes                         yes                  yes
//
// FORKD_PID is the worker's pid, the singleton's or the run's (a command's
// parent, the master, is $PPID); FORKD_EXIT_CODE is -1 for a process killed
// by a signal, and FORKD_SIGNAL the signal's number (0 for none).
// FORKD_REASON may be empty. FORKD_RUN_ID and FORKD_SCHEDULED_AT (RFC 3339
// with nanoseconds and the offset of the schedule's zone) are the values the
// run has in its own environment; FORKD_DURATION_USEC is how long the run
// took in microseconds, and FORKD_RESULT how it ended: ok, failed, timeout,
// skipped (no process ran) or replaced. Those of these variables that do not
// apply to the hook are removed from the inherited environment, so a stale
// value never leaks through.
//
// A command's stdout and stderr go to the logger, one record per line, with
// the attributes hook and pid. Commands run in their own process group; at
// the timeout the group gets SIGTERM, then SIGKILL a few seconds later.
//
// A command is done when its own process exits: what it started and left
// running is neither waited for nor stopped. When such a process still holds
// the command's stdout or stderr, a warning naming the hook says so, and
// what it writes there goes on being logged as the command's output until it
// closes them; forkd never closes that pipe under it while the master runs.
//
// Replace swaps the commands (a reload's config brings its own), and
// Shutdown runs what is still queued before the master's on_exit.
type Exec struct {
	cmds      atomic.Pointer[commandTable]
	logger    *slog.Logger
	queue     chan queued
	dropped   atomic.Uint64
	killDelay time.Duration

	// mu orders Emit with Shutdown and Run's start, and guards what follows.
	mu sync.Mutex
	// spell counts the events dropped since the queue last took one: the
	// first drop of a spell is logged, and so is its end.
	spell uint64
	// closed says Shutdown was called: Emit queues nothing more.
	closed bool
	// started says Run was called.
	started bool
	closing chan struct{} // closed by Shutdown
	stopped chan struct{} // closed when Run returns
}

// commandTable is an Exec's commands by hook. It is never changed once
// stored: Replace stores another.
type commandTable map[Hook][]Command

// queued is an event waiting for Run with the commands that were
// configured for its hook when it was emitted.
type queued struct {
	event Event
	cmds  []Command
}

// NewExec returns an Exec running cmds, which logs their output and failures
// to logger (nil: nowhere). Commands with an empty Argv are ignored.
func NewExec(cmds []Command, logger *slog.Logger) *Exec {
	return newExec(cmds, logger, execQueueLen)
}

// newExec is NewExec with a queue of queueLen events.
func newExec(cmds []Command, logger *slog.Logger, queueLen int) *Exec {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	x := &Exec{
		logger:    logger,
		queue:     make(chan queued, queueLen),
		killDelay: execKillDelay,
		closing:   make(chan struct{}),
		stopped:   make(chan struct{}),
	}
	x.Replace(cmds)
	return x
}

// Replace makes cmds the commands that run from now on, in place of those
// given to NewExec or to the last Replace: for the events emitted and the
// RunNow calls made after it returns. Events queued before keep the
// commands of their moment. Commands with an empty Argv are ignored. It may
// be called from any goroutine.
func (x *Exec) Replace(cmds []Command) {
	t := make(commandTable)
	for _, c := range cmds {
		if len(c.Argv) == 0 {
			x.logger.Warn("exec hook without a command ignored", "hook", string(c.Hook))
			continue
		}
		c.Argv = append([]string(nil), c.Argv...)
		t[c.Hook] = append(t[c.Hook], c)
	}
	x.cmds.Store(&t)
}

// commands returns the commands that run at hook h now.
func (x *Exec) commands(h Hook) []Command {
	return (*x.cmds.Load())[h]
}

// Has reports whether any command runs at hook h.
func (x *Exec) Has(h Hook) bool {
	return len(x.commands(h)) > 0
}

// Dropped returns how many events Emit dropped: because its queue was full,
// or because they came after Shutdown.
func (x *Exec) Dropped() uint64 {
	return x.dropped.Load()
}

// Emit queues e for Run when commands run at e.Hook, and returns at once.
// Events of hooks without commands are ignored. An event that finds the
// queue full, or comes after Shutdown, is dropped and counted (see
// Dropped): the first drop after the queue last took an event is logged as
// a warning naming the hook and the count so far, and the next event the
// queue takes logs how many were dropped meanwhile.
func (x *Exec) Emit(e Event) {
	cmds := x.commands(e.Hook)
	if len(cmds) == 0 {
		return
	}
	ok, spell, total := x.offer(queued{event: e, cmds: cmds})
	switch {
	case !ok && spell == 1:
		x.logger.Warn("exec hook event dropped (queue full, or shut down): its commands do not run, "+
			"nor those of the events dropped until the queue has room", "hook", string(e.Hook), "dropped", total)
	case ok && spell > 0:
		x.logger.Warn("exec hook queue has room again", "dropped_meanwhile", spell, "dropped", total)
	}
}

// offer queues q unless the queue is full or Shutdown was called. It
// reports whether q was queued; spell is the number of events dropped in a
// row, this one included (when it was queued: the spell it ends, if any),
// and total the number dropped since the start.
func (x *Exec) offer(q queued) (ok bool, spell, total uint64) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if !x.closed {
		select {
		case x.queue <- q:
			spell, x.spell = x.spell, 0
			return true, spell, x.dropped.Load()
		default:
		}
	}
	x.spell++
	return false, x.spell, x.dropped.Add(1)
}

// Run runs the commands of queued events, one at a time, in the order the
// events were emitted. A command's failure is logged; Abort has no effect
// here (nothing waits for a queued event). Call it once.
//
// Run returns nil once ctx is done, after killing and waiting for the
// command running then; the events still queued are not run. After
// Shutdown it returns nil as soon as it has run the commands of every event
// queued before.
func (x *Exec) Run(ctx context.Context) error {
	x.mu.Lock()
	x.started = true
	x.mu.Unlock()
	defer close(x.stopped)
	for {
		select {
		case <-ctx.Done():
			return nil
		case q := <-x.queue:
			x.runQueued(ctx, q)
		case <-x.closing:
			x.drain(ctx)
			return nil
		}
	}
}

// drain runs the commands of the events left in the queue, which takes no
// more, until it is empty or ctx is done.
func (x *Exec) drain(ctx context.Context) {
	for ctx.Err() == nil {
		select {
		case q := <-x.queue:
			x.runQueued(ctx, q)
		default:
			return
		}
	}
}

// runQueued runs the commands of q in order, logging failures, and stops
// when ctx is done.
func (x *Exec) runQueued(ctx context.Context, q queued) {
	for _, c := range q.cmds {
		if ctx.Err() != nil {
			return
		}
		if err := x.run(ctx, c, q.event); err != nil && ctx.Err() == nil {
			x.logger.Warn("exec hook failed", "hook", string(q.event.Hook), "err", err)
		}
	}
}

// Shutdown drains x, as net/http's Server.Shutdown does: from now on Emit
// drops every event (and counts it), and Shutdown waits until Run has run
// the commands of the events queued before — each bounded by its own
// timeout, as always — and returned. It returns nil then, or at once when
// Run was never called (the queued events are not run), or ctx's error
// when ctx ends first; Run then goes on until its own context ends. RunNow
// still works after Shutdown. Shutdown may be called from any goroutine,
// and more than once.
func (x *Exec) Shutdown(ctx context.Context) error {
	x.mu.Lock()
	if !x.closed {
		x.closed = true
		close(x.closing)
	}
	started := x.started
	x.mu.Unlock()
	if !started {
		return nil
	}
	select {
	case <-x.stopped:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// RunNow runs the commands of e.Hook now, one at a time, in order, and
// returns when they are done; it is for the hooks whose moment waits for
// their commands (on_starting, on_reload, pre_fork, pre_exec).
//
// It returns a *CommandError naming the command and its exit status when a
// command with Abort fails (the commands after it do not run); failures of
// other commands are logged and ignored. When ctx ends, the running command
// is killed and RunNow returns an error wrapping ctx's error.
func (x *Exec) RunNow(ctx context.Context, e Event) error {
	for _, c := range x.commands(e.Hook) {
		err := x.run(ctx, c, e)
		if ctx.Err() != nil {
			return fmt.Errorf("hooks: run %s command %q: %w", e.Hook, c.Argv, context.Cause(ctx))
		}
		if err == nil {
			continue
		}
		if c.Abort {
			return err
		}
		x.logger.Warn("exec hook failed", "hook", string(e.Hook), "err", err)
	}
	return nil
}

// errTimedOut is the cause of a command's context ending at its timeout.
var errTimedOut = errors.New("hooks: command timed out")

// run runs c for e and waits for it, its output logged; it returns a
// *CommandError when the command fails to start, fails, or times out.
func (x *Exec) run(ctx context.Context, c Command, e Event) error {
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = DefaultExecTimeout
	}
	fail := func(err error, timedOut bool) error {
		return &CommandError{Hook: e.Hook, Argv: c.Argv, TimedOut: timedOut, Timeout: timeout, Err: err}
	}

	cctx, cancel := context.WithTimeoutCause(ctx, timeout, errTimedOut)
	defer cancel()

	// The command writes into a pipe we own rather than one os/exec makes, so
	// the output reader knows the pid before the first line arrives, and
	// Wait waits for the process only, never for the end of its output.
	r, w, err := os.Pipe()
	if err != nil {
		return fail(fmt.Errorf("create output pipe: %w", err), false)
	}

	cmd := exec.CommandContext(cctx, c.Argv[0], c.Argv[1:]...)
	cmd.Env = commandEnv(os.Environ(), e)
	cmd.Stdout = w
	cmd.Stderr = w
	// Its own process group, and SIGKILL when the master dies, as the
	// workers get (forkd's threads live as long as it does, so the
	// parent-death signal, tied to the forking thread, means the master).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error {
		// The whole group: what the command started goes too.
		err := syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		if errors.Is(err, syscall.ESRCH) {
			return os.ErrProcessDone
		}
		return err
	}
	cmd.WaitDelay = x.killDelay

	start := time.Now()
	err = cmd.Start()
	w.Close()
	if err != nil {
		r.Close()
		return fail(fmt.Errorf("start: %w", err), false)
	}
	pid := cmd.Process.Pid
	out := x.logger.With("hook", string(e.Hook), "pid", pid)
	out.Debug("exec hook started", "argv", c.Argv)

	// The reader owns r: it logs the output until every process holding
	// the write end has closed it, which may be long after the command
	// itself is done (see settleOutput), and only then closes r.
	read := make(chan struct{})
	go func() {
		defer close(read)
		defer r.Close()
		logLines(r, out)
	}()

	err = cmd.Wait()
	if cctx.Err() != nil {
		// Killed: sweep up what is left of its group (children that ignored
		// SIGTERM, or outlived the command). The kernel keeps the group's id
		// from being reused while any member lives, so this reaches only
		// what the command started (or, once all of it is gone, nobody).
		if kerr := syscall.Kill(-pid, syscall.SIGKILL); kerr != nil && !errors.Is(kerr, syscall.ESRCH) {
			x.logger.Warn("kill exec hook process group", "hook", string(e.Hook), "pgid", pid, "err", kerr)
		}
	}
	if x.settleOutput(r, read, cctx.Err() != nil) {
		out.Warn(fmt.Sprintf("a process started by the %s hook is still running and holds its output, "+
			"which is logged until it closes it; run long-lived programs as a [[singleton]], "+
			"periodic ones as a [[schedule]]", e.Hook), "argv", c.Argv)
	}
	out.Debug("exec hook done", "argv", c.Argv, "duration", time.Since(start), "err", err)

	switch {
	case ctx.Err() != nil:
		return fail(context.Cause(ctx), false)
	case context.Cause(cctx) == errTimedOut:
		if err == nil {
			err = errTimedOut
		}
		return fail(err, true)
	case err != nil:
		return fail(err, false)
	}
	return nil
}

// settleOutput is called once a command's process has exited and been
// reaped; r is the read end of its output pipe and read is closed when the
// reader has logged everything written to it and reached its end. When no
// other process holds the write end, it waits for the reader and returns
// false: all of the command's output is logged. Otherwise it returns true
// at once, leaving the reader to log what the command's leftovers write.
// For a killed command (killed: its group was sent SIGKILL), whose group
// may still be dying, it waits up to the kill delay for the reader first.
func (x *Exec) settleOutput(r *os.File, read <-chan struct{}, killed bool) (held bool) {
	if killed {
		t := time.NewTimer(x.killDelay)
		defer t.Stop()
		select {
		case <-read:
			return false
		case <-t.C:
			return true
		}
	}
	if !writersGone(r) {
		return true
	}
	<-read
	return false
}

// writersGone reports whether no process holds the write end of the pipe
// whose read end is r any more (the kernel then reports a hang-up on r),
// or r was already closed by its reader, which does so at the end of the
// pipe.
func writersGone(r *os.File) bool {
	rc, err := r.SyscallConn()
	if err != nil {
		return true
	}
	var hup bool
	cerr := rc.Control(func(fd uintptr) {
		fds := []unix.PollFd{{Fd: int32(fd)}}
		for {
			n, err := unix.Poll(fds, 0)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			hup = err == nil && n > 0 && fds[0].Revents&unix.POLLHUP != 0
			return
		}
	})
	return cerr != nil || hup
}

// logLines logs each non-blank line read from r as one Info record of out,
// until r ends or fails.
func logLines(r io.Reader, out *slog.Logger) {
	br := bufio.NewReaderSize(r, maxOutputLine)
	for {
		line, err := br.ReadSlice('\n')
		if text := strings.TrimRight(string(line), "\r\n"); text != "" {
			out.Info(text)
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return
		}
	}
}

// envName maps eventAttrs keys to the environment variables exec hooks get.
func envName(key string) string {
	return "FORKD_" + strings.ToUpper(key)
}

// commandEnv returns base with the FORKD_* variables of e's hook set and the
// FORKD_* variables of fields that do not apply to it removed.
func commandEnv(base []string, e Event) []string {
	all := eventAttrs(Event{Hook: Hook("")}) // an unknown hook carries every field
	drop := make(map[string]bool, len(all))
	for _, a := range all {
		drop[envName(a.Key)] = true
	}
	env := make([]string, 0, len(base)+len(all))
	for _, kv := range base {
		name, _, _ := strings.Cut(kv, "=")
		if !drop[name] {
			env = append(env, kv)
		}
	}
	for _, a := range eventAttrs(e) {
		env = append(env, envName(a.Key)+"="+attrString(a.Value))
	}
	return env
}

// attrString formats an event attribute's value for the environment or the
// journal; a time is RFC 3339 with nanoseconds and its zone's offset, or ""
// for the zero time.
func attrString(v slog.Value) string {
	switch v.Kind() {
	case slog.KindInt64:
		return strconv.FormatInt(v.Int64(), 10)
	case slog.KindUint64:
		return strconv.FormatUint(v.Uint64(), 10)
	case slog.KindTime:
		if v.Time().IsZero() {
			return ""
		}
		return v.Time().Format(time.RFC3339Nano)
	}
	return v.String()
}
