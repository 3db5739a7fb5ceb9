package workers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"time"

	"github.com/forkd/forkd/activation"
	"github.com/forkd/forkd/cgroup"
	"github.com/forkd/forkd/config"
	"github.com/forkd/forkd/hooks"
	"github.com/forkd/forkd/internal/notify"
	"github.com/forkd/forkd/listenq"
)

// Errors returned by the pool's control methods.
var (
	// ErrClosed is returned by control methods once Run has returned.
	ErrClosed = errors.New("workers: pool closed")
	// ErrReloading is returned when a reload or a scale request arrives
	// while a reload is in progress.
	ErrReloading = errors.New("workers: reload in progress")
	// ErrStopping is returned for requests made while the pool stops.
	ErrStopping = errors.New("workers: stopping")
	// ErrCrashLoop is wrapped by the error Run returns when a worker slot
	// failed max_failures times in a row.
	ErrCrashLoop = errors.New("workers: crash loop")
)

// States of the pool, as reported in Status.State.
const (
	StateStarting  = "starting"
	StateRunning   = "running"
	StateReloading = "reloading"
	StateStopping  = "stopping"
)

// Options configure a Pool.
type Options struct {
	// Config is the configuration of the first generation. Required.
	Config *config.Config
	// Sockets are handed to every worker as fds 3….
	Sockets []activation.Socket
	// Load re-reads the configuration for a reload; nil reuses Config.
	Load func() (*config.Config, error)
	// Signals delivers the signals the master received (HUP, TTIN, TTOU,
	// TERM, INT, QUIT, USR1, USR2, WINCH); nil means none.
	Signals <-chan os.Signal
	// Hooks receives every hook event; it must not block. May be nil.
	Hooks hooks.Sink
	// Observe is called from the arbiter's goroutine whenever the pool's
	// Status changes; it must not block. May be nil.
	Observe func(Status)
	// Staged is called on the arbiter's goroutine with a reload's config
	// once it loaded and was accepted, before its generation starts (whose
	// pre_fork comes next); Reloaded then tells how that reload ended. It
	// must not block. May be nil.
	Staged func(cfg *config.Config)
	// Reloaded is told, on the arbiter's goroutine, how each reload ended:
	// nil, or why it was rejected or rolled back. It must not block. May
	// be nil.
	Reloaded func(err error)
	// UpgradeRefused is told, on the arbiter's goroutine, why an upgrade
	// (USR2 or Upgrade) was refused or failed before the master
	// re-executed; the old master keeps running. It must not block. May be
	// nil.
	UpgradeRefused func(err error)
	// RunHook runs a blocking hook's commands (pre_fork, on_reload)
	// synchronously on the arbiter's goroutine; an error aborts what the
	// hook precedes. May be nil.
	RunHook func(ctx context.Context, e hooks.Event) error
	// RequestStats receives a worker's FORKD_REQUEST_STATS value (from the
	// worker SDK: aggregated, at most once a second per worker), on the
	// arbiter's goroutine; it must not block. May be nil.
	RequestStats func(generation uint64, workerID, pid int, stats string)
	// Requests receives every message of a worker that speaks of its
	// requests (FORKD_REQUESTS, FORKD_REQUEST_STATS,
	// FORKD_REQUEST_SUM_USEC, FORKD_REQUESTS_INFLIGHT), on the arbiter's
	// goroutine; it must not block. May be nil.
	Requests func(RequestReport)
	// Logger receives the pool's log; nil discards.
	Logger *slog.Logger
	// Shim is the executable that implements the exec-shim (forkd itself).
	// Default "/proc/self/exe".
	Shim string
	// ExecShim starts every worker through the exec-shim rather than
	// directly (package forkexec); the pool switches to it by itself when
	// the kernel refuses the direct start.
	ExecShim bool
	// NotifyDir is where the pool creates its private directory holding the
	// notify socket. Default $RUNTIME_DIRECTORY, else os.TempDir().
	NotifyDir string
	// Stdout and Stderr are the workers' standard output and error.
	// Default the master's.
	Stdout, Stderr *os.File
	// Exe is the executable an upgrade (USR2) re-executes, with Args
	// (default os.Args); "" disables upgrades.
	Exe  string
	Args []string
	// Gate, when set, holds the first generation's workers until it is
	// closed (the pool answers requests meanwhile, StartProcess among
	// them); an adopting pool ignores it.
	Gate <-chan struct{}
	// Freeze is called on the arbiter's goroutine as an upgrade is about
	// to re-execute the master: it returns the state of the master's other
	// parts, which the successor finds in Handover.Jobs, and from then on
	// starts nothing more until Thaw, which is called if the upgrade then
	// fails. It must not wait for the pool. May be nil.
	Freeze func() (json.RawMessage, error)
	Thaw   func()
	// Upgrading, when set, is called on the arbiter's goroutine as an
	// upgrade is about to hand the pool over, before Freeze, with the
	// pool's Snapshot then: from that moment the arbiter answers no
	// request until the re-executed master runs or Thaw is called, so this
	// is what the pool would have answered. It must not wait for the pool.
	Upgrading func(Snapshot)
	// BeforeExec, when set, is called on the arbiter's goroutine right
	// before the master re-executes itself, and returns by ctx's deadline
	// at the latest: it delivers what must reach others first (what the
	// hooks' sinks queued, the pre_exec event among it, on connections
	// the exec closes) and readies the process for the exec. The function
	// it returns, if any, undoes the latter when the exec fails.
	BeforeExec func(ctx context.Context) (undo func())
	// Extra are listening sockets of the master's own that no worker gets
	// (the metrics endpoint's): an upgrade keeps them open for the
	// successor, which finds them in Handover.Extra.
	Extra []activation.Socket
	// Adopt, when set, is the state of the master this one replaced by an
	// upgrade (see TakeHandover): Run adopts its workers and sockets.
	Adopt *Handover
	// Cgroups is the delegated cgroup v2 subtree (cgroup.Open, after
	// Setup) in which every worker gets a cgroup of its own with
	// [worker]'s limits; nil without one: workers share the master's
	// cgroup, and max_memory measures their resident memory.
	Cgroups *cgroup.Tree
	// MinUptime is how long a worker must have served for its exit to
	// count as a fresh start rather than a failure (backoff). Default 1s.
	MinUptime time.Duration

	// readQueue reads a listening socket's accept queue; default
	// listenq.Read.
	readQueue func(*os.File) (listenq.Queue, error)

	// cpus and runQueue stand in, in tests, for the CPUs the pool may use
	// (default runtime.GOMAXPROCS(0)) and the machine's run queue (default
	// /proc/loadavg's); see pace.go.
	cpus     int
	runQueue func() (int, error)
	// usageNow stands in, in tests, for the clock that times the readings
	// of the workers' usage (default time.Now; see usage.go).
	usageNow func() time.Time
}

