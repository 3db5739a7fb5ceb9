package forkctl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/forkd/forkd/bus"
	"github.com/forkd/forkd/hooks"
	"github.com/forkd/forkd/jobs"
	"github.com/forkd/forkd/workers"
)

// testJobs is a testController that runs jobs (a bus.JobRunner): RunNow
// of a schedule counts a start and marks it running with pid 9000+starts.
type testJobs struct {
	*testController
	mu   sync.Mutex
	list []jobs.Info
	ran  []string
}

var _ bus.JobRunner = (*testJobs)(nil)

func (c *testJobs) RunNow(_ context.Context, name string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range c.list {
		j := &c.list[i]
		if j.Name != name {
			continue
		}
		if j.Kind == jobs.KindSingleton {
			return fmt.Errorf("%s is a singleton: it runs all the time", name)
		}
		c.ran = append(c.ran, name)
		j.Starts++
		j.State, j.PID = "running", 9000+j.Starts
		return nil
	}
	return fmt.Errorf("run %q: %w", name, jobs.ErrUnknown)
}

func (c *testJobs) ListJobs(context.Context) ([]jobs.Info, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]jobs.Info(nil), c.list...), nil
}

// testJobList is a singleton and two schedules, one of them running.
func testJobList(now time.Time) []jobs.Info {
	return []jobs.Info{
		{Name: "scheduler", Kind: jobs.KindSingleton, State: "running", PID: 1234, LastStart: now.Add(-time.Hour), Starts: 1,
			Scope: "cluster", Holder: "host1/web"},
		{Name: "cleanup", Kind: jobs.KindSchedule, State: "idle", Timing: "every 5m0s",
			LastStart: now.Add(-time.Minute), LastResult: jobs.ResultOK, NextDue: now.Add(4 * time.Minute), Starts: 12,
			Scope: "cluster"},
		{Name: "report", Kind: jobs.KindSchedule, State: "running", PID: 4321, Timing: "0 3 * * * Europe/Seoul",
			LastStart: now.Add(-time.Second), LastResult: jobs.ResultTimeout, NextDue: now.Add(20 * time.Hour), Starts: 3},
	}
}

