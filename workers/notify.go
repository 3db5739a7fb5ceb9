package workers

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/forkd/forkd/hooks"
)

// note is one sd_notify datagram, parsed, with the sender's pid from
// SCM_CREDENTIALS.
type note struct {
	pid       int
	ready     bool
	watchdog  bool
	trigger   bool // WATCHDOG=trigger: the worker asks to be treated as hung
	stopping  bool
	hasStatus bool
	status    string
	// requests is FORKD_REQUESTS (the worker SDK's count of finished
	// requests); hasRequests says whether the message carried it.
	requests    uint64
	hasRequests bool
	// stats is FORKD_REQUEST_STATS, passed on as is ("" when absent).
	stats string
	// barrier is BARRIER=1: the sender waits, in sd_notify_barrier(3),
	// until the message is read (its fd was closed on reading).
	barrier bool
	// at is when the datagram arrived (the kernel's timestamp).
	at time.Time
	// Notes of pid 0 come from the reader itself: deadline says the
	// heartbeat clock fired; queueFull, that a quiet drain found the
	// socket's queue full.
	deadline, queueFull bool
}

// heartbeatOnly reports whether m is WATCHDOG=1 and nothing else.
func (m *note) heartbeatOnly() bool {
	return m.watchdog && !m.ready && !m.trigger && !m.stopping && !m.hasStatus && !m.hasRequests && m.stats == "" &&
		!m.barrier
}

// notifySocket is the pool's NOTIFY_SOCKET: a datagram socket in a private
// directory, with SO_PASSCRED so every message carries its sender's pid and
// SO_TIMESTAMPNS so it carries its arrival time.
//
// The socket is not in the Go runtime's poller, whose edge-triggered epoll
// would wake a thread for every datagram whether anyone reads or not. It is
// in an epoll set of forkd's own, together with a timerfd; that set is in
// the runtime's poller, where the reader goroutine waits. While the pool
// watches the socket, every datagram wakes the reader, which hands batches
// to the arbiter. While the pool is quiet (see quiet.go) the socket is out
// of the set: datagrams queue in the kernel, and only the timerfd wakes the
// reader, which drains the heartbeats itself, without the arbiter.
//
// The reader's and the quiet path's system calls are raw (non-blocking,
// without the runtime's syscall bookkeeping), so that an idle master does
// not wake the runtime's monitor thread either.
type notifySocket struct {
	fd    int      // the socket: non-blocking, close-on-exec
	ep    *os.File // the epoll set, in the runtime's poller
	epfd  int
	timer int // timerfd in ep: the quiet drain
	dir   string
	path  string
	// watched is whether fd is in ep; only the arbiter touches it.
	watched bool
	// qlen is net.unix.max_dgram_qlen: how many datagrams the socket
	// queues before senders block.
	qlen int
	// quiet is what the reader needs to drain heartbeats by itself.
	quiet quietState
	// stop ends the reader; closed is closed when it has returned.
	stop, closed chan struct{}
}

// listenNotify creates the notify socket in a new private directory under
// base ($RUNTIME_DIRECTORY or the temp dir when base is "").
func listenNotify(base string) (*notifySocket, error) {
	if base == "" {
		base = os.Getenv("RUNTIME_DIRECTORY")
		if i := bytes.IndexByte([]byte(base), ':'); i >= 0 {
			base = base[:i] // several runtime directories: use the first
		}
	}
	if base == "" {
		base = os.TempDir()
	}
	dir, err := os.MkdirTemp(base, "forkd-")
	if err != nil {
		return nil, fmt.Errorf("notify socket: %w", err)
	}
	path := filepath.Join(dir, "notify")
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err == nil {
		if err = unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
			unix.Close(fd)
		}
	}
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("notify socket: %w", err)
	}
	s, err := newNotifySocket(fd, dir, path)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return s, nil
}

