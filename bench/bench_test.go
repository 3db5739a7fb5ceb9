package bench

import (
	"errors"
	"fmt"
	"math"
	"net"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/forkd/forkd/bench/benchworker"
)

// setup is what every benchmark needs, found or built once per run.
type setup struct {
	forkd    string // built forkd
	gunicorn string // gunicorn's path; "" when not installed
	benchDir string // this directory: app.py and gunicorn.conf.py
	worker   string // built bench worker (bench/cmd/bench-worker)
	err      error
	// restoreQlen puts net.unix.max_dgram_qlen back after the run (nil:
	// it was not changed).
	restoreQlen func() error

	// procs records the machine's forks and execs while a scenario that
	// times them runs (see watchProcs); nil otherwise.
	procs     *ProcWatch
	procsOnce sync.Once // notes once why there is none

	bootOnce sync.Once
	boot     workerBoot
	bootErr  error
}

// workerBoot is the bench worker's own boot, run alone.
type workerBoot struct {
	toStart, toReady Sample // ms from exec (the harness's, before fork)
	// execToStart is ms from the kernel's exec to "start": the Go
	// runtime's start alone (empty without the proc connector).
	execToStart Sample
}

var (
	setupOnce sync.Once
	shared    setup
)

// env returns the shared setup, building forkd and the bench worker on
// first use; it fails b when they cannot be built and logs when gunicorn
// is missing.
func env(b *testing.B) *setup {
	b.Helper()
	ran.Store(b.Name(), true)
	setupOnce.Do(func() {
		s := &shared
		var err error
		if s.benchDir, err = filepath.Abs("."); err != nil {
			s.err = err
			return
		}
		if s.forkd, err = forkdBinary.build(); err != nil {
			s.err = err
			return
		}
		if _, err = clusterBinary.build(); err != nil { // beside forkd, where it looks for it
			s.err = err
			return
		}
		if _, err = metricsBinary.build(); err != nil { // the same
			s.err = err
			return
		}
		if s.worker, err = workerBinary.build(); err != nil {
			s.err = err
			return
		}
		// Run as under systemd, whose notify sockets hold 512 datagrams: with
		// the kernel's 10, a burst of sd_notify from many workers fills
		// the queue at once and every read then wakes all the waiting
		// senders.
		restore, was, err := RaiseDgramQlen(SystemdDgramQlen)
		switch {
		case err != nil:
			report.Note("Ran with net.unix.max_dgram_qlen = %d, below the %d systemd sets at boot: %v.",
				was, SystemdDgramQlen, err)
		case restore != nil:
			s.restoreQlen = restore
			report.Note("net.unix.max_dgram_qlen was raised from %d to %d for the run, as systemd does at boot, "+
				"and put back after.", was, SystemdDgramQlen)
		}
		if g, err := exec.LookPath("gunicorn"); err == nil {
			s.gunicorn = g
		} else {
			report.Note("Gunicorn column empty: gunicorn is not installed (apt-get install gunicorn, or make bench as root).")
		}
	})
	if shared.err != nil {
		b.Fatal(shared.err)
	}
	if shared.gunicorn == "" {
		b.Log("gunicorn not installed: measuring forkd only (apt-get install gunicorn)")
	}
	return &shared
}

// workerEnv is [worker.env] for forkd running the bench worker.
func (s *setup) workerEnv() map[string]string {
	return map[string]string{"GOMAXPROCS": "1"}
}

// forkdSpec is a forkd Spec running the bench worker.
func (s *setup) forkdSpec(workers int, timeout time.Duration) Spec {
	return Spec{Workers: workers, Timeout: timeout, Command: s.worker, Env: s.workerEnv()}
}

// start starts forkd (gunicorn false) or Gunicorn and stops it, failing b
// if stopping leaves anything behind, when b ends.
func (s *setup) start(b *testing.B, gunicorn bool, spec Spec) *Master {
	b.Helper()
	var m *Master
	var err error
	if gunicorn {
		m, err = StartGunicorn(s.gunicorn, s.benchDir, spec)
	} else {
		m, err = StartForkd(s.forkd, spec)
	}
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { closeMaster(b, m) })
	return m
}

// closeMaster closes m, failing b when that went wrong (once, however
// often it is called).
func closeMaster(b *testing.B, m *Master) {
	b.Helper()
	first := false
	m.closeOnce.Do(func() { first = true; m.closeErr = m.close() })
	if err := m.closeErr; first && err != nil {
		b.Errorf("%s: %v\n%s", m.Name, err, m.Output())
	}
}

// sides returns the masters to measure: forkd, and Gunicorn when installed.
func (s *setup) sides() []bool {
	if s.gunicorn == "" {
		return []bool{false}
	}
	return []bool{false, true}
}

// workerBoot runs the bench worker alone 10 times, handing it a listening
// socket itself, and times exec → "start" and exec → "ready".
func (s *setup) workerBoot(b *testing.B) workerBoot {
	b.Helper()
	s.bootOnce.Do(func() {
		for range 10 {
			toStart, toReady, execToStart, err := s.bootAlone()
			if err != nil {
				s.bootErr = err
				return
			}
			s.boot.toStart = append(s.boot.toStart, toStart)
			s.boot.toReady = append(s.boot.toReady, toReady)
			if !math.IsNaN(execToStart) {
				s.boot.execToStart = append(s.boot.execToStart, execToStart)
			}
		}
	})
	if s.bootErr != nil {
		b.Fatal(s.bootErr)
	}
	return s.boot
}