func TestMain_Jobs(t *testing.T) {
	addr := startDaemon(t)
	now := time.Now().Truncate(time.Second)
	ctl := &testJobs{testController: &testController{}, list: testJobList(now)}
	startBus(t, addr, "web", ctl)

	stdout, _, err := forkctl(t, "--bus", addr, "jobs")
	if err != nil {
		t.Fatalf("jobs: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	if len(lines) != 4 {
		t.Fatalf("jobs printed %d lines, want a header and 3 jobs:\n%s", len(lines), stdout)
	}
	if f := strings.Join(strings.Fields(lines[0]), " "); f != "NAME KIND STATE PID TIMING LAST-START LAST-RESULT NEXT-DUE STARTS HOLDER" {
		t.Errorf("header %q", lines[0])
	}
	at := func(d time.Duration) string { return regexp.QuoteMeta(now.Add(d).Format(time.DateTime)) }
	// Singletons first, then schedules, by name.
	for i, re := range []string{
		`^scheduler\s+singleton\s+running\s+1234\s+-\s+` + at(-time.Hour) + `\s+-\s+-\s+1\s+host1/web$`,
		`^cleanup\s+schedule\s+idle\s+-\s+every 5m0s\s+` + at(-time.Minute) + `\s+ok\s+` + at(4*time.Minute) + `\s+12\s+\?$`,
		`^report\s+schedule\s+running\s+4321\s+0 3 \* \* \* Europe/Seoul\s+` + at(-time.Second) + `\s+timeout\s+` + at(20*time.Hour) + `\s+3\s+-$`,
	} {
		if !regexp.MustCompile(re).MatchString(lines[i+1]) {
			t.Errorf("line %d %q, want it to match %s", i+1, lines[i+1], re)
		}
	}

	stdout, _, err = forkctl(t, "--bus", addr, "jobs", "--json", "web")
	if err != nil {
		t.Fatalf("jobs --json: %v", err)
	}
	var got []map[string]any
	if err := json.Unmarshal([]byte(stdout), &got); err != nil {
		t.Fatalf("jobs --json printed %q: %v", stdout, err)
	}
	if len(got) != 3 {
		t.Fatalf("jobs --json: %d jobs, want 3:\n%s", len(got), stdout)
	}
	s := got[0]
	if s["name"] != "scheduler" || s["kind"] != "singleton" || s["pid"] != 1234.0 || s["next_due"] != nil ||
		s["timing"] != "" || s["starts"] != 1.0 || s["scope"] != "cluster" || s["holder"] != "host1/web" {
		t.Errorf("jobs --json singleton %v", s)
	}
	c := got[1]
	last, err := time.Parse(time.RFC3339Nano, fmt.Sprint(c["last_start"]))
	if c["name"] != "cleanup" || c["last_result"] != "ok" || err != nil || !last.Equal(now.Add(-time.Minute)) {
		t.Errorf("jobs --json cleanup %v (last_start: %v)", c, err)
	}
	keys := []string{"name", "kind", "state", "pid", "timing", "last_start", "last_result", "next_due", "starts", "scope",
		"holder"}
	for _, k := range keys {
		if _, ok := c[k]; !ok {
			t.Errorf("jobs --json lacks %s: %v", k, c)
		}
	}
	if len(c) != len(keys) {
		t.Errorf("jobs --json has keys %v, want exactly %v", c, keys)
	}

	// An instance without jobs: the header alone, and [] as JSON.
	startBus(t, addr, "plain", &testController{})
	if out, _, err := forkctl(t, "--bus", addr, "jobs", "plain"); err != nil || strings.Count(out, "\n") != 1 {
		t.Errorf("jobs plain: %v\n%s; want the header only", err, out)
	}
	if out, _, err := forkctl(t, "--bus", addr, "jobs", "--json", "plain"); err != nil || strings.TrimSpace(out) != "[]" {
		t.Errorf("jobs --json plain: %v, %q; want []", err, out)
	}
}

func TestMain_Run(t *testing.T) {
	addr := startDaemon(t)
	ctl := &testJobs{testController: &testController{}, list: testJobList(time.Now())}
	startBus(t, addr, "web", ctl)

	stdout, _, err := forkctl(t, "--bus", addr, "run", "cleanup")
	if err != nil || stdout != "web: schedule cleanup: run started, pid 9013\n" {
		t.Errorf("run cleanup: %v, %q", err, stdout)
	}
	ctl.mu.Lock()
	ran := append([]string(nil), ctl.ran...)
	ctl.mu.Unlock()
	if len(ran) != 1 || ran[0] != "cleanup" {
		t.Errorf("runner got RunNow %v, want [cleanup]", ran)
	}

	_, _, err = forkctl(t, "--bus", addr, "run", "nope", "web")
	if err == nil || errors.Is(err, ErrUsage) || err.Error() != `run nope of web: no singleton or schedule named "nope"` {
		t.Errorf("run nope: %v, want the unknown name", err)
	}
	_, _, err = forkctl(t, "--bus", addr, "run", "scheduler")
	if err == nil || !strings.Contains(err.Error(), "it runs all the time") {
		t.Errorf("run scheduler: %v, want the runner's refusal", err)
	}
	for _, args := range [][]string{{"run"}, {"run", "a", "b", "c"}, {"run", "--json", "a"}, {"jobs", "a", "b"}} {
		if _, _, err := forkctl(t, append([]string{"--bus", addr}, args...)...); !errors.Is(err, ErrUsage) {
			t.Errorf("forkctl %q: %v, want a usage error", args, err)
		}
	}
}

func TestMain_StatusCountsJobs(t *testing.T) {
	addr := startDaemon(t)
	now := time.Now().Truncate(time.Second)
	ctl := &testJobs{testController: &testController{status: workers.Status{State: "running", Generation: 1, Workers: 2, ReadyWorkers: 2}},
		list: testJobList(now)}
	startBus(t, addr, "web", ctl)
	stdout, _, err := forkctl(t, "--bus", addr, "status")
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	next := regexp.QuoteMeta(now.Add(4 * time.Minute).Format(time.DateTime))
	for _, want := range []string{`Workers:\s+2/2 ready\nSingletons:\s+1/1 running\nSchedules:\s+2, 1 running, next due ` + next + `\n`} {
		if !regexp.MustCompile(want).MatchString(stdout) {
			t.Errorf("status lacks %s:\n%s", want, stdout)
		}
	}

	// Without jobs, status says nothing of them.
	startBus(t, addr, "plain", &testController{status: workers.Status{State: "running"}})
	stdout, _, err = forkctl(t, "--bus", addr, "status", "plain")
	if err != nil || strings.Contains(stdout, "Singletons") || strings.Contains(stdout, "Schedules") {
		t.Errorf("status plain: %v\n%s; want no job lines", err, stdout)
	}
}

// TestMain_MonitorJobSignals checks that the run-once hooks' signals, which
// carry no instance argument, are shown with the sender's instance.
func TestMain_MonitorJobSignals(t *testing.T) {
	addr := startDaemon(t)
	b := startBus(t, addr, "web", nil)
	stdout, stop := startMonitor(t, "--bus", addr, "monitor", "--json")
	b.Emit(hooks.Event{Hook: hooks.ScheduleFinished, Job: "cleanup", RunID: "r1", ExitCode: 0,
		Duration: 2 * time.Second, Result: jobs.ResultOK})
	select {
	case line := <-stdout:
		var ev monitorEvent
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("monitor line %q: %v", line, err)
		}
		want := map[string]any{"name": "cleanup", "run_id": "r1", "exit_code": 0.0, "signal": 0.0,
			"duration_usec": 2e6, "result": "ok"}
		if ev.Signal != "ScheduleFinished" || ev.Instance != "web" || len(ev.Args) != len(want) {
			t.Errorf("monitor: %+v, want ScheduleFinished from web with args %v", ev, want)
		}
		for k, v := range want {
			if ev.Args[k] != v {
				t.Errorf("arg %s = %v, want %v", k, ev.Args[k], v)
			}
		}
	case <-time.After(testTimeout):
		t.Fatal("monitor printed nothing")
	}
	stop()
}

// TestMain_MonitorLeadership: forkctl monitor prints the cluster's
// LeadershipAcquired and LeadershipLost with their arguments' names, and
// the instance that sent them.
func TestMain_MonitorLeadership(t *testing.T) {
	addr := startDaemon(t)
	b := startBus(t, addr, "web", nil)
	stdout, stop := startMonitor(t, "--bus", addr, "monitor")
	b.EmitLeadershipAcquired("scheduler", 42)
	b.EmitLeadershipLost("scheduler", "lease not renewed")
	for _, want := range []string{` web LeadershipAcquired name="scheduler" token=42`,
		` web LeadershipLost name="scheduler" reason="lease not renewed"`} {
		select {
		case line := <-stdout:
			if !strings.HasSuffix(line, want) {
				t.Errorf("monitor printed %q, want it to end with %q", line, want)
			}
		case <-time.After(testTimeout):
			t.Fatalf("monitor printed nothing for %q", want)
		}
	}
	stop()
}
