package supervisor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"syscall"
	"time"

	"github.com/forkd/forkd/activation"
	"github.com/forkd/forkd/cgroup"
	"github.com/forkd/forkd/cluster"
	"github.com/forkd/forkd/config"
	"github.com/forkd/forkd/hooks"
	"github.com/forkd/forkd/internal/actor"
	"github.com/forkd/forkd/internal/notify"
	"github.com/forkd/forkd/internal/process"
	"github.com/forkd/forkd/jobs"
	"github.com/forkd/forkd/workers"
)

// ErrClosed is returned by the methods once Run has returned.
var ErrClosed = errors.New("supervisor: closed")

// Starter starts and routes processes on the master's main thread: the
// arbiter, workers.Pool, is one.
type Starter interface {
	StartProcess(a *process.Attr, tag any, notes chan<- notify.Note, done chan<- workers.Started)
	Route(pid int, notes chan<- notify.Note)
	Unroute(pid int)
}

// Options configure a Supervisor.
type Options struct {
	// Config is the instance's config: its singletons and schedules, its
	// name, graceful_timeout, kill_timeout and state_dir. Required.
	Config *config.Config
	// Sockets are handed to singletons with sockets = true, as to workers.
	Sockets []activation.Socket
	// Starter starts the processes. Required.
	Starter Starter
	// Hooks receives the run-once hook events; it must not block. May be
	// nil.
	Hooks hooks.Sink
	// Logger receives the supervisor's log; nil discards.
	Logger *slog.Logger
	// Stdout and Stderr are the processes' standard output and error.
	// Default the master's.
	Stdout, Stderr *os.File
	// Adopt is what the master this one replaced by an upgrade handed over
	// (workers.Handover.Jobs): its singletons' processes, runs in flight
	// and next due times.
	Adopt json.RawMessage
	// Journal sends each schedule run's output to the systemd journal,
	// line by line, with the run's identity as fields; otherwise runs
	// write to Stdout and Stderr.
	Journal bool
	// MinUptime is how long a singleton must have run for its exit to
	// count as a fresh start rather than a failure (backoff). Default 1s.
	MinUptime time.Duration
	// Cgroups is the delegated cgroup v2 subtree in which each singleton
	// process gets a cgroup of its own with its table's limits; nil
	// without one.
	Cgroups *cgroup.Tree
	// Cluster elects the singletons and claims the periods of the
	// schedules with scope = "cluster" (its Run must outlive the
	// supervisor's). Nil: such jobs do not run, and a warning says so.
	Cluster *cluster.Cluster
}

// Supervisor runs the singletons and schedules of one instance. Create it
// with New and run it with Run; the other methods may be called from any
// goroutine.
type Supervisor struct {
	opts Options
	log  *slog.Logger

	requests chan func(*Supervisor)
	started  chan workers.Started
	exits    chan exitEvent
	notes    chan notify.Note
	timers   chan timerEvent
	// leadership and claims carry the cluster's answers.
	leadership chan cluster.Event
	claims     chan claimResult
	done       chan struct{}
	ready      chan struct{} // closed once the before_workers singletons are ready

	// State below is owned by Run's goroutine.
	cfg          *config.Config
	singletons   map[string]*singleton
	schedules    map[string]*schedule
	byPID        map[int]any // *singleton or *run
	pending      int         // starts asked for, not yet answered
	workersReady bool
	stopping     bool // the workers stop: no more runs
	shutdown     bool // Run's context is done: everything stops
	frozen       bool // an upgrade is about to exec: start nothing
	readyClosed  bool
	ids          jobs.IDs
	state        *jobs.State
	devnull      *os.File
	// memory watches the singletons' memory for max_memory and removes
	// the cgroups of processes that ended; cgroupSeq numbers the cgroups
	// made (see cgroup.go).
	memory    *cgroup.Watcher
	cgroupSeq uint64
	// warnedNoCluster says the missing [cluster] was reported.
	warnedNoCluster bool
}

// exitEvent is a reaped process.
type exitEvent struct {
	pid  int
	exit process.Exit
	err  error
}

// timerEvent is a deadline of a singleton or a schedule.
type timerEvent struct {
	fire func(s *Supervisor)
}