// bootAlone starts one lone bench worker and returns exec → start and
// exec → ready in ms, after checking that it serves, and the kernel's
// exec → start (NaN without the proc connector).
func (s *setup) bootAlone() (toStart, toReady, execToStart float64, err error) {
	execToStart = math.NaN()
	m, err := StartAlone(s.worker, "GOMAXPROCS=1")
	if err != nil {
		return 0, 0, 0, err
	}
	defer m.Close()
	evs, err := m.WaitReady(1, 10*time.Second)
	if err != nil {
		return 0, 0, 0, fmt.Errorf("boot the bench worker alone: %w\n%s", err, m.Output())
	}
	if _, err := m.Notify.Wait(5*time.Second, "the lone worker's READY=1", func(ms []Message) bool {
		_, ok := FirstReady(ms)
		return ok
	}); err != nil {
		return 0, 0, 0, err
	}
	resp, err := m.Get("/")
	if err != nil || resp != fmt.Sprintf("ok %d\n", m.PID()) {
		return 0, 0, 0, fmt.Errorf("lone bench worker answered %q, %v; want \"ok %d\"", resp, err, m.PID())
	}
	for _, ev := range evs {
		switch ev.Kind {
		case benchworker.KindStart:
			toStart = ms(ev.At.Sub(m.Started))
		case benchworker.KindReady:
			toReady = ms(ev.At.Sub(m.Started))
		}
	}
	if s.procs != nil {
		var start Event
		for _, ev := range evs {
			if ev.Kind == benchworker.KindStart {
				start = ev
			}
		}
		at, err := execOf(s.procs, m.PID())
		if err != nil {
			return 0, 0, 0, err
		}
		execToStart = ms(monoOf(start.At) - at)
	}
	if err := m.Stop(5 * time.Second); err != nil {
		return 0, 0, 0, err
	}
	return toStart, toReady, execToStart, nil
}

// bootTogether starts n lone bench workers back to back, sharing a
// socket, and returns the exec of the first → the last one's ready probe in
// ms, after checking that they serve: n workers booting side by side with
// nothing but the benchmark to start them.
func (s *setup) bootTogether(n int) (toReady, spawns float64, err error) {
	spawns = math.NaN()
	m, err := StartLone(s.worker, n, "GOMAXPROCS=1")
	if err != nil {
		return 0, 0, err
	}
	defer m.Close()
	evs, err := m.WaitReady(n, 10*time.Second)
	if err != nil {
		return 0, 0, fmt.Errorf("boot %d bench workers at once: %w\n%s", n, err, m.Output())
	}
	last := LastReady(evs)
	if resp, err := m.Get("/"); err != nil || !strings.HasPrefix(resp, "ok ") {
		return 0, 0, fmt.Errorf("lone bench workers answered %q, %v; want \"ok PID\"", resp, err)
	}
	if s.procs != nil {
		firstFork, lastExec, err := spawnSpan(s.procs, evs)
		if err != nil {
			return 0, 0, err
		}
		spawns = ms(lastExec - firstFork)
	}
	if err := m.Close(); err != nil {
		return 0, 0, err
	}
	return ms(last.Sub(m.Started)), spawns, nil
}

// forkdBoot returns, in ms, the master's exec → its first worker's fork and
// that fork → the last worker's exec, for the workers ready in evs.
func forkdBoot(procs *ProcWatch, master int, evs []Event) (boot, spawns float64, err error) {
	exec, err := execOf(procs, master)
	if err != nil {
		return 0, 0, err
	}
	first, last, err := spawnSpan(procs, evs)
	if err != nil {
		return 0, 0, err
	}
	return ms(first - exec), ms(last - first), nil
}

// spawnSpan returns the first fork and the last exec, by the proc
// connector, of the workers ready in evs.
func spawnSpan(procs *ProcWatch, evs []Event) (firstFork, lastExec time.Duration, err error) {
	pids := ReadyPIDs(evs)
	for pid := range pids {
		exec, err := execOf(procs, pid)
		if err != nil {
			return 0, 0, err
		}
		lastExec = max(lastExec, exec)
	}
	all, _ := procs.Events()
	for _, e := range all {
		if _, ok := pids[e.PID]; ok && e.Kind == ProcFork && (firstFork == 0 || e.At < firstFork) {
			firstFork = e.At
		}
	}
	if firstFork == 0 {
		return 0, 0, errors.New("proc connector: no fork of the workers recorded")
	}
	return firstFork, lastExec, nil
}

// watchProcs records process events while b runs, for the scenarios that
// time forks and execs; the others run without a reader in the benchmark
// that wakes for every fork, exec and thread exit on the machine.
func (s *setup) watchProcs(b *testing.B) {
	w, err := WatchProcs()
	if err != nil {
		s.procsOnce.Do(func() { report.Note("No fork and exec rows: %v.", err) })
		return
	}
	s.procs = w
	b.Cleanup(func() {
		s.procs = nil
		w.Close()
	})
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// monoOf is t (a probe's wall-clock time) on CLOCK_MONOTONIC, the proc
// connector's clock.
func monoOf(t time.Time) time.Duration { return Monotonic() - time.Since(t) }

// execOf is when pid, a Go program, last exec'd, by the proc connector:
// the Go runtime starts threads before main, and the kernel reports those
// after the execs (a shim's, the program's), so one of them in the record
// means every exec is.
func execOf(procs *ProcWatch, pid int) (time.Duration, error) {
	var exec time.Duration
	_, err := procs.Wait(10*time.Second, fmt.Sprintf("the exec of pid %d", pid), func(evs []ProcEvent) bool {
		exec = 0
		for _, e := range evs {
			if e.PID != pid {
				continue
			}
			switch e.Kind {
			case ProcExec:
				exec = e.At
			case ProcThread:
				return exec != 0
			}
		}
		return false
	})
	return exec, err
}

// goStart runs the go-start program (see bench/cmd/go-start) at path and
// returns its exec'd → main, the exec by the proc connector, main by its
// own clock reading.
func goStart(procs *ProcWatch, path string) (float64, error) {
	cmd := exec.Command(path)
	out, err := cmd.Output()
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	ns, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s printed %q, want nanoseconds: %w", path, out, err)
	}
	at, err := execOf(procs, cmd.Process.Pid)
	if err != nil {
		return 0, err
	}
	return ms(time.Duration(ns) - at), nil
}

