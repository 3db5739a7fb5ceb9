package master

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/forkd/forkd/bus"
	"github.com/forkd/forkd/config"
	"github.com/forkd/forkd/hooks"
	"github.com/forkd/forkd/jobs"
	"github.com/forkd/forkd/metrics"
	"github.com/forkd/forkd/sdk/reqstats"
	"github.com/forkd/forkd/workers"
)

// sinks are the hook sinks of one master: the log, D-Bus (unless
// disabled), exec hooks and the journal (under systemd).
type sinks struct {
	log     hooks.Sink
	logger  *slog.Logger
	bus     *bus.Service
	exec    *hooks.Exec
	journal *hooks.Journal
	ctl     *lateController
	// metrics counts events for the metrics and the status page; set
	// before the arbiter starts (nil until then).
	metrics *metrics.Recorder

	// A reload's exec hooks (see stage), used on the arbiter's goroutine
	// only: cmds are the commands in force; staged says they are a
	// reload's in progress, and prev those from before it.
	cmds   []hooks.Command
	prev   []hooks.Command
	staged bool
}

// newSinks builds the sinks for cfg; none is running yet.
func newSinks(o options, cfg *config.Config, log *slog.Logger) (*sinks, error) {
	s := &sinks{log: hooks.NewLog(log), logger: log, ctl: &lateController{}, cmds: execCommands(cfg)}
	s.exec = hooks.NewExec(s.cmds, log)
	socket := o.socket
	if socket == "" {
		p, err := bus.SocketPath(cfg.Server.Name)
		if err != nil {
			log.Warn("peer-to-peer D-Bus socket not served", "err", err)
		}
		socket = p
	}
	if socket == "none" {
		socket = ""
	}
	if o.bus != "none" || socket != "" {
		s.bus = bus.New(bus.Options{Instance: cfg.Server.Name, Controller: s.ctl, Logger: log,
			Address: o.bus, Socket: socket})
	}
	if hooks.JournalEnabled() {
		s.journal = hooks.NewJournal(log)
	}
	return s, nil
}

// execCommands returns the exec hooks of cfg's [[hooks.NAME]] tables.
func execCommands(cfg *config.Config) []hooks.Command {
	var cmds []hooks.Command
	for name, list := range cfg.Hooks {
		for _, h := range list {
			cmds = append(cmds, hooks.Command{Hook: hooks.Hook(name), Argv: h.Exec,
				Timeout: h.Timeout.Duration, Abort: h.OnFailure == "abort"})
		}
	}
	return cmds
}

// stage is workers.Options.Staged: a reload's config was accepted, and its
// exec hooks are the ones that run from now on — for the new generation's
// pre_fork to its when_ready as for every other event, as Gunicorn's HUP
// applies the new hooks at once. reloaded keeps them if the reload
// succeeds and brings back the previous ones if it is rolled back.
func (s *sinks) stage(cfg *config.Config) {
	if !s.staged {
		s.prev, s.staged = s.cmds, true
	}
	s.cmds = execCommands(cfg)
	s.exec.Replace(s.cmds)
}

// reloaded is the sinks' part of workers.Options.Reloaded: how the reload
// ended (nil: it succeeded). A failed one brings back the exec hooks from
// before it.
func (s *sinks) reloaded(err error) {
	if !s.staged {
		return // refused by on_reload, or the file was rejected
	}
	if err != nil {
		s.cmds = s.prev
		s.exec.Replace(s.cmds)
		s.logger.Info("reload failed: the exec hooks from before it apply again")
	}
	s.prev, s.staged = nil, false
}

// drainExec runs the exec hook commands still queued (the last workers'
// child_exit and worker_exit…), each bounded by its timeout, and returns
// once they are done or after grace (the stop's graceful_timeout), when
// what is left is not run; Emit queues no more. How many events were
// dropped since the start, if any, is logged.
func (s *sinks) drainExec(grace time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	if err := s.exec.Shutdown(ctx); err != nil {
		s.logger.Warn("exec hooks still queued after graceful_timeout are not run", "graceful_timeout", grace)
	}
	if n := s.exec.Dropped(); n > 0 {
		s.logger.Warn("exec hook events were dropped (queue full): their commands did not run", "dropped", n)
	}
}

// start runs the sinks' delivery loops in g.
func (s *sinks) start(g *group) {
	g.Go(func(ctx context.Context) error {
		err := s.exec.Run(ctx)
		<-ctx.Done() // after drainExec: the other sinks still deliver on_exit
		return err
	})
	if s.bus != nil {
		g.Go(s.bus.Run)
	}
	if s.journal != nil {
		g.Go(s.journal.Run)
	}
}

// Emit sends e to every sink; none blocks. The metrics count it first: a
// client that saw its D-Bus signal finds it counted.
func (s *sinks) Emit(e hooks.Event) {
	if s.metrics != nil {
		s.metrics.Emit(e)
	}
	s.log.Emit(e)
	if s.bus != nil {
		s.bus.Emit(e)
	}
	if !e.Hook.Blocking() {
		s.exec.Emit(e) // blocking hooks' commands run synchronously: runHook
	}
	if s.journal != nil {
		s.journal.Emit(e)
	}
}

