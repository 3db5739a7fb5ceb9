package master

import (
	"context"
	"log/slog"

	"github.com/forkd/forkd/activation"
	"github.com/forkd/forkd/config"
	"github.com/forkd/forkd/hooks"
	"github.com/forkd/forkd/jobs/supervisor"
	"github.com/forkd/forkd/workers"
)

// runOnce ties the singletons and schedules (package jobs/supervisor) to
// the arbiter: it owns the supervisor and turns the arbiter's events into
// the supervisor's (the workers serve, they stop, a reload succeeded).
type runOnce struct {
	sup *supervisor.Supervisor
	// gate is the arbiter's Options.Gate: closed once the singletons the
	// workers wait for are ready (nil: nothing to wait for).
	gate chan struct{}
	// staged is the config a reload in progress will apply (the arbiter's
	// goroutine only).
	staged *config.Config
	done   chan error
	cancel context.CancelFunc
}

// newRunOnce prepares the supervisor of cfg's singletons and schedules;
// attach gives it the arbiter.
func newRunOnce(cfg *config.Config, socks []activation.Socket, sink hooks.Sink, log *slog.Logger,
	adopt *workers.Handover) *runOnce {
	r := &runOnce{done: make(chan error, 1)}
	opts := supervisor.Options{Config: cfg, Sockets: socks, Hooks: sink, Logger: log, Journal: hooks.JournalEnabled()}
	if adopt != nil {
		opts.Adopt = adopt.Jobs
	}
	for _, s := range cfg.Singletons {
		if s.Start == config.StartBeforeWorkers && adopt == nil {
			r.gate = make(chan struct{})
		}
	}
	r.sup = supervisor.New(opts)
	return r
}

// options adds the supervisor's part to the arbiter's options.
func (r *runOnce) options(o *workers.Options) {
	if r.gate != nil {
		o.Gate = r.gate
	}
	o.Freeze, o.Thaw = r.sup.Freeze, r.sup.Thaw
	o.Hooks = hooks.Sinks{o.Hooks, hooks.Func(func(e hooks.Event) {
		if e.Hook == hooks.WhenReady {
			r.sup.WorkersReady()
		}
	})}
	observe := o.Observe
	o.Observe = func(s workers.Status) {
		if s.State == workers.StateStopping {
			r.sup.Stopping()
		}
		if observe != nil {
			observe(s)
		}
	}
	staged, reloaded := o.Staged, o.Reloaded
	o.Staged = func(cfg *config.Config) {
		r.staged = cfg
		if staged != nil {
			staged(cfg)
		}
	}
	o.Reloaded = func(err error) {
		if err == nil && r.staged != nil {
			r.sup.Apply(r.staged)
		}
		r.staged = nil
		if reloaded != nil {
			reloaded(err)
		}
	}
}

// start runs the supervisor with pool as its starter, until stop.
func (r *runOnce) start(pool *workers.Pool) {
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	r.sup.SetStarter(pool)
	go func() { r.done <- r.sup.Run(ctx) }()
	if r.gate != nil {
		go func() {
			select {
			case <-r.sup.Ready():
				close(r.gate)
			case <-ctx.Done():
			}
		}()
	}
}

// stop stops the singletons and the runs in flight, and waits for them:
// after the workers.
func (r *runOnce) stop() error {
	r.cancel()
	return <-r.done
}