// newNotifySocket sets up fd, a bound datagram socket, as the notify
// socket; on failure it closes fd.
func newNotifySocket(fd int, dir, path string) (*notifySocket, error) {
	s := &notifySocket{fd: fd, epfd: -1, timer: -1, dir: dir, path: path, qlen: maxDgramQlen(),
		stop: make(chan struct{}), closed: make(chan struct{})}
	fail := func(what string, err error) (*notifySocket, error) {
		for _, c := range []int{s.fd, s.epfd, s.timer} {
			if c >= 0 {
				unix.Close(c)
			}
		}
		return nil, fmt.Errorf("notify socket: %s: %w", what, err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		return fail("non-blocking", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PASSCRED, 1); err != nil {
		return fail("SO_PASSCRED", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1); err != nil {
		return fail("SO_TIMESTAMPNS", err)
	}
	// Room for a burst of READY=1 from many workers starting at once.
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 4<<20)
	var err error
	if s.epfd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		return fail("epoll", err)
	}
	if s.timer, err = unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_CLOEXEC|unix.TFD_NONBLOCK); err != nil {
		return fail("timerfd", err)
	}
	for _, f := range []int{s.timer, s.fd} {
		if err := unix.EpollCtl(s.epfd, unix.EPOLL_CTL_ADD, f, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(f)}); err != nil {
			return fail("epoll add", err)
		}
	}
	if err := unix.SetNonblock(s.epfd, true); err != nil {
		return fail("epoll", err)
	}
	s.watched = true
	s.ep = os.NewFile(uintptr(s.epfd), "notify-epoll")
	return s, nil
}

// maxDgramQlen reads net.unix.max_dgram_qlen (the kernel's default, 10,
// when it cannot; systemd as PID 1 raises it to 512).
func maxDgramQlen() int {
	b, err := os.ReadFile("/proc/sys/net/unix/max_dgram_qlen")
	if err == nil {
		if n, err := strconv.Atoi(string(bytes.TrimSpace(b))); err == nil && n > 0 {
			return n
		}
	}
	return 10
}

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

// watch adds the socket to the reader's epoll set (on) or takes it out.
func (s *notifySocket) watch(on bool) error {
	if on == s.watched {
		return nil
	}
	ev := unix.EpollEvent{Fd: int32(s.fd)}
	if on {
		ev.Events = unix.EPOLLIN
	}
	_, _, errno := unix.RawSyscall6(unix.SYS_EPOLL_CTL, uintptr(s.epfd), unix.EPOLL_CTL_MOD, uintptr(s.fd),
		uintptr(unsafe.Pointer(&ev)), 0, 0)
	if errno != 0 {
		return fmt.Errorf("notify socket: epoll: %w", errno)
	}
	s.watched = on
	return nil
}

// setTimer arms the timerfd to fire once after d (d ≤ 0: disarms it).
func (s *notifySocket) setTimer(d time.Duration) {
	var its unix.ItimerSpec
	if d > 0 {
		its.Value = unix.NsecToTimespec(int64(d))
	}
	unix.RawSyscall6(unix.SYS_TIMERFD_SETTIME, uintptr(s.timer), 0, uintptr(unsafe.Pointer(&its)), 0, 0, 0)
}

// close stops the reader, closes the socket and removes its directory.
func (s *notifySocket) close() {
	close(s.stop)
	s.ep.Close() // the reader's wait ends with an error
	<-s.closed
	unix.Close(s.fd)
	unix.Close(s.timer)
	os.RemoveAll(s.dir)
}

// maxBatch bounds how many messages one hand-over to the arbiter carries.
const maxBatch = 256

