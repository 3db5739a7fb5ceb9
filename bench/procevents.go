package bench

import (
	bin "encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// The kernel's process events connector (linux/cn_proc.h): a netlink
// multicast of every fork, exec and exit on the machine, each stamped with
// the kernel's CLOCK_MONOTONIC. It times the moments no probe inside the
// worker can see: when the replacement process exists, and when it has
// exec'd its command.
const (
	cnIdxProc         = 1 // CN_IDX_PROC
	cnValProc         = 1 // CN_VAL_PROC
	procCnMcastListen = 1 // PROC_CN_MCAST_LISTEN

	procEventFork = 0x00000001
	procEventExec = 0x00000002
	procEventExit = 0x80000000

	nlmsgLen = 16 // struct nlmsghdr
	cnMsgLen = 20 // struct cn_msg
)

// ProcKind is the kind of a ProcEvent.
type ProcKind int

// The process events ProcWatch records.
const (
	ProcFork   ProcKind = iota + 1 // a new process (not a thread)
	ProcExec                       // a process exec'd a program
	ProcExit                       // a thread of a process ended (the process ends with its last)
	ProcThread                     // a process started a thread
)

// ProcEvent is one process event from the kernel.
type ProcEvent struct {
	// Kind is what happened: a fork, an exec, a thread's exit or a new
	// thread.
	Kind ProcKind
	// PID is the process the event is about: the new child of a fork,
	// the process that started a thread.
	PID int
	// Parent is a fork's parent process; 0 for the other kinds.
	Parent int
	// At is the kernel's CLOCK_MONOTONIC timestamp (see Monotonic).
	At time.Duration
}

// ProcWatch records the machine's process forks, execs, exits and new
// threads from the proc connector. It needs CAP_NET_ADMIN and the initial
// network namespace; WatchProcs says so otherwise.
//
// Nothing reads the socket in the background: the kernel queues the events
// (4 MiB, some thousands) and Events and Wait read them when asked, so
// that a run being measured shares the CPUs with no reader of ours woken
// by each of its forks, execs and exits.
type ProcWatch struct {
	fd     int
	mu     sync.Mutex
	buf    []byte
	events []ProcEvent
	lost   bool
}

// Monotonic is the current CLOCK_MONOTONIC reading, the clock of
// ProcEvent.At.
func Monotonic() time.Duration {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return time.Duration(ts.Nano())
}

// WatchProcs subscribes to the proc connector and records its events until
// Close. They come in the order the kernel emitted them.
func WatchProcs() (*ProcWatch, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_CONNECTOR)
	if err != nil {
		return nil, fmt.Errorf("proc connector: socket: %w", err)
	}
	fail := func(what string, err error) (*ProcWatch, error) {
		unix.Close(fd)
		return nil, fmt.Errorf("proc connector: %s: %w (needs root in the initial network namespace)", what, err)
	}
	// Room for the events between two reads: FORCE, as root may, past
	// net.core.rmem_max.
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 4<<20) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 4<<20)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: cnIdxProc}); err != nil {
		return fail("bind", err)
	}
	msg := make([]byte, nlmsgLen+cnMsgLen+4)
	le := bin.NativeEndian
	le.PutUint32(msg[0:], uint32(len(msg)))
	le.PutUint16(msg[4:], unix.NLMSG_DONE)
	le.PutUint32(msg[12:], uint32(os.Getpid()))
	le.PutUint32(msg[16:], cnIdxProc)
	le.PutUint32(msg[20:], cnValProc)
	le.PutUint16(msg[32:], 4)
	le.PutUint32(msg[36:], procCnMcastListen)
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fail("listen", err)
	}
	return &ProcWatch{fd: fd, buf: make([]byte, 64<<10)}, nil
}

// drain records the events the kernel has queued; w.mu is held.
func (w *ProcWatch) drain() {
	for {
		n, _, err := unix.Recvfrom(w.fd, w.buf, unix.MSG_DONTWAIT)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.ENOBUFS):
			w.lost = true // the queue overflowed: some events are gone
			continue
		case err != nil || n == 0:
			return // EAGAIN: nothing more queued
		}
		w.parse(w.buf[:n])
	}
}

// parse records the events in one netlink datagram; w.mu is held.
func (w *ProcWatch) parse(b []byte) {
	le := bin.NativeEndian
	for len(b) >= nlmsgLen {
		l := int(le.Uint32(b))
		if l < nlmsgLen || l > len(b) {
			return
		}
		m := b[nlmsgLen:l]
		b = b[(l+3)&^3:]
		// struct proc_event: what, cpu, timestamp_ns, then the event's
		// pids: fork (parent pid, parent tgid, child pid, child tgid),
		// exec and exit (pid, tgid, …). PID is always the process (tgid).
		if len(m) < cnMsgLen+32 {
			continue
		}
		ev := m[cnMsgLen:]
		at := time.Duration(le.Uint64(ev[8:]))
		d := ev[16:]
		var e ProcEvent
		switch le.Uint32(ev) {
		case procEventFork:
			e = ProcEvent{Kind: ProcFork, PID: int(le.Uint32(d[12:])), Parent: int(le.Uint32(d[4:])), At: at}
			if le.Uint32(d[8:]) != le.Uint32(d[12:]) {
				e = ProcEvent{Kind: ProcThread, PID: int(le.Uint32(d[12:])), At: at}
			}
		case procEventExec:
			e = ProcEvent{Kind: ProcExec, PID: int(le.Uint32(d[4:])), At: at}
		case procEventExit:
			// Every thread's exit: the process is gone with its last one.
			e = ProcEvent{Kind: ProcExit, PID: int(le.Uint32(d[4:])), At: at}
		default:
			continue
		}
		w.events = append(w.events, e)
	}
}

// Events returns the events recorded so far, oldest first, and whether
// some were lost (the socket's queue overflowed).
func (w *ProcWatch) Events() ([]ProcEvent, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.drain()
	return append([]ProcEvent(nil), w.events...), w.lost
}

// Drain records the events the kernel has queued without returning them,
// and reports whether some were lost: called now and then during a long
// run, it keeps the kernel's queue from overflowing.
func (w *ProcWatch) Drain() (lost bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.drain()
	return w.lost
}

// Wait blocks until ok, called with every event so far (at first, then
// each time more arrive), reports true, or until timeout, and returns the
// events. It fails when events were lost.
func (w *ProcWatch) Wait(timeout time.Duration, what string, ok func([]ProcEvent) bool) ([]ProcEvent, error) {
	deadline := time.Now().Add(timeout)
	for {
		evs, lost := w.Events()
		if ok(evs) {
			return evs, nil
		}
		if lost {
			return evs, fmt.Errorf("proc connector: events lost while waiting for %s", what)
		}
		left := time.Until(deadline)
		if left <= 0 {
			return evs, fmt.Errorf("proc connector: wait %v for %s: %w", timeout, what, ErrTimeout)
		}
		// Until more events are queued (or the time is up).
		pfd := []unix.PollFd{{Fd: int32(w.fd), Events: unix.POLLIN}}
		if _, err := unix.Poll(pfd, int(left/time.Millisecond)+1); err != nil && !errors.Is(err, unix.EINTR) {
			return evs, fmt.Errorf("proc connector: poll: %w", err)
		}
	}
}

// Close stops recording.
func (w *ProcWatch) Close() {
	unix.Close(w.fd)
}
