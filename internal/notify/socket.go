package notify

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ErrClosed is returned by a Consumer's requests once the socket's Run has
// returned.
var ErrClosed = errors.New("notify: socket closed")

// Socket is a NOTIFY_SOCKET: a datagram socket in a private directory, with
// SO_PASSCRED so that every message carries its sender's pid and
// SO_TIMESTAMPNS so that it carries its arrival time. Its methods other
// than Run only read what New set or send messages to Run's goroutine.
type Socket struct {
	fd    int      // the socket: non-blocking, close-on-exec
	ep    *os.File // an epoll set of the socket, timer and wake, in the Go poller
	epfd  int
	timer int      // timerfd in ep: the heartbeat and drain clock
	wake  *os.File // eventfd in ep: a command is queued
	dir   string
	path  string
	qlen  int
	cmds  chan command
	// fallback gets what pids nobody watches send.
	fallback *Consumer
	// done is closed when Run has returned.
	done chan struct{}
}

// Listen creates a notify socket in a new private directory under base
// ($RUNTIME_DIRECTORY's first entry, or the temp dir, when base is "").
func Listen(base string) (*Socket, error) {
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
	s, err := newSocket(fd, dir, path)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return s, nil
}

// Adopt takes over fd, the notify socket an upgrading master handed over
// (see Consumer.Suspend), bound at path in dir.
func Adopt(fd int, dir, path string) (*Socket, error) {
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC); err != nil {
		return nil, fmt.Errorf("notify socket fd %d: %w", fd, err)
	}
	if t, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE); err != nil || t != unix.SOCK_DGRAM {
		return nil, fmt.Errorf("notify socket: fd %d is not a datagram socket", fd)
	}
	return newSocket(fd, dir, path)
}

// newSocket sets up fd, a bound datagram socket, as the notify socket; on
// failure it closes fd.
func newSocket(fd int, dir, path string) (*Socket, error) {
	s := &Socket{fd: fd, epfd: -1, timer: -1, dir: dir, path: path, qlen: MaxDgramQlen(),
		cmds: make(chan command, 64), done: make(chan struct{})}
	wake := -1
	fail := func(what string, err error) (*Socket, error) {
		for _, c := range []int{s.fd, s.epfd, s.timer, wake} {
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
	if wake, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
		return fail("eventfd", err)
	}
	for _, f := range []int{s.timer, s.fd, wake} {
		if err := unix.EpollCtl(s.epfd, unix.EPOLL_CTL_ADD, f, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(f)}); err != nil {
			return fail("epoll add", err)
		}
	}
	if err := unix.SetNonblock(s.epfd, true); err != nil {
		return fail("epoll", err)
	}
	s.ep = os.NewFile(uintptr(s.epfd), "notify-epoll")
	s.wake = os.NewFile(uintptr(wake), "notify-wake")
	s.fallback = &Consumer{s: s, notes: make(chan Batch, 64)}
	return s, nil
}

// Path is the socket's address, for NOTIFY_SOCKET.
func (s *Socket) Path() string { return s.path }

// Dir is the private directory that holds the socket.
func (s *Socket) Dir() string { return s.dir }

// QueueLen is net.unix.max_dgram_qlen as the socket was created with: how
// many datagrams it queues before senders block.
func (s *Socket) QueueLen() int { return s.qlen }

// Fallback returns the consumer that, besides the pids it watches, gets
// what every pid no consumer watches sends (forkd's pool: its starting
// workers, and strangers it counts and ignores).
func (s *Socket) Fallback() *Consumer { return s.fallback }

// NewConsumer returns another consumer of s: it gets what the pids it
// watches send, from the moment the socket handles its Watch.
func (s *Socket) NewConsumer() *Consumer { return &Consumer{s: s, notes: make(chan Batch, 64)} }

