package bench

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseRun(t *testing.T) {
	r, ok := ParseRun("run 42 1700000000005000000 tick07 2023-11-14T22:13:20Z 0195c9b4-6f1e-7a3c-8d2e-4b5f6a7b8c9d")
	due := time.Unix(1700000000, 0)
	if !ok || r.PID != 42 || r.Schedule != "tick07" || !r.ScheduledAt.Equal(due) || r.Delay() != 5*time.Millisecond ||
		r.RunID != "0195c9b4-6f1e-7a3c-8d2e-4b5f6a7b8c9d" {
		t.Errorf("ParseRun = %+v, %v", r, ok)
	}
	for _, bad := range []string{"start 42 1", "run 42 1 tick07 2023-11-14T22:13:20Z", "run 42 1 - 2023-11-14T22:13:20Z x",
		"run 42 1 tick07 yesterday x", "run x 1 tick07 2023-11-14T22:13:20Z x"} {
		if _, ok := ParseRun(bad); ok {
			t.Errorf("ParseRun(%q) accepted it", bad)
		}
	}
}

func TestTallyRuns(t *testing.T) {
	t0 := time.Unix(1000, 0)
	run := func(name string, due, late time.Duration) RunReport {
		return RunReport{Schedule: name, ScheduledAt: t0.Add(due), Started: t0.Add(due + late)}
	}
	runs := []RunReport{
		run("a", 0, time.Millisecond), // before the window: anchors a's grid
		run("a", time.Second, 2*time.Millisecond),
		run("a", 2*time.Second, 3*time.Millisecond),
		run("a", 2*time.Second, 4*time.Millisecond), // doubled
		run("a", 3500*time.Millisecond, 0),          // off the grid
		run("b", 3*time.Second, time.Millisecond),   // b's 1 s and 2 s are missed
		run("a", 5*time.Second, 0),                  // after the window
		run("z", time.Second, 0),                    // not one of the schedules
	}
	got := TallyRuns(runs, []string{"a", "b", "c"}, time.Second, t0.Add(500*time.Millisecond), t0.Add(4500*time.Millisecond))
	// Due in the window: 1, 2, 3, 4 s for each of a, b (its grid through
	// 3 s) and c (no run: the grid of whole seconds).
	if got.Due != 12 || got.Doubled != 1 || got.OffGrid != 1 || got.Missed != 12-3 || len(got.Runs) != 3 {
		t.Errorf("TallyRuns = due %d, missed %d, doubled %d, off grid %d, %d runs; want 12, 9, 1, 1, 3",
			got.Due, got.Missed, got.Doubled, got.OffGrid, len(got.Runs))
	}
	if d := got.Delays(); fmt.Sprint(d) != "[2 3 1]" {
		t.Errorf("Delays = %v, want [2 3 1] (a at 1 s and 2 s, b at 3 s, by start)", d)
	}
}

// TestBenchRun runs bench/cmd/bench-run as a schedule run and parses its
// report.
func TestBenchRun(t *testing.T) {
	path, err := runBinary.build()
	if err != nil {
		t.Fatal(err)
	}
	in, err := ListenInbox(filepath.Join(t.TempDir(), "probe.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	due := time.Now().Truncate(time.Second)
	before := time.Now()
	cmd := exec.Command(path)
	cmd.Env = []string{"BENCH_PROBE=" + in.Path(), "FORKD_SCHEDULE=tick00", "FORKD_RUN_ID=r1",
		"FORKD_SCHEDULED_AT=" + due.Format(time.RFC3339Nano)}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", path, err, out)
	}
	msgs, err := in.Wait(5*time.Second, "the run's report", func(m []Message) bool { return len(ParseRuns(m)) > 0 })
	if err != nil {
		t.Fatal(err)
	}
	r := ParseRuns(msgs)[0]
	if r.PID != cmd.Process.Pid || r.Schedule != "tick00" || r.RunID != "r1" || !r.ScheduledAt.Equal(due) ||
		r.Started.Before(before) || r.Started.After(time.Now()) {
		t.Errorf("report %+v: want pid %d, tick00, r1, due %v, started after %v", r, cmd.Process.Pid, due, before)
	}
}

func TestReadJobLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "jobs.log")
	if runs, err := ReadJobLog(path); err != nil || runs != nil {
		t.Errorf("ReadJobLog of no file = %v, %v; want no run", runs, err)
	}
	log := "1000.000 7 apscheduler\n1001.000 7 apscheduler\n1001.500 9 cleanup\n1002.000 7 apsch"
	if err := os.WriteFile(path, []byte(log), 0o644); err != nil {
		t.Fatal(err)
	}
	runs, err := ReadJobLog(path)
	if err != nil || len(runs) != 3 || runs[2] != (JobRun{At: time.Unix(1001, 5e8), PID: 9, How: "cleanup"}) {
		t.Fatalf("ReadJobLog = %+v, %v", runs, err)
	}
	if n, pids := CountJobRuns(runs, "apscheduler", time.Unix(1000, 0), time.Unix(1001, 0)); n != 1 || pids != 1 {
		t.Errorf("CountJobRuns in [1000, 1001) = %d from %d pids, want 1 from 1", n, pids)
	}
}

// TestExample_ForkdConfig rewrites the example's forkd.toml for the
// benchmark when the example can run here.
func TestExample_ForkdConfig(t *testing.T) {
	ex := example(t)
	cfg, err := ex.ForkdConfig(23456, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`bind = ["tcp://127.0.0.1:23456"]`, `every = "1s"`, `JOB_EVERY = "1"`} {
		if !strings.Contains(cfg, want) {
			t.Errorf("config lacks %s:\n%s", want, cfg)
		}
	}
	if sm := exampleSchedule.FindStringSubmatch(ex.Config); sm == nil {
		t.Errorf("no [[schedule]] name in the example's forkd.toml")
	}
	ex.Config = "[server]\n"
	if _, err := ex.ForkdConfig(1, time.Second); !errors.Is(err, ErrNoExample) {
		t.Errorf("ForkdConfig of a config without bind = %v, want ErrNoExample", err)
	}
}

// TestWithWorkers sets the example's worker count, and fails on a config
// without one; the example's uvicorn command line logs no access lines, as
// Gunicorn's UvicornWorker does by default (scenario 16 compares both).
func TestWithWorkers(t *testing.T) {
	ex := example(t)
	cfg, err := WithWorkers(ex.Config, 2)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(cfg, "\nworkers = 2\n") || strings.Contains(cfg, "\nworkers = 4\n") {
		t.Errorf("WithWorkers(2) left:\n%s", cfg)
	}
	if !strings.Contains(cfg, `"--no-access-log"`) {
		t.Errorf("the example's uvicorn args lack \"--no-access-log\":\n%s", cfg)
	}
	if _, err := WithWorkers("[server]\n", 2); !errors.Is(err, ErrNoExample) {
		t.Errorf("WithWorkers of a config without workers = %v, want ErrNoExample", err)
	}
}
