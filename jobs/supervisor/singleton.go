package supervisor

import (
	"reflect"
	"syscall"
	"time"

	"github.com/forkd/forkd/cgroup"
	"github.com/forkd/forkd/config"
	"github.com/forkd/forkd/hooks"
	"github.com/forkd/forkd/internal/process"
	"github.com/forkd/forkd/jobs"
	"github.com/forkd/forkd/workers"
)

// States of a singleton, as jobs.Info reports them.
const (
	stateWaiting  = "waiting"  // not started: waits for the workers, or for its predecessor to exit
	stateStarting = "starting" // started, not ready yet
	stateRunning  = "running"
	stateBackoff  = "backoff" // restarting after a failure
	stateStopping = "stopping"
	// stateCampaigning: a cluster singleton that another host holds, or
	// that waits for etcd.
	stateCampaigning = "campaigning"
)

// singleton is one [[singleton]]: at most one process at any time.
type singleton struct {
	cfg   config.Singleton
	state string
	// asked says a start was asked of the arbiter and not answered yet.
	asked   bool
	proc    *process.Process
	ready   bool
	started time.Time
	// failures counts the exits in a row before MinUptime (backoff).
	failures int
	// retry cancels the backoff timer; kill the stop's KILL deadline;
	// readyTimer the ready_delay.
	retry, kill, readyTimer func()
	// successor is the table to start once the process has exited (a
	// reload changed it); removed says the reload dropped it.
	successor *config.Singleton
	removed   bool
	lastExit  string
	starts    int
	// cg is the process's own cgroup (nil: none; see cgroup.go);
	// memoryStop says it is being stopped for passing max_memory.
	cg         *cgroup.Group
	memoryStop bool
	// campaigning says a cluster singleton asked the cluster to lead;
	// token is the fencing token while it leads (0: it does not), and
	// killBy, after a lost leadership, when its process must be gone.
	campaigning bool
	token       int64
	killBy      time.Time
}

// wanted reports whether sg should have a process now: not once the
// workers stop.
func (s *Supervisor) wanted(sg *singleton) bool {
	if s.shutdown || s.stopping || sg.removed || sg.successor != nil {
		return false
	}
	if sg.clustered() && sg.token == 0 {
		return false
	}
	return sg.cfg.Start == config.StartBeforeWorkers || s.workersReady
}

// ensure starts sg's process when it should run and has none.
func (s *Supervisor) ensure(sg *singleton) {
	s.syncLead(sg)
	if sg.proc != nil || sg.asked || sg.retry != nil || !s.wanted(sg) {
		return
	}
	cg, err := s.newCgroup(sg)
	if err != nil {
		s.log.Error("start singleton", "singleton", sg.cfg.Name, "err", err)
		sg.lastExit = "could not start: " + err.Error()
		s.backoff(sg)
		return
	}
	sg.asked, sg.state, sg.cg = true, stateStarting, cg
	s.start(sg, sg.cfg.Program, sg.env(), nil, sg.cfg.Sockets, sg.cfg.Ready == config.ReadyNotify, cg)
}

// singletonStarted takes the outcome of sg's start.
func (s *Supervisor) singletonStarted(sg *singleton, proc *process.Process, err error) {
	sg.asked = false
	if err != nil {
		s.dropCgroup(sg.cg)
		sg.cg = nil
		s.log.Error("start singleton", "singleton", sg.cfg.Name, "err", err)
		sg.lastExit = "could not start: " + err.Error()
		s.backoff(sg)
		return
	}
	sg.proc, sg.started, sg.ready = proc, time.Now(), false
	sg.starts++
	s.tellRunning(sg, proc.PID)
	s.watch(proc, sg)
	s.watchMemory(sg)
	s.log.Info("singleton started", "singleton", sg.cfg.Name, "pid", proc.PID)
	s.emit(hooks.Event{Hook: hooks.SingletonStarted, Job: sg.cfg.Name, PID: proc.PID})
	if !s.wanted(sg) { // stopped or changed while it started
		s.stopSingleton(sg)
		return
	}
	if sg.cfg.Ready == config.ReadyNotify {
		return // READY=1 comes on the notify socket
	}
	sg.readyTimer = s.after(sg.cfg.ReadyDelay.Duration, func(s *Supervisor) {
		sg.readyTimer = nil
		if sg.proc == proc && !sg.ready {
			s.singletonReady(sg)
		}
	})
}

// singletonReady records that sg's process is up.
func (s *Supervisor) singletonReady(sg *singleton) {
	sg.ready = true
	if sg.state == stateStarting {
		sg.state = stateRunning
	}
	s.log.Debug("singleton ready", "singleton", sg.cfg.Name, "pid", sg.proc.PID)
}

