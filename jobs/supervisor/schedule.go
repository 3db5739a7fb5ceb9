package supervisor

import (
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"syscall"
	"time"

	"github.com/forkd/forkd/config"
	"github.com/forkd/forkd/hooks"
	"github.com/forkd/forkd/internal/process"
	"github.com/forkd/forkd/jobs"
)

// schedule is one [[schedule]]: its timing, its run in flight and the run
// waiting for it.
type schedule struct {
	cfg    config.Schedule
	timing jobs.Timing
	// next is the next due time (before jitter); zero: none.
	next time.Time
	// timer cancels the wait for next.
	timer func()
	run   *run
	// waiting is the due time of a run queued behind the one in flight
	// (zero: none).
	waiting time.Time
	// removed says a reload dropped the schedule: it is kept only until
	// its run in flight ends.
	removed    bool
	lastStart  time.Time
	lastResult string
	starts     int
	// holder is who claimed the cluster schedule's last period, and token
	// that claim's fencing token when it was this forkd.
	holder string
	token  int64
}

// run is one run of a schedule.
type run struct {
	sc          *schedule
	cfg         config.Schedule
	id          string
	scheduledAt time.Time
	proc        *process.Process
	started     time.Time
	// result, when set, is how the run ends whatever its exit:
	// jobs.ResultTimeout, jobs.ResultReplaced.
	result        string
	timeout, kill func()
	asked         bool
	// out is where its output goes (nil: the master's stdout and stderr).
	out *output
}

// newSchedule makes c's schedule: an interval's grid is jobs.Spread's for
// its name, the same at every start.
func (s *Supervisor) newSchedule(c config.Schedule, now time.Time) *schedule {
	sc := &schedule{cfg: c, timing: c.Timing(jobs.Spread(c.Name, c.Every.Duration))}
	sc.next = sc.timing.Next(now)
	return sc
}

// catchUp starts the run each persistent schedule owes from while forkd
// was down.
func (s *Supervisor) catchUp(now time.Time) {
	for _, sc := range s.schedules {
		if sc.cfg.Persistent && sc.clustered() {
			s.catchUpCluster(sc)
			continue
		}
		if !sc.cfg.Persistent || s.state == nil {
			continue
		}
		if due, ok := jobs.Missed(sc.timing, s.state.Last(sc.cfg.Name), now); ok {
			s.log.Info("schedule missed a run while forkd was down: running it now", "schedule", sc.cfg.Name,
				"scheduled_at", due.Format(time.RFC3339))
			s.due(sc, due)
		}
	}
}

// arm waits for sc's next due time, plus its jitter.
func (s *Supervisor) arm(sc *schedule) {
	if sc.next.IsZero() {
		return
	}
	at := sc.next
	d := time.Until(at) + jobs.Delay(sc.cfg.Jitter.Duration, nil)
	sc.timer = s.after(d, func(s *Supervisor) {
		sc.timer = nil
		if s.frozen || s.stopping || sc.removed || !sc.next.Equal(at) {
			return // settle arms it again when it may run
		}
		sc.next = sc.timing.Next(at)
		if sc.clustered() {
			s.claim(sc, at)
			return
		}
		s.due(sc, at)
	})
}

// disarm cancels sc's wait for its next due time.
func (sc *schedule) disarm() {
	if sc.timer != nil {
		sc.timer()
		sc.timer = nil
	}
}

// due handles a run of sc that came due at at (or was asked for then),
// under the overlap policy.
func (s *Supervisor) due(sc *schedule, at time.Time) {
	switch jobs.Decide(sc.cfg.Overlap, sc.run != nil, !sc.waiting.IsZero()) {
	case jobs.Start:
		s.startRun(sc, at)
	case jobs.Skip:
		id := s.ids.New(time.Now())
		s.log.Info("schedule run skipped: the last one still runs", "schedule", sc.cfg.Name, "run_id", id,
			"scheduled_at", at.Format(time.RFC3339))
		sc.lastResult = jobs.ResultSkipped
		s.emit(hooks.Event{Hook: hooks.ScheduleFinished, Job: sc.cfg.Name, RunID: id, ScheduledAt: at,
			ExitCode: -1, Result: jobs.ResultSkipped, Reason: "the last run still runs"})
	case jobs.Queue:
		sc.waiting = at
	case jobs.Replace:
		sc.waiting = at
		r := sc.run
		if r.result == "" {
			r.result = jobs.ResultReplaced
			s.stopRun(r, s.cfg.Server.KillTimeout.Duration)
		}
	}
}

