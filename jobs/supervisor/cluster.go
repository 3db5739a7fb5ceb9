package supervisor

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/forkd/forkd/cluster"
	"github.com/forkd/forkd/config"
	"github.com/forkd/forkd/jobs"
)

// claimResult is the outcome of a cluster schedule's claim of a period.
type claimResult struct {
	sc    *schedule
	at    time.Time
	claim cluster.Claim
	err   error
}

// clustered reports whether sg runs once per cluster.
func (sg *singleton) clustered() bool { return sg.cfg.Scope == config.ScopeCluster }

// clustered reports whether sc runs once per cluster.
func (sc *schedule) clustered() bool { return sc.cfg.Scope == config.ScopeCluster }

// noCluster says, once, that cluster jobs cannot run: the instance started
// without [cluster] endpoints.
func (s *Supervisor) noCluster(job string) {
	if s.warnedNoCluster {
		return
	}
	s.warnedNoCluster = true
	s.log.Warn(`jobs with scope = "cluster" do not run: forkd started without [cluster] endpoints (restart it to connect)`,
		"job", job)
}

// syncLead campaigns for a cluster singleton that would run now, and
// resigns from one that no longer should once its process is gone.
func (s *Supervisor) syncLead(sg *singleton) {
	want := sg.clustered() && !sg.removed && !s.shutdown && !s.stopping &&
		(sg.cfg.Start == config.StartBeforeWorkers || s.workersReady)
	switch {
	case want && !sg.campaigning:
		if s.opts.Cluster == nil {
			s.noCluster(sg.cfg.Name)
			return
		}
		sg.campaigning = true
		if sg.proc == nil {
			sg.state = stateCampaigning
		}
		s.opts.Cluster.Lead(sg.cfg.Name, s.leadership)
	case !sg.clustered() && sg.campaigning && sg.proc == nil && !sg.asked:
		s.resign(sg)
	}
}

// resign gives up sg's leadership: its process is gone.
func (s *Supervisor) resign(sg *singleton) {
	if !sg.campaigning {
		return
	}
	sg.campaigning, sg.token, sg.killBy = false, 0, time.Time{}
	s.opts.Cluster.Resign(sg.cfg.Name)
}

// tellRunning tells the cluster sg's process (pid; 0: it has exited),
// which the sidecar waits for should this forkd die.
func (s *Supervisor) tellRunning(sg *singleton, pid int) {
	if sg.clustered() && s.opts.Cluster != nil {
		s.opts.Cluster.Running(sg.cfg.Name, pid)
	}
}

// handleLeadership takes a change of leadership of a cluster singleton.
func (s *Supervisor) handleLeadership(ev cluster.Event) {
	sg, ok := s.singletons[ev.Job]
	if !ok || !sg.campaigning {
		return // resigned meanwhile
	}
	if ev.Acquired {
		sg.token, sg.killBy = ev.Token, time.Time{}
		if sg.state == stateCampaigning {
			sg.state = stateWaiting
		}
		return
	}
	sg.token, sg.killBy = 0, ev.KillBy
	if sg.proc == nil {
		if sg.retry != nil {
			sg.retry()
			sg.retry = nil
		}
		sg.state = stateCampaigning
		return
	}
	s.log.Warn("cluster singleton lost its leadership: stopping it before another host can start one",
		"singleton", sg.cfg.Name, "reason", ev.Reason, "kill_by", ev.KillBy.Format(time.RFC3339Nano))
	if sg.state == stateStopping && sg.kill != nil {
		sg.kill() // KILL comes sooner than the stop's own deadline
		sg.kill = nil
		sg.state = stateRunning
	}
	s.stopSingleton(sg)
}

// stopGrace is how long sg's process may take to stop after TERM: the
// graceful_timeout, cut short to reach KILL by the leadership's KillBy.
func (s *Supervisor) stopGrace(sg *singleton) time.Duration {
	grace := s.gracefulTimeout()
	if !sg.killBy.IsZero() {
		grace = max(min(grace, time.Until(sg.killBy)), 0)
	}
	return grace
}

