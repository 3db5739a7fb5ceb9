package examples_test

import (
	"bytes"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// period is the job's period in the runs below: the example's 5s
// shortened to the shortest every = "…" allows.
const period = time.Second

// periods is how many runs of each kind the runs below wait for.
const periods = 4

// TestExamples_FastAPIScheduler runs examples/fastapi-scheduler with 4
// uvicorn workers and the job's period shortened to 1s, and counts the
// job's runs per period in $JOB_LOG. Under forkd, built from this tree, the
// [[singleton]]'s APScheduler and the [[schedule]] each run it once per
// period; under Gunicorn (when Debian's gunicorn is installed) the
// scheduler its on_starting hook starts in the master runs it once per
// period too. With START_SCHEDULER_IN_APP=1 the scheduler each worker starts
// at import runs it 4 times per period, under either: the bug the example
// is about.
func TestExamples_FastAPIScheduler(t *testing.T) {
	skipWithoutPython(t, "uvicorn", "fastapi", "apscheduler")
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	forkd := filepath.Join(t.TempDir(), "forkd")
	goBuild(t, root, forkd, "./cmd/forkd")
	dir := filepath.Join(root, "examples/fastapi-scheduler")
	cfg := rewrite(t, filepath.Join(dir, "forkd.toml"), map[string]string{
		`"examples/fastapi-scheduler"`: strconv.Quote(dir),
		`JOB_EVERY = "5"`:              `JOB_EVERY = "1"`,
		`every = "5s"`:                 `every = "1s"`,
	})
	forkdCmd := func(env ...string) *exec.Cmd {
		cmd := exec.Command(forkd, "--config", cfg, "--bus", "none")
		cmd.Dir = root
		cmd.Env = append(os.Environ(), env...)
		return cmd
	}
	gunicornCmd := func(t *testing.T, env ...string) *exec.Cmd {
		if _, err := os.Stat("/usr/bin/gunicorn"); err != nil {
			t.Skipf("Debian's gunicorn is not installed (apt-get install -y gunicorn): %v", err)
		}
		cmd := exec.Command("/usr/bin/python3", "/usr/bin/gunicorn", "-c", "gunicorn.conf.py", "app:app")
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), append([]string{"BIND=127.0.0.1:0", "JOB_EVERY=1"}, env...)...)
		return cmd
	}

	t.Run("forkd once per period", func(t *testing.T) {
		r := runJobs(t, forkdCmd(), func(runs jobRuns) bool {
			return len(runs.of("singleton")) >= periods && len(runs.of("schedule")) >= periods
		})
		if in := r.log.of("in-app"); len(in) > 0 {
			t.Errorf("%d in-app runs without START_SCHEDULER_IN_APP, want none", len(in))
		}

		// The singleton's APScheduler: one process, a child of forkd.
		pid := onePerPeriod(t, r.log, "singleton")
		if ppid := r.ppid[pid]; ppid != r.master {
			t.Errorf("singleton pid %d has parent %d, want forkd (%d)", pid, ppid, r.master)
		}

		// The schedule: a new process per run, one run per due time; a due
		// time without a run must have been skipped by overlap = "skip" (a
		// slow run on a busy machine), and said so.
		sc := r.log.of("schedule")
		if n := len(sc.pids()); n != len(sc) {
			t.Errorf("%d schedule runs came from %d pids, want a process per run", len(sc), n)
		}
		if slices.Contains(sc.pids(), pid) {
			t.Errorf("a schedule run has the singleton's pid %d", pid)
		}
		var due []time.Time
		for _, run := range sc {
			if run.scheduledAt.IsZero() {
				t.Fatalf("schedule run %q has no FORKD_SCHEDULED_AT", run.line)
			}
			due = append(due, run.scheduledAt)
		}
		counts := perPeriod(due)
		t.Logf("schedule (a process per run): runs per due time %v", counts)
		for i, n := range counts {
			at := due[0].Add(time.Duration(i) * period)
			switch {
			case n > 1:
				t.Errorf("schedule ran %d times for due time %s, want once", n, at.Format(time.RFC3339Nano))
			case n == 0 && !skipped(r.output, at):
				t.Errorf("schedule did not run for due time %s and forkd did not report it skipped", at.Format(time.RFC3339))
			}
		}
	})

	t.Run("forkd START_SCHEDULER_IN_APP=1", func(t *testing.T) {
		r := runJobs(t, forkdCmd("START_SCHEDULER_IN_APP=1", "JOB_EVERY=1"), inEveryWorker)
		fourPerPeriod(t, r)
	})

	t.Run("gunicorn on_starting once per period", func(t *testing.T) {
		cmd := gunicornCmd(t)
		r := runJobs(t, cmd, func(runs jobRuns) bool { return len(runs.of("on_starting")) >= periods })
		if in := r.log.of("in-app"); len(in) > 0 {
			t.Errorf("%d in-app runs without START_SCHEDULER_IN_APP, want none", len(in))
		}
		if pid := onePerPeriod(t, r.log, "on_starting"); pid != r.master {
			t.Errorf("on_starting runs came from pid %d, want Gunicorn's master (%d)", pid, r.master)
		}
	})

	t.Run("gunicorn START_SCHEDULER_IN_APP=1", func(t *testing.T) {
		r := runJobs(t, gunicornCmd(t, "START_SCHEDULER_IN_APP=1"), inEveryWorker)
		if n := len(r.log.of("on_starting")); n > 0 {
			t.Errorf("%d on_starting runs with START_SCHEDULER_IN_APP=1, want none", n)
		}
		fourPerPeriod(t, r)
	})
}

