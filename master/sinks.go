package master

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"

	"github.com/forkd/forkd/config"
	"github.com/forkd/forkd/hooks"
	"github.com/forkd/forkd/worker/reqstats"
	"github.com/forkd/forkd/workers"
)

// sinks are the hook sinks of one master: the log, D-Bus (unless
// disabled), exec hooks and the journal (under systemd).
type sinks struct {
	log     hooks.Sink
	bus     *hooks.Bus
	exec    *hooks.Exec
	journal *hooks.Journal
	ctl     *lateController
}

// newSinks builds the sinks for cfg; none is running yet.
func newSinks(o options, cfg *config.Config, log *slog.Logger) (*sinks, error) {
	s := &sinks{log: hooks.NewLog(log), ctl: &lateController{}}
	var cmds []hooks.Command
	for name, list := range cfg.Hooks {
		for _, h := range list {
			cmds = append(cmds, hooks.Command{Hook: hooks.Hook(name), Argv: h.Exec,
				Timeout: h.Timeout.Duration, Abort: h.OnFailure == "abort"})
		}
	}
	s.exec = hooks.NewExec(cmds, log)
	if o.bus != "none" {
		s.bus = hooks.NewBus(hooks.BusOptions{Instance: cfg.Server.Name, Controller: s.ctl, Logger: log, Address: o.bus})
	}
	if hooks.JournalEnabled() {
		s.journal = hooks.NewJournal(log)
	}
	return s, nil
}

// start runs the sinks' delivery loops in g.
func (s *sinks) start(g *group) {
	g.Go(s.exec.Run)
	if s.bus != nil {
		g.Go(s.bus.Run)
	}
	if s.journal != nil {
		g.Go(s.journal.Run)
	}
}

// Emit sends e to every sink; none blocks.
func (s *sinks) Emit(e hooks.Event) {
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
	s.bus.EmitRequestStats(hooks.RequestStats{Instance: instance, Generation: gen, WorkerID: id, PID: pid,
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
// the bus starts before the pool so that on_starting reaches it.
type lateController struct{ pool atomic.Pointer[workers.Pool] }

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

func (c *lateController) ListWorkers(ctx context.Context) ([]hooks.WorkerInfo, error) {
	p, err := c.get()
	if err != nil {
		return nil, err
	}
	return p.ListWorkers(ctx)
}

func (c *lateController) Status(ctx context.Context) (hooks.Status, error) {
	p, err := c.get()
	if err != nil {
		return hooks.Status{State: workers.StateStarting}, nil
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
