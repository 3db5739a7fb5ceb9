package workers

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	sdactivation "github.com/coreos/go-systemd/v22/activation"
	"github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sys/unix"

	"github.com/forkd/forkd/activation"
	"github.com/forkd/forkd/config"
	"github.com/forkd/forkd/hooks"
	"github.com/forkd/forkd/internal/testkit"
)

func init() {
	// As cmd/forkd does: the master helper runs its pool on the main
	// goroutine, pinned to the main thread (see runMaster).
	runtime.LockOSThread()
}

// TestMain lets the test binary play three parts besides running tests:
// the exec-shim (its first argument activation.ShimArg), a worker (role
// "worker MODE") and a master (role "master") — real processes, as forkd
// runs them. A master's workers get their role from the config's env,
// over the "master" they inherit.
func TestMain(m *testing.M) {
	testkit.Main(m, testkit.Roles{
		activation.ShimArg: func(args []string) int {
			err := activation.Shim(args)
			fmt.Fprintln(os.Stderr, "exec-shim:", err)
			return 127
		},
		"worker": func(args []string) int {
			if len(args) != 1 {
				fmt.Fprintln(os.Stderr, "worker: want a mode, got", args)
				return 2
			}
			return runWorker(args[0])
		},
		"master": func([]string) int { return runMaster() },
	})
}

// runWorker is a worker written against the plain systemd protocols
// (go-systemd, unmodified). Each connection gets one line describing the
// worker. Modes:
//
//	serve         READY=1, heartbeats, exits 0 on TERM, 42 on USR1
//	exit1         exits 1 at once
//	hang-boot     serves but never sends READY=1
//	no-heartbeat  READY=1, then no heartbeat
//	ignore-term   like serve, but ignores TERM
//	barrier       like serve, each READY=1 and heartbeat followed by an
//	              sd_notify_barrier(3); exits 7 when one is not read
//	              within a second
//	slow          like serve, but speaks HTTP/1.1 and takes 50 ms per
//	              request, one at a time (serveSlow)
//	grow          like serve, and uses 64 MiB more memory once ready
//	busy          like serve, having used 50 ms of CPU time before READY=1
//
// In every serving mode USR1 makes the worker exit 42, USR2 stops its
// heartbeats (it hangs, as far as the pool can tell) and HUP makes it send
// STOPPING=1 and exit 0 (it leaves by itself).
func runWorker(mode string) int {
	if mode == "exit1" {
		return 1
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGQUIT, syscall.SIGINT, syscall.SIGHUP)
	if mode == "ignore-term" {
		signal.Reset(syscall.SIGTERM)
		signal.Ignore(syscall.SIGTERM)
	}
	listenPID := os.Getenv("LISTEN_PID")
	files := sdactivation.Files(true)
	line := fmt.Sprintf("pid=%d id=%s gen=%s instance=%s listen_pid=%s fds=%d shim_parent=%s\n", os.Getpid(),
		os.Getenv("FORKD_WORKER_ID"), os.Getenv("FORKD_GENERATION"), os.Getenv("FORKD_INSTANCE"),
		listenPID, len(files), os.Getenv("FORKD_SHIM_PARENT"))
	var served atomic.Uint64
	for _, f := range files {
		l, err := net.FileListener(f)
		if err != nil {
			fmt.Fprintln(os.Stderr, "worker:", err)
			return 3
		}
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				if mode == "slow" {
					serveSlow(c, line)
				} else {
					c.Write([]byte(line))
				}
				c.Close()
				// As the worker SDK does (batched there, per request here).
				msg := "FORKD_REQUESTS=" + strconv.FormatUint(served.Add(1), 10)
				if mode == "report" {
					// A whole request report, as the SDK sends it.
					msg += "\nFORKD_REQUEST_STATS=1;1000;1,0\nFORKD_REQUEST_SUM_USEC=250\nFORKD_REQUESTS_INFLIGHT=0"
				}
				daemon.SdNotify(false, msg)
			}
		}()
	}
	notify := func(state string) bool {
		daemon.SdNotify(false, state)
		if mode == "barrier" {
			if err := notifyBarrier(time.Second); err != nil {
				fmt.Fprintln(os.Stderr, "worker:", err)
				return false
			}
		}
		return true
	}
	var tick <-chan time.Time
	var ballast []byte
	if mode == "busy" {
		spin(50 * time.Millisecond)
	}
	if mode != "hang-boot" {
		if !notify(daemon.SdNotifyReady) {
			return 7
		}
		if mode == "grow" {
			ballast = make([]byte, 64<<20)
			for i := 0; i < len(ballast); i += os.Getpagesize() {
				ballast[i] = 1
			}
		}
		if d, err := daemon.SdWatchdogEnabled(false); err == nil && d > 0 && mode != "no-heartbeat" {
			tick = time.NewTicker(d / 4).C
		}
	}
	for {
		select {
		case <-tick:
			if !notify(daemon.SdNotifyWatchdog) {
				return 7
			}
		case s := <-sigs:
			switch s {
			case syscall.SIGUSR1:
				return 42
			case syscall.SIGUSR2:
				tick = nil // hang: serve, but heartbeat no more
				continue
			case syscall.SIGHUP:
				daemon.SdNotify(false, daemon.SdNotifyStopping)
				return 0
			default:
				runtime.KeepAlive(ballast)
				return 0
			}
		}
	}
}