// onePerPeriod checks that the runs started the way how says came from one
// process, once per period, and returns its pid.
func onePerPeriod(t *testing.T, log jobRuns, how string) int {
	t.Helper()
	runs := log.of(how)
	pids := runs.pids()
	if len(pids) != 1 {
		t.Fatalf("%s runs came from pids %v, want one process", how, pids)
	}
	counts := perPeriod(runs.times())
	t.Logf("%s (APScheduler in pid %d): runs per period %v", how, pids[0], counts)
	if !allEqual(counts, 1) {
		t.Errorf("%s runs per period = %v, want 1 in each", how, counts)
	}
	return pids[0]
}

// inEveryWorker reports whether 4 processes have each run the job in-app
// at least periods times.
func inEveryWorker(runs jobRuns) bool {
	in := runs.of("in-app")
	pids := in.pids()
	if len(pids) < 4 {
		return false
	}
	for _, pid := range pids {
		if len(in.from(pid)) < periods {
			return false
		}
	}
	return true
}

// fourPerPeriod checks that the in-app runs came from 4 workers of r's
// master, each once per period (counted from its own first run): 4 runs
// per period in all.
func fourPerPeriod(t *testing.T, r jobsResult) {
	t.Helper()
	in := r.log.of("in-app")
	pids := in.pids()
	if len(pids) != 4 {
		t.Fatalf("in-app runs came from pids %v, want the 4 workers", pids)
	}
	var each [][]int
	n := math.MaxInt
	for _, pid := range pids {
		if ppid := r.ppid[pid]; ppid != r.master {
			t.Errorf("in-app pid %d has parent %d, want the master (%d): not a worker", pid, ppid, r.master)
		}
		counts := perPeriod(in.from(pid).times())
		if !allEqual(counts, 1) {
			t.Errorf("in-app runs per period in worker pid %d = %v, want 1 in each", pid, counts)
		}
		each = append(each, counts)
		n = min(n, len(counts))
	}
	total := make([]int, n)
	for _, counts := range each {
		for i := range total {
			total[i] += counts[i]
		}
	}
	t.Logf("in-app (APScheduler in each of workers %v): runs per period %v", pids, total)
	if !allEqual(total, 4) {
		t.Errorf("in-app runs per period = %v, want 4 in each", total)
	}
}

// jobRun is one line of $JOB_LOG: "<unix time> <pid> <how> [<scheduled at>]".
type jobRun struct {
	at          time.Time
	pid         int
	how         string
	scheduledAt time.Time // FORKD_SCHEDULED_AT of a [[schedule]] run
	line        string
}

// parseJobRun parses one line of $JOB_LOG.
func parseJobRun(line string) (jobRun, error) {
	f := strings.Fields(line)
	if len(f) != 3 && len(f) != 4 {
		return jobRun{}, fmt.Errorf("job log line %q: want 3 or 4 fields", line)
	}
	sec, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return jobRun{}, fmt.Errorf("job log line %q: time: %w", line, err)
	}
	pid, err := strconv.Atoi(f[1])
	if err != nil {
		return jobRun{}, fmt.Errorf("job log line %q: pid: %w", line, err)
	}
	r := jobRun{at: time.UnixMilli(int64(math.Round(sec * 1000))), pid: pid, how: f[2], line: strings.Join(f, " ")}
	if len(f) == 4 {
		if r.scheduledAt, err = time.Parse(time.RFC3339Nano, f[3]); err != nil {
			return jobRun{}, fmt.Errorf("job log line %q: scheduled at: %w", line, err)
		}
	}
	return r, nil
}

// jobRuns are runs in the order they were recorded.
type jobRuns []jobRun

// of returns the runs started the way how says.
func (rs jobRuns) of(how string) jobRuns {
	var out jobRuns
	for _, r := range rs {
		if r.how == how {
			out = append(out, r)
		}
	}
	return out
}

// from returns the runs of process pid.
func (rs jobRuns) from(pid int) jobRuns {
	var out jobRuns
	for _, r := range rs {
		if r.pid == pid {
			out = append(out, r)
		}
	}
	return out
}

// pids returns the distinct pids of the runs, sorted.
func (rs jobRuns) pids() []int {
	var out []int
	for _, r := range rs {
		if !slices.Contains(out, r.pid) {
			out = append(out, r.pid)
		}
	}
	slices.Sort(out)
	return out
}

