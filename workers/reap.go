package workers

import (
	"fmt"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/forkd/forkd/hooks"
	"github.com/forkd/forkd/internal/process"
)

// exitEvent is a reaped worker.
type exitEvent struct {
	w    *worker
	exit process.Exit
	// err says why the worker's end could not be learned.
	err error
}

// reap waits for w to end (process.Process.Wait: no thread, no polling)
// and reports it to the arbiter, until the pool is done.
func reap(w *worker, exits chan<- exitEvent, done <-chan struct{}) {
	exit, err := w.proc.Wait()
	select {
	case exits <- exitEvent{w: w, exit: exit, err: err}:
	case <-done:
	}
}

// describe says how a worker ended, for logs and hooks, and returns the
// exit code (-1 when killed by a signal) and the signal (0 when it exited).
func describe(ev exitEvent) (text string, code, sig int) {
	if ev.err != nil {
		return "lost: " + ev.err.Error(), -1, 0
	}
	return ev.exit.String(), ev.exit.Code(), int(ev.exit.Signal())
}

// handleExit updates the pool after a worker was reaped.
func (p *Pool) handleExit(ev exitEvent) {
	w := ev.w
	delete(p.byPID, w.pid)
	delete(p.retiring, w)
	p.disarm(w)
	text, code, sig := describe(ev)
	g := w.gen
	base := hooks.Event{Generation: g.id, WorkerID: w.id, PID: w.pid, ExitCode: code, Signal: sig}
	reason := w.reason
	if p.endCgroup(w) {
		reason = ReasonOOM
	} else if reason == "" {
		reason = "crashed"
		if p.stopping {
			reason = "stopping"
		}
	}
	base.Reason = reason
	base.Hook = hooks.ChildExit
	p.emit(base)
	lvl := p.log.Debug
	switch {
	case ev.exit.ExecErr != nil:
		lvl = p.log.Error
	case w.reason == "" && !p.stopping, reason == ReasonOOM:
		lvl = p.log.Warn
	}
	lvl("worker "+text, "worker_id", w.id, "pid", w.pid, "generation", g.id,
		"uptime", time.Since(w.started).Round(time.Millisecond), "reason", reason)

	wasReady := w.phase == phaseReady
	inSlot := w.inSlot
	g.forget(w)
	p.stopLifetime(w)
	if inSlot {
		g.slots[w.id] = nil
		w.inSlot = false
	}
	base.Hook = hooks.WorkerExit
	p.emit(base)

	if p.stopping || !inSlot {
		p.observe()
		return
	}
	switch g {
	case p.pending:
		if !wasReady {
			p.failReload(fmt.Errorf("worker %d of generation %d %s before it was ready", w.id, g.id, text))
			return
		}
		// A ready worker of the new generation died: replace it like any.
		p.replace(g, w, wasReady, text)
	case p.current:
		p.replace(g, w, wasReady, text)
	}
	p.observe()
}

// replace starts the successor of w, which exited as text says, in its
// slot: at once when w had served for MinUptime, else after a backoff that
// doubles with each consecutive failure of the slot.
func (p *Pool) replace(g *generation, w *worker, wasReady bool, text string) {
	if w.id >= g.target {
		return // the slot was scaled away meanwhile
	}
	if wasReady && !w.readyAt.IsZero() && time.Since(w.readyAt) >= p.opts.MinUptime {
		g.failures[w.id] = 0
		p.spawn(g, w.id)
		return
	}
	if wasReady {
		p.slotFailed(g, w.id, fmt.Sprintf("%s after serving for less than %s", text, p.opts.MinUptime))
		return
	}
	p.slotFailed(g, w.id, text+" before it was ready")
}

// slotFailed schedules a retry of slot id after the slot's backoff.
func (p *Pool) slotFailed(g *generation, id int, why string) {
	if g == p.pending {
		p.failReload(fmt.Errorf("worker %d of generation %d: %s", id, g.id, why))
		return
	}
	g.failures[id]++
	if max := g.cfg.Server.MaxFailures; max > 0 && g.failures[id] >= max && !p.stopping {
		// A crash loop: give up, so that systemd's Restart= (or whoever
		// runs forkd) sees the instance fail.
		p.stopErr = fmt.Errorf("%w: worker %d of generation %d failed %d times in a row (max_failures), last: %s",
			ErrCrashLoop, id, g.id, g.failures[id], why)
		p.log.Error("crash loop: stopping the instance", "worker_id", id, "failures", g.failures[id], "last", why)
		p.stop(stopGraceful, "crash loop")
		return
	}
	d := Backoff(g.failures[id])
	p.log.Warn("worker failing; backing off", "worker_id", id, "generation", g.id,
		"failures", g.failures[id], "retry_in", d)
	gid := g.id
	g.respawn[id] = time.AfterFunc(d, func() {
		p.fire(timerEvent{kind: timerRespawn, gen: gid, slot: id})
	})
}

// Backoff is the delay before the nth consecutive restart of something
// that keeps failing (a worker slot, a singleton): 100ms, doubling, at most
// 30s.
func Backoff(n int) time.Duration {
	d := 100 * time.Millisecond
	for i := 1; i < n && d < 30*time.Second; i++ {
		d *= 2
	}
	return min(d, 30*time.Second)
}

// signal sends sig to w, ignoring a worker that is already gone.
func (p *Pool) signal(w *worker, sig syscall.Signal) {
	if err := w.proc.Signal(sig); err != nil {
		p.log.Warn("signal worker", "worker_id", w.id, "pid", w.pid, "signal", unix.SignalName(sig), "err", err)
	}
}