// spin keeps the CPU busy until the process has used d of CPU time (user
// and system, getrusage).
func spin(d time.Duration) {
	for x := uint64(1); ; x = x*6364136223846793005 + 1 {
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil ||
			time.Duration(ru.Utime.Nano()+ru.Stime.Nano()) >= d {
			runtime.KeepAlive(x)
			return
		}
	}
}

// notifyBarrier is sd_notify_barrier(3): BARRIER=1 with the write end of a
// pipe, then a wait of at most d for the reader of NOTIFY_SOCKET to close
// it.
func notifyBarrier(d time.Duration) error {
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		w.Close()
		return err
	}
	err = unix.Sendmsg(fd, []byte("BARRIER=1"), unix.UnixRights(int(w.Fd())),
		&unix.SockaddrUnix{Name: os.Getenv("NOTIFY_SOCKET")}, 0)
	unix.Close(fd)
	w.Close()
	if err != nil {
		return err
	}
	if err := r.SetReadDeadline(time.Now().Add(d)); err != nil {
		return err
	}
	if _, err := r.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		return fmt.Errorf("barrier not read within %s: %v", d, err)
	}
	return nil
}

// runMaster runs a pool of two serving workers (see load below for what
// the environment changes) on its own TCP socket, on
// the main goroutine (locked to the main thread by init, as cmd/forkd
// does), and reports on stdout once they are ready:
//
//	master <pid> port <port> adopted <true|false>
//	worker <pid>            (one line each)
//	ready
//
// USR2 upgrades it in place (re-executing this test binary), after which
// the new incarnation reports the same way; USR1 does so through an
// Upgrade call, whose reply it prints ("upgrade reply <nil>"). It runs
// until killed.
func runMaster() int {
	exe, _ := os.Executable()
	h, err := TakeHandover()
	if err != nil {
		fmt.Fprintln(os.Stderr, "master:", err)
		return 1
	}
	var socks []activation.Socket
	if h != nil {
		socks = h.SocketsOf()
	} else {
		s, err := listenLoopback()
		if err != nil {
			fmt.Fprintln(os.Stderr, "master:", err)
			return 1
		}
		socks = []activation.Socket{s}
	}
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(socks[0].Addr, "tcp://"))
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGUSR2, syscall.SIGHUP, syscall.SIGTTOU)
	statuses := make(chan Status, 64)
	// The config: 2 workers, or as many as FORKD_TEST_WORKERS_FILE says
	// (read at start and at every reload; what it holds must be a number,
	// else the config does not load).
	load := func() (*config.Config, error) {
		n := 2
		if f := os.Getenv("FORKD_TEST_WORKERS_FILE"); f != "" {
			b, err := os.ReadFile(f)
			if err != nil {
				return nil, err
			}
			if n, err = strconv.Atoi(strings.TrimSpace(string(b))); err != nil {
				return nil, fmt.Errorf("%s: workers: %w", f, err)
			}
		}
		mode := os.Getenv("FORKD_TEST_WORKER_MODE")
		if mode == "" {
			mode = "serve"
		}
		cfg := testConfig(exe, mode, n)
		cfg.Server.ReloadAfterUpgrade = os.Getenv("FORKD_TEST_RELOAD_AFTER_UPGRADE") != ""
		if g := os.Getenv("FORKD_TEST_GRACE"); g != "" {
			d, err := time.ParseDuration(g)
			if err != nil {
				return nil, err
			}
			cfg.Server.GracefulTimeout.Duration = d
		}
		return cfg, nil
	}
	cfg, err := load()
	if err != nil {
		fmt.Fprintln(os.Stderr, "master:", err)
		return 1
	}
	p := New(Options{
		Config:  cfg,
		Load:    load,
		Sockets: socks,
		Signals: sigs,
		Exe:     exe,
		Adopt:   h,
		Hooks:   whenReadyPrinter{},
		// Errors only, on stdout, where the test reads them (see
		// masterProc.waitLog); any other line of its is the report below.
		Logger: slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{Level: slog.LevelError})),
		Observe: func(s Status) {
			select {
			case statuses <- s:
			default:
			}
		},
	})
	// Report each generation once it serves in full.
	go func() {
		reported := uint64(0)
		for s := range statuses {
			if s.State != StateRunning || s.ReadyWorkers != s.Workers || s.Generation == reported {
				continue
			}
			reported = s.Generation
			list, err := p.ListWorkers(context.Background())
			if err != nil {
				return
			}
			fmt.Printf("master %d port %s adopted %v\n", os.Getpid(), port, h != nil)
			for _, w := range list {
				if w.State == "ready" && w.Generation == s.Generation {
					fmt.Printf("worker %d\n", w.PID)
				}
			}
			fmt.Println("ready")
		}
	}()
	// USR1 is an Upgrade call (UpgradeAfter) whose caller prints its reply
	// before it lets the master re-execute.
	calls := make(chan os.Signal, 1)
	signal.Notify(calls, syscall.SIGUSR1)
	go func() {
		for range calls {
			sent := make(chan struct{})
			err := p.UpgradeAfter(context.Background(), sent)
			fmt.Printf("upgrade reply %v\n", err)
			close(sent)
		}
	}()
	p.Run(context.Background())
	return 0
}

