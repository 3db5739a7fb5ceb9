package workers

import (
	"fmt"
	"sync"
	"time"

	"github.com/forkd/forkd/config"
)

// Quiet mode: an idle pool does not wake for heartbeats.
//
// Workers send WATCHDOG=1 every half timeout or so; read one by one, four
// workers with the default 30 s timeout would wake the master every few
// seconds for nothing. While the pool is steady — every worker ready and
// heartbeating, no reload, no stop, no other message lately — the arbiter
// takes the notify socket out of the reader's epoll set and lets the
// datagrams queue in the kernel, which stamps each with its arrival time
// (SO_TIMESTAMPNS). A timerfd set to the earliest heartbeat deadline wakes
// the reader goroutine alone: it drains the queue, notes each worker's last
// heartbeat from the stamps, sets the timer again and sleeps, all with raw
// system calls, so neither the arbiter nor the runtime's monitor thread
// wakes. It wakes the arbiter only when there is something to do: a
// deadline passed (a hung worker is caught at its deadline, as when the
// socket is watched), a message other than a heartbeat, a full queue.
// Anything that changes the pool (a worker exits, a signal, a reload or a
// scale request) ends the quiet spell too: the socket is watched again, and
// the arbiter takes the heartbeats the reader noted.
//
// The queue is bounded by net.unix.max_dgram_qlen (10 by default, 512 under
// systemd, which raises it at boot); a full queue would block the workers'
// sd_notify. The drain interval is chosen so that the heartbeats the workers
// were seen to send fit with room to spare, and the pool stays watched when
// they cannot (many workers, a small queue) or when a worker's heartbeat
// interval is not known yet (until its first heartbeat).
//
// Worth knowing: a message other than a heartbeat that arrives while the
// pool is quiet — WATCHDOG=trigger, STATUS= — is acted on at the next drain,
// at most the drain interval later; a worker's exit takes what it sent
// before at once. Pools with max_requests never go quiet: the workers'
// request counts must reach the arbiter when they are sent. Nor do pools
// whose workers use sd_notify_barrier(3), as systemd-notify(1) does at every
// call: a barrier waits until its message is read.

// quietAfter is how long after a message other than a heartbeat the pool
// waits before it goes quiet.
const quietAfter = 5 * time.Second

// minQuiet is the shortest drain interval worth going quiet for.
const minQuiet = time.Second

// quietState is what the arbiter hands the reader for a quiet spell.
type quietState struct {
	mu    sync.Mutex
	on    bool
	maxD  time.Duration // the longest the queue may wait
	beats map[int]*quietBeat
	// drains counts the reader's drains (for Stats).
	drains int
}

// quietBeat is a worker's heartbeat deadline as the reader keeps it.
type quietBeat struct {
	last    time.Time
	timeout time.Duration
}

// drain is the reader's run when the quiet timer fires: it reads the queue
// and keeps the heartbeats of the workers it knows to itself. It returns
// what the arbiter must see — every other message, plus a note of pid 0
// when a deadline passed or the queue was full — or nil, having set the
// timer to the next deadline.
func (q *quietState) drain(s *notifySocket, buf *notifyBuf) []note {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.on {
		return []note{{deadline: true}} // the arbiter's heartbeat clock
	}
	q.drains++
	batch := buf.drain(s.fd, 1<<20)
	var rest []note
	for _, m := range batch {
		if b := q.beats[m.pid]; b != nil && m.heartbeatOnly() {
			if m.at.After(b.last) {
				b.last = m.at
			}
			continue
		}
		rest = append(rest, m)
	}
	now := time.Now()
	next, due := now.Add(q.maxD), false
	for _, b := range q.beats {
		dl := b.last.Add(b.timeout)
		due = due || !dl.After(now)
		if dl.Before(next) {
			next = dl
		}
	}
	full := len(batch) >= s.qlen
	if due || full || len(rest) > 0 {
		return append(rest, note{queueFull: full}) // the arbiter ends the spell
	}
	s.setTimer(next.Sub(now))
	return nil
}

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
	if p.stopping || p.barriers || p.pending != nil || len(p.retiring) > 0 || g == nil || len(p.byPID) == 0 ||
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

// settle starts or ends a quiet spell as the pool's state asks, after
// every event the arbiter handles.
func (p *Pool) settle() {
	if len(p.held) > 0 {
		p.unhold()
	}
	d := p.quietInterval(p.now())
	switch {
	case d > 0 && p.ns.watched:
		p.enterQuiet(d)
	case d == 0 && !p.ns.watched:
		p.leaveQuiet()
	}
	if p.ns.watched && p.beatsDirty {
		p.armBeats()
	}
}