// read waits on the epoll set until close. While the socket is watched it
// delivers batches of parsed messages, reading every datagram already
// queued before handing them over, so that a burst (many workers starting,
// heartbeats from hundreds of workers) wakes the arbiter once, not once a
// message. When the quiet timer fires it drains the heartbeats itself (see
// quietState.drain) and wakes the arbiter only when there is more to do.
func (s *notifySocket) read(out chan<- []note, done <-chan struct{}) {
	defer close(s.closed)
	rc, err := s.ep.SyscallConn()
	if err != nil {
		return
	}
	var buf notifyBuf
	events := make([]unix.EpollEvent, 4)
	for {
		var readable, timer, broken bool
		rerr := rc.Read(func(ep uintptr) bool {
			n, _, errno := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, ep, uintptr(unsafe.Pointer(&events[0])),
				uintptr(len(events)), 0, 0, 0)
			switch {
			case errno == unix.EINTR || errno == unix.EAGAIN || errno == 0 && n == 0:
				return false // nothing ready: wait in the poller
			case errno != 0:
				broken = true
				return true
			}
			for _, ev := range events[:n] {
				switch int(ev.Fd) {
				case s.timer:
					var b [8]byte
					unix.RawSyscall(unix.SYS_READ, uintptr(s.timer), uintptr(unsafe.Pointer(&b[0])), 8)
					timer = true
				case s.fd:
					readable = true
				}
			}
			return true
		})
		if rerr != nil || broken {
			return // closed
		}
		var batch []note
		if timer {
			batch = s.quiet.drain(s, &buf)
		}
		if readable {
			batch = append(batch, buf.drain(s.fd, maxBatch)...)
		}
		if len(batch) == 0 {
			continue
		}
		select {
		case out <- batch:
		case <-done:
			return
		case <-s.stop:
			return
		}
	}
}

// notifyBuf is the buffers of one reader of the socket.
type notifyBuf struct {
	data, oob []byte
}

// drain reads up to max queued datagrams without blocking.
func (b *notifyBuf) drain(fd, max int) []note {
	if b.data == nil {
		b.data = make([]byte, 4096)
		b.oob = make([]byte, unix.CmsgSpace(unix.SizeofUcred)+unix.CmsgSpace(16)+unix.CmsgSpace(4*16))
	}
	var batch []note
	for len(batch) < max {
		n, oobn, errno := recvmsg(fd, b.data, b.oob)
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			break // EAGAIN: nothing more queued
		}
		pid, at := parseControl(b.oob[:oobn])
		if pid <= 0 {
			continue
		}
		m := parseNote(b.data[:n])
		m.pid, m.at = pid, at
		batch = append(batch, m)
	}
	return batch
}

// recvmsg is recvmsg(2) with MSG_DONTWAIT, as a raw system call.
func recvmsg(fd int, data, oob []byte) (n, oobn int, errno unix.Errno) {
	iov := unix.Iovec{Base: &data[0]}
	iov.SetLen(len(data))
	msg := unix.Msghdr{Iov: &iov, Iovlen: 1, Control: &oob[0]}
	msg.SetControllen(len(oob))
	r, _, errno := unix.RawSyscall(unix.SYS_RECVMSG, uintptr(fd), uintptr(unsafe.Pointer(&msg)),
		unix.MSG_DONTWAIT|unix.MSG_CMSG_CLOEXEC)
	if errno != 0 {
		return 0, 0, errno
	}
	return int(r), int(msg.Controllen), 0
}

// parseControl returns the pid from the SCM_CREDENTIALS control message
// and the arrival time from SCM_TIMESTAMPNS (now when there is none, on
// the monotonic clock either way), and closes any file descriptors a
// sender passed (FDSTORE=1 is not for us).
func parseControl(oob []byte) (pid int, at time.Time) {
	now := time.Now()
	at = now
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return 0, at
	}
	for i := range msgs {
		h := msgs[i].Header
		if h.Level == unix.SOL_SOCKET && h.Type == unix.SCM_TIMESTAMPNS && len(msgs[i].Data) >= 16 {
			ts := (*unix.Timespec)(unsafe.Pointer(&msgs[i].Data[0]))
			// A wall-clock stamp: keep its age, not its value, so that a
			// clock step cannot move a heartbeat.
			if age := now.Sub(time.Unix(ts.Unix())); age > 0 {
				at = now.Add(-age)
			}
			continue
		}
		if cred, err := unix.ParseUnixCredentials(&msgs[i]); err == nil {
			pid = int(cred.Pid)
			continue
		}
		if fds, err := unix.ParseUnixRights(&msgs[i]); err == nil {
			for _, fd := range fds {
				unix.Close(fd)
			}
		}
	}
	return pid, at
}