// name is a side's name in metric units.
func name(gunicorn bool) string {
	if gunicorn {
		return "gunicorn"
	}
	return "forkd"
}

// pair holds one figure's value for forkd and Gunicorn (NaN = not measured).
type pair [2]float64

func newPair() pair { return pair{math.NaN(), math.NaN()} }

func idx(gunicorn bool) int {
	if gunicorn {
		return 1
	}
	return 0
}

// row makes a report row from a pair.
func row(scenario, figure, unit string, goal Goal, p pair) Row {
	return Row{Scenario: scenario, Figure: figure, Unit: unit, Goal: goal, Forkd: p[0], Gunicorn: p[1]}
}

// assertServes checks that m answers "ok PID" from one of its ready workers.
func assertServes(b *testing.B, m *Master, evs []Event) {
	b.Helper()
	body, err := m.Get("/")
	if err != nil {
		b.Fatal(err)
	}
	var pid int
	if _, err := fmt.Sscanf(body, "ok %d", &pid); err != nil {
		b.Fatalf("%s answered %q, want \"ok PID\"", m.Name, body)
	}
	if _, ok := ReadyPIDs(evs)[pid]; !ok {
		b.Fatalf("%s answered from pid %d, which never reported ready", m.Name, pid)
	}
}

// BenchmarkStart is scenario 1: exec of the master → all 4 workers ready
// and serving, 20 times each, against the worker's own boot.
func BenchmarkStart(b *testing.B) {
	s := env(b)
	s.watchProcs(b)
	const runs, workers = 20, 4
	var serving, lastReady, masterReady, firstStart [2][]time.Duration
	// The references run between forkd's runs, so that all three see the
	// machine at the same speed, which drifts over a run.
	var alone, together Sample
	// By the proc connector: forkd exec'd → its 1st worker forked, and
	// the 1st worker forked → the 4th exec'd, under forkd and under the
	// benchmark.
	var masterBoot, forkdSpawns, loneSpawns Sample
	// Also by the proc connector: the benchmark's exec of forkd → forkd
	// exec'd, and go-start's exec'd → main.
	var masterExec, runtimeStart Sample
	var goStartPath string
	if s.procs != nil {
		var err error
		if goStartPath, err = goStartBinary.build(); err != nil {
			b.Fatal(err)
		}
	}
	var flat Sample // forkd with master_slice = "0": exec → READY=1
	for _, g := range s.sides() {
		for range runs {
			if !g {
				_, toReady, _, err := s.bootAlone()
				if err != nil {
					b.Fatal(err)
				}
				all, spawns, err := s.bootTogether(workers)
				if err != nil {
					b.Fatal(err)
				}
				alone, together = append(alone, toReady), append(together, all)
				loneSpawns = append(loneSpawns, spawns)
				if goStartPath != "" {
					d, err := goStart(s.procs, goStartPath)
					if err != nil {
						b.Fatal(err)
					}
					runtimeStart = append(runtimeStart, d)
				}
			}
			m, evs, ready := s.startReady(b, g, s.spec(g, workers, 30*time.Second))
			var first time.Time
			for _, ev := range evs {
				if ev.Kind == benchworker.KindStart && (first.IsZero() || ev.At.Before(first)) {
					first = ev.At
				}
			}
			last := LastReady(evs)
			assertServes(b, m, evs)
			if !g && s.procs != nil {
				boot, spawns, err := forkdBoot(s.procs, m.PID(), evs)
				if err != nil {
					b.Fatal(err)
				}
				masterBoot, forkdSpawns = append(masterBoot, boot), append(forkdSpawns, spawns)
				execd, err := execOf(s.procs, m.PID())
				if err != nil {
					b.Fatal(err)
				}
				masterExec = append(masterExec, ms(execd-monoOf(m.Started)))
			}
			closeMaster(b, m)
			if !g {
				// The same with the kernel's default time slice for the
				// master, side by side.
				spec := s.spec(g, workers, 30*time.Second)
				spec.MasterSlice = "0"
				mf, _, readyFlat := s.startReady(b, g, spec)
				closeMaster(b, mf)
				flat = append(flat, ms(readyFlat.Sub(mf.Started)))
			}

			i := idx(g)
			firstStart[i] = append(firstStart[i], first.Sub(m.Started))
			lastReady[i] = append(lastReady[i], last.Sub(m.Started))
			masterReady[i] = append(masterReady[i], ready.Sub(m.Started))
			if g {
				// Gunicorn's READY=1 precedes its workers: it serves
				// once the last worker is ready.
				serving[i] = append(serving[i], last.Sub(m.Started))
			} else {
				if ready.Before(last) {
					b.Errorf("forkd sent READY=1 %v before its 4th worker was ready", last.Sub(ready))
				}
				serving[i] = append(serving[i], ready.Sub(m.Started))
			}
		}
	}
	const sc = "1 start, 4 workers"
	med, mx, lastMed, readyMed, firstMed := newPair(), newPair(), newPair(), newPair(), newPair()
	for _, g := range s.sides() {
		i := idx(g)
		med[i] = Durations(serving[i]).Median()
		mx[i] = Durations(serving[i]).Max()
		lastMed[i] = Durations(lastReady[i]).Median()
		readyMed[i] = Durations(masterReady[i]).Median()
		firstMed[i] = Durations(firstStart[i]).Median()
		b.ReportMetric(med[i], name(g)+"-serving-median-ms")
		b.ReportMetric(mx[i], name(g)+"-serving-max-ms")
	}
	bootMed, bootMax := alone.Median(), alone.Max()
	b.ReportMetric(bootMed, "worker-boot-median-ms")
	report.Add(row(sc, fmt.Sprintf("worker alone: exec → ready (reference), median of %d", runs), "ms", Goal{},
		pair{bootMed, math.NaN()}))
	report.Add(row(sc, fmt.Sprintf("%d workers started at once by the benchmark, no master: exec of the 1st → %dth ready, median of %d",
		workers, workers, runs), "ms", Goal{}, pair{together.Median(), math.NaN()}))
	report.Add(row(sc, fmt.Sprintf("exec → all serving (forkd READY=1; Gunicorn 4th worker ready), median of %d", runs), "ms",
		Goal{Text: fmt.Sprintf("≤ boot + 5 ms = %.2f ms", bootMed+5), Limit: bootMed + 5}, med))
	report.Add(row(sc, fmt.Sprintf("exec → all serving, max of %d", runs), "ms",
		Goal{Text: fmt.Sprintf("≤ boot max + 5 ms = %.2f ms", bootMax+5), Limit: bootMax + 5}, mx))
	report.Add(row(sc, fmt.Sprintf("forkd's own share: all serving − %d started by the benchmark, medians", workers), "ms", Goal{},
		pair{med[0] - together.Median(), math.NaN()}))
	report.Add(row(sc, fmt.Sprintf("exec → all serving, forkd with master_slice = \"0\" (the kernel's default slice), median of %d", runs),
		"ms", Goal{}, pair{flat.Median(), math.NaN()}))
	report.Note("Scenario 1: forkd's default master_slice (100µs) / master_slice \"0\", exec → all serving: %.2f× (medians).",
		med[0]/flat.Median())
	report.Add(row(sc, "exec → 1st worker's start probe, median (master boot + first spawn)", "ms", Goal{}, firstMed))
	if s.procs != nil {
		report.Add(row(sc, "exec → forkd exec'd (the benchmark's fork and exec of the master), median", "ms", Goal{},
			pair{masterExec.Median(), math.NaN()}))
		report.Add(row(sc, "forkd exec'd → its 1st worker forked (the master's boot), median", "ms", Goal{},
			pair{masterBoot.Median(), math.NaN()}))
		report.Add(row(sc, "a Go program linking forkd's packages (bench/cmd/go-start): exec'd → main, median", "ms", Goal{},
			pair{runtimeStart.Median(), math.NaN()}))
		floor := together.Median() + masterExec.Median() + runtimeStart.Median()
		report.Add(row(sc, "floor for a master in Go: 4 started by the benchmark + exec → exec'd + exec'd → main above, medians",
			"ms", Goal{}, pair{floor, math.NaN()}))
		budget := "which leaves %.2f ms for all of the master's own work (config, sockets, notify socket, signals, " +
			"4 spawns, READY=1)"
		if floor >= bootMed+5 {
			budget = "%.2f ms below that floor: no master in Go can meet it on this machine"
		}
		report.Note("Scenario 1: a master in Go that did nothing of its own and spawned as fast as the benchmark "+
			"would serve at about %.2f ms (the floor row); the goal, boot + 5 ms, is %.2f ms, "+budget+
			". forkd serves %.2f ms after that floor.", floor, bootMed+5, math.Abs(bootMed+5-floor), med[0]-floor)
		report.Add(row(sc, fmt.Sprintf("1st worker forked → %dth exec'd, median", workers), "ms", Goal{},
			pair{forkdSpawns.Median(), math.NaN()}))
		report.Add(row(sc, fmt.Sprintf("same for the %d started by the benchmark, median", workers), "ms", Goal{},
			pair{loneSpawns.Median(), math.NaN()}))
	}
	report.Add(row(sc, "exec → 4th worker's ready probe, median", "ms", Goal{}, lastMed))
	report.Add(row(sc, "exec → master's READY=1, median (Gunicorn's: before any worker)", "ms", Goal{}, readyMed))
}

