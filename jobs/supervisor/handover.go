package supervisor

import (
	"context"
	"encoding/json"
	"reflect"
	"time"

	"github.com/forkd/forkd/cluster"
	"github.com/forkd/forkd/config"
	"github.com/forkd/forkd/internal/process"
	"github.com/forkd/forkd/jobs"
)

// handoverState is what an upgrading master hands its successor of the
// singletons and schedules (workers.Handover.Jobs).
type handoverState struct {
	Singletons []handoverSingleton `json:"singletons,omitempty"`
	Schedules  []handoverSchedule  `json:"schedules,omitempty"`
	// ClusterLease is the etcd lease of the master's cluster session (0:
	// none), ClusterRenewed when its last answered renewal was sent.
	ClusterLease   int64     `json:"cluster_lease,omitempty"`
	ClusterRenewed time.Time `json:"cluster_renewed,omitzero"`
	// ClusterAgent is the master's forkd-cluster sidecar, which the
	// successor adopts (nil: none).
	ClusterAgent *cluster.Agent `json:"cluster_agent,omitempty"`
}

type handoverSingleton struct {
	Name string `json:"name"`
	// Config is the table the process runs with.
	Config   config.Singleton `json:"config"`
	PID      int              `json:"pid"`
	Started  time.Time        `json:"started"`
	Ready    bool             `json:"ready"`
	Failures int              `json:"failures"`
	Starts   int              `json:"starts"`
	LastExit string           `json:"last_exit,omitempty"`
	// Token is a cluster singleton's fencing token (0: not held).
	Token int64 `json:"token,omitempty"`
}

type handoverSchedule struct {
	Name       string       `json:"name"`
	Timing     string       `json:"timing"`
	Next       time.Time    `json:"next"`
	Waiting    time.Time    `json:"waiting"`
	LastStart  time.Time    `json:"last_start"`
	LastResult string       `json:"last_result,omitempty"`
	Starts     int          `json:"starts"`
	Run        *handoverRun `json:"run,omitempty"`
}

type handoverRun struct {
	ID          string    `json:"id"`
	PID         int       `json:"pid"`
	ScheduledAt time.Time `json:"scheduled_at"`
	Started     time.Time `json:"started"`
	Result      string    `json:"result,omitempty"`
	// OutputFD is the read end of the pipe the run writes to, kept open
	// across the exec (0: none).
	OutputFD int `json:"output_fd,omitempty"`
}

// handover describes the supervisor for its successor. Starts asked for
// and not made are not in it: the successor makes them again.
func (s *Supervisor) handover() []byte {
	var h handoverState
	if s.opts.Cluster != nil {
		h.ClusterLease, h.ClusterRenewed = s.opts.Cluster.Lease()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		a, err := s.opts.Cluster.Handover(ctx)
		cancel()
		if err != nil {
			s.log.Error("upgrade: forkd-cluster not handed over; the successor starts its own", "err", err)
		}
		h.ClusterAgent = a
	}
	for _, sg := range s.singletons {
		if sg.proc == nil {
			continue
		}
		h.Singletons = append(h.Singletons, handoverSingleton{Name: sg.cfg.Name, Config: sg.cfg, PID: sg.proc.PID,
			Started: sg.started, Ready: sg.ready, Failures: sg.failures, Starts: sg.starts, LastExit: sg.lastExit,
			Token: sg.token})
	}
	for _, sc := range s.schedules {
		hs := handoverSchedule{Name: sc.cfg.Name, Timing: timingText(sc.cfg), Next: sc.next, Waiting: sc.waiting,
			LastStart: sc.lastStart, LastResult: sc.lastResult, Starts: sc.starts}
		if r := sc.run; r != nil && r.proc != nil {
			hs.Run = &handoverRun{ID: r.id, PID: r.proc.PID, ScheduledAt: r.scheduledAt, Started: r.started,
				Result: r.result}
			if r.out != nil {
				hs.Run.OutputFD = r.out.keep()
			}
		}
		h.Schedules = append(h.Schedules, hs)
	}
	b, _ := json.Marshal(h)
	return b
}

// AdoptedLease returns the etcd lease that the master before an in-place
// upgrade handed over in what Freeze returned (0: none), for
// cluster.Options.Lease.
func AdoptedLease(b json.RawMessage) int64 {
	var h handoverState
	if len(b) == 0 || json.Unmarshal(b, &h) != nil {
		return 0
	}
	return h.ClusterLease
}

