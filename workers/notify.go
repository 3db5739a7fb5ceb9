package workers

import (
	"context"
	"fmt"
	"time"

	"github.com/forkd/forkd/hooks"
	"github.com/forkd/forkd/internal/notify"
)

// The pool reads its workers' sd_notify messages through a notify.Socket,
// an actor of its own that alone reads the socket and times heartbeats
// (see package notify): the pool is its fallback consumer, so it gets what
// its starting workers and strangers send, and it hands the socket each
// worker that becomes ready to time its heartbeats (watchBeats), and
// forgets each worker that exits (takeNotes).

// qlenAdvice is the warning for a notify queue shorter than the pool
// (net.unix.max_dgram_qlen below the worker count), or "": when more workers
// send at once than the queue holds, their sd_notify calls wait, and each
// read then wakes every waiting sender.
func qlenAdvice(qlen, workers int) string {
	if workers <= qlen {
		return ""
	}
	return fmt.Sprintf("net.unix.max_dgram_qlen is %d, below the %d workers: their sd_notify calls may wait "+
		"on each other; raise it to 512 as systemd does at boot (sysctl -w net.unix.max_dgram_qlen=512; "+
		"in a container: docker run --sysctl net.unix.max_dgram_qlen=512)", qlen, workers)
}

// handleBatch applies a batch from the notify socket: the messages first,
// then the heartbeat deadlines that passed.
func (p *Pool) handleBatch(b notify.Batch) {
	for _, n := range b.Notes {
		p.handleNote(n)
	}
	for _, pid := range b.Missed {
		if w := p.byPID[pid]; w != nil && w.beats && beating(w) {
			p.abort(w, fmt.Sprintf("timeout (no heartbeat for %s)", w.gen.cfg.Server.Timeout))
		}
	}
}

// takeNotes applies every notify message sent before now, and has the
// socket forget pid (0: none), which exited: pid's last words (STOPPING=1,
// say) count before its exit, as under systemd.
func (p *Pool) takeNotes(pid int) {
	b, err := p.nc.Forget(context.Background(), pid)
	p.takeBatches()
	if err == nil {
		p.handleBatch(b)
	}
}

// takeBatches applies the batches the socket has already delivered.
func (p *Pool) takeBatches() {
	for {
		select {
		case b := <-p.nc.Notes():
			p.handleBatch(b)
		default:
			return
		}
	}
}

// handleNote applies a worker's message.
func (p *Pool) handleNote(m notify.Note) {
	w, ok := p.byPID[m.PID]
	if !ok {
		if p.routeNote(m) {
			return
		}
		p.stats.IgnoredNotify++
		p.log.Debug("ignored notify message from a process that is not a worker", "pid", m.PID)
		return
	}
	if m.HasStatus {
		w.status = m.Status
	}
	if m.Stopping && w.reason == "" {
		w.reason = "worker stopping by itself"
	}
	if m.Trigger && w.phase != phaseStopping {
		p.abort(w, "worker sent WATCHDOG=trigger")
		return
	}
	if m.Ready && w.phase == phaseStarting {
		p.markReady(w)
	}
	if m.Stats != "" && p.opts.RequestStats != nil {
		p.opts.RequestStats(w.gen.id, w.id, w.pid, m.Stats)
	}
	p.reportRequests(w, m)
	if m.HasRequests {
		p.countRequests(w, m.Requests)
	}
	if m.Watchdog && w.beats {
		// A heartbeat the socket passed on: it came before the socket
		// took the worker's Watch. Hand it over as a sign of life.
		p.watchBeats(w, m.At)
	}
	if m.Barrier && !p.barriers {
		p.barriers = true
		p.log.Debug("a worker uses sd_notify barriers: the notify socket stays watched", "pid", m.PID)
	}
}

// markReady records that w serves, arms its heartbeat deadline and
// advances the generation when it is complete.
func (p *Pool) markReady(w *worker) {
	g := w.gen
	w.phase = phaseReady
	w.readyAt = p.now()
	p.disarm(w)
	p.watchBeats(w, w.readyAt) // its heartbeat deadline counts from now
	p.log.Debug("worker ready", "worker_id", w.id, "pid", w.pid, "generation", g.id,
		"boot", w.readyAt.Sub(w.started).Round(10*time.Microsecond))
	p.emit(hooks.Event{Hook: hooks.PostWorkerInit, Generation: g.id, WorkerID: w.id, PID: w.pid})
	p.handOver(w)
	p.armRecycling(w)
	p.generationProgress(g)
	p.observe()
}