// New returns a supervisor for opts; Run starts it.
func New(opts Options) *Supervisor {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
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
	return &Supervisor{
		opts:       opts,
		log:        opts.Logger,
		requests:   make(chan func(*Supervisor)),
		started:    make(chan workers.Started, 256),
		exits:      make(chan exitEvent, 256),
		notes:      make(chan notify.Note, 256),
		timers:     make(chan timerEvent, 256),
		leadership: make(chan cluster.Event, 256),
		claims:     make(chan claimResult, 256),
		done:       make(chan struct{}),
		ready:      make(chan struct{}),
		singletons: make(map[string]*singleton),
		schedules:  make(map[string]*schedule),
		byPID:      make(map[int]any),
	}
}

// SetCluster sets Options.Cluster, for a supervisor made before its
// cluster; it must be called before Run.
func (s *Supervisor) SetCluster(cl *cluster.Cluster) { s.opts.Cluster = cl }

// SetStarter sets Options.Starter, for a supervisor made before its
// arbiter; it must be called before Run.
func (s *Supervisor) SetStarter(st Starter) { s.opts.Starter = st }

// Ready is closed once every singleton with start = "before_workers" is
// ready (at once when there is none): the arbiter's Options.Gate.
func (s *Supervisor) Ready() <-chan struct{} { return s.ready }

// Run supervises until ctx is done, then stops every process (TERM, KILL
// after graceful_timeout) and returns once all have exited: nil, or why
// the supervisor could not start.
func (s *Supervisor) Run(ctx context.Context) error {
	defer close(s.done)
	if s.opts.Config == nil || s.opts.Starter == nil {
		return errors.New("supervisor: no config or no starter")
	}
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return fmt.Errorf("supervisor: open %s: %w", os.DevNull, err)
	}
	s.devnull = devnull
	defer devnull.Close()
	defer s.startMemory()()
	s.cfg = s.opts.Config
	if s.hasPersistent(s.cfg) {
		s.openState()
	}
	now := time.Now()
	for _, c := range s.cfg.Singletons {
		s.singletons[c.Name] = &singleton{cfg: c, state: stateWaiting}
	}
	for _, c := range s.cfg.Schedules {
		s.schedules[c.Name] = s.newSchedule(c, now)
	}
	if len(s.opts.Adopt) > 0 {
		s.adopt(s.opts.Adopt)
	} else {
		s.catchUp(now)
	}
	s.settle()

	ctxDone := ctx.Done()
	for {
		if s.shutdown && len(s.byPID) == 0 && s.pending == 0 {
			return nil
		}
		select {
		case <-ctxDone:
			ctxDone = nil
			s.stopAll()
		case st := <-s.started:
			s.handleStarted(st)
		case ev := <-s.exits:
			s.handleExit(ev)
		case n := <-s.notes:
			s.handleNote(n)
		case t := <-s.timers:
			t.fire(s)
		case ev := <-s.leadership:
			s.handleLeadership(ev)
		case r := <-s.claims:
			s.handleClaim(r)
		case req := <-s.requests:
			req(s)
		}
		s.settle()
	}
}

// ask runs fn on Run's goroutine and returns its result (see actor.Ask).
func ask[T any](ctx context.Context, s *Supervisor, fn func(s *Supervisor) T) (T, error) {
	return actor.Ask(ctx, s.requests, s.done, ErrClosed, fn)
}

// tell runs fn on Run's goroutine without waiting for it (nothing once
// Run has returned).
func (s *Supervisor) tell(fn func(s *Supervisor)) {
	go func() {
		select {
		case s.requests <- fn:
		case <-s.done:
		}
	}()
}

// WorkersReady says the workers serve (when_ready): the singletons with
// start = "after_ready" start.
func (s *Supervisor) WorkersReady() {
	s.tell(func(s *Supervisor) { s.workersReady = true })
}

// Stopping says the workers stop: schedules start no more runs, and runs
// in flight get TERM (KILL after graceful_timeout). Singletons keep
// running until Run's context is done.
func (s *Supervisor) Stopping() {
	s.tell(func(s *Supervisor) { s.stopRuns() })
}

