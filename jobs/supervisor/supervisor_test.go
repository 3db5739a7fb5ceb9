package supervisor

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/forkd/forkd/config"
	"github.com/forkd/forkd/hooks"
	"github.com/forkd/forkd/internal/notify"
	"github.com/forkd/forkd/internal/process"
	"github.com/forkd/forkd/internal/testkit"
	"github.com/forkd/forkd/jobs"
	"github.com/forkd/forkd/workers"
)

// directStarter starts processes on the caller's goroutine, as the
// arbiter would on its own.
type directStarter struct{}

func (directStarter) StartProcess(a *process.Attr, tag any, _ chan<- notify.Note, done chan<- workers.Started) {
	proc, err := process.Start(a)
	done <- workers.Started{Proc: proc, Err: err, Tag: tag}
}
func (directStarter) Route(int, chan<- notify.Note) {}
func (directStarter) Unroute(int)                   {}

// events records hook events.
type events chan hooks.Event

func (e events) Emit(ev hooks.Event) { e <- ev }

// next returns the next event of hook h, failing after testkit.Deadline.
func (e events) next(t *testing.T, h hooks.Hook) hooks.Event {
	t.Helper()
	deadline := time.After(testkit.Deadline)
	for {
		select {
		case ev := <-e:
			if ev.Hook == h {
				return ev
			}
		case <-deadline:
			t.Fatalf("no %s within %v", h, testkit.Deadline)
		}
	}
}

// schedCfg is a config with one schedule running sh -c script, every
// hour (runs come from RunNow), with overlap and timeout.
func schedCfg(t *testing.T, script string, overlap jobs.Overlap, timeout time.Duration) *config.Config {
	cfg := config.Default()
	cfg.Server.GracefulTimeout.Duration = 5 * time.Second
	cfg.Server.KillTimeout.Duration = 2 * time.Second
	cfg.Schedules = []config.Schedule{{
		Name:    "job",
		Program: config.Program{Command: "/bin/sh", Path: "/bin/sh", Args: []string{"-c", script}},
		Every:   config.Duration{Duration: time.Hour},
		Overlap: overlap,
		Timeout: config.Duration{Duration: timeout},
	}}
	return cfg
}

// runSupervisor starts a supervisor for cfg until the test ends and returns it and
// its events.
func runSupervisor(t *testing.T, cfg *config.Config) (*Supervisor, events) {
	ev := make(events, 256)
	s := New(Options{Config: cfg, Starter: directStarter{}, Hooks: ev})
	testkit.Run(t, s.Run)
	return s, ev
}

func runNow(t *testing.T, s *Supervisor) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testkit.Deadline)
	defer cancel()
	if err := s.RunNow(ctx, "job"); err != nil {
		t.Fatal(err)
	}
}

func TestSupervisor_OverlapSkip(t *testing.T) {
	s, ev := runSupervisor(t, schedCfg(t, "sleep 0.5", jobs.OverlapSkip, 0))
	runNow(t, s)
	first := ev.next(t, hooks.ScheduleStarted)
	runNow(t, s)
	skipped := ev.next(t, hooks.ScheduleFinished)
	if skipped.Result != jobs.ResultSkipped || skipped.RunID == first.RunID {
		t.Fatalf("second run: %+v, want a skipped run of its own", skipped)
	}
	if done := ev.next(t, hooks.ScheduleFinished); done.RunID != first.RunID || done.Result != jobs.ResultOK {
		t.Fatalf("first run ended %+v, want ok", done)
	}
}

func TestSupervisor_OverlapQueue(t *testing.T) {
	s, ev := runSupervisor(t, schedCfg(t, "sleep 0.3", jobs.OverlapQueue, 0))
	runNow(t, s)
	first := ev.next(t, hooks.ScheduleStarted)
	runNow(t, s)
	runNow(t, s) // one queued run at most: skipped
	if e := ev.next(t, hooks.ScheduleFinished); e.Result != jobs.ResultSkipped {
		t.Fatalf("third run: %+v, want skipped", e)
	}
	if e := ev.next(t, hooks.ScheduleFinished); e.RunID != first.RunID || e.Result != jobs.ResultOK {
		t.Fatalf("first run ended %+v", e)
	}
	second := ev.next(t, hooks.ScheduleStarted)
	if second.RunID == first.RunID {
		t.Fatal("the queued run did not start")
	}
}

