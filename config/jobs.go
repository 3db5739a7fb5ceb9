package config

import (
	"time"

	"github.com/forkd/forkd/jobs"
)

// Limits on singletons and schedules.
const (
	maxJobNameLen = 64
	// MinEvery is the shortest period of a schedule's every.
	MinEvery = time.Second
)

// validJobName reports whether name can name a singleton or a schedule:
// 1–64 characters of a–z 0–9 _ -.
func validJobName(name string) bool {
	if name == "" || len(name) > maxJobNameLen {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// validateJobs checks the singletons and schedules of c, and settles their
// Path and each schedule's CronTiming.
func (d *document) validateJobs(c *Config) {
	names := map[string]string{} // name → the key of the table that has it
	checkName := func(base, name string) {
		key := base + ".name"
		switch {
		case !d.present(key):
			d.fail(key, `required: a name for it, unique among singletons and schedules, e.g. name = "cleanup"`)
		case !validJobName(name):
			d.fail(key, "must be 1 to %d characters of a-z 0-9 _ -, got %q", maxJobNameLen, name)
		case names[name] != "":
			d.fail(key, "%q is already the name of %s (names are unique among singletons and schedules)", name, names[name])
		default:
			names[name] = base
		}
	}

	for i := range c.Singletons {
		s, base := &c.Singletons[i], keyIndex("singleton", i)
		checkName(base, s.Name)
		s.Path = d.validateProgram(base, program{s.Command, s.Args, s.Env, s.Dir}, "a singleton", WorkerVars, clusterVars)
		if !s.Ready.Valid() {
			d.fail(base+".ready", "must be %q or %q, got %q", ReadyStarted, ReadyNotify, s.Ready)
		} else if s.Ready == ReadyNotify && s.ReadyDelay.Duration > 0 && !d.isBad(base+".ready") {
			d.fail(base+".ready_delay", "applies only with ready = %q (this singleton is ready when it sends READY=1)", ReadyStarted)
		}
		if !s.Start.Valid() {
			d.fail(base+".start", "must be %q or %q, got %q", StartAfterReady, StartBeforeWorkers, s.Start)
		}
		d.validateLimits(base, &s.Limits)
	}

	for i := range c.Schedules {
		s, base := &c.Schedules[i], keyIndex("schedule", i)
		checkName(base, s.Name)
		d.validateTiming(base, s)
		s.Path = d.validateProgram(base, program{s.Command, s.Args, s.Env, s.Dir}, "every run", WorkerVars, jobs.Vars(), clusterVars)
		if s.Jitter.Duration > 0 && s.Every.Duration > 0 && s.Jitter.Duration >= s.Every.Duration {
			d.fail(base+".jitter", "must be less than every (%v), or a run could start after the next one is due", s.Every)
		}
		if !s.Overlap.Valid() {
			d.fail(base+".overlap", "must be %q, %q or %q, got %q", jobs.OverlapSkip, jobs.OverlapQueue, jobs.OverlapReplace, s.Overlap)
		}
		if s.Persistent && c.Server.StateDir == "" && s.Scope != ScopeCluster {
			d.fail(base+".persistent", "needs a directory for the last-run times: set server.state_dir (under systemd, StateDirectory= sets it)")
		}
	}
}

// validateTiming checks every, cron and timezone of schedule s at base and
// sets s.CronTiming.
func (d *document) validateTiming(base string, s *Schedule) {
	hasEvery, hasCron := d.present(base+".every"), d.present(base+".cron")
	hasZone := d.present(base + ".timezone")
	if d.isBad(base+".every") || d.isBad(base+".cron") {
		return // already reported; the rest would guess
	}
	switch {
	case hasEvery && hasCron:
		d.failKey(base+".cron", "set either every or cron, not both")
		return
	case !hasEvery && !hasCron:
		d.fail(base, `needs every (e.g. every = "5m") or cron (e.g. cron = "*/5 * * * *")`)
		return
	case hasEvery:
		if hasZone {
			d.failKey(base+".timezone", "applies only with cron (every counts real time, whatever the zone)")
		}
		switch {
		case s.Every.Duration == 0:
			d.fail(base+".every", "must be more than 0s")
		case s.Every.Duration < MinEvery:
			d.fail(base+".every", "must be at least %v, got %v", MinEvery, s.Every)
		}
		return
	}

	loc := time.Local
	if hasZone {
		if s.Timezone == "" {
			d.fail(base+".timezone", "must not be empty (leave it out for the machine's time zone)")
			return
		}
		var err error
		if loc, err = time.LoadLocation(s.Timezone); err != nil {
			d.fail(base+".timezone", "unknown time zone %q (a tz database name such as \"Asia/Seoul\" or \"UTC\")", s.Timezone)
			return
		}
	}
	ct, err := jobs.ParseCron(s.Cron, loc)
	if err != nil {
		d.fail(base+".cron", "%v", err)
		return
	}
	s.CronTiming = ct
}