// startReady starts a master of spec and waits until its workers are ready
// and it sent READY=1: it returns the master (for the caller to close),
// the probe events and when READY=1 arrived.
func (s *setup) startReady(b *testing.B, gunicorn bool, spec Spec) (*Master, []Event, time.Time) {
	b.Helper()
	m := s.start(b, gunicorn, spec)
	evs, err := m.WaitReady(spec.Workers, 30*time.Second)
	if err != nil {
		b.Fatalf("%s: %v\n%s", m.Name, err, m.Output())
	}
	msgs, err := m.Notify.Wait(10*time.Second, m.Name+"'s READY=1", func(ms []Message) bool {
		_, ok := FirstReady(ms)
		return ok
	})
	if err != nil {
		b.Fatal(err)
	}
	ready, _ := FirstReady(msgs)
	return m, evs, ready
}

// BenchmarkKill is scenario 2: SIGKILL a worker that has served ≥ 1.5 s,
// time kill → the victim's exit, the replacement's fork and exec (the
// kernel's proc connector, when the benchmark may listen to it) and its
// start and ready probes; 20 kills each.
func BenchmarkKill(b *testing.B) {
	s := env(b)
	s.watchProcs(b)
	boot := s.workerBoot(b)
	procs := s.procs
	const kills, workers = 20, 4
	var took [2]killTimes
	for _, g := range s.sides() {
		m := s.start(b, g, s.spec(g, workers, 30*time.Second))
		evs, err := m.WaitReady(workers, 30*time.Second)
		if err != nil {
			b.Fatal(err)
		}
		i := idx(g)
		killed := map[int]bool{}
		for k := range kills {
			kt, err := killOne(m, evs, killed, procs, !g)
			if err != nil {
				b.Fatalf("%s, kill %d: %v\n%s", m.Name, k+1, err, m.Output())
			}
			took[i].add(kt)
			evs = m.Probe.Events()
		}
		assertServes(b, m, evs)
		closeMaster(b, m)
	}
	const sc = "2 SIGKILL → replacement"
	br := boot.toReady.Median()
	if procs != nil {
		report.Add(row(sc, "worker alone: exec'd → start probe (reference), median of 10", "ms", Goal{},
			pair{boot.execToStart.Median(), math.NaN()}))
	}
	for _, q := range []struct {
		label string
		q     float64
		goal  bool
	}{{"median", 0.5, true}, {"p90", 0.9, true}, {"max", 1, false}} {
		var gExec, gReady Goal
		if q.goal {
			gExec = Goal{Text: "≤ 2 ms", Limit: 2}
			gReady = Goal{Text: fmt.Sprintf("≤ worker boot + 2 ms = %.2f ms", br+2), Limit: br + 2}
		}
		for _, f := range []struct {
			figure, metric string
			goal           Goal
			of             func(*killTimes) Sample
			procs          bool
		}{
			{"kill → victim gone (its last thread's exit)", "exit", Goal{}, func(k *killTimes) Sample { return k.exit }, true},
			{"kill → replacement forked (the process exists)", "fork", Goal{}, func(k *killTimes) Sample { return k.fork }, true},
			{"kill → replacement exec'd (Gunicorn forks without exec)", "exec", gExec, func(k *killTimes) Sample { return k.exec }, true},
			{"replacement exec'd → its start probe (its Go runtime's start)", "init", Goal{}, func(k *killTimes) Sample { return k.init }, true},
			{"kill → replacement's start probe", "start", Goal{}, func(k *killTimes) Sample { return k.start }, false},
			{"kill → replacement ready", "ready", gReady, func(k *killTimes) Sample { return k.ready }, false},
		} {
			if f.procs && procs == nil {
				continue
			}
			v := newPair()
			for _, g := range s.sides() {
				i := idx(g)
				v[i] = f.of(&took[i]).Quantile(q.q)
				b.ReportMetric(v[i], name(g)+"-"+f.metric+"-"+q.label+"-ms")
			}
			report.Add(row(sc, fmt.Sprintf("%s, %s of %d", f.figure, q.label, kills), "ms", f.goal, v))
		}
	}
}

