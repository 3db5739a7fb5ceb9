package master

import (
	"context"
	"encoding/json"
	"log/slog"
	"reflect"

	"github.com/forkd/forkd/activation"
	"github.com/forkd/forkd/bus"
	"github.com/forkd/forkd/cgroup"
	"github.com/forkd/forkd/cluster"
	"github.com/forkd/forkd/config"
	"github.com/forkd/forkd/hooks"
	"github.com/forkd/forkd/jobs/supervisor"
	"github.com/forkd/forkd/workers"
)

// runOnce ties the singletons and schedules (package jobs/supervisor) to
// the arbiter: it owns the supervisor and turns the arbiter's events into
// the supervisor's (the workers serve, they stop, a reload succeeded). The
// supervisor runs from the first config that has a singleton or a
// schedule (or an upgrade that hands some over) until stop; an instance
// without any starts none. Its fields are the arbiter's goroutine's.
type runOnce struct {
	sup  *supervisor.Supervisor
	pool *workers.Pool
	// running says the supervisor runs; ready, that the workers served
	// (when_ready) at least once; setJobs hands the running supervisor to
	// the D-Bus methods.
	running, ready bool
	setJobs        func(*supervisor.Supervisor)
	// gate is the arbiter's Options.Gate: closed once the singletons the
	// workers wait for are ready (nil: nothing to wait for).
	gate chan struct{}
	// staged is the config a reload in progress will apply (the arbiter's
	// goroutine only).
	staged *config.Config
	done   chan error
	cancel context.CancelFunc
	// cluster is the instance's etcd membership (nil without [cluster]
	// endpoints at start); it runs from before the supervisor until after
	// it: clusterDone gets its Run's result, clusterCancel stops it.
	cluster       *cluster.Cluster
	clusterAdopt  bool
	clusterDone   chan error
	clusterCancel context.CancelFunc
	// clusterCfg is the [cluster] table forkd started with: a reload that
	// changes it is told to take a restart.
	clusterCfg config.Cluster
	log        *slog.Logger
}

// newCluster makes the etcd membership of cfg when it has [cluster]
// endpoints (nil otherwise, or when it cannot be made: then cluster jobs
// do not run, and the log says why). Its state goes to STATUS= and the
// D-Bus Cluster property, its leaderships to the D-Bus signals.
func newCluster(cfg *config.Config, log *slog.Logger, svc *bus.Service, status *reporter,
	adopt *workers.Handover) *cluster.Cluster {
	if !cfg.Cluster.Enabled() {
		if adopt != nil {
			if a := supervisor.AdoptedAgent(adopt.Jobs); a != nil {
				cluster.Release(a, log)
			}
		}
		return nil
	}
	var lease int64
	var agent *cluster.Agent
	if adopt != nil {
		if agent = supervisor.AdoptedAgent(adopt.Jobs); agent == nil {
			lease = supervisor.AdoptedLease(adopt.Jobs)
		}
	}
	cl, err := cluster.New(cluster.Options{
		Config: cfg,
		Lease:  lease,
		Adopt:  agent,
		Logger: log,
		OnStatus: func(s cluster.Status) {
			status.clusterStatus(s.State == cluster.StateConnected, s.String())
			if svc != nil {
				svc.UpdateCluster(s.String())
			}
		},
		OnLeadership: func(ev cluster.Event) {
			if svc == nil {
				return
			}
			if ev.Acquired {
				svc.EmitLeadershipAcquired(ev.Job, uint64(max(ev.Token, 0)))
			} else {
				svc.EmitLeadershipLost(ev.Job, ev.Reason)
			}
		},
	})
	if err != nil {
		log.Error(`cluster jobs (scope = "cluster") will not run`, "err", err)
		return nil
	}
	return cl
}

// setCluster gives the supervisor cl for its cluster jobs; it must be
// called before start.
func (r *runOnce) setCluster(cl *cluster.Cluster, adopt *workers.Handover) {
	r.cluster = cl
	r.clusterAdopt = adopt != nil && supervisor.AdoptedAgent(adopt.Jobs) != nil
	r.sup.SetCluster(cl)
}