// whenReadyPrinter is the test master's hook sink: it prints
// "when_ready GENERATION" for each when_ready event (see masterProc.report).
type whenReadyPrinter struct{}

func (whenReadyPrinter) Emit(e hooks.Event) {
	if e.Hook == hooks.WhenReady {
		fmt.Printf("when_ready %d\n", e.Generation)
	}
}

// testConfig is a config running the test binary as a worker in mode.
func testConfig(exe, mode string, n int) *config.Config {
	c := &config.Config{}
	c.Server = config.Server{
		Name:            "test",
		Workers:         n,
		Timeout:         config.Duration{Duration: 10 * time.Second},
		GracefulTimeout: config.Duration{Duration: 10 * time.Second},
		BootTimeout:     config.Duration{Duration: 10 * time.Second},
		KillTimeout:     config.Duration{Duration: 5 * time.Second},
	}
	c.Worker = config.Worker{
		Program: config.Program{
			Command: exe,
			Env:     map[string]string{testkit.RoleEnv: "worker " + mode, "GOTRACEBACK": "none"},
		},
		Ready: config.ReadyNotify,
	}
	return c
}

// recorder is a hooks.Sink that keeps every event for the test.
type recorder struct{ ch chan hooks.Event }

func newRecorder() *recorder { return &recorder{ch: make(chan hooks.Event, 1<<14)} }