// flush delivers what the bus and the journal queued until now, by ctx's
// deadline at the latest (workers.Options.BeforeExec).
func (s *sinks) flush(ctx context.Context) {
	if s.bus != nil {
		s.bus.Flush(ctx)
	}
	if s.journal != nil {
		s.journal.Flush(ctx)
	}
}

// requestStats passes a worker's FORKD_REQUEST_STATS (aggregated by the
// worker SDK, at most once a second) on as a D-Bus RequestStats signal. A
// malformed value is logged at debug level and dropped.
func (s *sinks) requestStats(log *slog.Logger, instance string, gen uint64, id, pid int, v string) {
	if s.bus == nil {
		return
	}
	st, err := reqstats.Parse(v)
	if err != nil {
		log.Debug("request stats", "worker_id", id, "pid", pid, "err", err)
		return
	}
	s.bus.EmitRequestStats(bus.RequestStats{Instance: instance, Generation: gen, WorkerID: id, PID: pid,
		Requests: st.Requests, Bounds: st.Bounds, Counts: st.Counts})
}

// runHook runs the exec commands of a blocking hook synchronously; the
// error is that of a failed command with on_failure = "abort".
func (s *sinks) runHook(ctx context.Context, e hooks.Event) error {
	if !s.exec.Has(e.Hook) {
		return nil
	}
	return s.exec.RunNow(ctx, e)
}

// errNotStarted answers D-Bus calls that arrive before the arbiter runs.
var errNotStarted = errors.New("master: workers not started yet")

// lateController forwards D-Bus method calls to the pool once it exists:
// the bus starts before the pool so that on_starting reaches it. Until
// then Reload, SetWorkers, ListWorkers and Upgrade fail with errNotStarted,
// and Status reports StateStarting. RunNow and ListJobs go to the runner of
// the singletons and schedules once setJobs gave one; until then there are
// no jobs: RunNow reports every name as unknown (jobs.ErrUnknown) and
// ListJobs returns none.
type lateController struct {
	pool atomic.Pointer[workers.Pool]
	jobs atomic.Pointer[jobRunner]
	// metrics serves Details once set.
	metrics atomic.Pointer[metrics.Recorder]
}

var (
	_ bus.Controller     = (*lateController)(nil)
	_ bus.Upgrader       = (*lateController)(nil)
	_ bus.JobRunner      = (*lateController)(nil)
	_ bus.ListenerReader = (*lateController)(nil)
	_ bus.Detailer       = (*lateController)(nil)
)

// Listeners returns the pool's listening sockets and their accept queues,
// none before the pool exists.
func (c *lateController) Listeners(ctx context.Context) ([]workers.Listener, error) {
	p, err := c.get()
	if err != nil {
		return nil, nil
	}
	return p.Listeners(ctx)
}

// jobRunner boxes a bus.JobRunner for an atomic.Pointer.
type jobRunner struct{ bus.JobRunner }

// setJobs makes r serve RunNow and ListJobs from now on; nil takes the
// runner away (no jobs). It may be called from any goroutine.
func (c *lateController) setJobs(r bus.JobRunner) {
	if r == nil {
		c.jobs.Store(nil)
		return
	}
	c.jobs.Store(&jobRunner{r})
}

// RunNow asks the job runner to run the schedule called name now.
func (c *lateController) RunNow(ctx context.Context, name string) error {
	r := c.jobs.Load()
	if r == nil {
		return fmt.Errorf("run %q now: %w", name, jobs.ErrUnknown)
	}
	return r.RunNow(ctx, name)
}

// ListJobs returns the job runner's singletons and schedules, or none.
func (c *lateController) ListJobs(ctx context.Context) ([]jobs.Info, error) {
	r := c.jobs.Load()
	if r == nil {
		return nil, nil
	}
	return r.ListJobs(ctx)
}

func (c *lateController) get() (*workers.Pool, error) {
	if p := c.pool.Load(); p != nil {
		return p, nil
	}
	return nil, errNotStarted
}

func (c *lateController) Reload(ctx context.Context) error {
	p, err := c.get()
	if err != nil {
		return err
	}
	return p.Reload(ctx)
}

func (c *lateController) SetWorkers(ctx context.Context, n int) error {
	p, err := c.get()
	if err != nil {
		return err
	}
	return p.SetWorkers(ctx, n)
}

func (c *lateController) ListWorkers(ctx context.Context) ([]workers.Info, error) {
	p, err := c.get()
	if err != nil {
		return nil, err
	}
	return p.ListWorkers(ctx)
}

func (c *lateController) Status(ctx context.Context) (workers.Status, error) {
	p, err := c.get()
	if err != nil {
		return workers.Status{State: workers.StateStarting}, nil
	}
	return p.Status(ctx)
}

func (c *lateController) Upgrade(ctx context.Context) error {
	p, err := c.get()
	if err != nil {
		return err
	}
	return p.Upgrade(ctx)
}

// Details returns the status page as JSON, once the metrics recorder is
// set.
func (c *lateController) Details(ctx context.Context) (json.RawMessage, error) {
	r := c.metrics.Load()
	if r == nil {
		return nil, errNotStarted
	}
	page, err := r.Page(ctx)
	if err != nil {
		return nil, err
	}
	return json.Marshal(page)
}