// killTimes are one side's kill → … durations in ms, one per kill. The
// proc connector's figures are NaN without it, and exec is NaN for a
// master that forks without exec.
type killTimes struct {
	exit, fork, exec, init, start, ready Sample
}

// add appends one kill's figures.
func (k *killTimes) add(one killTime) {
	k.exit = append(k.exit, one.exit)
	k.fork = append(k.fork, one.fork)
	k.exec = append(k.exec, one.exec)
	k.init = append(k.init, one.init)
	k.start = append(k.start, one.start)
	k.ready = append(k.ready, one.ready)
}

// killTime is one kill's kill → … durations in ms.
type killTime struct {
	exit, fork, exec, start, ready float64
	// init is the replacement's exec → start probe: its Go runtime's start.
	init float64
}

// spec is the Spec for forkd or Gunicorn with n workers and timeout.
func (s *setup) spec(gunicorn bool, n int, timeout time.Duration) Spec {
	if gunicorn {
		return Spec{Workers: n, Timeout: timeout}
	}
	return s.forkdSpec(n, timeout)
}

// killOne SIGKILLs the live worker of m that has been ready longest, once
// it has been for 1.5 s, and times kill → the replacement's start and ready
// probes; with procs, also kill → the victim's exit and the replacement's
// fork and (when execs, the master execs its workers) its last exec before
// its start probe. evs are the probe events so far; killed holds the
// workers killed before, and killOne adds its victim.
func killOne(m *Master, evs []Event, killed map[int]bool, procs *ProcWatch, execs bool) (killTime, error) {
	kt := killTime{exit: math.NaN(), fork: math.NaN(), exec: math.NaN(), init: math.NaN()}
	seen := map[int]bool{}
	for _, ev := range evs {
		seen[ev.PID] = true
	}
	victim, readyAt := 0, time.Time{}
	for pid, at := range ReadyPIDs(evs) {
		if killed[pid] {
			continue
		}
		if victim == 0 || at.Before(readyAt) {
			victim, readyAt = pid, at
		}
	}
	if victim == 0 {
		return kt, errors.New("no live worker to kill")
	}
	if wait := time.Until(readyAt.Add(1500 * time.Millisecond)); wait > 0 {
		<-time.After(wait) // the scenario's precondition: it has served 1.5 s
	}
	// One kill at a time: the previous replacement has been ready 200 ms,
	// so the master is idle again — a single crash, not a burst of them.
	var lastReady time.Time
	for _, ev := range evs {
		if ev.Kind == benchworker.KindReady && ev.At.After(lastReady) {
			lastReady = ev.At
		}
	}
	if wait := time.Until(lastReady.Add(200 * time.Millisecond)); wait > 0 {
		<-time.After(wait)
	}
	killedMono := Monotonic()
	killedAt := time.Now()
	if err := syscall.Kill(victim, syscall.SIGKILL); err != nil {
		return kt, fmt.Errorf("kill worker %d: %w", victim, err)
	}
	killed[victim] = true
	var start, ready Event
	_, err := m.Probe.WaitEvents(10*time.Second, fmt.Sprintf("the replacement of worker %d", victim),
		func(evs []Event) bool {
			start, ready = Event{}, Event{}
			for _, ev := range evs {
				if seen[ev.PID] {
					continue
				}
				switch ev.Kind {
				case benchworker.KindStart:
					start = ev
				case benchworker.KindReady:
					ready = ev
				}
			}
			return ready.PID != 0 || m.Err() != nil
		})
	if err == nil {
		err = m.Err()
	}
	if err != nil {
		return kt, err
	}
	if start.PID != ready.PID {
		return kt, fmt.Errorf("replacement ready as pid %d, started as %d", ready.PID, start.PID)
	}
	kt.start, kt.ready = ms(start.At.Sub(killedAt)), ms(ready.At.Sub(killedAt))
	if procs == nil {
		return kt, nil
	}
	// The kernel reports the exits of the victim's threads, then (forkd
	// and Gunicorn fork once they have reaped: once the last thread is
	// gone) the replacement's fork.
	var exit, fork ProcEvent
	_, err = procs.Wait(10*time.Second, fmt.Sprintf("the fork of pid %d", start.PID), func(evs []ProcEvent) bool {
		exit, fork = ProcEvent{}, ProcEvent{}
		for _, e := range evs {
			switch {
			case e.At < killedMono:
			case e.Kind == ProcExit && e.PID == victim && fork.PID == 0:
				exit = e // its last thread before the fork
			case e.Kind == ProcFork && e.PID == start.PID:
				fork = e
			}
		}
		return exit.PID != 0 && fork.PID != 0
	})
	if err != nil {
		return kt, err
	}
	kt.exit, kt.fork = ms(exit.At-killedMono), ms(fork.At-killedMono)
	if execs {
		at, err := execOf(procs, start.PID)
		if err != nil {
			return kt, err
		}
		kt.exec, kt.init = ms(at-killedMono), ms(monoOf(start.At)-at)
	}
	return kt, nil
}