// MaxDgramQlen reads net.unix.max_dgram_qlen (the kernel's default, 10,
// when it cannot; systemd as PID 1 raises it to 512).
func MaxDgramQlen() int {
	b, err := os.ReadFile("/proc/sys/net/unix/max_dgram_qlen")
	if err == nil {
		if n, err := strconv.Atoi(string(bytes.TrimSpace(b))); err == nil && n > 0 {
			return n
		}
	}
	return 10
}

// Stats are the socket's counters.
type Stats struct {
	// Quiet counts the times the socket went quiet; Drains, the drains of
	// its queue while quiet.
	Quiet, Drains int
}

// Stats returns the socket's counters.
func (s *Socket) Stats(ctx context.Context) (Stats, error) {
	reply := make(chan Stats, 1)
	if err := s.send(ctx, command{stats: reply}); err != nil {
		return Stats{}, err
	}
	return receive(ctx, s, reply)
}

// LastBeats returns, for every watched pid, its latest sign of life: its
// latest heartbeat, or what its Watch gave as Since when that is later.
// The datagrams queued so far are read first.
func (s *Socket) LastBeats(ctx context.Context) (map[int]time.Time, error) {
	reply := make(chan map[int]time.Time, 1)
	if err := s.send(ctx, command{beats: reply}); err != nil {
		return nil, err
	}
	return receive(ctx, s, reply)
}