// singletonEnv returns the variables sg's process gets from forkd.
func (sg *singleton) env() []string {
	env := []string{"FORKD_SINGLETON=" + sg.cfg.Name}
	if sg.clustered() {
		env = append(env, jobs.EnvFencingToken+"="+strconv.FormatInt(sg.token, 10))
	}
	return env
}

// claim claims the period at of the cluster schedule sc; handleClaim runs
// it if this forkd won it.
func (s *Supervisor) claim(sc *schedule, at time.Time) {
	cl := s.opts.Cluster
	if cl == nil {
		s.noCluster(sc.cfg.Name)
		return
	}
	name := sc.cfg.Name
	go func() {
		c, err := cl.Claim(context.Background(), name, at)
		select {
		case s.claims <- claimResult{sc: sc, at: at, claim: c, err: err}:
		case <-s.done:
		}
	}()
}

// handleClaim takes the outcome of a claim: the run starts if this forkd
// won the period.
func (s *Supervisor) handleClaim(r claimResult) {
	sc := r.sc
	if s.schedules[sc.cfg.Name] != sc || sc.removed || s.stopping {
		return
	}
	switch {
	case errors.Is(r.err, cluster.ErrUnavailable):
		s.log.Debug("cluster schedule run not claimed: etcd unreachable", "schedule", sc.cfg.Name,
			"scheduled_at", r.at.Format(time.RFC3339))
	case r.err != nil:
		s.log.Warn("cluster schedule run not claimed", "schedule", sc.cfg.Name,
			"scheduled_at", r.at.Format(time.RFC3339), "err", r.err)
	case !r.claim.Won:
		sc.holder = r.claim.Holder
		s.log.Debug("cluster schedule run claimed by another host", "schedule", sc.cfg.Name,
			"scheduled_at", r.at.Format(time.RFC3339), "holder", r.claim.Holder)
	default:
		sc.holder, sc.token = r.claim.Holder, r.claim.Token
		s.due(sc, r.at)
	}
}

// catchUpCluster claims the run a persistent cluster schedule owes from
// while every forkd of the cluster was down, once etcd is first reached:
// the last claimed period is etcd's, not the state file's.
func (s *Supervisor) catchUpCluster(sc *schedule) {
	cl := s.opts.Cluster
	if cl == nil {
		return
	}
	name, timing := sc.cfg.Name, sc.timing
	go func() {
		select {
		case <-cl.Ready():
		case <-s.done:
			return
		}
		last, _, err := cl.Last(context.Background(), name)
		if err != nil {
			s.log.Warn("persistent cluster schedule: last run not read; no catch-up", "schedule", name, "err", err)
			return
		}
		due, ok := jobs.Missed(timing, last, time.Now())
		if !ok {
			return
		}
		s.log.Info("cluster schedule missed a run while every host was down: claiming it now", "schedule", name,
			"scheduled_at", due.Format(time.RFC3339))
		c, err := cl.Claim(context.Background(), name, due)
		select {
		case s.claims <- claimResult{sc: sc, at: due, claim: c, err: err}:
		case <-s.done:
		}
	}()
}

// clusterHolders fills in the holder of the cluster singletons in list
// that this forkd does not hold, from etcd (left empty when it cannot
// tell).
func (s *Supervisor) clusterHolders(ctx context.Context, list []jobs.Info) {
	cl := s.opts.Cluster
	if cl == nil || !cl.Connected() {
		return
	}
	for i := range list {
		in := &list[i]
		if in.Kind != jobs.KindSingleton || in.Scope != string(config.ScopeCluster) || in.Holder != "" {
			continue
		}
		if h, err := cl.Holder(ctx, in.Name); err == nil {
			in.Holder = h
		}
	}
}