// newRunOnce prepares the supervisor of cfg's singletons and schedules;
// attach gives it the arbiter.
func newRunOnce(cfg *config.Config, socks []activation.Socket, sink hooks.Sink, log *slog.Logger,
	adopt *workers.Handover, journal bool, cgroups *cgroup.Tree, setJobs func(*supervisor.Supervisor)) *runOnce {
	r := &runOnce{done: make(chan error, 1), setJobs: setJobs, clusterCfg: cfg.Cluster, log: log}
	opts := supervisor.Options{Config: cfg, Sockets: socks, Hooks: sink, Logger: log, Journal: journal, Cgroups: cgroups}
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
	o.Freeze = func() (json.RawMessage, error) {
		if !r.running {
			return nil, nil
		}
		return r.sup.Freeze()
	}
	o.Thaw = func() {
		if r.running {
			r.sup.Thaw()
		}
	}
	o.Hooks = hooks.Sinks{o.Hooks, hooks.Func(func(e hooks.Event) {
		if e.Hook == hooks.WhenReady {
			r.ready = true
			if r.running {
				r.sup.WorkersReady()
			}
		}
	})}
	observe := o.Observe
	o.Observe = func(s workers.Status) {
		if s.State == workers.StateStopping && r.running {
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
		if err == nil && r.staged != nil && !reflect.DeepEqual(r.staged.Cluster, r.clusterCfg) {
			r.log.Warn("[cluster] changed: the etcd connection keeps the table forkd started with until it restarts")
		}
		if err == nil && r.staged != nil {
			if !r.running && hasJobs(r.staged) {
				r.run(r.staged)
			}
			if r.running {
				r.startCluster(r.staged)
				r.sup.Apply(r.staged)
			}
		}
		r.staged = nil
		if reloaded != nil {
			reloaded(err)
		}
	}
}

// start gives the supervisor pool as its starter and runs it when cfg has
// a singleton or a schedule, or an upgrade handed some over.
func (r *runOnce) start(pool *workers.Pool, cfg *config.Config, adopt *workers.Handover) {
	r.pool = pool
	if hasJobs(cfg) || adopt != nil && len(adopt.Jobs) > 0 {
		r.run(cfg)
	}
}

// startCluster runs the cluster membership, and with it the forkd-cluster
// sidecar, once cfg has jobs with scope = "cluster" (or an upgrade handed
// a sidecar over).
func (r *runOnce) startCluster(cfg *config.Config) {
	if r.cluster == nil || r.clusterDone != nil || !cluster.HasJobs(cfg) && !r.clusterAdopt {
		return
	}
	cctx, ccancel := context.WithCancel(context.Background())
	r.clusterCancel, r.clusterDone = ccancel, make(chan error, 1)
	go func() { r.clusterDone <- r.cluster.Run(cctx) }()
}

// run runs the supervisor until stop.
func (r *runOnce) run(cfg *config.Config) {
	r.startCluster(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel, r.running = cancel, true
	r.sup.SetStarter(r.pool)
	go func() { r.done <- r.sup.Run(ctx) }()
	if r.ready {
		r.sup.WorkersReady()
	}
	if r.gate != nil {
		go func() {
			select {
			case <-r.sup.Ready():
				close(r.gate)
			case <-ctx.Done():
			}
		}()
	}
	r.setJobs(r.sup)
}

// hasJobs reports whether cfg has a singleton or a schedule.
func hasJobs(cfg *config.Config) bool {
	return len(cfg.Singletons) > 0 || len(cfg.Schedules) > 0
}

// stop stops the singletons and the runs in flight, and waits for them:
// after the workers.
func (r *runOnce) stop() error {
	if !r.running {
		return nil
	}
	r.cancel()
	err := <-r.done
	if r.clusterDone != nil {
		// After the processes: leaderships end only once they are gone.
		r.clusterCancel()
		if cerr := <-r.clusterDone; err == nil {
			err = cerr
		}
	}
	return err
}