func (r *recorder) Emit(e hooks.Event) {
	select {
	case r.ch <- e:
	default:
		panic("recorder full")
	}
}

// wait returns the next event matching ok, failing the test after d.
func (r *recorder) wait(t *testing.T, d time.Duration, what string, ok func(hooks.Event) bool) hooks.Event {
	t.Helper()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		select {
		case e := <-r.ch:
			if ok(e) {
				return e
			}
		case <-deadline.C:
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
	}
}

// is matches events of hook h.
func is(h hooks.Hook) func(hooks.Event) bool {
	return func(e hooks.Event) bool { return e.Hook == h }
}

// harness runs a pool in a test and stops it at the end.
type harness struct {
	t      *testing.T
	pool   *Pool
	rec    *recorder
	sigs   chan os.Signal
	addr   string
	cancel context.CancelFunc
	ran    chan error
}

// start runs a pool of cfg with one TCP socket on 127.0.0.1:0.
func start(t *testing.T, cfg *config.Config, tweak func(*Options)) *harness {
	t.Helper()
	s, err := listenLoopback()
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, rec: newRecorder(), sigs: make(chan os.Signal, 8), addr: strings.TrimPrefix(s.Addr, "tcp://"), ran: make(chan error, 1)}
	opts := Options{
		Config:    cfg,
		Sockets:   []activation.Socket{s},
		Signals:   h.sigs,
		Hooks:     h.rec,
		NotifyDir: t.TempDir(),
		MinUptime: time.Nanosecond,
	}
	if testing.Verbose() {
		opts.Logger = testLogger(t)
	}
	if tweak != nil {
		tweak(&opts)
	}
	h.pool = New(opts)
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.ran <- h.pool.Run(ctx) }()
	t.Cleanup(func() {
		h.stop()
		activation.Close([]activation.Socket{s})
	})
	return h
}

// stop cancels the pool and waits for Run to return.
func (h *harness) stop() error {
	h.t.Helper()
	h.cancel()
	select {
	case err, ok := <-h.ran:
		if ok {
			close(h.ran)
		}
		return err
	case <-time.After(30 * time.Second):
		h.t.Fatal("pool did not stop within 30s")
		return nil
	}
}

// dial connects to the shared socket and returns the answering worker's
// description.
func (h *harness) dial() map[string]string {
	h.t.Helper()
	c, err := net.DialTimeout("tcp", h.addr, 5*time.Second)
	if err != nil {
		h.t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		h.t.Fatalf("read from worker: %v", err)
	}
	m := map[string]string{}
	for _, f := range strings.Fields(line) {
		k, v, _ := strings.Cut(f, "=")
		m[k] = v
	}
	return m
}

// pids returns the pids of the live workers that are not being stopped.
func (h *harness) pids() map[int]bool {
	h.t.Helper()
	list, err := h.pool.ListWorkers(context.Background())
	if err != nil {
		h.t.Fatal(err)
	}
	m := map[int]bool{}
	for _, w := range list {
		if w.State != "stopping" {
			m[w.PID] = true
		}
	}
	return m
}

// waitReady waits for n post_worker_init events and returns their pids.
func (h *harness) waitReady(n int) []int {
	h.t.Helper()
	var pids []int
	for len(pids) < n {
		e := h.rec.wait(h.t, 20*time.Second, fmt.Sprintf("%d workers ready", n), is(hooks.PostWorkerInit))
		pids = append(pids, e.PID)
	}
	return pids
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

// listenLoopback binds a socket named "test" on 127.0.0.1 and a port the
// kernel picks, with forkd's own activation.Listen: the pool gets it as it
// gets the sockets forkd binds (blocking, from os.NewFile, whose Fd leaves
// the mode alone at every spawn).
func listenLoopback() (activation.Socket, error) {
	b, err := config.ParseBind("tcp://127.0.0.1:0?name=test")
	if err != nil {
		return activation.Socket{}, err
	}
	socks, _, err := activation.Listen([]config.Bind{b}, 0, "test")
	if err != nil {
		return activation.Socket{}, err
	}
	return socks[0], nil
}
