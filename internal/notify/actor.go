package notify

import (
	"os"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// QuietAfter is how long after a message other than a heartbeat (or a
// full queue) the socket stays watched before it may go quiet.
const QuietAfter = 5 * time.Second

// minQuiet is the shortest drain interval worth going quiet for.
const minQuiet = time.Second

// actor is the state of Run's goroutine; nothing else touches it.
type actor struct {
	s    *Socket
	buf  recvBuf
	pids map[int]*watched
	// allow is each consumer's AllowQuiet; pending, what waits for delivery
	// to it, and order the consumers with something pending, oldest first.
	allow   map[*Consumer]bool
	pending map[*Consumer]*Batch
	order   []*Consumer
	// inSet says the socket is in the epoll set; quiet, that the socket is
	// left unwatched to be drained every drainEvery; suspended, that
	// Suspend holds it.
	inSet, quiet, suspended bool
	drainEvery              time.Duration
	// armed is when the timerfd fires (zero: disarmed).
	armed time.Time
	// chatter is when the last message other than a heartbeat arrived or
	// the queue was found full; barriers, that a sender used BARRIER=1.
	chatter  time.Time
	barriers bool
	stats    Stats
}

// watched is a pid a consumer watches.
type watched struct {
	c       *Consumer
	timeout time.Duration // 0: heartbeats not timed
	// last is its latest sign of life, every the interval between the last
	// two (0 until known).
	last  time.Time
	every time.Duration
}

// deadline is when w misses its heartbeat (zero: not timed).
func (w *watched) deadline() time.Time {
	if w.timeout <= 0 {
		return time.Time{}
	}
	return w.last.Add(w.timeout)
}

// lifeSign records a sign of life of w at at (a heartbeat, or a Watch's
// Since) and the interval since the one before.
func (w *watched) lifeSign(at time.Time) {
	if !at.After(w.last) {
		return
	}
	if !w.last.IsZero() {
		w.every = at.Sub(w.last)
	}
	w.last = at
}

// takeCommands handles every queued command.
func (a *actor) takeCommands() {
	for {
		select {
		case cmd := <-a.s.cmds:
			a.handle(cmd)
		default:
			return
		}
	}
}

// handle applies one command.
func (a *actor) handle(cmd command) {
	switch {
	case cmd.watch != nil:
		for _, w := range cmd.watch {
			p := a.pids[w.PID]
			if p == nil {
				p = &watched{last: w.Since}
				a.pids[w.PID] = p
			} else {
				p.lifeSign(w.Since)
			}
			p.c, p.timeout = cmd.c, w.Timeout
			if dl := p.deadline(); !dl.IsZero() && !a.suspended && (a.armed.IsZero() || dl.Before(a.armed)) {
				a.arm(dl)
			}
		}
	case cmd.quiet != nil:
		a.allow[cmd.c] = *cmd.quiet
	case cmd.reply != nil:
		a.drain()
		delete(a.pids, cmd.forget)
		cmd.reply <- a.take(cmd.c)
	case cmd.suspend != nil:
		a.drain()
		a.suspended = true
		a.setWatched(false)
		a.arm(time.Time{})
		_, _ = unix.FcntlInt(uintptr(a.s.fd), unix.F_SETFD, 0)
		cmd.suspend <- Suspended{FD: a.s.fd, Pending: a.take(cmd.c)}
	case cmd.resume:
		unix.CloseOnExec(a.s.fd)
		a.suspended = false
		a.rearm(time.Now())
	case cmd.stats != nil:
		cmd.stats <- a.stats
	case cmd.beats != nil:
		if !a.suspended {
			a.drain()
		}
		m := make(map[int]time.Time, len(a.pids))
		for pid, w := range a.pids {
			m[pid] = w.last
		}
		cmd.beats <- m
	}
}

// take removes and returns what waits for c.
func (a *actor) take(c *Consumer) Batch {
	b := a.pending[c]
	if b == nil {
		return Batch{}
	}
	delete(a.pending, c)
	return *b
}

// nextPending returns the consumer whose batch waits longest, or nil.
func (a *actor) nextPending() *Consumer {
	for len(a.order) > 0 {
		c := a.order[0]
		if a.pending[c] != nil {
			return c
		}
		a.order = a.order[1:]
	}
	return nil
}

// batch is the batch waiting for c, started when there is none.
func (a *actor) batch(c *Consumer) *Batch {
	b := a.pending[c]
	if b == nil {
		b = &Batch{}
		a.pending[c] = b
		a.order = append(a.order, c)
	}
	return b
}

// route takes a heartbeat of a watched pid for itself and queues anything
// else for the consumer it is for.
func (a *actor) route(n Note) {
	w := a.pids[n.PID]
	if w != nil && n.Watchdog {
		w.lifeSign(n.At)
	}
	if n.chatty() {
		a.chatter = n.At
	}
	if n.Barrier {
		a.barriers = true
	}
	if w != nil && n.HeartbeatOnly() {
		return
	}
	c := a.s.fallback
	if w != nil {
		c = w.c
	}
	b := a.batch(c)
	b.Notes = append(b.Notes, n)
}

// read reads up to max queued datagrams.
func (a *actor) read(max int) int { return a.buf.read(a.s.fd, max, a.route) }

// drain reads every queued datagram.
func (a *actor) drain() int { return a.read(1 << 20) }

// tick is the timerfd firing: the queue is drained (a quiet drain, or
// heartbeats read before any deadline is judged), the pids past their
// deadline are reported, and the timer is set again.
func (a *actor) tick(now time.Time) {
	a.armed = time.Time{}
	if a.suspended {
		return
	}
	n := a.drain()
	if a.quiet {
		a.stats.Drains++
		if n >= a.s.qlen {
			a.chatter = now // senders may have waited: watch for a while
		}
	}
	for pid, w := range a.pids {
		if dl := w.deadline(); !dl.IsZero() && !now.Before(dl) {
			w.timeout = 0
			b := a.batch(w.c)
			b.Missed = append(b.Missed, pid)
		}
	}
	a.rearm(now)
}

// rearm sets the timer to the earliest deadline, or the next drain when
// sooner.
func (a *actor) rearm(now time.Time) {
	if a.suspended {
		a.arm(time.Time{})
		return
	}
	var next time.Time
	if a.quiet {
		next = now.Add(a.drainEvery)
	}
	for _, w := range a.pids {
		if dl := w.deadline(); !dl.IsZero() && (next.IsZero() || dl.Before(next)) {
			next = dl
		}
	}
	a.arm(next)
}

// arm sets the timerfd to fire at t (zero: disarms it).
func (a *actor) arm(t time.Time) {
	a.armed = t
	var its unix.ItimerSpec
	if !t.IsZero() {
		its.Value = unix.NsecToTimespec(int64(max(time.Until(t), time.Nanosecond)))
	}
	unix.RawSyscall6(unix.SYS_TIMERFD_SETTIME, uintptr(a.s.timer), 0, uintptr(unsafe.Pointer(&its)), 0, 0, 0)
}

// settle starts or ends a quiet spell as the socket's state asks, after
// every event Run handles.
func (a *actor) settle(now time.Time) {
	d := a.quietInterval(now)
	switch {
	case d > 0 && !a.quiet:
		a.quiet, a.drainEvery = true, d
		a.stats.Quiet++
		if next := now.Add(d); a.armed.IsZero() || next.Before(a.armed) {
			a.arm(next)
		}
	case d > 0:
		a.drainEvery = d
	default:
		a.quiet = false
	}
	a.setWatched(!a.quiet && !a.suspended)
}

// quietInterval says how long the socket may go unread now: 0 when it must
// be watched.
func (a *actor) quietInterval(now time.Time) time.Duration {
	if a.suspended || a.barriers || now.Sub(a.chatter) < QuietAfter || len(a.allow) == 0 || len(a.pids) == 0 {
		return 0
	}
	for _, ok := range a.allow {
		if !ok {
			return 0
		}
	}
	rate := 0.0 // heartbeats per second, all pids
	for _, w := range a.pids {
		if w.timeout <= 0 {
			continue
		}
		if w.every <= 0 {
			return 0 // its rate is not known yet
		}
		rate += 1 / w.every.Seconds()
	}
	// Each pid may have sent one more than its rate says by the drain, and
	// one slot stays free.
	room := float64(a.s.qlen - 1 - len(a.pids))
	if rate == 0 || room <= 0 {
		return 0
	}
	d := time.Duration(room / rate * float64(time.Second))
	if d < minQuiet {
		return 0
	}
	return d
}

// setWatched adds the socket to the epoll set (on) or takes it out.
func (a *actor) setWatched(on bool) {
	if on == a.inSet {
		return
	}
	ev := unix.EpollEvent{Fd: int32(a.s.fd)}
	if on {
		ev.Events = unix.EPOLLIN
	}
	_, _, errno := unix.RawSyscall6(unix.SYS_EPOLL_CTL, uintptr(a.s.epfd), unix.EPOLL_CTL_MOD, uintptr(a.s.fd),
		uintptr(unsafe.Pointer(&ev)), 0, 0)
	if errno == 0 {
		a.inSet = on
	}
}

// close closes the socket and its fds and removes its directory.
func (a *actor) close() {
	close(a.s.done)
	a.s.ep.Close()
	a.s.wake.Close()
	unix.Close(a.s.timer)
	unix.Close(a.s.fd)
	os.RemoveAll(a.s.dir)
}