// singletonExited takes the exit of sg's process.
func (s *Supervisor) singletonExited(sg *singleton, ev exitEvent) {
	sg.proc, sg.ready = nil, false
	s.tellRunning(sg, 0)
	for _, c := range []*func(){&sg.kill, &sg.readyTimer} {
		if *c != nil {
			(*c)()
			*c = nil
		}
	}
	if sg.cfg.Ready == config.ReadyNotify {
		s.opts.Starter.Unroute(ev.pid)
	}
	code, sig := exitFields(ev)
	reason := describe(ev)
	switch {
	case s.endCgroup(sg):
		reason = reasonOOM
	case sg.memoryStop:
		reason = reasonMemory
	case sg.state == stateStopping:
		reason = "stopped"
	}
	memoryStop := sg.memoryStop
	sg.memoryStop = false
	sg.lastExit = reason
	s.log.Info("singleton exited", "singleton", sg.cfg.Name, "pid", ev.pid, "how", describe(ev),
		"uptime", time.Since(sg.started).Round(time.Millisecond))
	s.emit(hooks.Event{Hook: hooks.SingletonExited, Job: sg.cfg.Name, PID: ev.pid, ExitCode: code, Signal: sig,
		Reason: reason})
	switch {
	case sg.removed:
		s.resign(sg)
		delete(s.singletons, sg.cfg.Name)
	case sg.successor != nil:
		sg.cfg, sg.successor, sg.failures, sg.state = *sg.successor, nil, 0, stateWaiting
	case s.shutdown:
		sg.state = stateWaiting
	case sg.clustered() && sg.token == 0:
		sg.state = stateCampaigning // lost its leadership: no backoff, no restart
	case memoryStop || time.Since(sg.started) >= s.opts.MinUptime:
		sg.failures, sg.state = 0, stateWaiting // ensure restarts it at once
	default:
		s.backoff(sg)
	}
}

// backoff schedules sg's next start after a failure, as a worker slot's.
func (s *Supervisor) backoff(sg *singleton) {
	sg.failures++
	d := workers.Backoff(sg.failures)
	sg.state = stateBackoff
	s.log.Warn("singleton failed; restarting after a backoff", "singleton", sg.cfg.Name,
		"failures", sg.failures, "backoff", d)
	sg.retry = s.after(d, func(s *Supervisor) {
		sg.retry = nil
		if sg.state == stateBackoff {
			sg.state = stateWaiting
		}
	})
}

// stopSingleton sends sg's process TERM, and KILL after graceful_timeout.
func (s *Supervisor) stopSingleton(sg *singleton) {
	if sg.retry != nil {
		sg.retry()
		sg.retry = nil
		sg.state = stateWaiting
	}
	if sg.proc == nil || sg.state == stateStopping {
		return
	}
	sg.state = stateStopping
	proc := sg.proc
	s.signal(proc, "singleton "+sg.cfg.Name, syscall.SIGTERM)
	sg.kill = s.after(s.stopGrace(sg), func(s *Supervisor) {
		sg.kill = nil
		if sg.proc == proc {
			s.log.Warn("singleton did not stop in time; killing it", "singleton", sg.cfg.Name, "pid", proc.PID)
			s.signal(proc, "singleton "+sg.cfg.Name, syscall.SIGKILL)
		}
	})
}

// beforeWorkersReady reports whether every singleton the workers wait for
// is ready.
func (s *Supervisor) beforeWorkersReady() bool {
	for _, sg := range s.singletons {
		if sg.cfg.Start == config.StartBeforeWorkers && !sg.removed && !sg.ready && !sg.clustered() {
			return false
		}
	}
	return true
}

// applySingletons brings the singletons to cfg's tables.
func (s *Supervisor) applySingletons(cfg *config.Config) {
	keep := make(map[string]bool)
	for _, c := range cfg.Singletons {
		keep[c.Name] = true
		sg, ok := s.singletons[c.Name]
		switch {
		case !ok:
			s.singletons[c.Name] = &singleton{cfg: c, state: stateWaiting}
		case reflect.DeepEqual(sg.cfg, c) && sg.successor == nil:
			sg.removed = false
		case sg.proc == nil && !sg.asked:
			sg.cfg, sg.removed, sg.successor, sg.failures = c, false, nil, 0
			if sg.retry != nil {
				sg.retry()
				sg.retry, sg.state = nil, stateWaiting
			}
		default:
			c := c
			sg.successor, sg.removed = &c, false
			s.log.Info("singleton changed: stopping the old process before the new one starts",
				"singleton", c.Name)
			s.stopSingleton(sg)
		}
	}
	for name, sg := range s.singletons {
		if keep[name] {
			continue
		}
		sg.removed = true
		if sg.proc == nil && !sg.asked {
			if sg.retry != nil {
				sg.retry()
			}
			s.resign(sg)
			delete(s.singletons, name)
			continue
		}
		s.stopSingleton(sg)
	}
}

// info describes sg.
func (sg *singleton) info() jobs.Info {
	in := jobs.Info{Name: sg.cfg.Name, Kind: jobs.KindSingleton, State: sg.state, LastStart: sg.started,
		LastResult: sg.lastExit, Starts: sg.starts, Scope: scopeText(sg.cfg.Scope)}
	if sg.proc != nil {
		in.PID = sg.proc.PID
	}
	return in
}