// send queues cmd for Run and wakes it.
func (s *Socket) send(ctx context.Context, cmd command) error {
	select {
	case s.cmds <- cmd:
	case <-s.done:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	var one [8]byte
	one[0] = 1 // any count above 0 wakes Run
	_, _ = s.wake.Write(one[:])
	return nil
}

// receive waits for a request's reply.
func receive[T any](ctx context.Context, s *Socket, reply <-chan T) (T, error) {
	select {
	case v := <-reply:
		return v, nil
	case <-s.done:
		select {
		case v := <-reply:
			return v, nil
		default:
		}
		var zero T
		return zero, ErrClosed
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
}

// Batch is what the socket hands a consumer at once.
type Batch struct {
	// Notes are the messages of the consumer's pids (and, for the fallback,
	// of pids nobody watches), in arrival order, less the heartbeats the
	// socket took (WATCHDOG=1 and nothing else, from watched pids).
	Notes []Note
	// Missed are watched pids whose heartbeat deadline passed; the socket
	// stops timing each one it reports until it is watched again.
	Missed []int
}

// Watch is a pid a consumer hands the socket.
type Watch struct {
	PID int
	// Timeout is the pid's heartbeat timeout: the longest it may go
	// without WATCHDOG=1 before it is reported in Batch.Missed (0: its
	// heartbeats are not timed).
	Timeout time.Duration
	// Since is the pid's latest sign of life known to the consumer (its
	// READY=1, its adoption, a heartbeat that reached the consumer): its
	// deadline counts from the latest of this and its heartbeats. Zero
	// leaves it as it was.
	Since time.Time
}

// Consumer is one user of the socket. Its methods may be called from any
// goroutine (in practice its owner's); each is a message to the socket's
// goroutine, handled in the order sent.
type Consumer struct {
	s     *Socket
	notes chan Batch
}

// Notes delivers what the consumer's pids send. The consumer must receive
// promptly: while a batch waits, the socket reads nothing more.
func (c *Consumer) Notes() <-chan Batch { return c.notes }

// Watch makes the pids of ws the consumer's, with their heartbeat
// timeouts, or updates them (a new timeout, a later sign of life). It
// returns ErrClosed once Run has returned.
func (c *Consumer) Watch(ws ...Watch) error {
	return c.s.send(context.Background(), command{c: c, watch: append([]Watch(nil), ws...)})
}

// AllowQuiet says whether the consumer lets the socket go quiet (see the
// package doc). The socket goes quiet only while every consumer that ever
// said so allows it; until a consumer says, it does not count.
func (c *Consumer) AllowQuiet(ok bool) error {
	q := ok
	return c.s.send(context.Background(), command{c: c, quiet: &q})
}

// Forget drains the socket, stops watching pid and returns what the
// consumer's pids sent that it has not received yet: with the batches
// already waiting on Notes, which are older and which the caller takes
// first, that is everything pid sent before Forget. A consumer calls it
// when pid has exited, before it acts on the exit.
func (c *Consumer) Forget(ctx context.Context, pid int) (Batch, error) {
	reply := make(chan Batch, 1)
	if err := c.s.send(ctx, command{c: c, forget: pid, reply: reply}); err != nil {
		return Batch{}, err
	}
	return receive(ctx, c.s, reply)
}

// Suspended is the socket as Suspend leaves it.
type Suspended struct {
	// FD is the socket, which a process started by execve now inherits.
	FD int
	// Pending is what the consumer's pids sent that it has not received
	// yet (see Forget).
	Pending Batch
}

// Suspend readies the socket for an upgrade: it drains it, stops reading it
// and timing heartbeats, makes its fd inheritable and returns it with what
// the consumer has pending. What is sent afterwards stays queued in the
// kernel for whoever reads it next. Resume undoes it.
func (c *Consumer) Suspend(ctx context.Context) (Suspended, error) {
	reply := make(chan Suspended, 1)
	if err := c.s.send(ctx, command{c: c, suspend: reply}); err != nil {
		return Suspended{}, err
	}
	return receive(ctx, c.s, reply)
}

// Resume ends a Suspend: the fd is close-on-exec again and the socket
// is read and heartbeats timed as before.
func (c *Consumer) Resume() error {
	return c.s.send(context.Background(), command{c: c, resume: true})
}

// command is a message to Run's goroutine; one of its fields says what.
type command struct {
	c       *Consumer
	watch   []Watch
	quiet   *bool
	forget  int
	reply   chan<- Batch // with forget
	suspend chan<- Suspended
	resume  bool
	stats   chan<- Stats
	beats   chan<- map[int]time.Time
}

// Run reads the socket and keeps the heartbeat deadlines until ctx is
// cancelled (which is not an error); then it closes the socket and
// removes its directory. It returns an error when the epoll set fails.
func (s *Socket) Run(ctx context.Context) error {
	a := &actor{s: s, pids: map[int]*watched{}, allow: map[*Consumer]bool{},
		pending: map[*Consumer]*Batch{}, inSet: true}
	defer a.close()
	stop := context.AfterFunc(ctx, func() { _ = s.send(context.Background(), command{}) })
	defer stop()
	rc, err := s.ep.SyscallConn()
	if err != nil {
		return fmt.Errorf("notify socket: %w", err)
	}
	events := make([]unix.EpollEvent, 4)
	for {
		a.takeCommands()
		if ctx.Err() != nil {
			return nil
		}
		a.settle(time.Now())
		if c := a.nextPending(); c != nil {
			// Deliver, still taking commands (a Forget takes the batch).
			select {
			case c.notes <- *a.pending[c]:
				delete(a.pending, c)
			case cmd := <-s.cmds:
				a.handle(cmd)
			case <-ctx.Done():
				return nil
			}
			continue
		}
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
				var b [8]byte
				switch int(ev.Fd) {
				case s.timer:
					unix.RawSyscall(unix.SYS_READ, uintptr(s.timer), uintptr(unsafe.Pointer(&b[0])), 8)
					timer = true
				case s.fd:
					readable = true
				default: // the eventfd: commands are queued
					unix.RawSyscall(unix.SYS_READ, uintptr(ev.Fd), uintptr(unsafe.Pointer(&b[0])), 8)
				}
			}
			return true
		})
		if rerr != nil || broken {
			return fmt.Errorf("notify socket: epoll wait failed: %v", rerr)
		}
		// Commands sent before the wake-up count before what is read now: a
		// Watch sent before its pid's message is applied first.
		a.takeCommands()
		if timer {
			a.tick(time.Now())
		} else if readable {
			a.read(maxBatch)
		}
	}
}

// maxBatch bounds how many datagrams one read of a watched socket takes.
const maxBatch = 256
