package workers

import (
	"time"

	"github.com/forkd/forkd/config"
	"github.com/forkd/forkd/internal/notify"
)

// Quiet: the notify socket times heartbeats itself and, while the pool
// allows it, stops watching the socket between drains so that an idle
// master does not wake for heartbeats (see package notify). The pool
// allows it while it is steady — every worker of the current generation
// ready and heartbeating, no reload, no stop, no retiring worker, no
// max_requests (whose request counts must arrive when sent) — and says so
// by message whenever that changes; the socket picks the drain interval
// from the heartbeat rates it saw and its queue length, and stays watched
// for a while after any message other than a heartbeat, or for good once a
// worker used sd_notify_barrier(3).

// beating reports whether w's heartbeats are timed.
func beating(w *worker) bool {
	cfg := w.gen.cfg
	return w.phase == phaseReady && cfg.Server.Timeout.Duration > 0 && cfg.Worker.Ready != config.ReadyStarted
}

// watchBeats has the socket time w's heartbeats from since (a sign of
// life: READY=1, its adoption, a heartbeat), when they are timed.
func (p *Pool) watchBeats(w *worker, since time.Time) {
	if !beating(w) {
		return
	}
	w.beats = true
	p.watches = append(p.watches, notify.Watch{PID: w.pid, Timeout: w.gen.cfg.Server.Timeout.Duration, Since: since})
}

// unwatchBeats stops the timing of w's heartbeats (it is retired).
func (p *Pool) unwatchBeats(w *worker) {
	if !w.beats {
		return
	}
	w.beats = false
	p.watches = append(p.watches, notify.Watch{PID: w.pid})
}

// mayQuiet reports whether the pool is steady enough for the notify socket
// to go quiet.
func (p *Pool) mayQuiet() bool {
	g := p.current
	if p.stopping || p.pending != nil || len(p.retiring) > 0 || g == nil || len(p.byPID) == 0 ||
		g.cfg.Server.MaxRequests > 0 {
		return false
	}
	for _, w := range p.byPID {
		if w.gen != g || !w.beats {
			return false
		}
	}
	return true
}

// settle runs after every event the arbiter handles: held slots get their
// turn, and the notify socket gets the pool's news (the workers to watch,
// whether it may go quiet).
func (p *Pool) settle() {
	if len(p.held) > 0 {
		p.unhold()
	}
	if len(p.watches) > 0 {
		if err := p.nc.Watch(p.watches...); err != nil {
			p.log.Debug("notify socket", "err", err)
		}
		p.watches = p.watches[:0]
	}
	p.settleAutoscale()
	if ok := p.mayQuiet(); ok != p.quietOK {
		p.quietOK = ok
		if err := p.nc.AllowQuiet(ok); err != nil {
			p.log.Debug("notify socket", "err", err)
		}
	}
}