// AdoptedAgent returns the forkd-cluster sidecar that the master before
// an in-place upgrade handed over in what Freeze returned (nil: none), for
// cluster.Options.Adopt.
func AdoptedAgent(b json.RawMessage) *cluster.Agent {
	var h handoverState
	if len(b) == 0 || json.Unmarshal(b, &h) != nil {
		return nil
	}
	return h.ClusterAgent
}

// adoptLeadership keeps an adopted cluster singleton while the lease the
// old master held may still be alive: its process is stopped, KILL by the
// lease's stop deadline, unless the new session took the lease (and the
// leadership) over by then.
func (s *Supervisor) adoptLeadership(sg *singleton, renewed time.Time) {
	cl := s.cfg.Cluster
	if renewed.IsZero() {
		renewed = time.Now().Add(-cl.Lease()) // no lease: stop it now
	}
	sg.killBy = renewed.Add(cl.Lease() - cl.Margin()/2)
	proc := sg.proc
	s.after(time.Until(renewed.Add(cl.Lease()-cl.Margin())), func(s *Supervisor) {
		if sg.proc == proc && sg.token == 0 {
			s.log.Warn("adopted cluster singleton: the lease was not taken over in time; stopping it",
				"singleton", sg.cfg.Name)
			s.stopSingleton(sg)
		}
	})
}

// adopt takes over what the master before an upgrade handed over: its
// processes (a singleton or schedule the config no longer has is stopped)
// and the schedules' next due times.
func (s *Supervisor) adopt(b json.RawMessage) {
	var h handoverState
	if err := json.Unmarshal(b, &h); err != nil {
		s.log.Error("upgrade: the singletons' and schedules' state is unreadable; starting them afresh", "err", err)
		return
	}
	s.workersReady = true // the adopted workers serve already
	for _, hs := range h.Singletons {
		proc, err := process.Adopt(hs.PID)
		if err != nil {
			s.log.Warn("upgrade: cannot adopt a singleton", "singleton", hs.Name, "pid", hs.PID, "err", err)
			continue
		}
		sg, ok := s.singletons[hs.Name]
		switch {
		case !ok:
			sg = &singleton{cfg: hs.Config, removed: true}
			s.singletons[hs.Name] = sg
		case !reflect.DeepEqual(sg.cfg, hs.Config):
			// The file changed before the upgrade: as a reload would, the
			// old process stops before the new table's starts.
			next := sg.cfg
			sg.cfg, sg.successor = hs.Config, &next
		}
		sg.proc, sg.started, sg.ready = proc, hs.Started, hs.Ready
		s.tellRunning(sg, proc.PID)
		sg.failures, sg.starts, sg.lastExit = hs.Failures, hs.Starts, hs.LastExit
		sg.state = stateStarting
		if hs.Ready {
			sg.state = stateRunning
		}
		s.watch(proc, sg)
		if sg.cfg.Ready == config.ReadyNotify {
			s.opts.Starter.Route(proc.PID, s.notes)
		}
		if sg.removed || sg.successor != nil {
			s.stopSingleton(sg)
		} else if sg.clustered() {
			s.adoptLeadership(sg, h.ClusterRenewed)
		}
	}
	now := time.Now()
	for _, hs := range h.Schedules {
		sc, ok := s.schedules[hs.Name]
		if ok && timingText(sc.cfg) == hs.Timing {
			sc.next, sc.waiting = hs.Next, hs.Waiting
			if sc.next.IsZero() {
				sc.next = sc.timing.Next(now)
			}
		}
		if ok {
			sc.lastStart, sc.lastResult, sc.starts = hs.LastStart, hs.LastResult, hs.Starts
		}
		if hs.Run == nil {
			continue
		}
		proc, err := process.Adopt(hs.Run.PID)
		if err != nil {
			s.log.Warn("upgrade: cannot adopt a schedule's run", "schedule", hs.Name, "pid", hs.Run.PID, "err", err)
			continue
		}
		if !ok {
			sc = &schedule{cfg: config.Schedule{Name: hs.Name}, removed: true}
			s.schedules[hs.Name] = sc
		}
		r := &run{sc: sc, cfg: sc.cfg, id: hs.Run.ID, scheduledAt: hs.Run.ScheduledAt, proc: proc,
			started: hs.Run.Started, result: hs.Run.Result}
		if hs.Run.OutputFD > 0 {
			r.out = adoptOutput(hs.Run.OutputFD, jobs.Run{Schedule: hs.Name, ID: r.id, ScheduledAt: r.scheduledAt})
		}
		sc.run = r
		s.watch(proc, r)
		s.armTimeout(r)
	}
}
