package bench

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/forkd/forkd/bench/benchworker"
)

// jobsDoc describes scenarios 12 and 13 in docs/BENCHMARKS.md.
const jobsDoc = `- **12 64 schedules** (forkd only). 4 bench workers and 64 ` + "`[[schedule]]`" + ` tables
  with ` + "`every = \"1s\"`" + ` (their grids all fall on the same instants: 64 runs due at
  once, every second) whose command is ` + "`bench/cmd/bench-run`" + `, a Go program (standard
  library only, started directly, no shell) that reads the clock first thing in
  main and sends it with its FORKD_SCHEDULE, FORKD_SCHEDULED_AT and FORKD_RUN_ID
  to the probe socket. Over a 30 s window: the start delay of each run due in it
  is its own first clock reading − its FORKD_SCHEDULED_AT (so it includes the Go
  runtime's start of the run, as any run pays it); missed = due times in the
  window with no run, doubled = runs beyond the first for one schedule and due
  time; the master's CPU time (utime + stime, /proc/PID/stat) over the window
  per second. By the proc connector, the delay is split into due → the run's
  fork (the supervisor's timer, its StartProcess round trip to the arbiter's
  thread, the spawns queued before it), fork → exec'd, and exec'd → the run's
  first clock reading (the Go runtime's start); "1st/64th fork of a due time"
  are the first and last of the 64 forks for one due instant (medians over the
  window).
- **13 the seed's deployment.** ` + "`examples/fastapi-scheduler`" + ` as shipped, with a
  1 s period instead of 5 s (its ` + "`JOB_EVERY`" + ` and its ` + "`[[schedule]]`" + `'s ` + "`every`" + `) and
  its own port: under forkd its ` + "`forkd.toml`" + ` (4 uvicorn workers with ` + "`--fd 3`" + `,
  the APScheduler as a ` + "`[[singleton]]`" + `, the same job as a ` + "`[[schedule]]`" + `), run from the
  repository root; under Gunicorn ` + "`gunicorn -c gunicorn.conf.py -k uvicorn.workers.UvicornWorker`" + `
  with 4 workers (the scheduler started in the master by ` + "`on_starting`" + `). Both
  side by side in the same run. Serving: exec → forkd's READY=1 (its workers
  are ` + "`ready = \"started\"`" + ` with the example's ` + "`ready_delay`" + `; uvicorn sends no
  READY=1), and for both exec → the 4th distinct worker pid answering GET /
  (8 clients polling, a new connection per request). The job appends one line
  per run to JOB_LOG, tagged by who ran it: runs per period = its lines over
  10 periods (idle, after serving) ÷ 10, and again over the HUP window. Load:
  wrk as in 7 against GET /, a 14 s baseline, then 14 s with a HUP every 4 s
  (3, from 2 s on); afterwards 4 new worker pids must answer. Master VmRSS
  during the idle window; forkd's scheduler is a process of its own (the
  singleton), Gunicorn's a thread of its master, so the row "master +
  scheduler" adds the singleton's VmRSS to forkd's. The naive setup,
  ` + "`START_SCHEDULER_IN_APP=1`" + ` (the app starts an APScheduler at import): under
  Gunicorn without the ` + "`on_starting`" + ` hook (a config with workers and the worker
  class only), under forkd with the example's config; its "in-app" lines per
  period.
`

// Scenario 12's shape.
const (
	schedulesCount  = 64
	schedulesPeriod = time.Second
	schedulesWindow = 30 * time.Second
)

// schedulesTOML returns schedulesCount [[schedule]] tables every
// schedulesPeriod running run, which reports to the probe socket at probe,
// and their names.
func schedulesTOML(run, probe string) (string, []string) {
	var b strings.Builder
	var names []string
	for i := range schedulesCount {
		name := fmt.Sprintf("tick%02d", i)
		names = append(names, name)
		fmt.Fprintf(&b, "\n[[schedule]]\nname = %q\nevery = %q\ncommand = %q\nenv = { %s = %q }\n",
			name, schedulesPeriod.String(), run, benchworker.EnvProbe, probe)
	}
	return b.String(), names
}