// BenchmarkKillBusy is scenario 2b: scenario 2's SIGKILL while every CPU
// is taken by a busy loop outside the masters (BusyCPUs), 10 kills each,
// for forkd as configured by default (master_slice 100µs), forkd with
// master_slice = "0" (the kernel's default slice) and Gunicorn.
func BenchmarkKillBusy(b *testing.B) {
	s := env(b)
	s.watchProcs(b)
	const kills, workers = 10, 4
	type side struct {
		gunicorn bool
		slice    string
		took     killTimes
	}
	forkd, flat := &side{}, &side{slice: "0"}
	sides := []*side{forkd, flat}
	var guni *side
	if s.gunicorn != "" {
		guni = &side{gunicorn: true}
		sides = append(sides, guni)
	}
	for _, sd := range sides {
		spec := s.spec(sd.gunicorn, workers, 30*time.Second)
		spec.MasterSlice = sd.slice
		m := s.start(b, sd.gunicorn, spec)
		evs, err := m.WaitReady(workers, 30*time.Second)
		if err != nil {
			b.Fatal(err)
		}
		stop, err := BusyCPUs()
		if err != nil {
			b.Fatal(err)
		}
		killed := map[int]bool{}
		for k := range kills {
			kt, err := killOne(m, evs, killed, s.procs, !sd.gunicorn)
			if err != nil {
				stop()
				b.Fatalf("%s, kill %d: %v\n%s", m.Name, k+1, err, m.Output())
			}
			sd.took.add(kt)
			evs = m.Probe.Events()
		}
		stop()
		assertServes(b, m, evs)
		closeMaster(b, m)
	}
	const sc = "2b SIGKILL → replacement, every CPU busy"
	gOf := func(of func(*killTimes) Sample, q float64) float64 {
		if guni == nil {
			return math.NaN()
		}
		return of(&guni.took).Quantile(q)
	}
	for _, q := range []struct {
		label string
		q     float64
	}{{"median", 0.5}, {"p90", 0.9}} {
		for _, f := range []struct {
			figure, metric string
			of             func(*killTimes) Sample
			procs          bool
		}{
			{"kill → replacement forked", "fork", func(k *killTimes) Sample { return k.fork }, true},
			{"kill → replacement exec'd (Gunicorn forks without exec)", "exec", func(k *killTimes) Sample { return k.exec }, true},
			{"kill → replacement ready", "ready", func(k *killTimes) Sample { return k.ready }, false},
		} {
			if f.procs && s.procs == nil {
				continue
			}
			v := pair{f.of(&forkd.took).Quantile(q.q), gOf(f.of, q.q)}
			report.Add(row(sc, fmt.Sprintf("%s, %s of %d", f.figure, q.label, kills), "ms", Goal{}, v))
			d := f.of(&flat.took).Quantile(q.q)
			report.Add(row(sc, fmt.Sprintf("%s, forkd with master_slice = \"0\" (the kernel's default slice), %s of %d",
				f.figure, q.label, kills), "ms", Goal{}, pair{d, math.NaN()}))
			b.ReportMetric(v[0], "forkd-"+f.metric+"-"+q.label+"-ms")
			b.ReportMetric(d, "forkd-slice0-"+f.metric+"-"+q.label+"-ms")
		}
	}
	if s.procs != nil {
		report.Note("Scenario 2b: forkd's default master_slice (100µs) / master_slice \"0\", kill → replacement exec'd: "+
			"%.2f× (median), %.2f× (p90).", forkd.took.exec.Median()/flat.took.exec.Median(),
			forkd.took.exec.Quantile(0.9)/flat.took.exec.Quantile(0.9))
	}
}

