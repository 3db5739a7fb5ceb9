package etcd

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/forkd/forkd/cluster"
	"github.com/forkd/forkd/config"
)

// Main is forkd-cluster's main: it serves the master on fd 3 (see
// Serve) and returns the exit code. SIGINT and SIGTERM are ignored: the
// sidecar ends when the master closes its socket, after the master has
// stopped the cluster singletons.
func Main() int {
	signal.Ignore(syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGPIPE)
	conn := os.NewFile(3, "forkd")
	if conn == nil {
		fmt.Fprintln(os.Stderr, "forkd-cluster: no socket on fd 3: forkd starts this program, not a user")
		return 2
	}
	if err := Serve(conn); err != nil {
		fmt.Fprintln(os.Stderr, "forkd-cluster:", err)
		return 1
	}
	return 0
}

// Serve runs the master's Requests arriving on conn against etcd,
// answering with cluster.Messages, until conn reaches end of file (the
// master is gone): then it gives up the leaderships, revokes the lease
// and returns nil. The first request must be a hello. A master that
// ends without saying "stop" died: the lease is revoked once it and the
// singleton processes it named ("running") have exited, lease_ttl at
// most after the end of file.
func Serve(conn io.ReadWriteCloser) error {
	defer conn.Close()
	in := bufio.NewScanner(conn)
	in.Buffer(make([]byte, 64<<10), 4<<20)
	var hello cluster.Request
	if !in.Scan() {
		return errors.New("the master closed the socket before saying hello")
	}
	if err := json.Unmarshal(in.Bytes(), &hello); err != nil || hello.Op != cluster.OpHello || hello.Hello == nil {
		return fmt.Errorf("the master's first line is not a hello: %q", in.Bytes())
	}
	h := hello.Hello
	out := &writer{enc: json.NewEncoder(conn)}
	level := slog.LevelInfo
	if h.Debug {
		level = slog.LevelDebug
	}
	cfg := config.Default()
	cfg.Server.Name = h.ServerName
	cfg.Cluster = h.Cluster
	log := slog.New(&logHandler{out: out, level: level})
	c, err := New(Options{
		Config: cfg,
		Member: h.Member,
		Lease:  h.Lease,
		Logger: log,
		OnStatus: func(s Status) {
			out.status(s)
		},
		OnLeadership: func(ev Event) { out.send(cluster.Message{Kind: cluster.KindEvent, Event: &ev}) },
		OnReplay: func(ev Event) {
			out.send(cluster.Message{Kind: cluster.KindEvent, Event: &ev, Replay: true})
		},
		OnLease: func(id int64, renewed time.Time) {
			out.lease(cluster.Message{Kind: cluster.KindLease, Lease: id, Renewed: renewed})
		},
	})
	if err != nil {
		out.send(cluster.Message{Kind: cluster.KindStatus, Status: &Status{State: StateUnreachable, Err: err.Error()}})
		out.send(cluster.Message{Kind: cluster.KindLog, Level: int(slog.LevelError),
			Msg: `cluster jobs (scope = "cluster") will not run`, Attrs: []string{"err", err.Error()}})
		_, _ = io.Copy(io.Discard, conn) // until the master goes
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- c.Run(ctx) }()
	master, err := unix.PidfdOpen(os.Getppid(), 0)
	if err != nil {
		master = -1 // then no wait for it
	} else {
		defer unix.Close(master)
	}
	procs := make(map[string]int) // the singletons' pidfds, by job
	stopped := false
	var wg sync.WaitGroup
	for in.Scan() {
		var r cluster.Request
		if json.Unmarshal(in.Bytes(), &r) != nil {
			continue
		}
		switch r.Op {
		case cluster.OpLead:
			c.Lead(r.Job, nil)
		case cluster.OpResign:
			c.Resign(r.Job)
		case cluster.OpRunning:
			running(procs, r.Job, r.PID)
			if r.PID > 0 {
				log.Debug("watching the singleton's process: should forkd die, the lease goes once it has exited",
					"singleton", r.Job, "pid", r.PID)
			}
		case cluster.OpDetach:
			out.detach()
		case cluster.OpAttach:
			out.attach()
		case cluster.OpStop:
			stopped = true
		case cluster.OpClaim, cluster.OpLast, cluster.OpHolder:
			wg.Add(1)
			go func() {
				defer wg.Done()
				out.send(answer(c, r))
			}()
		}
	}
	if !stopped {
		limit := time.Now().Add(cfg.Cluster.Lease())
		if master >= 0 {
			exited(master, time.Now().Add(time.Second))
		}
		for job, fd := range procs {
			if !exited(fd, limit) {
				fmt.Fprintf(os.Stderr, "forkd-cluster: singleton %s still runs lease_ttl after the master died: "+
					"revoking the lease anyway (FORKD_FENCING_TOKEN tells the holders apart)\n", job)
			}
		}
	}
	for job := range procs {
		running(procs, job, 0)
	}
	cancel() // the master and its singletons are gone: revoke the lease now
	wg.Wait()
	return <-ran
}