// BenchmarkSchedules is scenario 12 (forkd only): 64 schedules every 1 s
// beside 4 workers for 30 s: how late each run starts after its due time,
// runs missed and doubled, and the master's CPU time.
func BenchmarkSchedules(b *testing.B) {
	s := env(b)
	run, err := runBinary.build()
	if err != nil {
		b.Fatal(err)
	}
	s.watchProcs(b)
	procs := s.procs
	const workers = 4
	spec := s.forkdSpec(workers, 30*time.Second)
	var names []string
	m, err := StartForkdWith(s.forkd, func(m *Master) string {
		tables, n := schedulesTOML(run, m.Probe.Path())
		names = n
		return spec.TOML(m.Port, m.Probe.Path()) + tables
	}, nil, "")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { closeMaster(b, m) })
	if _, err := m.WaitReady(workers, 30*time.Second); err != nil {
		b.Fatalf("%v\n%s", err, m.Output())
	}
	if _, err := m.Notify.Wait(10*time.Second, "forkd's READY=1", func(ms []Message) bool {
		return readyCount(ms) > 0 || m.Err() != nil
	}); err != nil {
		b.Fatal(err)
	}

	// The kernel queues the proc connector's events until read: read them
	// now and then, so that a window's worth fits.
	var lost bool
	stopDrain, drained := make(chan struct{}), make(chan struct{})
	if procs != nil {
		go func() {
			defer close(drained)
			tick := time.NewTicker(200 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-stopDrain:
					lost = procs.Drain() || lost
					return
				case <-tick.C:
					lost = procs.Drain() || lost
				}
			}
		}()
	} else {
		close(drained)
	}

	from := time.Now().Add(schedulesPeriod) // past the first runs
	to := from.Add(schedulesWindow)
	// The reference: 64 runs started at once by the benchmark itself,
	// halfway between forkd's due times.
	refNames := make([]string, schedulesCount)
	for i := range refNames {
		refNames[i] = fmt.Sprintf("ref%02d", i)
	}
	refDone := make(chan error, 1)
	go func() { refDone <- spawnBursts(run, m.Probe.Path(), refNames, from.Add(schedulesPeriod/2), to) }()
	<-time.After(time.Until(from)) // the window is a span of time
	cpu0, err := CPUTime(m.PID())
	t0 := time.Now()
	if err != nil {
		b.Fatal(err)
	}
	<-time.After(time.Until(to))
	cpu1, err := CPUTime(m.PID())
	t1 := time.Now()
	if err != nil {
		b.Fatalf("%v\n%s", err, m.Output())
	}
	cpuPerSec := ms(cpu1-cpu0) / t1.Sub(t0).Seconds()
	// The runs due before to report within milliseconds; give a late or
	// lost one 5 s.
	m.Probe.Wait(5*time.Second, "a run for every due time in the window", func(ms []Message) bool {
		return TallyRuns(ParseRuns(ms), names, schedulesPeriod, from, to).Missed == 0
	})
	close(stopDrain)
	<-drained
	if err := <-refDone; err != nil {
		b.Fatal(err)
	}
	var load string
	if data, err := os.ReadFile("/proc/loadavg"); err == nil {
		load = strings.Join(strings.Fields(string(data))[:3], " ")
	}
	msgs, _ := m.Probe.Wait(5*time.Second, "a reference run for every burst", func(ms []Message) bool {
		return TallyRuns(ParseRuns(ms), refNames, schedulesPeriod, from, to).Missed == 0
	})
	tally := TallyRuns(ParseRuns(msgs), names, schedulesPeriod, from, to)
	ref := TallyRuns(ParseRuns(msgs), refNames, schedulesPeriod, from, to)
	if ref.Missed > 0 {
		b.Errorf("the benchmark's own bursts: %d of %d runs did not report", ref.Missed, ref.Due)
	}
	refDelays := ref.Delays()
	if err := m.Err(); err != nil {
		b.Fatal(err)
	}
	assertServes(b, m, m.Probe.Events())

	delays := tally.Delays()
	b.Logf("reference (%d at once by the benchmark): delay p50 %.2f ms p99 %.2f ms max %.2f ms", schedulesCount,
		refDelays.Median(), refDelays.Quantile(0.99), refDelays.Max())
	b.Logf("forkd: %d due, %d runs, %d missed, %d doubled, %d off the grid; delay p50 %.2f ms p99 %.2f ms max %.2f ms; master CPU %.1f ms/s",
		tally.Due, len(tally.Runs), tally.Missed, tally.Doubled, tally.OffGrid, delays.Median(), delays.Quantile(0.99),
		delays.Max(), cpuPerSec)
	logWorstDue(b, tally.Runs, 5)
	b.ReportMetric(delays.Quantile(0.99), "start-delay-p99-ms")
	b.ReportMetric(float64(tally.Missed), "missed")
	b.ReportMetric(float64(tally.Doubled), "doubled")
	b.ReportMetric(cpuPerSec, "master-cpu-ms/s")

	const sc = "12 64 schedules every 1 s, 4 workers, 30 s (forkd only)"
	one := func(v float64) pair { return pair{v, math.NaN()} }
	zero := Goal{Text: "0", Limit: 0}
	report.Add(row(sc, fmt.Sprintf("runs started for the %d due times in the window", tally.Due), "",
		Goal{Text: fmt.Sprintf("= %d", tally.Due), Limit: float64(tally.Due), AtLeast: true}, one(float64(len(tally.Runs)))))
	report.Add(row(sc, "start delay (run's first clock reading − FORKD_SCHEDULED_AT), p50", "ms", Goal{}, one(delays.Median())))
	report.Add(row(sc, "start delay, p99", "ms", Goal{Text: "≤ 5 ms", Limit: 5}, one(delays.Quantile(0.99))))
	report.Add(row(sc, "start delay, max", "ms", Goal{}, one(delays.Max())))
	report.Add(row(sc, fmt.Sprintf("reference: %d runs started at once by the benchmark, no master: start delay, p50",
		schedulesCount), "ms", Goal{}, one(refDelays.Median())))
	report.Add(row(sc, "reference: start delay, p99", "ms", Goal{}, one(refDelays.Quantile(0.99))))
	report.Add(row(sc, "runs missed (due times in the window with no run)", "", zero, one(float64(tally.Missed))))
	report.Add(row(sc, "runs doubled (two runs for one schedule and due time)", "", zero, one(float64(tally.Doubled))))
	report.Add(row(sc, "runs off their schedule's grid", "", zero, one(float64(tally.OffGrid))))
	report.Add(row(sc, "master CPU time over the window, per second", "ms", Goal{}, one(cpuPerSec)))
	report.Note("Scenario 12 ran with a load average of %s on %d CPUs (/proc/loadavg after the window).", load,
		runtime.NumCPU())
	if procs == nil {
		return
	}
	evs, _ := procs.Events()
	split, err := splitDelays(evs, tally.Runs)
	if err != nil {
		b.Error(err)
		return
	}
	if lost {
		report.Note("Scenario 12: the proc connector lost events; its breakdown covers %d of %d runs.", split.runs, len(tally.Runs))
	}
	report.Add(row(sc, "due → the run's program exec'd (forkd's share of the start delay), p99", "ms",
		Goal{Text: "≤ 5 ms", Limit: 5}, one(split.dueToExec.Quantile(0.99))))
	for _, r := range []struct {
		what string
		s    Sample
	}{
		{"due → the run's fork", split.dueToFork},
		{"fork → exec'd", split.forkToExec},
		{"exec'd → the run's first clock reading (Go runtime start)", split.execToStart},
	} {
		report.Add(row(sc, r.what+", p50", "ms", Goal{}, one(r.s.Median())))
		report.Add(row(sc, r.what+", p99", "ms", Goal{}, one(r.s.Quantile(0.99))))
	}
	report.Add(row(sc, fmt.Sprintf("due → the 1st fork of a due time's %d, median", schedulesCount), "ms", Goal{},
		one(split.firstFork.Median())))
	report.Add(row(sc, fmt.Sprintf("due → the %dth fork of a due time's %d, median", schedulesCount, schedulesCount), "ms",
		Goal{}, one(split.lastFork.Median())))
}