// startRun starts a run of sc for the due time at.
func (s *Supervisor) startRun(sc *schedule, at time.Time) {
	r := &run{sc: sc, cfg: sc.cfg, id: s.ids.New(time.Now()), scheduledAt: at, asked: true}
	sc.run = r
	id := jobs.Run{Schedule: sc.cfg.Name, ID: r.id, ScheduledAt: at}
	r.out = s.newOutput(id)
	env := id.Env()
	if sc.clustered() {
		env = append(env, jobs.EnvFencingToken+"="+strconv.FormatInt(sc.token, 10))
	}
	s.start(r, sc.cfg.Program, env, r.out, false, false, nil)
	if sc.cfg.Persistent && s.state != nil && !sc.clustered() {
		s.state.Set(sc.cfg.Name, at)
		if err := s.state.Save(); err != nil {
			s.log.Warn("schedule state not saved", "schedule", sc.cfg.Name, "err", err)
		}
	}
}

// runStarted takes the outcome of r's start.
func (s *Supervisor) runStarted(r *run, proc *process.Process, err error) {
	r.asked = false
	r.out.started()
	sc := r.sc
	sc.starts++
	sc.lastStart = time.Now()
	if err != nil {
		s.log.Error("start schedule run", "schedule", r.cfg.Name, "run_id", r.id, "err", err)
		s.finishRun(r, -1, 0, jobs.ResultFailed, "could not start: "+err.Error(), 0)
		return
	}
	r.proc, r.started = proc, sc.lastStart
	s.watch(proc, r)
	s.log.Info("schedule run started", "schedule", r.cfg.Name, "run_id", r.id, "pid", proc.PID,
		"scheduled_at", r.scheduledAt.Format(time.RFC3339))
	s.emit(hooks.Event{Hook: hooks.ScheduleStarted, Job: r.cfg.Name, RunID: r.id, ScheduledAt: r.scheduledAt,
		PID: proc.PID})
	if s.stopping {
		s.stopRun(r, s.gracefulTimeout())
		return
	}
	s.armTimeout(r)
}

// armTimeout stops r once it has run for its schedule's timeout.
func (s *Supervisor) armTimeout(r *run) {
	if r.cfg.Timeout.Duration <= 0 {
		return
	}
	proc := r.proc
	r.timeout = s.after(time.Until(r.started.Add(r.cfg.Timeout.Duration)), func(s *Supervisor) {
		r.timeout = nil
		if r.proc == proc && r.result == "" {
			s.log.Warn("schedule run timed out; stopping it", "schedule", r.cfg.Name, "run_id", r.id,
				"timeout", r.cfg.Timeout.Duration)
			r.result = jobs.ResultTimeout
			s.stopRun(r, s.cfg.Server.KillTimeout.Duration)
		}
	})
}

// stopRun sends r TERM, and KILL after grace.
func (s *Supervisor) stopRun(r *run, grace time.Duration) {
	if r.proc == nil || r.kill != nil {
		return
	}
	proc := r.proc
	s.signal(proc, "schedule run "+r.cfg.Name, syscall.SIGTERM)
	r.kill = s.after(grace, func(s *Supervisor) {
		r.kill = nil
		if r.proc == proc {
			s.signal(proc, "schedule run "+r.cfg.Name, syscall.SIGKILL)
		}
	})
}

// runExited takes the exit of r's process.
func (s *Supervisor) runExited(r *run, ev exitEvent) {
	r.proc = nil
	for _, c := range []*func(){&r.timeout, &r.kill} {
		if *c != nil {
			(*c)()
			*c = nil
		}
	}
	code, sig := exitFields(ev)
	result := r.result
	if result == "" {
		result = jobs.ResultOK
		if ev.err != nil || ev.exit.Code() != 0 {
			result = jobs.ResultFailed
		}
	}
	s.finishRun(r, code, sig, result, describe(ev), time.Since(r.started))
}

// finishRun reports r's end and starts the run waiting behind it.
func (s *Supervisor) finishRun(r *run, code, sig int, result, how string, took time.Duration) {
	sc := r.sc
	sc.run = nil
	sc.lastResult = result
	log := s.log.Info
	if result != jobs.ResultOK {
		log = s.log.Warn
	}
	log("schedule run finished", "schedule", r.cfg.Name, "run_id", r.id, "result", result, "how", how,
		"took", took.Round(time.Millisecond))
	s.emit(hooks.Event{Hook: hooks.ScheduleFinished, Job: r.cfg.Name, RunID: r.id, ScheduledAt: r.scheduledAt,
		ExitCode: code, Signal: sig, Duration: took, Result: result, Reason: how})
	if sc.removed {
		delete(s.schedules, sc.cfg.Name)
		return
	}
	if !sc.waiting.IsZero() {
		at := sc.waiting
		sc.waiting = time.Time{}
		if !s.stopping {
			s.startRun(sc, at)
		}
	}
}