// BenchmarkHang is scenario 3: a worker hangs (GET /hang) with a 2 s
// timeout; time the hang → the replacement's ready probe, 3 hangs each.
func BenchmarkHang(b *testing.B) {
	s := env(b)
	const hangs, workers = 3, 4
	var took [2]Sample
	for _, g := range s.sides() {
		m := s.start(b, g, s.spec(g, workers, 2*time.Second))
		if _, err := m.WaitReady(workers, 30*time.Second); err != nil {
			b.Fatal(err)
		}
		i := idx(g)
		for h := range hangs {
			d, err := hangOne(m)
			if err != nil {
				b.Fatalf("%s, hang %d: %v\n%s", m.Name, h+1, err, m.Output())
			}
			took[i] = append(took[i], d.Seconds())
		}
		assertServes(b, m, m.Probe.Events())
		closeMaster(b, m)
	}
	const sc = "3 hung worker, timeout 2 s"
	med, mx := newPair(), newPair()
	for _, g := range s.sides() {
		i := idx(g)
		med[i], mx[i] = took[i].Median(), took[i].Max()
		b.ReportMetric(med[i], name(g)+"-median-s")
		b.ReportMetric(mx[i], name(g)+"-max-s")
	}
	goal := Goal{Text: "≤ 2.05 s", Limit: 2.05}
	report.Add(row(sc, fmt.Sprintf("hang → replacement ready, median of %d", hangs), "s", goal, med))
	report.Add(row(sc, fmt.Sprintf("hang → replacement ready, max of %d", hangs), "s", goal, mx))
}