// Stats are counters for diagnostics and tests.
type Stats struct {
	// Spawned counts worker processes started.
	Spawned int
	// IgnoredNotify counts notify messages from processes that are not
	// workers.
	IgnoredNotify int
	// Quiet counts the times the notify socket went quiet (stopped
	// watching for messages, see quiet.go); Drains counts its drains while
	// quiet.
	Quiet, Drains int
}

// Pool is the arbiter. Create it with New, run it with Run; the control
// methods may be called from any goroutine while Run runs.
type Pool struct {
	opts Options
	log  *slog.Logger

	// Channels into the arbiter loop.
	exits    chan exitEvent
	timers   chan timerEvent
	requests chan func(*Pool)
	done     chan struct{} // closed when Run returns

	// usage is the latest reading of the workers' memory and CPU, which
	// ListWorkers's callers share and take (see usage.go).
	usage *usageCache

	// State below is owned by the Run goroutine.
	state    string
	current  *generation
	pending  *generation // a reload's new generation, until it is ready
	retiring map[*worker]bool
	byPID    map[int]*worker
	// routes are the processes StartProcess started for others whose
	// notify messages go to them (see Route).
	routes    map[int]chan<- notify.Note
	nextGen   uint64
	stopping  bool
	stopErr   error
	notifyDir string
	notifyAdr string
	// ns is the notify socket, an actor of its own (package notify); nc is
	// the pool's end of it, watches the Watch messages for it that settle
	// sends, and quietOK what the pool last told it of quiet.
	ns      *notify.Socket
	nc      *notify.Consumer
	watches []notify.Watch
	quietOK bool
	// barriers says a worker used sd_notify_barrier(3) (logged once).
	barriers bool
	// upgradeAck, while an Upgrade call's reply is on its way, says when
	// its caller has it (true) or gave up (false).
	upgradeAck <-chan bool
	// reloads counts the reloads begun (Status.Reloads).
	reloads   uint64
	devnull   *os.File
	slice     slicer
	stats     Stats
	everReady bool
	// held are the slots waiting for their turn to boot, paceTimer gives
	// them another look (see pace.go).
	held      []heldSlot
	paceTimer *time.Timer
	// auto is the autoscaler's state (see autoscale.go).
	auto autoscaler
	// memory watches the workers' memory for max_memory and removes the
	// cgroups of those that ended; cgroupSeq numbers the cgroups made
	// (see cgroup.go).
	memory    *cgroup.Watcher
	cgroupSeq uint64
}

// New returns a pool for opts; Run starts it.
func New(opts Options) *Pool {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Shim == "" {
		opts.Shim = "/proc/self/exe"
	}
	if opts.Stdout == nil {
		opts.Stdout = os.Stdout
	}
	if opts.Stderr == nil {
		opts.Stderr = os.Stderr
	}
	if opts.MinUptime == 0 {
		opts.MinUptime = time.Second
	}
	if opts.cpus == 0 {
		opts.cpus = runtime.GOMAXPROCS(0)
	}
	if opts.readQueue == nil {
		opts.readQueue = listenq.Read
	}
	if opts.runQueue == nil {
		opts.runQueue = loadavgRunQueue
	}
	return &Pool{
		opts:     opts,
		log:      opts.Logger,
		exits:    make(chan exitEvent, 64),
		timers:   make(chan timerEvent, 64),
		requests: make(chan func(*Pool)),
		done:     make(chan struct{}),
		state:    StateStarting,
		retiring: make(map[*worker]bool),
		byPID:    make(map[int]*worker),
		routes:   make(map[int]chan<- notify.Note),
		usage:    newUsageCache(UsageInterval, opts.usageNow),
	}
}