// beating reports whether w's heartbeats are watched.
func beating(w *worker) bool {
	cfg := w.gen.cfg
	return w.phase == phaseReady && cfg.Server.Timeout.Duration > 0 && cfg.Worker.Ready != config.ReadyStarted
}

// armBeats sets the heartbeat clock — the reader's timerfd, one for all
// workers rather than a runtime timer each, so that a quiet pool has no
// timer of the runtime's to wake it — to the earliest heartbeat deadline.
// It is lazy as deadlines go: heartbeats only move them later, and
// checkBeats sets the clock again when it fires.
func (p *Pool) armBeats() {
	p.beatsDirty = false
	var next time.Time
	for _, w := range p.byPID {
		if !beating(w) {
			continue
		}
		if dl := w.lastBeat.Add(w.gen.cfg.Server.Timeout.Duration); next.IsZero() || dl.Before(next) {
			next = dl
		}
	}
	p.beatsAt = next
	if next.IsZero() {
		p.ns.setTimer(0)
		return
	}
	p.ns.setTimer(max(time.Until(next), time.Nanosecond))
}

// armBeat brings the heartbeat clock forward to w's deadline when that
// comes first — all a worker that starts beating needs, without a look at
// the others (armBeats over every worker at each of 1,024 workers' READY=1
// was a tenth of the master's CPU at start). Elsewhere it leaves the clock
// to armBeats.
func (p *Pool) armBeat(w *worker) {
	if !beating(w) {
		return
	}
	if !p.ns.watched || p.beatsDirty {
		p.beatsDirty = true
		return
	}
	if dl := w.lastBeat.Add(w.gen.cfg.Server.Timeout.Duration); p.beatsAt.IsZero() || dl.Before(p.beatsAt) {
		p.beatsAt = dl
		p.ns.setTimer(max(time.Until(dl), time.Nanosecond))
	}
}

// checkBeats aborts the workers whose heartbeat deadline has passed, and
// has the clock set again.
func (p *Pool) checkBeats() {
	now := p.now()
	for _, w := range p.byPID {
		if beating(w) && !now.Before(w.lastBeat.Add(w.gen.cfg.Server.Timeout.Duration)) {
			p.abort(w, fmt.Sprintf("timeout (no heartbeat for %s)", w.gen.cfg.Server.Timeout))
		}
	}
	p.beatsDirty = true
}

// enterQuiet hands the workers' heartbeat deadlines to the reader and stops
// watching the socket.
func (p *Pool) enterQuiet(d time.Duration) {
	if err := p.ns.watch(false); err != nil {
		p.log.Warn("quiet mode", "err", err)
		return
	}
	p.beatsAt = time.Time{} // the clock is the reader's now
	q := &p.ns.quiet
	now := time.Now()
	next := now.Add(d)
	q.mu.Lock()
	q.on, q.maxD = true, d
	q.beats = make(map[int]*quietBeat, len(p.byPID))
	for pid, w := range p.byPID {
		b := &quietBeat{last: w.lastBeat, timeout: w.gen.cfg.Server.Timeout.Duration}
		q.beats[pid] = b
		if dl := b.last.Add(b.timeout); dl.Before(next) {
			next = dl
		}
	}
	q.mu.Unlock()
	p.ns.setTimer(max(next.Sub(now), time.Nanosecond))
	p.stats.Quiet++
}

// leaveQuiet ends a quiet spell: the arbiter takes back the heartbeats the
// reader noted and watches the socket again; a deadline that passed
// meanwhile fires at once.
func (p *Pool) leaveQuiet() {
	q := &p.ns.quiet
	q.mu.Lock()
	q.on = false
	for pid, b := range q.beats {
		if w := p.byPID[pid]; w != nil && b.last.After(w.lastBeat) {
			p.beat(w, b.last)
		}
	}
	q.beats = nil
	q.mu.Unlock()
	p.ns.setTimer(0)
	if err := p.ns.watch(true); err != nil {
		p.log.Error("quiet mode: cannot watch the notify socket again", "err", err)
	}
	// What is still queued comes through the reader; take it now, so that
	// a decision made next sees it.
	for _, n := range p.nbuf.drain(p.ns.fd, 1<<20) {
		p.handleNote(n)
	}
	p.checkBeats()
}