// hangOne sends GET /hang to m and returns the time from the worker's hang
// probe to a new worker's ready probe.
func hangOne(m *Master) (time.Duration, error) {
	before := m.Probe.Events()
	seen := map[int]bool{}
	for _, ev := range before {
		seen[ev.PID] = true
	}
	conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", m.Port), 5*time.Second)
	if err != nil {
		return 0, fmt.Errorf("connect: %w", err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("GET /hang HTTP/1.1\r\nHost: bench\r\n\r\n")); err != nil {
		return 0, fmt.Errorf("send GET /hang: %w", err)
	}
	var hang, ready Event
	_, err = m.Probe.WaitEvents(15*time.Second, "a hang and the hung worker's replacement",
		func(evs []Event) bool {
			hang, ready = Event{}, Event{}
			for _, ev := range evs[len(before):] {
				switch {
				case ev.Kind == benchworker.KindHang && hang.PID == 0:
					hang = ev
				case ev.Kind == benchworker.KindReady && !seen[ev.PID] && hang.PID != 0:
					ready = ev
				}
			}
			return ready.PID != 0 || m.Err() != nil
		})
	if err == nil {
		err = m.Err()
	}
	if err != nil {
		return 0, err
	}
	return ready.At.Sub(hang.At), nil
}

// BenchmarkIdle is scenario 4: the master's wakeups per second over 30 s
// of steady idle with 4 workers; all three masters idle side by side.
func BenchmarkIdle(b *testing.B) {
	s := env(b)
	const workers = 4
	const window = 30 * time.Second
	type side struct {
		label string
		m     *Master
	}
	sides := []side{
		{"forkd, timeout 30s", s.start(b, false, s.forkdSpec(workers, 30*time.Second))},
		{"forkd, heartbeats off", s.start(b, false, s.forkdSpec(workers, 0))},
	}
	if s.gunicorn != "" {
		sides = append(sides, side{"Gunicorn, timeout 30", s.start(b, true, Spec{Workers: workers, Timeout: 30 * time.Second})})
	}
	var lastReady time.Time
	for _, sd := range sides {
		evs, err := sd.m.WaitReady(workers, 30*time.Second)
		if err != nil {
			b.Fatalf("%s: %v", sd.label, err)
		}
		if at := LastReady(evs); at.After(lastReady) {
			lastReady = at
		}
	}
	// Start the window 17 s after the boot, past the first heartbeat round
	// of forkd's workers (15 s after they were ready, with timeout 30s): the
	// masters have settled, and the window holds the second round.
	<-time.After(time.Until(lastReady.Add(17 * time.Second)))
	before := make([]uint64, len(sides))
	for i, sd := range sides {
		n, err := ContextSwitches(sd.m.PID())
		if err != nil {
			b.Fatal(err)
		}
		before[i] = n
	}
	t0 := time.Now()
	<-time.After(window) // the measurement window itself
	rates := make([]float64, len(sides))
	elapsed := time.Since(t0).Seconds()
	for i, sd := range sides {
		if err := sd.m.Err(); err != nil {
			b.Fatalf("%s: %v", sd.label, err)
		}
		n, err := ContextSwitches(sd.m.PID())
		if err != nil {
			b.Fatal(err)
		}
		rates[i] = float64(n-before[i]) / elapsed
		b.ReportMetric(rates[i], strings.NewReplacer(",", "", " ", "-").Replace(sd.label)+"-wakeups/s")
	}
	gun := math.NaN()
	if len(rates) == 3 {
		gun = rates[2]
	}
	const sc = "4 idle master, 4 workers"
	goal := Goal{Text: "≤ 0.2/s", Limit: 0.2}
	report.Add(row(sc, "wakeups/s over 30 s holding a heartbeat round, forkd timeout 30s vs Gunicorn timeout 30",
		"/s", goal, pair{rates[0], gun}))
	report.Add(row(sc, "wakeups/s over 30 s, forkd heartbeats off (timeout 0) vs Gunicorn timeout 30", "/s", goal,
		pair{rates[1], gun}))
}

// BenchmarkMemory is scenario 5: the master's VmRSS and Pss with 64
// workers serving.
func BenchmarkMemory(b *testing.B) {
	s := env(b)
	const workers = 64
	rss, pss := newPair(), newPair()
	for _, g := range s.sides() {
		m := s.start(b, g, s.spec(g, workers, 30*time.Second))
		evs, err := m.WaitReady(workers, 60*time.Second)
		if err != nil {
			b.Fatal(err)
		}
		assertServes(b, m, evs)
		mem, err := MemoryOf(m.PID())
		if err != nil {
			b.Fatal(err)
		}
		closeMaster(b, m)
		i := idx(g)
		rss[i], pss[i] = float64(mem.RSS)/1e6, float64(mem.PSS)/1e6
		b.ReportMetric(rss[i], name(g)+"-rss-MB")
		b.ReportMetric(pss[i], name(g)+"-pss-MB")
	}
	const sc = "5 master memory, 64 workers"
	goal := Goal{Text: "≤ 12 MB", Limit: 12}
	report.Add(row(sc, "master VmRSS", "MB", goal, rss))
	report.Add(row(sc, "master Pss", "MB", goal, pss))
}

// BenchmarkThousand is scenario 6 (forkd only): exec → READY=1 with 1,024
// workers, bench workers in notify mode and /bin/sleep in started mode.
func BenchmarkThousand(b *testing.B) {
	s := env(b)
	const workers = 1024
	// 4 MiB of available memory per worker: more than a bench worker
	// uses, with room to spare.
	const need = workers * 4 << 20
	if avail, err := MemAvailable(); err != nil {
		b.Fatal(err)
	} else if avail < need {
		report.Note("Scenario 6 skipped: 1,024 workers need about %d MiB, only %d MiB were available.", need>>20, avail>>20)
		b.Skipf("1,024 workers need about %d MiB, only %d MiB available", need>>20, avail>>20)
	}
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		b.Fatalf("the started-mode case needs sleep: %v", err)
	}
	goal := Goal{Text: "≤ 3 s", Limit: 3}
	notify := s.forkdSpec(workers, 30*time.Second)
	notify.BootTimeout = 60 * time.Second
	onePerCPU := notify
	onePerCPU.MaxBooting = runtime.NumCPU()
	cases := []struct {
		figure, unit string
		spec         Spec
		probes       bool
		goal         Goal
	}{
		{"exec → READY=1, 1,024 bench workers (ready = notify)", "notify-ready-s", notify, true, goal},
		{fmt.Sprintf("the same, max_booting = %d (one boot per CPU; the default boots two per CPU)", onePerCPU.MaxBooting),
			"notify-one-per-cpu-ready-s", onePerCPU, true, Goal{}},
		{"exec → READY=1, 1,024 /bin/sleep infinity (ready = started)", "sleep-ready-s", Spec{Workers: workers,
			BootTimeout: 60 * time.Second, Command: sleep, Args: []string{"infinity"}, Ready: "started"}, false, goal},
	}
	for _, c := range cases {
		m := s.start(b, false, c.spec)
		msgs, err := m.Notify.Wait(60*time.Second, "forkd's READY=1", func(ms []Message) bool {
			_, ok := FirstReady(ms)
			return ok || m.Err() != nil
		})
		if err == nil {
			err = m.Err()
		}
		if err != nil {
			b.Fatalf("%s: %v\n%s", c.figure, err, m.Output())
		}
		ready, _ := FirstReady(msgs)
		if c.probes {
			// Every worker sent its ready probe before its READY=1, so all
			// were sent before forkd's READY=1; the last may still be on
			// their way through the probe socket.
			evs, err := m.Probe.WaitEvents(10*time.Second, "every worker's ready probe", func(evs []Event) bool {
				return len(ReadyPIDs(evs)) >= workers
			})
			if n := len(ReadyPIDs(evs)); err != nil || n != workers {
				b.Errorf("forkd READY=1 with %d of %d workers ready: %v", n, workers, err)
			}
		}
		if n := len(Descendants(m.PID())); n < workers {
			b.Errorf("forkd READY=1 with %d live workers, want %d", n, workers)
		}
		closeMaster(b, m)
		took := ready.Sub(m.Started).Seconds()
		b.ReportMetric(took, c.unit)
		report.Add(row("6 1,024 workers (forkd only)", c.figure, "s", c.goal,
			pair{took, math.NaN()}))
	}
}

// example returns the FastAPI example, and skips tb when it cannot run
// here (a benchmark says so in the report too).
func example(tb testing.TB) Example {
	tb.Helper()
	root, err := ModuleRoot(".")
	if err != nil {
		tb.Fatal(err)
	}
	ex, err := FindExample(root)
	if errors.Is(err, ErrNoExample) {
		if _, ok := tb.(*testing.B); ok {
			report.Note("%s skipped: %v", tb.Name(), err)
		}
		tb.Skip(err)
	}
	if err != nil {
		tb.Fatal(err)
	}
	return ex
}