// Run starts the first generation and arbitrates until the pool has
// stopped: after TERM, INT or QUIT, or when ctx is cancelled (a graceful
// stop, not an error). Every worker has exited when Run returns.
func (p *Pool) Run(ctx context.Context) error {
	defer close(p.done)
	if p.opts.Config == nil {
		return errors.New("workers: no config")
	}
	// Workers get SIGKILL as their parent-death signal, which Linux delivers
	// when the *thread* that forked them exits. Pin this goroutine to its
	// thread for good: the thread then lives exactly as long as Run.
	runtime.LockOSThread()
	p.applySlice(p.opts.Config)
	defer func() {
		if err := p.slice.apply(0); err != nil {
			p.log.Warn("could not restore the kernel's default time slice", "err", err)
		}
	}()

	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return fmt.Errorf("open %s: %w", os.DevNull, err)
	}
	p.devnull = devnull
	defer devnull.Close()
	defer p.startMemory()()

	var ns *notify.Socket
	if a := p.opts.Adopt; a != nil {
		if ns, err = notify.Adopt(a.NotifyFD, a.NotifyDir, a.NotifyPath); err != nil {
			err = fmt.Errorf("upgrade: %w", err)
		}
	} else {
		ns, err = notify.Listen(p.opts.NotifyDir)
	}
	if err != nil {
		return err
	}
	p.ns, p.nc, p.notifyDir, p.notifyAdr = ns, ns.Fallback(), ns.Dir(), ns.Path()
	nsCtx, nsStop := context.WithCancel(context.Background())
	nsDone := make(chan error, 1)
	go func() { nsDone <- ns.Run(nsCtx) }()
	nsFailed := (<-chan error)(nsDone)
	defer func() {
		nsStop()
		if nsFailed != nil {
			<-nsDone
		}
	}()
	if advice := qlenAdvice(ns.QueueLen(), p.opts.Config.Server.Workers); advice != "" {
		p.log.Warn(advice)
	}

	if p.opts.Adopt != nil {
		p.adopt(p.opts.Adopt)
		if p.opts.Config.Server.ReloadAfterUpgrade {
			p.reload(make(chan error, 1), "reload_after_upgrade") // the outcome is logged
		}
	} else {
		p.nextGen = 1
		p.current = p.newGeneration(p.opts.Config, p.opts.Config.Server.Workers)
		p.log.Info("starting", "instance", p.instance(), "workers", p.current.target,
			"generation", p.current.id, "notify_socket", p.notifyAdr)
	}
	gate := p.opts.Gate
	if p.opts.Adopt != nil {
		gate = nil
	}
	if gate == nil {
		p.fillSlots(p.current)
		p.announceEmpty(p.current)
	}
	defer p.stopAutoscale()
	p.observe()
	p.settle()

	ctxDone := ctx.Done()
	for {
		if p.stopping && len(p.byPID) == 0 {
			p.log.Info("stopped")
			return p.stopErr
		}
		select {
		case <-ctxDone:
			ctxDone = nil
			p.stop(stopGraceful, "stop requested")
		case sig := <-p.opts.Signals:
			p.handleSignal(sig)
		case ev := <-p.exits:
			// What the worker said before it exited (STOPPING=1, say)
			// counts first, as under systemd.
			p.takeNotes(ev.w.pid)
			p.handleExit(ev)
		case b := <-p.nc.Notes():
			p.handleBatch(b)
		case t := <-p.timers:
			p.handleTimer(t)
		case req := <-p.requests:
			req(p)
		case <-gate:
			gate = nil
			p.fillSlots(p.current)
			p.announceEmpty(p.current)
		case ok := <-p.upgradeAck:
			p.upgradeAck = nil
			p.upgradeAcked(ok)
		case err := <-nsFailed:
			nsFailed = nil
			err = fmt.Errorf("workers: %w", err)
			p.log.Error("the notify socket failed; stopping", "err", err)
			p.stopErr = err
			p.stop(stopGraceful, "notify socket failed")
		}
		p.settle()
	}
}

func (p *Pool) instance() string { return p.opts.Config.Server.Name }

// emit sends a hook event to the sinks.
func (p *Pool) emit(e hooks.Event) {
	if p.opts.Hooks == nil {
		return
	}
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	e.Instance = p.instance()
	p.opts.Hooks.Emit(e)
}

// status is the pool's current Status.
func (p *Pool) status() Status {
	s := Status{State: p.state, Reloads: p.reloads}
	if g := p.current; g != nil {
		s.Generation = g.id
		s.Workers = g.target
		s.ReadyWorkers = g.readyCount()
	}
	return s
}

// observe reports the status to Options.Observe.
func (p *Pool) observe() {
	if p.opts.Observe != nil {
		p.opts.Observe(p.status())
	}
}