// parseNote parses newline-separated VAR=VALUE assignments (sd_notify(3)).
func parseNote(b []byte) note {
	var m note
	for len(b) > 0 {
		line := b
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		k, v, ok := bytes.Cut(line, []byte("="))
		if !ok {
			continue
		}
		switch string(k) {
		case "READY":
			m.ready = m.ready || string(v) == "1"
		case "WATCHDOG":
			switch string(v) {
			case "1":
				m.watchdog = true
			case "trigger":
				m.trigger = true
			}
		case "STOPPING":
			m.stopping = m.stopping || string(v) == "1"
		case "STATUS":
			m.hasStatus, m.status = true, string(v)
		case "FORKD_REQUESTS":
			if n, err := strconv.ParseUint(string(v), 10, 64); err == nil {
				m.requests, m.hasRequests = n, true
			}
		case "FORKD_REQUEST_STATS":
			m.stats = string(v)
		case "BARRIER":
			m.barrier = m.barrier || string(v) == "1"
		}
	}
	return m
}

// handleNote applies a worker's message.
func (p *Pool) handleNote(m note) {
	w, ok := p.byPID[m.pid]
	if !ok {
		p.stats.IgnoredNotify++
		p.log.Debug("ignored notify message from a process that is not a worker", "pid", m.pid)
		return
	}
	if m.hasStatus {
		w.status = m.status
	}
	if m.stopping && w.reason == "" {
		w.reason = "worker stopping by itself"
	}
	if m.trigger && w.phase != phaseStopping {
		p.abort(w, "worker sent WATCHDOG=trigger")
		return
	}
	if m.ready && w.phase == phaseStarting {
		p.markReady(w)
	}
	if m.stats != "" && p.opts.RequestStats != nil {
		p.opts.RequestStats(w.gen.id, w.id, w.pid, m.stats)
	}
	if m.hasRequests {
		p.countRequests(w, m.requests)
	}
	if m.watchdog && w.phase == phaseReady {
		// No timer work per heartbeat: the deadline, when it fires,
		// re-arms itself from the last heartbeat (see handleTimer).
		p.beat(w, m.at)
	}
	if m.hasStatus || m.stopping || m.hasRequests || m.stats != "" || m.trigger {
		p.chatter = m.at
	}
	if m.barrier && !p.barriers {
		// A quiet pool reads a barrier only at its next drain, later than
		// sd_notify_barrier waits (systemd-notify(1) gives up after 5 s):
		// a pool whose workers use barriers stays watched.
		p.barriers = true
		p.log.Debug("a worker uses sd_notify barriers: the notify socket stays watched", "pid", m.pid)
	}
}

// markReady records that w serves, arms its heartbeat deadline and
// advances the generation when it is complete.
func (p *Pool) markReady(w *worker) {
	g := w.gen
	w.phase = phaseReady
	w.readyAt = p.now()
	w.lastBeat = w.readyAt
	p.disarm(w)
	p.armBeat(w) // its heartbeat deadline counts from now
	p.log.Debug("worker ready", "worker_id", w.id, "pid", w.pid, "generation", g.id,
		"boot", w.readyAt.Sub(w.started).Round(10*time.Microsecond))
	p.emit(hooks.Event{Hook: hooks.PostWorkerInit, Generation: g.id, WorkerID: w.id, PID: w.pid})
	p.handOver(w)
	p.armRecycling(w)
	p.generationProgress(g)
	p.observe()
}