// Apply makes cfg, a reload's accepted config, the supervisor's: an
// unchanged singleton keeps its process and an unchanged schedule its
// timing; a changed singleton's process is stopped before its successor
// starts; a removed one is stopped; a changed or removed schedule's run in
// flight finishes under its old table.
func (s *Supervisor) Apply(cfg *config.Config) {
	s.tell(func(s *Supervisor) { s.apply(cfg) })
}

// RunNow starts a run of the schedule called name at once, under its
// overlap policy (a skipped run is reported as such). It returns an error
// wrapping jobs.ErrUnknown when there is no such job, and another for a
// singleton.
func (s *Supervisor) RunNow(ctx context.Context, name string) error {
	err, cerr := ask(ctx, s, func(s *Supervisor) error {
		sc, ok := s.schedules[name]
		if !ok || sc.removed {
			if _, single := s.singletons[name]; single {
				return fmt.Errorf("supervisor: %q is a singleton, which runs all along: only a schedule runs now", name)
			}
			return fmt.Errorf("%w: %q", jobs.ErrUnknown, name)
		}
		if s.stopping {
			return errors.New("supervisor: stopping")
		}
		s.due(sc, time.Now())
		return nil
	})
	if cerr != nil {
		return cerr
	}
	return err
}

// ListJobs describes every singleton and schedule, by name; a cluster
// singleton held by another forkd has its holder read from etcd.
func (s *Supervisor) ListJobs(ctx context.Context) ([]jobs.Info, error) {
	list, err := s.listJobs(ctx)
	if err == nil {
		s.clusterHolders(ctx, list)
	}
	return list, err
}

// listJobs describes every singleton and schedule as Run's goroutine
// knows them.
func (s *Supervisor) listJobs(ctx context.Context) ([]jobs.Info, error) {
	member := ""
	if s.opts.Cluster != nil {
		member = s.opts.Cluster.Member()
	}
	return ask(ctx, s, func(s *Supervisor) []jobs.Info {
		var list []jobs.Info
		for _, sg := range s.singletons {
			in := sg.info()
			if sg.token != 0 {
				in.Holder = member
			}
			list = append(list, in)
		}
		for _, sc := range s.schedules {
			if !sc.removed {
				list = append(list, sc.info())
			}
		}
		sort.Slice(list, func(i, j int) bool { return list[i].Name < list[j].Name })
		return list
	})
}

// Freeze is workers.Options.Freeze: it returns what the successor of an
// in-place upgrade adopts, and starts nothing more until Thaw.
func (s *Supervisor) Freeze() (json.RawMessage, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	b, err := ask(ctx, s, func(s *Supervisor) []byte {
		s.frozen = true
		for drained := false; !drained; { // starts the arbiter made before
			select {
			case st := <-s.started:
				s.handleStarted(st)
			default:
				drained = true
			}
		}
		return s.handover()
	})
	if err != nil {
		return nil, fmt.Errorf("supervisor: freeze: %w", err)
	}
	return b, nil
}

// Thaw is workers.Options.Thaw: the upgrade did not happen.
func (s *Supervisor) Thaw() {
	s.tell(func(s *Supervisor) {
		s.frozen = false
		if s.opts.Cluster != nil {
			s.opts.Cluster.Resume()
		}
		for _, sc := range s.schedules {
			if sc.run != nil && sc.run.out != nil {
				sc.run.out.release()
			}
		}
	})
}

// settle starts what should run and opens the workers' gate, after every
// event.
func (s *Supervisor) settle() {
	if s.frozen {
		return
	}
	for _, sg := range s.singletons {
		s.ensure(sg)
	}
	for _, sc := range s.schedules {
		if sc.timer == nil && !sc.removed && !s.stopping {
			s.arm(sc)
		}
	}
	if !s.readyClosed && s.beforeWorkersReady() {
		s.readyClosed = true
		close(s.ready)
	}
}

// after calls fire on Run's goroutine d from now, unless cancel is called
// first.
func (s *Supervisor) after(d time.Duration, fire func(s *Supervisor)) (cancel func()) {
	t := time.AfterFunc(max(d, 0), func() {
		select {
		case s.timers <- timerEvent{fire: fire}:
		case <-s.done:
		}
	})
	return func() { t.Stop() }
}