// stopRuns starts no more runs and stops those in flight: the workers
// stop.
func (s *Supervisor) stopRuns() {
	if s.stopping {
		return
	}
	s.stopping = true
	for _, sc := range s.schedules {
		sc.disarm()
		sc.waiting = time.Time{}
		if sc.run != nil {
			s.stopRun(sc.run, s.gracefulTimeout())
		}
	}
}

// applySchedules brings the schedules to cfg's tables.
func (s *Supervisor) applySchedules(cfg *config.Config, now time.Time) {
	keep := make(map[string]bool)
	for _, c := range cfg.Schedules {
		keep[c.Name] = true
		sc, ok := s.schedules[c.Name]
		if ok && sameSchedule(sc.cfg, c) {
			sc.removed = false
			sc.cfg = c
			continue
		}
		if ok {
			sc.disarm()
		}
		nsc := s.newSchedule(c, now)
		if ok && sc.run != nil {
			// The run in flight finishes as its old table said; the new
			// table's runs wait for it as its overlap policy says.
			nsc.run, nsc.waiting = sc.run, sc.waiting
			sc.run.sc = nsc
			nsc.lastStart, nsc.lastResult, nsc.starts = sc.lastStart, sc.lastResult, sc.starts
		}
		s.schedules[c.Name] = nsc
	}
	for name, sc := range s.schedules {
		if keep[name] {
			continue
		}
		sc.disarm()
		sc.removed, sc.waiting = true, time.Time{}
		if sc.run == nil {
			delete(s.schedules, name)
		}
	}
}

// sameSchedule reports whether two tables describe the same schedule.
func sameSchedule(a, b config.Schedule) bool {
	a.CronTiming, b.CronTiming = nil, nil
	return reflect.DeepEqual(a, b)
}

// apply makes cfg the supervisor's (see Apply).
func (s *Supervisor) apply(cfg *config.Config) {
	if s.state == nil && s.hasPersistent(cfg) {
		s.cfg = cfg
		s.openState()
	}
	s.cfg = cfg
	s.applySingletons(cfg)
	s.applySchedules(cfg, time.Now())
}

// hasPersistent reports whether cfg has a persistent schedule.
func (s *Supervisor) hasPersistent(cfg *config.Config) bool {
	for _, c := range cfg.Schedules {
		if c.Persistent && c.Scope != config.ScopeCluster {
			return true
		}
	}
	return false
}

// openState reads the persistent schedules' state file; a corrupt one is
// reported and replaced.
func (s *Supervisor) openState() {
	st, err := jobs.OpenState(s.cfg.Server.StateDir)
	if err != nil {
		if errors.Is(err, jobs.ErrCorruptState) {
			s.log.Warn("schedule state file is corrupt: starting afresh", "err", err)
		} else {
			s.log.Warn("schedule state file", "err", err)
		}
	}
	s.state = st
}

// info describes sc.
func (sc *schedule) info() jobs.Info {
	in := jobs.Info{Name: sc.cfg.Name, Kind: jobs.KindSchedule, State: "idle", Timing: timingText(sc.cfg),
		LastStart: sc.lastStart, LastResult: sc.lastResult, NextDue: sc.next, Starts: sc.starts,
		Scope: scopeText(sc.cfg.Scope), Holder: sc.holder}
	if sc.run != nil {
		in.State = "running"
		if sc.run.proc != nil {
			in.PID = sc.run.proc.PID
		}
	}
	if !sc.waiting.IsZero() {
		in.State = "queued"
	}
	return in
}

// scopeText is a job's scope as jobs.Info says it.
func scopeText(s config.Scope) string {
	if s == "" {
		return string(config.ScopeInstance)
	}
	return string(s)
}

// timingText says when c runs.
func timingText(c config.Schedule) string {
	if c.Cron != "" {
		if c.Timezone != "" {
			return fmt.Sprintf("cron %q in %s", c.Cron, c.Timezone)
		}
		return fmt.Sprintf("cron %q", c.Cron)
	}
	return "every " + c.Every.Duration.String()
}