// times returns when each run recorded itself.
func (rs jobRuns) times() []time.Time {
	out := make([]time.Time, len(rs))
	for i, r := range rs {
		out[i] = r.at
	}
	return out
}

// skipped reports whether forkd's output says that a schedule run due at
// at was skipped.
func skipped(output string, at time.Time) bool {
	for _, line := range strings.Split(output, "\n") {
		if strings.Contains(line, "schedule run skipped") && strings.Contains(line, "scheduled_at="+at.Format(time.RFC3339)) {
			return true
		}
	}
	return false
}

// perPeriod counts times per period: bucket i holds the times nearest to
// the first one plus i periods, so that a run a little late or early still
// counts for its own period. The buckets run from the first time's to the
// last one's.
func perPeriod(times []time.Time) []int {
	if len(times) == 0 {
		return nil
	}
	first := slices.MinFunc(times, time.Time.Compare)
	var counts []int
	for _, at := range times {
		i := int(math.Round(float64(at.Sub(first)) / float64(period)))
		for len(counts) <= i {
			counts = append(counts, 0)
		}
		counts[i]++
	}
	return counts
}

// allEqual reports whether counts is not empty and every count is n.
func allEqual(counts []int, n int) bool {
	if len(counts) == 0 {
		return false
	}
	for _, c := range counts {
		if c != n {
			return false
		}
	}
	return true
}

// jobsResult is what runJobs saw.
type jobsResult struct {
	log    jobRuns     // $JOB_LOG once the master had stopped
	master int         // the pid of the process runJobs started
	ppid   map[int]int // parent pid of each run's process, read when its probe came
	output string      // its output, with its workers' and jobs'
}

// runJobs runs cmd (forkd or Gunicorn serving the example, its Env set)
// with $JOB_LOG and $JOB_PROBE added to its environment, until enough says
// the runs the probe has seen are enough (or a deadline fails t), then
// stops it with TERM and returns the job log.
func runJobs(t *testing.T, cmd *exec.Cmd, enough func(jobRuns) bool) jobsResult {
	t.Helper()
	// A short path: a socket's must fit in sun_path.
	sockDir, err := os.MkdirTemp("", "forkd-probe")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	probePath := filepath.Join(sockDir, "probe")
	probe, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: probePath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer probe.Close()
	lines := make(chan string)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		buf := make([]byte, 512)
		for {
			n, err := probe.Read(buf)
			if err != nil {
				return // closed
			}
			select {
			case lines <- string(buf[:n]):
			case <-stop:
				return
			}
		}
	}()

	jobLog := filepath.Join(t.TempDir(), "jobs.log")
	cmd.Env = append(cmd.Env, "JOB_LOG="+jobLog, "JOB_PROBE="+probePath)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	// Its own process group, so that a failed test kills the workers too:
	// Gunicorn's uvicorn workers outlive a killed master.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// Wait gives up on the output pipe a while after the master has exited.
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		if t.Failed() {
			t.Logf("%s output:\n%s", cmd.Path, out.String())
		}
	})

	res := jobsResult{master: cmd.Process.Pid, ppid: map[int]int{}}
	var seen jobRuns
	deadline := time.NewTimer(90 * time.Second)
	defer deadline.Stop()
	for !enough(seen) {
		select {
		case line := <-lines:
			r, err := parseJobRun(line)
			if err != nil {
				t.Fatal(err)
			}
			seen = append(seen, r)
			if _, ok := res.ppid[r.pid]; !ok {
				res.ppid[r.pid] = parentOf(r.pid)
			}
		case err := <-done:
			done <- err
			t.Fatalf("%s exited before the job ran enough: %v; runs seen:\n%s", cmd.Path, err, seen)
		case <-deadline.C:
			t.Fatalf("the job did not run enough within 90s; runs seen:\n%s", seen)
		}
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		done <- err
		if err != nil {
			t.Fatalf("%s after TERM: %v, want exit 0", cmd.Path, err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not stop within 30s of TERM", cmd.Path)
	}
	res.output = out.String()

	b, err := os.ReadFile(jobLog)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		r, err := parseJobRun(line)
		if err != nil {
			t.Fatal(err)
		}
		res.log = append(res.log, r)
	}
	// The job writes its line to the log before it sends it to the probe.
	for _, r := range seen {
		if !slices.ContainsFunc(res.log, func(l jobRun) bool { return l.line == r.line }) {
			t.Errorf("the probe got %q, which is not in $JOB_LOG", r.line)
		}
	}
	return res
}

// String lists the runs one per line.
func (rs jobRuns) String() string {
	var b strings.Builder
	for _, r := range rs {
		b.WriteString(r.line + "\n")
	}
	return b.String()
}

// parentOf returns the parent pid of process pid, or -1 when it cannot be
// read (the process is gone).
func parentOf(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return -1
	}
	// "pid (comm) state ppid …"; comm may hold spaces and parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return -1
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 {
		return -1
	}
	ppid, err := strconv.Atoi(f[1])
	if err != nil {
		return -1
	}
	return ppid
}