// spawnBursts starts len(names) runs of run (bench/cmd/bench-run) back to
// back every schedulesPeriod from first until to, as forkd would for
// schedules of those names due then: FORKD_SCHEDULE, FORKD_SCHEDULED_AT and
// BENCH_PROBE=probe in their environment. It returns once every run has
// exited.
func spawnBursts(run, probe string, names []string, first, to time.Time) error {
	var cmds []*exec.Cmd
	var err error
	for at := first; at.Before(to) && err == nil; at = at.Add(schedulesPeriod) {
		<-time.After(time.Until(at)) // the due time itself
		for _, name := range names {
			cmd := exec.Command(run)
			cmd.Env = []string{benchworker.EnvProbe + "=" + probe, "FORKD_SCHEDULE=" + name,
				"FORKD_SCHEDULED_AT=" + at.Format(time.RFC3339Nano), "FORKD_RUN_ID=-"}
			if err = cmd.Start(); err != nil {
				err = fmt.Errorf("start a reference run: %w", err)
				break
			}
			cmds = append(cmds, cmd)
		}
	}
	for _, c := range cmds {
		if werr := c.Wait(); werr != nil && err == nil {
			err = fmt.Errorf("reference run %d: %w", c.Process.Pid, werr)
		}
	}
	return err
}