// start asks the arbiter to start p for owner (a *singleton or *run), with
// extra variables, its output to out (nil: the master's), the listening
// sockets when sockets is set, and in cgroup cg (nil: the master's).
func (s *Supervisor) start(owner any, p config.Program, extraEnv []string, out *output, sockets bool, notes bool, cg *cgroup.Group) {
	env := append(p.Environ(os.Environ()), "FORKD_INSTANCE="+s.cfg.Server.Name)
	env = append(env, extraEnv...)
	files := []*os.File{s.devnull, s.opts.Stdout, s.opts.Stderr}
	if out != nil {
		files[1], files[2] = out.w, out.w
	}
	var pidEnv []string
	if sockets && len(s.opts.Sockets) > 0 {
		env = append(env, activation.Env(s.opts.Sockets)...)
		for _, sk := range s.opts.Sockets {
			files = append(files, sk.File)
		}
		pidEnv = []string{"LISTEN_PID"}
	}
	path := p.Path
	if path == "" {
		path = p.Command
	}
	var ch chan<- notify.Note
	if notes {
		ch = s.notes
	}
	s.pending++
	a := &process.Attr{Path: path, Args: p.Args, Env: env, PIDEnv: pidEnv, Dir: p.Dir, Files: files}
	if cg != nil {
		a.Cgroup = cg.Dir()
	}
	s.opts.Starter.StartProcess(a, owner, ch, s.started)
}

// handleStarted takes the outcome of a start.
func (s *Supervisor) handleStarted(st workers.Started) {
	s.pending--
	switch o := st.Tag.(type) {
	case *singleton:
		s.singletonStarted(o, st.Proc, st.Err)
	case *run:
		s.runStarted(o, st.Proc, st.Err)
	}
}

// watch reaps proc when it exits and hands the exit to Run.
func (s *Supervisor) watch(proc *process.Process, owner any) {
	s.byPID[proc.PID] = owner
	go func() {
		exit, err := proc.Wait()
		select {
		case s.exits <- exitEvent{pid: proc.PID, exit: exit, err: err}:
		case <-s.done:
		}
	}()
}

// handleExit takes a reaped process.
func (s *Supervisor) handleExit(ev exitEvent) {
	owner := s.byPID[ev.pid]
	delete(s.byPID, ev.pid)
	switch o := owner.(type) {
	case *singleton:
		s.singletonExited(o, ev)
	case *run:
		s.runExited(o, ev)
	}
}

// handleNote takes what a process sent on NOTIFY_SOCKET.
func (s *Supervisor) handleNote(n notify.Note) {
	if sg, ok := s.byPID[n.PID].(*singleton); ok && n.Ready && !sg.ready {
		s.singletonReady(sg)
	}
}

// signal sends sig to proc, ignoring one that is gone.
func (s *Supervisor) signal(proc *process.Process, what string, sig syscall.Signal) {
	if proc == nil {
		return
	}
	if err := proc.Signal(sig); err != nil {
		s.log.Warn("signal "+what, "pid", proc.PID, "signal", sig.String(), "err", err)
	}
}

// stopAll ends everything: Run's context is done.
func (s *Supervisor) stopAll() {
	s.shutdown = true
	s.stopRuns()
	for _, sg := range s.singletons {
		s.stopSingleton(sg)
	}
}

// gracefulTimeout is how long a stopped process may take before KILL.
func (s *Supervisor) gracefulTimeout() time.Duration {
	return s.cfg.Server.GracefulTimeout.Duration
}

// emit sends e to the hooks.
func (s *Supervisor) emit(e hooks.Event) {
	if s.opts.Hooks == nil {
		return
	}
	e.Time = time.Now()
	e.Instance = s.cfg.Server.Name
	e.WorkerID = -1
	s.opts.Hooks.Emit(e)
}

// exitFields returns the exit code (-1 when killed) and signal of ev.
func exitFields(ev exitEvent) (code, sig int) {
	if ev.err != nil {
		return -1, 0
	}
	return ev.exit.Code(), int(ev.exit.Signal())
}

// describe says how ev ended, for logs and reasons.
func describe(ev exitEvent) string {
	if ev.err != nil {
		return "lost: " + ev.err.Error()
	}
	return ev.exit.String()
}