// exited waits until the process of pidfd has exited, or until
// deadline, and reports whether it has. The kernel sends a dying
// process's children their parent-death signal before it reports the
// exit, so once the master has exited its singletons have their KILL.
func exited(pidfd int, deadline time.Time) bool {
	fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
	for {
		wait := max(time.Until(deadline), 0)
		n, err := unix.Poll(fds, int((wait+time.Millisecond-1)/time.Millisecond))
		switch {
		case n > 0:
			return true
		case err == unix.EINTR:
		case err != nil || wait == 0:
			return false
		}
	}
}

// running records pid as job's process, keeping a pidfd of it, in place
// of the one before; pid 0 forgets job.
func running(procs map[string]int, job string, pid int) {
	if fd, ok := procs[job]; ok {
		unix.Close(fd)
		delete(procs, job)
	}
	if pid <= 0 {
		return
	}
	if fd, err := unix.PidfdOpen(pid, 0); err == nil { // ESRCH: gone already
		procs[job] = fd
	}
}

// answer runs a claim, last or holder request.
func answer(c *Cluster, r cluster.Request) cluster.Message {
	m := cluster.Message{Kind: cluster.KindReply, ID: r.ID}
	var err error
	switch r.Op {
	case cluster.OpClaim:
		var cl Claim
		cl, err = c.Claim(context.Background(), r.Job, r.At)
		m.Claim = &cl
	case cluster.OpLast:
		m.At, m.Holder, err = c.Last(context.Background(), r.Job)
	case cluster.OpHolder:
		m.Holder, err = c.Holder(context.Background(), r.Job)
	}
	if errors.Is(err, ErrUnavailable) {
		m.Unavailable = true
	} else if err != nil {
		m.Err = err.Error()
	}
	return m
}

// writer sends Messages to the master, one line each, from any
// goroutine. While detached (an upgrade in progress) it queues them.
type writer struct {
	mu       sync.Mutex
	enc      *json.Encoder
	detached bool
	queue    []cluster.Message
	last     *cluster.Message // the last status
	leaseMsg *cluster.Message // the last lease
}

func (w *writer) send(m cluster.Message) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.sendLocked(m)
}

func (w *writer) sendLocked(m cluster.Message) {
	if w.detached {
		w.queue = append(w.queue, m)
		return
	}
	_ = w.enc.Encode(m) // a broken socket shows as end of file on the reading side
}

// status sends and remembers the connection's state.
func (w *writer) status(s Status) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.last = &cluster.Message{Kind: cluster.KindStatus, Status: &s}
	w.sendLocked(*w.last)
}

// lease sends and remembers the lease: renewals are not queued, the
// attach sends the latest.
func (w *writer) lease(m cluster.Message) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.leaseMsg = &m
	if !w.detached {
		_ = w.enc.Encode(m)
	}
}

// detach answers the master's detach and queues from then on.
func (w *writer) detach() {
	w.mu.Lock()
	defer w.mu.Unlock()
	_ = w.enc.Encode(cluster.Message{Kind: cluster.KindDetached})
	w.detached = true
}

// attach sends a (new) master the current status and lease, then what
// was queued.
func (w *writer) attach() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.detached = false
	if w.last != nil {
		_ = w.enc.Encode(*w.last)
	}
	if w.leaseMsg != nil {
		_ = w.enc.Encode(*w.leaseMsg)
	}
	for _, m := range w.queue {
		_ = w.enc.Encode(m)
	}
	w.queue = nil
}

// logHandler sends log records to the master, which logs them as its own.
type logHandler struct {
	out   *writer
	level slog.Level
	attrs []string
	group string
}

func (h *logHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level }

func (h *logHandler) Handle(_ context.Context, r slog.Record) error {
	attrs := append([]string(nil), h.attrs...)
	r.Attrs(func(a slog.Attr) bool {
		attrs = append(attrs, h.group+a.Key, a.Value.String())
		return true
	})
	h.out.send(cluster.Message{Kind: cluster.KindLog, Level: int(r.Level), Msg: r.Message, Attrs: attrs})
	return nil
}

func (h *logHandler) WithAttrs(as []slog.Attr) slog.Handler {
	n := *h
	n.attrs = append([]string(nil), h.attrs...)
	for _, a := range as {
		n.attrs = append(n.attrs, h.group+a.Key, a.Value.String())
	}
	return &n
}

func (h *logHandler) WithGroup(name string) slog.Handler {
	n := *h
	n.group = h.group + name + "."
	return &n
}