// logWorstDue logs the n due times whose latest run started latest, with
// the spread of their runs' delays.
func logWorstDue(b *testing.B, runs []RunReport, n int) {
	byDue := map[int64]Sample{}
	for _, r := range runs {
		k := r.ScheduledAt.UnixNano()
		byDue[k] = append(byDue[k], ms(r.Delay()))
	}
	keys := slices.Collect(maps.Keys(byDue))
	slices.SortFunc(keys, func(a, c int64) int { return cmp.Compare(byDue[c].Max(), byDue[a].Max()) })
	for _, k := range keys[:min(n, len(keys))] {
		d := byDue[k]
		b.Logf("due %s: %d runs, delay min %.1f ms, median %.1f ms, max %.1f ms", time.Unix(0, k).Format("15:04:05.000"),
			len(d), d.Quantile(0), d.Median(), d.Max())
	}
}

// delaySplit is scenario 12's start delay split by the proc connector, in
// ms.
type delaySplit struct {
	runs                               int // runs whose fork and exec were seen
	dueToFork, forkToExec, execToStart Sample
	// dueToExec is forkd's share of the start delay: due → the run's
	// program exec'd.
	dueToExec Sample
	// firstFork and lastFork are, per due time, due → the first and the
	// last of its runs' forks.
	firstFork, lastFork Sample
}

// splitDelays splits each run's start delay at its fork and its exec, by
// the process events evs.
func splitDelays(evs []ProcEvent, runs []RunReport) (delaySplit, error) {
	byPID := map[int][]ProcEvent{}
	for _, e := range evs {
		if e.Kind == ProcFork || e.Kind == ProcExec {
			byPID[e.PID] = append(byPID[e.PID], e)
		}
	}
	var d delaySplit
	forks := map[int64][]time.Duration{} // due time → its runs' forks
	dueMono := map[int64]time.Duration{}
	for _, r := range runs {
		started := monoOf(r.Started)
		// The last fork of the pid before the run started, and the exec
		// after it: pids are reused.
		var fork, exec time.Duration
		for _, e := range byPID[r.PID] {
			switch {
			case e.At > started:
			case e.Kind == ProcFork:
				fork, exec = e.At, 0
			case e.Kind == ProcExec && fork != 0 && exec == 0:
				exec = e.At
			}
		}
		if fork == 0 || exec == 0 {
			continue
		}
		due := monoOf(r.ScheduledAt)
		d.runs++
		d.dueToFork = append(d.dueToFork, ms(fork-due))
		d.forkToExec = append(d.forkToExec, ms(exec-fork))
		d.dueToExec = append(d.dueToExec, ms(exec-due))
		d.execToStart = append(d.execToStart, ms(started-exec))
		k := r.ScheduledAt.UnixNano()
		forks[k] = append(forks[k], fork)
		dueMono[k] = due
	}
	if d.runs == 0 {
		return d, errors.New("proc connector: no fork and exec of any run recorded")
	}
	for k, fs := range forks {
		d.firstFork = append(d.firstFork, ms(slices.Min(fs)-dueMono[k]))
		d.lastFork = append(d.lastFork, ms(slices.Max(fs)-dueMono[k]))
	}
	return d, nil
}

// Scenario 13's shape.
const (
	seedWorkers = 4
	seedPeriod  = time.Second
	seedCount   = 10 * time.Second
	seedLoad    = 14 * time.Second
	seedHUPs    = 3
)