func TestSupervisor_OverlapReplace(t *testing.T) {
	s, ev := runSupervisor(t, schedCfg(t, "exec sleep 30", jobs.OverlapReplace, 0))
	runNow(t, s)
	first := ev.next(t, hooks.ScheduleStarted)
	runNow(t, s)
	if e := ev.next(t, hooks.ScheduleFinished); e.RunID != first.RunID || e.Result != jobs.ResultReplaced {
		t.Fatalf("first run ended %+v, want replaced", e)
	}
	if second := ev.next(t, hooks.ScheduleStarted); second.RunID == first.RunID {
		t.Fatal("the replacing run did not start")
	}
}

func TestSupervisor_Timeout(t *testing.T) {
	s, ev := runSupervisor(t, schedCfg(t, "exec sleep 30", jobs.OverlapSkip, 200*time.Millisecond))
	runNow(t, s)
	started := ev.next(t, hooks.ScheduleStarted)
	e := ev.next(t, hooks.ScheduleFinished)
	if e.Result != jobs.ResultTimeout || e.Signal == 0 || e.Duration < 200*time.Millisecond {
		t.Fatalf("run ended %+v, want a timeout after 200ms", e)
	}
	if e.RunID != started.RunID {
		t.Fatalf("finished run %s, started %s", e.RunID, started.RunID)
	}
}

func TestSupervisor_RunNowUnknown(t *testing.T) {
	s, _ := runSupervisor(t, schedCfg(t, "true", jobs.OverlapSkip, 0))
	ctx, cancel := context.WithTimeout(context.Background(), testkit.Deadline)
	defer cancel()
	if err := s.RunNow(ctx, "nope"); err == nil {
		t.Fatal("RunNow of an unknown job: no error")
	}
}

// TestSupervisor_PersistentCatchUp: a persistent schedule that missed due
// times while forkd was down runs once at start, for the latest of them;
// a corrupt state file is reported and replaced, not fatal.
func TestSupervisor_PersistentCatchUp(t *testing.T) {
	dir := t.TempDir()
	st, _ := jobs.OpenState(dir)
	grid := jobs.Every{Period: time.Hour, Anchor: jobs.Spread("job", time.Hour)}
	missed := grid.Last(time.Now())
	last := missed.Add(-3 * time.Hour)
	st.Set("job", last)
	if err := st.Save(); err != nil {
		t.Fatal(err)
	}
	cfg := schedCfg(t, "true", jobs.OverlapSkip, 0)
	cfg.Server.StateDir = dir
	cfg.Schedules[0].Persistent = true
	_, ev := runSupervisor(t, cfg)
	e := ev.next(t, hooks.ScheduleStarted)
	if want := missed; !e.ScheduledAt.Equal(want) {
		t.Fatalf("catch-up run for %v, want %v (the last missed due time)", e.ScheduledAt, want)
	}
	if e := ev.next(t, hooks.ScheduleFinished); e.Result != jobs.ResultOK {
		t.Fatalf("catch-up run: %+v", e)
	}

	corrupt := t.TempDir()
	if err := os.WriteFile(filepath.Join(corrupt, jobs.StateFile), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg2 := schedCfg(t, "true", jobs.OverlapSkip, 0)
	cfg2.Server.StateDir = corrupt
	cfg2.Schedules[0].Persistent = true
	s2, _ := runSupervisor(t, cfg2)
	ctx, cancel := context.WithTimeout(context.Background(), testkit.Deadline)
	defer cancel()
	list, err := s2.ListJobs(ctx)
	if err != nil || len(list) != 1 || list[0].State != "idle" {
		t.Fatalf("with a corrupt state file: %+v, %v; want the schedule, idle", list, err)
	}
}

// TestSupervisor_SingletonBeforeWorkers: Ready waits for a before_workers
// singleton's ready_delay.
func TestSupervisor_SingletonBeforeWorkers(t *testing.T) {
	cfg := config.Default()
	cfg.Server.GracefulTimeout.Duration = 5 * time.Second
	cfg.Singletons = []config.Singleton{{
		Name:       "s",
		Program:    config.Program{Command: "/bin/sh", Path: "/bin/sh", Args: []string{"-c", "exec sleep 30"}},
		Ready:      config.ReadyStarted,
		ReadyDelay: config.Duration{Duration: 200 * time.Millisecond},
		Start:      config.StartBeforeWorkers,
	}}
	s, ev := runSupervisor(t, cfg)
	started := ev.next(t, hooks.SingletonStarted)
	at := time.Now()
	select {
	case <-s.Ready():
	case <-time.After(testkit.Deadline):
		t.Fatal("Ready never closed")
	}
	if took := time.Since(at); took < 150*time.Millisecond {
		t.Errorf("Ready %v after the start, before the 200ms ready_delay", took)
	}
	if started.PID == 0 {
		t.Fatal("no pid")
	}
}
