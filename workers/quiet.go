package workers

import (
	"fmt"
	"time"

	"github.com/forkd/forkd/config"
)

// Quiet mode: an idle pool does not wake for heartbeats.
//
// Workers send WATCHDOG=1 every half timeout or so; read one by one, four
// workers with the default 30 s timeout would wake the master every few
// seconds for nothing. While the pool is steady — every worker ready and
// heartbeating, no reload, no stop, no other message lately — the arbiter
// takes the notify socket out of its reader's epoll set and lets the
// datagrams queue in the kernel, which stamps each with its arrival time
// (SO_TIMESTAMPNS). One timer, set to the earliest heartbeat deadline,
// drains the queue: the stamps say exactly when each worker last beat, so a
// hung worker is caught at its deadline as before. Anything else (a worker
// exits, a signal, a control request, a message other than a heartbeat)
// drains the queue at once and the socket is watched again until the pool
// is steady again.
//
// The queue is bounded by net.unix.max_dgram_qlen (10 by default, 512 under
// systemd, which raises it at boot); a full queue would block the workers'
// sd_notify. The drain interval is chosen so that the heartbeats the workers
// were seen to send fit with room to spare, and the pool stays watched when
// they cannot (many workers, a small queue) or when a worker's heartbeat
// interval is not known yet (until its first heartbeat).
//
// Worth knowing: a message other than a heartbeat that arrives while the
// pool is quiet — WATCHDOG=trigger, STATUS= — is acted on at the next drain
// (at most the drain interval later; a control request such as ListWorkers
// drains first). Pools with max_requests never go quiet: the workers'
// request counts must reach the arbiter when they are sent.

// quietAfter is how long after a message other than a heartbeat the pool
// waits before it goes quiet.
const quietAfter = 5 * time.Second

// minQuiet is the shortest drain interval worth going quiet for.
const minQuiet = time.Second

// beat records a heartbeat of w that arrived at at, and the interval since
// the one before (or since READY=1, which comes at most one interval before
// the first heartbeat of a worker that beats from then on; one that beats
// from earlier only makes the interval look shorter, which is safe).
func (p *Pool) beat(w *worker, at time.Time) {
	if !at.After(w.lastBeat) {
		return
	}
	w.beatEvery = at.Sub(w.lastBeat)
	w.lastBeat = at
}

// quietInterval says how long the pool may leave the notify socket
// unwatched now: 0 when it must watch it.
func (p *Pool) quietInterval(now time.Time) time.Duration {
	g := p.current
	if p.stopping || p.pending != nil || len(p.retiring) > 0 || g == nil || len(p.byPID) == 0 ||
		g.cfg.Server.Timeout.Duration <= 0 || g.cfg.Server.MaxRequests > 0 || now.Sub(p.chatter) < quietAfter {
		return 0
	}
	rate := 0.0 // heartbeats per second, all workers
	for _, w := range p.byPID {
		if w.phase != phaseReady || w.gen != g || w.beatEvery <= 0 {
			return 0
		}
		rate += 1 / w.beatEvery.Seconds()
	}
	// Each worker may have sent one more than its rate says by the drain,
	// and one slot stays free.
	room := float64(p.ns.qlen - 1 - len(p.byPID))
	if room <= 0 {
		return 0
	}
	d := time.Duration(room / rate * float64(time.Second))
	if d < minQuiet {
		return 0
	}
	return d
}

// settle watches or unwatches the notify socket as the pool's state asks,
// after every event the arbiter handles.
func (p *Pool) settle() {
	now := p.now()
	d := p.quietInterval(now)
	if quiet := d > 0; quiet == p.ns.watched {
		if err := p.ns.watch(!quiet); err != nil {
			p.log.Warn("quiet mode", "err", err)
			return
		}
		if quiet {
			// The drain timer stands in for every worker's heartbeat deadline.
			for _, w := range p.byPID {
				p.disarm(w)
			}
			p.stats.Quiet++
		} else {
			p.stopDrain()
			p.drain()
			p.rearmHeartbeats(now)
		}
	}
	if d > 0 && p.drainTimer == nil {
		p.armDrain(now, d)
	}
}

// armDrain sets the drain timer to the earliest heartbeat deadline, or to
// d from now if that comes first.
func (p *Pool) armDrain(now time.Time, d time.Duration) {
	at := now.Add(d)
	for _, w := range p.byPID {
		if dl := w.lastBeat.Add(w.gen.cfg.Server.Timeout.Duration); dl.Before(at) {
			at = dl
		}
	}
	p.drainSeq++
	seq := p.drainSeq
	p.drainTimer = time.AfterFunc(max(at.Sub(now), 0), func() { p.fire(timerEvent{kind: timerDrain, seq: seq}) })
}

// stopDrain cancels the drain timer.
func (p *Pool) stopDrain() {
	if p.drainTimer != nil {
		p.drainTimer.Stop()
		p.drainTimer = nil
	}
	p.drainSeq++
}

// drain handles every queued message now.
func (p *Pool) drain() {
	batch := p.nbuf.drain(p.ns.fd, 1<<20)
	if len(batch) >= p.ns.qlen {
		// The queue may have filled: don't go quiet again for a while.
		p.chatter = p.now()
	}
	for _, n := range batch {
		p.handleNote(n)
	}
}

// handleDrain is the drain timer: read the queue, then act on the
// heartbeat deadlines that passed.
func (p *Pool) handleDrain(t timerEvent) {
	if t.seq != p.drainSeq {
		return
	}
	p.drainTimer = nil
	p.stats.Drains++
	p.drain()
	now := p.now()
	for _, w := range p.byPID {
		timeout := w.gen.cfg.Server.Timeout.Duration
		if w.phase == phaseReady && timeout > 0 && !now.Before(w.lastBeat.Add(timeout)) {
			p.abort(w, fmt.Sprintf("timeout (no heartbeat for %s)", w.gen.cfg.Server.Timeout))
		}
	}
}

// rearmHeartbeats gives every ready worker its own heartbeat deadline
// again when the pool leaves quiet mode.
func (p *Pool) rearmHeartbeats(now time.Time) {
	for _, w := range p.byPID {
		timeout := w.gen.cfg.Server.Timeout.Duration
		if w.phase == phaseReady && w.timer == nil && timeout > 0 && w.gen.cfg.Worker.Ready != config.ReadyStarted {
			p.arm(w, max(w.lastBeat.Add(timeout).Sub(now), 0), timerHeartbeat)
		}
	}
}