// The JOB_LOG tags of the example's schedulers (examples/fastapi-scheduler).
const (
	howSingleton  = "singleton"   // scheduler.py, forkd's [[singleton]]
	howOnStarting = "on_starting" // gunicorn.conf.py, in Gunicorn's master
	howInApp      = "in-app"      // app.py with START_SCHEDULER_IN_APP=1
	howSchedule   = "schedule"    // jobs.py run by forkd's [[schedule]]
)

// exampleSchedule finds the example's [[schedule]].
var exampleSchedule = regexp.MustCompile(`\[\[schedule\]\]\s*\nname = "([^"]+)"`)

// seedFigures are one side's figures of scenario 13.
type seedFigures struct {
	serving, answering       float64 // ms after exec
	baseline, hups           Load
	rss, rssWithScheduler    float64 // MB
	perPeriod, perPeriodHUPs float64 // the scheduler's runs per period
	schedulerPIDs            float64 // processes its runs came from, all run long
	schedulePerPeriod        float64 // forkd's [[schedule]] runs per period
}

// BenchmarkSeed is scenario 13: the example app of the story, under forkd
// and under Gunicorn.
func BenchmarkSeed(b *testing.B) {
	s := env(b)
	ex := example(b)
	if _, err := ex.ForkdConfig(1, seedPeriod); err != nil {
		b.Fatal(err)
	}
	w := s.wrk(b, seedLoad)
	serving, answering, baseP99, p99, failed, baseRate, rate := newPair(), newPair(), newPair(), newPair(), newPair(),
		newPair(), newPair()
	rss, rssAll, perPeriod, perPeriodHUPs, pids, schedule, naive := newPair(), newPair(), newPair(), newPair(), newPair(),
		newPair(), newPair()
	for _, g := range s.sides() {
		f := s.seedSide(b, ex, g, w)
		i := idx(g)
		serving[i], answering[i] = f.serving, f.answering
		baseP99[i], p99[i] = ms(f.baseline.P99), ms(f.hups.P99)
		failed[i] = float64(f.hups.Failed())
		baseRate[i], rate[i] = f.baseline.Rate(), f.hups.Rate()
		rss[i], rssAll[i] = f.rss, f.rssWithScheduler
		perPeriod[i], perPeriodHUPs[i], pids[i] = f.perPeriod, f.perPeriodHUPs, f.schedulerPIDs
		schedule[i] = f.schedulePerPeriod
		naive[i] = s.seedNaive(b, ex, g)
		b.ReportMetric(p99[i], name(g)+"-seed-hup-p99-ms")
		b.ReportMetric(failed[i], name(g)+"-seed-hup-failed")
	}

	const sc = "13 the seed's deployment: examples/fastapi-scheduler, 4 uvicorn workers"
	once := Goal{Text: "≤ 1", Limit: 1}
	report.Add(row(sc, "exec → all 4 workers serving (forkd: its READY=1; Gunicorn: the 4th worker pid answering)", "ms",
		Goal{}, serving))
	report.Add(row(sc, "exec → the 4th distinct worker pid answering GET / (both)", "ms", Goal{}, answering))
	report.Add(row(sc, fmt.Sprintf("p99 latency, %d s baseline", seedLoad/time.Second), "ms", Goal{}, baseP99))
	report.Add(row(sc, fmt.Sprintf("p99 latency, %d s with %d HUPs", seedLoad/time.Second, seedHUPs), "ms",
		Goal{Text: fmt.Sprintf("≤ 2 × baseline = %.2f ms", 2*baseP99[0]), Limit: 2 * baseP99[0]}, p99))
	report.Add(row(sc, fmt.Sprintf("failed requests (socket errors + non-2xx) during %d HUPs", seedHUPs), "",
		Goal{Text: "0", Limit: 0}, failed))
	report.Add(row(sc, "requests/s, baseline (higher is better)", "/s", Goal{}, baseRate))
	report.Add(row(sc, fmt.Sprintf("requests/s during %d HUPs (higher is better)", seedHUPs), "/s", Goal{}, rate))
	report.Add(row(sc, "master VmRSS", "MB", Goal{}, rss))
	report.Add(row(sc, "master + scheduler VmRSS (forkd: + the singleton; Gunicorn: in its master)", "MB", Goal{}, rssAll))
	report.Add(row(sc, fmt.Sprintf("the scheduler's job runs per %d s period, over %d s (forkd: singleton; Gunicorn: on_starting)",
		seedPeriod/time.Second, seedCount/time.Second), "", once, perPeriod))
	report.Add(row(sc, fmt.Sprintf("the scheduler's job runs per period during the %d HUPs", seedHUPs), "", once, perPeriodHUPs))
	report.Add(row(sc, "processes the scheduler's runs came from, the whole run", "", once, pids))
	report.Add(row(sc, "the [[schedule]]'s runs per period (forkd only)", "", once, schedule))
	report.Add(row(sc, "naive: START_SCHEDULER_IN_APP=1, the job's runs per period (one scheduler per worker)", "",
		Goal{}, naive))
}

