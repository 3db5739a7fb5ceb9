package workers

import (
	"fmt"
	"syscall"
	"time"

	"github.com/forkd/forkd/hooks"
)

// timerKind says what a deadline is for.
type timerKind int

const (
	timerBoot       timerKind = iota // worker did not become ready in time
	timerReadyDelay                  // ready = "started": the delay passed
	timerKill                        // a stopping worker overstayed: SIGKILL
	timerRespawn                     // a slot's backoff ended
	timerRecycle                     // a worker reached max_lifetime
	timerPace                        // held slots get another look (pace.go)
	timerAutoscale                   // the accept queues were sampled (autoscale.go)
	timerDemand                      // a connection waits, and no worker (autoscale.go)
)

// timerEvent is a deadline that passed. Worker deadlines carry the worker
// and the sequence number they were armed with; stale ones are ignored.
type timerEvent struct {
	kind  timerKind
	w     *worker
	seq   uint64
	gen   uint64 // timerRespawn
	slot  int    // timerRespawn
	queue int    // timerAutoscale: the longest accept queue
}

// fire hands a timer event to the arbiter; it runs on the timer's own
// goroutine and gives up once the pool is gone.
func (p *Pool) fire(t timerEvent) {
	select {
	case p.timers <- t:
	case <-p.done:
	}
}

// arm sets w's one deadline, replacing any earlier one.
func (p *Pool) arm(w *worker, d time.Duration, kind timerKind) {
	p.disarm(w)
	w.seq++
	seq := w.seq
	w.due, w.dueKind = time.Now().Add(d), kind
	w.timer = time.AfterFunc(d, func() { p.fire(timerEvent{kind: kind, w: w, seq: seq}) })
}

// disarm cancels w's deadline.
func (p *Pool) disarm(w *worker) {
	if w.timer != nil {
		w.timer.Stop()
		w.timer = nil
	}
	w.due = time.Time{}
	w.seq++
}

// handleTimer acts on a deadline that passed.
func (p *Pool) handleTimer(t timerEvent) {
	if t.kind == timerPace {
		p.paceTimer = nil // settle, after this event, looks at the held slots
		return
	}
	switch t.kind {
	case timerAutoscale:
		p.autoscaleSample(t)
		return
	case timerDemand:
		p.autoscaleDemand()
		return
	}
	if t.kind == timerRespawn {
		g := p.generationByID(t.gen)
		if g == nil || t.slot >= len(g.respawn) {
			return
		}
		g.respawn[t.slot] = nil
		if !p.stopping && t.slot < g.target && g.slots[t.slot] == nil {
			p.spawn(g, t.slot)
		}
		return
	}
	w := t.w
	if t.kind == timerRecycle {
		if p.byPID[w.pid] == w && w.lifetime != nil {
			w.lifetime = nil
			p.recycle(w, "max_lifetime")
		}
		return
	}
	if t.seq != w.seq || p.byPID[w.pid] != w {
		return // re-armed, or the worker is gone
	}
	w.timer = nil
	switch t.kind {
	case timerReadyDelay:
		p.markReady(w)
	case timerBoot:
		p.abort(w, fmt.Sprintf("boot timeout (%s)", w.gen.cfg.Server.BootTimeout))
	case timerKill:
		p.log.Warn("worker overstayed; killing", "worker_id", w.id, "pid", w.pid, "reason", w.reason)
		p.signal(w, syscall.SIGKILL)
	}
}

// generationByID returns the live generation with that id, or nil.
func (p *Pool) generationByID(id uint64) *generation {
	for _, g := range []*generation{p.current, p.pending} {
		if g != nil && g.id == id {
			return g
		}
	}
	return nil
}

// abort handles a worker that timed out: SIGABRT now, SIGKILL after
// kill_timeout, and its replacement started at once rather than after it
// finally exits, so a hung worker costs no more than its timeout.
func (p *Pool) abort(w *worker, reason string) {
	g := w.gen
	p.log.Warn("worker timed out", "worker_id", w.id, "pid", w.pid, "generation", g.id, "reason", reason)
	p.emit(hooks.Event{Hook: hooks.WorkerAbort, Generation: g.id, WorkerID: w.id, PID: w.pid,
		Signal: int(syscall.SIGABRT), Reason: reason})
	wasReady := w.phase == phaseReady
	p.retire(w, syscall.SIGABRT, g.cfg.Server.KillTimeout.Duration, reason)
	if p.stopping {
		return
	}
	if g == p.pending && !wasReady {
		p.failReload(fmt.Errorf("worker %d of generation %d: %s", w.id, g.id, reason))
		return
	}
	if g == p.current || g == p.pending {
		p.replace(g, w, wasReady, "aborted ("+reason+")")
	}
	p.observe()
}

// retire takes w out of its slot (if it holds one), sends it sig and arms
// SIGKILL for after grace. The slot is free for a successor at once.
func (p *Pool) retire(w *worker, sig syscall.Signal, grace time.Duration, reason string) {
	if w.inSlot {
		w.gen.slots[w.id] = nil
		w.inSlot = false
	}
	w.phase = phaseStopping
	p.unwatchBeats(w)
	p.stopLifetime(w)
	if w.reason == "" {
		w.reason = reason
	}
	p.retiring[w] = true
	p.signal(w, sig)
	p.arm(w, grace, timerKill)
}
