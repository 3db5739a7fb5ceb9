package metrics

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/forkd/forkd/config"
	"github.com/forkd/forkd/internal/libexec"
)

// Executable is the file name of the sidecar that serves the Prometheus
// endpoint.
const Executable = "forkd-metrics"

// FindExecutable returns the path of forkd-metrics: beside the running
// executable (bin/forkd-metrics in a build tree), else in
// /usr/lib/forkd. The error names both places.
func FindExecutable() (string, error) {
	p, err := libexec.Find(Executable)
	if err != nil {
		return "", fmt.Errorf("metrics: [metrics] bind needs the %s executable: %w", Executable, err)
	}
	return p, nil
}

// Socket is the listening socket of [metrics] bind. The master binds it
// (or inherits it in an in-place upgrade) and holds it for its whole
// life, accepting nothing itself: forkd-metrics accepts on it, and while
// no sidecar runs, connections wait in its queue.
type Socket struct {
	// Bind is the address as the config gives it.
	Bind config.Bind
	// File is the socket, close-on-exec.
	File *os.File
	// Addr is the address bound: for tcp, with the port the kernel chose.
	Addr string
}

// Listen binds the [metrics] address b now, so that an address in use or
// a path that cannot be created fails the start with an error naming b; a
// unix socket file left by a dead process is replaced, one that answers is
// not.
func Listen(b config.Bind) (*Socket, error) {
	fail := func(err error) (*Socket, error) {
		return nil, fmt.Errorf("metrics: listen on [metrics] bind %q: %w", b.Raw, err)
	}
	var ln net.Listener
	var err error
	switch b.Network {
	case "tcp":
		ln, err = net.Listen("tcp", b.Address)
	case "unix":
		if err := removeStale(b.Address); err != nil {
			return fail(err)
		}
		ln, err = net.Listen("unix", b.Address)
		if err == nil {
			ln.(*net.UnixListener).SetUnlinkOnClose(false) // Socket.Close removes it
			if b.Mode != 0 {
				if cerr := os.Chmod(b.Address, os.FileMode(b.Mode)); cerr != nil {
					ln.Close()
					os.Remove(b.Address)
					return fail(cerr)
				}
			}
		}
	default:
		return fail(errors.New("no address"))
	}
	if err != nil {
		return fail(err)
	}
	defer ln.Close()
	f, err := ln.(interface{ File() (*os.File, error) }).File()
	if err != nil {
		if b.Network == "unix" {
			os.Remove(b.Address)
		}
		return fail(err)
	}
	return &Socket{Bind: b, File: f, Addr: ln.Addr().String()}, nil
}

// Adopt returns the socket of [metrics] bind b that an in-place upgrade
// handed over as f.
func Adopt(b config.Bind, f *os.File) *Socket {
	syscall.CloseOnExec(int(f.Fd()))
	return &Socket{Bind: b, File: f, Addr: b.Address}
}

// Close closes the socket and removes a unix socket's file: the endpoint
// is gone.
func (s *Socket) Close() error {
	err := s.File.Close()
	if s.Bind.Network == "unix" {
		os.Remove(s.Bind.Address)
	}
	return err
}

// Release closes a metrics socket that an in-place upgrade handed over
// and the config no longer binds, removing its file if it is a unix
// socket's.
func Release(f *os.File) {
	if sa, err := syscall.Getsockname(int(f.Fd())); err == nil {
		if u, ok := sa.(*syscall.SockaddrUnix); ok && u.Name != "" && u.Name[0] != '@' {
			os.Remove(u.Name)
		}
	}
	f.Close()
}

// removeStale removes a unix socket file at path that nothing answers on.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if err != nil || fi.Mode()&os.ModeSocket == 0 {
		return nil // absent, or not a socket: listen says what is wrong
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return errors.New("another process listens on it")
	}
	return os.Remove(path)
}

// scrapeTimeout bounds how long the master takes to answer one scrape.
const scrapeTimeout = 5 * time.Second

// EndpointOptions configure an Endpoint.
type EndpointOptions struct {
	// Recorder answers the scrapes. Required.
	Recorder *Recorder
	// Socket is the listening socket forkd-metrics serves. Required.
	Socket *Socket
	// Path is forkd-metrics' path; "" finds it (FindExecutable) at each
	// start.
	Path string
	// Logger receives the endpoint's log; nil discards.
	Logger *slog.Logger
}

// Endpoint is the Prometheus endpoint of [metrics] bind, served by a
// forkd-metrics sidecar that links Prometheus' client so that the master
// does not: the master holds the listening socket and answers each
// scrape's one request with its numbers (Answer). Create it with
// NewEndpoint and run it with Run; Pause and Resume may be called from
// any goroutine while Run runs.
type Endpoint struct {
	opts    EndpointOptions
	log     *slog.Logger
	control chan control
	done    chan struct{}
}

// control is a Pause (pause) or a Resume, done once Run has applied it.
type control struct {
	pause bool
	done  chan struct{}
}

// NewEndpoint returns an Endpoint for opts.
func NewEndpoint(opts EndpointOptions) *Endpoint {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Endpoint{opts: opts, log: opts.Logger, control: make(chan control),
		done: make(chan struct{})}
}

// sidecar is one forkd-metrics process: the master's end of its socket
// and its exit.
type sidecar struct {
	proc    *os.Process
	conn    *os.File
	started time.Time
	exited  <-chan error
}