// seedSide runs the example under forkd (gunicorn false) or Gunicorn.
func (s *setup) seedSide(b *testing.B, ex Example, gunicorn bool, w Wrk) seedFigures {
	b.Helper()
	jobLog := filepath.Join(b.TempDir(), "jobs.log")
	env := []string{"JOB_LOG=" + jobLog, fmt.Sprintf("JOB_EVERY=%d", seedPeriod/time.Second)}
	m := s.startExample(b, ex, gunicorn, filepath.Join(ex.Dir, "gunicorn.conf.py"), env)
	var f seedFigures
	at, first, err := WaitAnswering(m.Port, seedWorkers, nil, 60*time.Second)
	if err != nil {
		b.Fatalf("%s: %v\n%s", m.Name, err, m.Output())
	}
	f.answering, f.serving = ms(at.Sub(m.Started)), ms(at.Sub(m.Started))
	if !gunicorn {
		msgs, err := m.Notify.Wait(30*time.Second, "forkd's READY=1", func(ms []Message) bool {
			_, ok := FirstReady(ms)
			return ok || m.Err() != nil
		})
		ready, ok := FirstReady(msgs)
		if err != nil || !ok {
			b.Fatalf("forkd: no READY=1: %v\n%s", err, m.Output())
		}
		f.serving = ms(ready.Sub(m.Started))
	}

	// The job's runs over seedCount, once the scheduler runs.
	from := time.Now().Add(2 * seedPeriod)
	to := from.Add(seedCount)
	<-time.After(time.Until(from.Add(seedCount / 2))) // the window is a span of time
	runs, err := ReadJobLog(jobLog)
	if err != nil {
		b.Fatal(err)
	}
	how := howSingleton
	if gunicorn {
		how = howOnStarting
	}
	var scheduler int
	for _, r := range runs {
		if r.How == how {
			scheduler = r.PID
		}
	}
	if scheduler == 0 {
		b.Fatalf("%s: no run of the job by %s in %s\n%s", m.Name, how, jobLog, m.Output())
	}
	mem, err := MemoryOf(m.PID())
	if err != nil {
		b.Fatal(err)
	}
	f.rss, f.rssWithScheduler = float64(mem.RSS)/1e6, float64(mem.RSS)/1e6
	if scheduler != m.PID() {
		sm, err := MemoryOf(scheduler)
		if err != nil {
			b.Fatalf("%s: the scheduler, pid %d: %v", m.Name, scheduler, err)
		}
		f.rssWithScheduler += float64(sm.RSS) / 1e6
	}
	<-time.After(time.Until(to.Add(300 * time.Millisecond)))
	if runs, err = ReadJobLog(jobLog); err != nil {
		b.Fatal(err)
	}
	periods := float64(seedCount / seedPeriod)
	n, _ := CountJobRuns(runs, how, from, to)
	f.perPeriod = float64(n) / periods
	f.schedulePerPeriod = math.NaN()
	if !gunicorn {
		if exampleSchedule.MatchString(ex.Config) {
			n, _ := CountJobRuns(runs, howSchedule, from, to)
			f.schedulePerPeriod = float64(n) / periods
		}
	}

	url := fmt.Sprintf("http://127.0.0.1:%d/", m.Port)
	if f.baseline, err = w.Run(context.Background(), url); err != nil {
		b.Fatalf("%s baseline: %v", m.Name, err)
	}
	b.Logf("%s baseline: %v", m.Name, f.baseline)
	loadFrom := time.Now()
	load := startLoad(b, w, m)
	if err := signalEvery(m.PID(), syscall.SIGHUP, seedHUPs, time.Now(), 2*time.Second, 4*time.Second,
		func(int, time.Time) error { return m.Err() }); err != nil {
		b.Fatalf("%s: %v", m.Name, err)
	}
	res := <-load
	loadTo := time.Now()
	if res.err != nil {
		b.Fatalf("%s under HUPs: %v", m.Name, res.err)
	}
	f.hups = res.load
	b.Logf("%s during %d HUPs: %v", m.Name, seedHUPs, f.hups)
	if _, fresh, err := WaitAnswering(m.Port, seedWorkers, first, 30*time.Second); err != nil {
		b.Errorf("%s: after %d HUPs: %v (new pids %v)\n%s", m.Name, seedHUPs, err, fresh, m.Output())
	}
	if runs, err = ReadJobLog(jobLog); err != nil {
		b.Fatal(err)
	}
	// Whole periods of the load window, from its first second on.
	loadFrom = loadFrom.Add(time.Second)
	span := loadTo.Sub(loadFrom).Truncate(seedPeriod)
	n, _ = CountJobRuns(runs, how, loadFrom, loadFrom.Add(span))
	f.perPeriodHUPs = float64(n) / float64(span/seedPeriod)
	_, p := CountJobRuns(runs, how, time.Time{}, time.Now())
	f.schedulerPIDs = float64(p)
	if err := m.Err(); err != nil {
		b.Fatal(err)
	}
	closeMaster(b, m)
	if f.perPeriod < 0.9 || f.perPeriodHUPs < 0.9 {
		b.Errorf("%s: the scheduler ran %.1f times per period, %.1f during the HUPs: want 1", m.Name, f.perPeriod, f.perPeriodHUPs)
	}
	return f
}

