package bench

import (
	bin "encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
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
// threads from the
// proc connector. It needs CAP_NET_ADMIN and the initial network namespace;
// WatchProcs says so otherwise.
type ProcWatch struct {
	f       *os.File // the netlink socket, in the runtime's poller
	mu      sync.Mutex
	events  []ProcEvent
	lost    bool
	changed chan struct{} // closed and replaced on every datagram
	done    chan struct{}
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
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_CONNECTOR)
	if err != nil {
		return nil, fmt.Errorf("proc connector: socket: %w", err)
	}
	fail := func(what string, err error) (*ProcWatch, error) {
		unix.Close(fd)
		return nil, fmt.Errorf("proc connector: %s: %w (needs root in the initial network namespace)", what, err)
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 4<<20)
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
	if err := unix.SetNonblock(fd, true); err != nil {
		return fail("non-blocking", err)
	}
	w := &ProcWatch{f: os.NewFile(uintptr(fd), "proc-connector"), changed: make(chan struct{}), done: make(chan struct{})}
	rc, err := w.f.SyscallConn()
	if err != nil {
		w.f.Close()
		return nil, fmt.Errorf("proc connector: %w", err)
	}
	go w.read(rc)
	return w, nil
}

// read records events until the socket is closed.
func (w *ProcWatch) read(rc syscall.RawConn) {
	defer close(w.done)
	buf := make([]byte, 64<<10)
	for {
		var n int
		var rerr error
		err := rc.Read(func(fd uintptr) bool {
			n, _, rerr = unix.Recvfrom(int(fd), buf, 0)
			return !errors.Is(rerr, unix.EAGAIN)
		})
		switch {
		case err != nil:
			return // closed
		case errors.Is(rerr, unix.EINTR):
			continue
		case errors.Is(rerr, unix.ENOBUFS):
			w.mu.Lock()
			w.lost = true
			w.mu.Unlock()
			continue
		case rerr != nil:
			return
		}
		w.parse(buf[:n])
		w.mu.Lock()
		close(w.changed)
		w.changed = make(chan struct{})
		w.mu.Unlock()
	}
}

// parse records the events in one netlink datagram.
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
		w.mu.Lock()
		w.events = append(w.events, e)
		w.mu.Unlock()
	}
}

// Events returns the events recorded so far, oldest first, and whether
// some were lost (the socket's queue overflowed).
func (w *ProcWatch) Events() ([]ProcEvent, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]ProcEvent(nil), w.events...), w.lost
}

// Wait blocks until ok, called with every event so far each time a
// datagram arrives (and once at first), reports true, or until timeout, and
// returns the events. It fails when events were lost.
func (w *ProcWatch) Wait(timeout time.Duration, what string, ok func([]ProcEvent) bool) ([]ProcEvent, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		w.mu.Lock()
		evs, lost, changed := append([]ProcEvent(nil), w.events...), w.lost, w.changed
		w.mu.Unlock()
		if ok(evs) {
			return evs, nil
		}
		if lost {
			return evs, fmt.Errorf("proc connector: events lost while waiting for %s", what)
		}
		select {
		case <-changed:
		case <-deadline.C:
			return evs, fmt.Errorf("proc connector: wait %v for %s: %w", timeout, what, ErrTimeout)
		}
	}
}

// Close stops recording.
func (w *ProcWatch) Close() {
	w.f.Close()
	<-w.done
}