// restartBackoff bounds the wait before starting forkd-metrics again after
// it failed to start or died.
const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 5 * time.Second
)

// Run starts forkd-metrics and answers its scrapes until ctx is done;
// then it closes the sidecar's socket, upon which the sidecar exits, and
// waits for it. A sidecar that dies or cannot be started is started again,
// after a wait that grows to a few seconds while it keeps failing. The
// listening socket stays open: Run does not close it.
func (e *Endpoint) Run(ctx context.Context) error {
	defer close(e.done)
	backoff := minBackoff
	var retry <-chan time.Time
	sc, err := e.start()
	if err != nil {
		e.log.Error("metrics endpoint: forkd-metrics not started; scrapes wait in the socket's queue", "err", err)
		retry = time.After(backoff)
	}
	paused := false
	for {
		var exited <-chan error
		if sc != nil {
			exited = sc.exited
		}
		select {
		case <-ctx.Done():
			e.stop(sc)
			return nil
		case <-retry:
			retry = nil
			if sc, err = e.start(); err != nil {
				e.log.Debug("metrics endpoint: forkd-metrics still not started", "err", err)
				backoff = min(backoff*2, maxBackoff)
				retry = time.After(backoff)
			}
		case err := <-exited:
			sc.conn.Close()
			if time.Since(sc.started) > maxBackoff {
				backoff = minBackoff
			}
			sc = nil
			e.log.Error("metrics endpoint: forkd-metrics exited; starting it again", "err", err)
			retry = time.After(backoff)
			backoff = min(backoff*2, maxBackoff)
		case c := <-e.control:
			switch {
			case c.pause:
				e.stop(sc)
				sc, retry, paused = nil, nil, true
			case paused:
				paused = false
				if sc, err = e.start(); err != nil {
					e.log.Error("metrics endpoint: forkd-metrics not started", "err", err)
					retry = time.After(backoff)
				}
			}
			close(c.done)
		}
	}
}

// start starts forkd-metrics on the listening socket (its fd 3) and a new
// socket pair (its fd 4), and answers the sidecar's scrapes.
func (e *Endpoint) start() (*sidecar, error) {
	path := e.opts.Path
	if path == "" {
		var err error
		if path, err = FindExecutable(); err != nil {
			return nil, err
		}
	}
	proc, conn, _, err := libexec.Start(path, e.opts.Socket.File)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	sc := &sidecar{proc: proc, conn: conn, started: time.Now(), exited: libexec.Exited(proc)}
	go e.answer(conn)
	e.log.Debug("metrics endpoint: forkd-metrics started", "pid", proc.Pid)
	return sc, nil
}

// answer answers the Scrapes arriving on conn, one after another, until
// conn ends or is closed.
func (e *Endpoint) answer(conn *os.File) {
	in := bufio.NewScanner(conn)
	enc := json.NewEncoder(conn)
	for in.Scan() {
		var s Scrape
		if err := json.Unmarshal(in.Bytes(), &s); err != nil {
			e.log.Debug("metrics endpoint: malformed scrape request ignored", "line", in.Text())
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
		a, _ := e.opts.Recorder.answer(ctx, s.ID)
		cancel()
		if err := enc.Encode(a); err != nil {
			return
		}
	}
}

// answer is r's Answer to the scrape id: the page (with Err saying why it
// is incomplete, and err the same) and this process's Go runtime.
func (r *Recorder) answer(ctx context.Context, id int64) (a Answer, err error) {
	a.ID = id
	if a.Page, err = r.Page(ctx); err != nil {
		a.Err = err.Error()
	}
	a.Runtime = ReadRuntime()
	return a, err
}

// StopSignal asks forkd-metrics to stop accepting, answer the scrapes it
// accepted (still asking the master) and exit.
const StopSignal = syscall.SIGUSR1

// stop asks sc to stop (StopSignal) while its scrapes are still answered,
// waits for it to exit, then closes its socket; it closes the socket
// first, then kills it, when it takes longer than a moment.
func (e *Endpoint) stop(sc *sidecar) {
	if sc == nil {
		return
	}
	defer sc.conn.Close()
	if err := sc.proc.Signal(StopSignal); err == nil {
		select {
		case <-sc.exited:
			return
		case <-time.After(2 * time.Second):
		}
	}
	sc.conn.Close()
	select {
	case <-sc.exited:
	case <-time.After(2 * time.Second):
		e.log.Warn("metrics endpoint: forkd-metrics did not exit: killing it", "pid", sc.proc.Pid)
		_ = sc.proc.Kill()
		<-sc.exited
	}
}

// Pause stops the sidecar and waits until it has exited, so that nothing
// accepts on the listening socket until Resume: an in-place upgrade
// re-executes the master, whose successor starts its own sidecar. It
// returns early, with an error, if ctx ends first.
func (e *Endpoint) Pause(ctx context.Context) error {
	return e.tell(ctx, true)
}

// Resume starts the sidecar again after Pause: the upgrade did not
// happen.
func (e *Endpoint) Resume() {
	_ = e.tell(context.Background(), false)
}

// tell hands Run a pause or a resume and waits until it is applied, or
// Run has returned.
func (e *Endpoint) tell(ctx context.Context, pause bool) error {
	c := control{pause: pause, done: make(chan struct{})}
	select {
	case e.control <- c:
	case <-e.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("metrics: pause the endpoint: %w", ctx.Err())
	}
	<-c.done
	return nil
}