// seedNaive runs the example with START_SCHEDULER_IN_APP=1, Gunicorn
// without its on_starting hook, and returns the "in-app" runs of the job per
// period.
func (s *setup) seedNaive(b *testing.B, ex Example, gunicorn bool) float64 {
	b.Helper()
	dir := b.TempDir()
	jobLog := filepath.Join(dir, "jobs.log")
	conf := filepath.Join(dir, "naive.conf.py")
	if err := os.WriteFile(conf, []byte("workers = 4\nworker_class = \"uvicorn.workers.UvicornWorker\"\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	env := []string{"JOB_LOG=" + jobLog, fmt.Sprintf("JOB_EVERY=%d", seedPeriod/time.Second), "START_SCHEDULER_IN_APP=1"}
	m := s.startExample(b, ex, gunicorn, conf, env)
	if _, _, err := WaitAnswering(m.Port, seedWorkers, nil, 60*time.Second); err != nil {
		b.Fatalf("%s naive: %v\n%s", m.Name, err, m.Output())
	}
	from := time.Now().Add(2 * seedPeriod)
	to := from.Add(seedCount)
	<-time.After(time.Until(to.Add(300 * time.Millisecond))) // the window is a span of time
	runs, err := ReadJobLog(jobLog)
	if err != nil {
		b.Fatal(err)
	}
	n, pids := CountJobRuns(runs, howInApp, from, to)
	b.Logf("%s naive: %d in-app runs from %d processes in %v", m.Name, n, pids, seedCount)
	closeMaster(b, m)
	return float64(n) / float64(seedCount/seedPeriod)
}

// startExample starts the example under forkd (from the module root, with
// its forkd.toml at seedPeriod) or under Gunicorn (with the config file
// conf), env added to the master's environment; it is stopped when b ends.
func (s *setup) startExample(b *testing.B, ex Example, gunicorn bool, conf string, env []string) *Master {
	b.Helper()
	var m *Master
	var err error
	if gunicorn {
		m, err = StartGunicornWith(s.gunicorn, func(m *Master) []string { return ex.GunicornArgs(conf, m.Port) }, env, "")
	} else {
		m, err = StartForkdWith(s.forkd, func(m *Master) string {
			cfg, _ := ex.ForkdConfig(m.Port, seedPeriod) // checked before
			return cfg
		}, env, ex.Root)
	}
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { closeMaster(b, m) })
	return m
}
