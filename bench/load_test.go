package bench

import (
	"context"
	"fmt"
	"maps"
	"math"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/forkd/forkd/bench/benchworker"
)

// loadDoc describes scenarios 7–11 in docs/BENCHMARKS.md.
const loadDoc = `- **Load.** wrk (Debian's package) ` + "`wrk -t2 -c32 -dNs --latency -H 'Connection: close'`" + `
  on loopback: every request on a new connection, as Gunicorn's sync workers
  serve anyway (they close every connection); a keep-alive connection that a
  stopping worker closes while wrk sends on it would count against the worker,
  not the arbiter. "Failed" = wrk's socket errors (connect, read, write,
  timeout at 2 s) + non-2xx responses; p99 is wrk's --latency figure, over
  the requests that completed. On TERM the bench worker closes its listeners,
  waits for every accepted connection to be answered, then calls
  ` + "`http.Server.Shutdown`" + `: Shutdown alone closes unanswered a connection accepted
  just before it whose request is read just after (net/http checks for
  shutdown after reading a request), which cost ~2–4 failed requests per
  stopped worker here, with or without forkd.
- **Boot delay.** In scenarios 7 and 9 the workers take 200 ms to boot, so
  that "start the new workers beside the old and stop the old once the new
  serve" matters: the Go bench worker waits 200 ms between its "start" probe
  and serving (` + "`BENCH_BOOT_DELAY_MS=200`" + `); Gunicorn's ` + "`bench/app.py`" + ` sleeps 200 ms at
  import, which Gunicorn (no --preload) does in each worker after the fork,
  between post_fork and post_worker_init.
- **7 reload under load.** 4 workers each. 10 s of load → baseline p99; then
  30 s of load with a HUP to the master every 3 s (10 HUPs, from 1.5 s on).
  forkd starts each new generation beside the old and stops the old one once
  the new one is ready; Gunicorn starts the new workers and stops the old ones
  at once. Every HUP must bring up 4 new workers (their "ready" probes), and
  forkd's 40 old workers must report "stop" (SIGTERM).
- **8 USR2 upgrade under load** (forkd only). 4 workers, 25 s of load, a USR2
  every 2 s (10, from 1.5 s on), each one waited for: the re-executed master's
  READY=1 on its NOTIFY_SOCKET. The master's pid and start time, and the set
  of worker (pid, start time), are read from /proc before and after.
- **9 recycling under load** (forkd only). 4 workers with ` + "`max_requests = 1000`" + ` (no
  jitter), 20 s of load; the bench worker sends ` + "`FORKD_REQUESTS=<total>`" + ` on
  NOTIFY_SOCKET at most every 100 ms (and 100 ms after a burst's last request).
  Recycles = new worker pids. Ready workers are read two ways: the fewest in
  forkd's STATUS= lines ("N/M workers ready") during the load, and from the
  probes: workers between their "ready" and their "stop" probe.
- **10 hook → D-Bus signal** (forkd only). forkd ` + "`--bus`" + ` on a private dbus-daemon;
  a godbus subscriber timestamps every signal as it takes it off the
  connection. 24 workers; 200 times, SIGKILL the worker ready longest (≥ 1.2 s,
  past forkd's 1 s min uptime, so no backoff), and wait for its ChildExit.
  ChildExit: the worker's exit, as the bench's own pidfd of it tells (poll
  readable), → signal received; also SIGKILL sent → signal received, which
  adds the kernel's teardown of the process. PostWorkerInit of the 200 replacements:
  the worker's "ready" probe (taken right before it sends READY=1) → signal
  received. Both include the kernel's notice to forkd, forkd's arbiter and hook
  queue, the bus daemon and the subscriber.
- **11 notify flood** (forkd only). 64 workers that, on SIGUSR1 (sent by the
  bench to each), send WATCHDOG=1 and STATUS= datagrams alternately to forkd's
  NOTIFY_SOCKET at 200/s each (12,800/s in all; a slow reader would make their
  sends block, so the achieved rate is what forkd kept up with), counted by the
  workers. Over 5 s without and 5 s with the flood: ListWorkers round-trips over
  D-Bus every 40 ms, and every 5th round a TTIN or TTOU to the master timed to
  its NworkersChanged signal; and the master's CPU time (/proc/PID/stat) and
  context switches over each window, to tell an arbiter that falls behind
  (near 100 % of a core) from a machine that is short of CPU (the load
  average is noted under the table).
`

// loadSeconds are the wrk runs' lengths.
const (
	reloadBaseline = 10 * time.Second
	reloadLoad     = 30 * time.Second
	upgradeLoad    = 25 * time.Second
	recycleLoad    = 20 * time.Second
)

// bootDelay is the simulated boot of the workers in scenarios 7 and 9.
const bootDelay = "200"

// wrk returns the load generator, skipping b when wrk is not installed.
func (s *setup) wrk(b *testing.B, d time.Duration) Wrk {
	b.Helper()
	path, err := exec.LookPath("wrk")
	if err != nil {
		report.Note("%s skipped: wrk is not installed (apt-get install wrk, or make bench as root).", b.Name())
		b.Skip("wrk not installed (apt-get install wrk)")
	}
	return Wrk{Path: path, Threads: 2, Conns: 32, Duration: d, Headers: []string{"Connection: close"}}
}

// withEnv returns spec with env added to its Env.
func withEnv(spec Spec, env map[string]string) Spec {
	m := maps.Clone(spec.Env)
	if m == nil {
		m = map[string]string{}
	}
	maps.Copy(m, env)
	spec.Env = m
	return spec
}

// loadResult is a wrk run's outcome.
type loadResult struct {
	load Load
	err  error
}

// startLoad runs w against m in the background; the run is killed when b
// ends.
func startLoad(b *testing.B, w Wrk, m *Master) <-chan loadResult {
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	out := make(chan loadResult, 1)
	go func() {
		l, err := w.Run(ctx, fmt.Sprintf("http://127.0.0.1:%d/", m.Port))
		out <- loadResult{l, err}
	}()
	return out
}

// signalEvery sends sig to pid n times, every interval from first after
// start, calling after (if not nil) right after each; it stops at the first
// error.
func signalEvery(pid int, sig syscall.Signal, n int, start time.Time, first, interval time.Duration,
	after func(i int, at time.Time) error) error {
	for i := range n {
		<-time.After(time.Until(start.Add(first + time.Duration(i)*interval))) // the schedule itself
		at := time.Now()
		if err := syscall.Kill(pid, sig); err != nil {
			return fmt.Errorf("send %v #%d to %d: %w", sig, i+1, pid, err)
		}
		if after != nil {
			if err := after(i, at); err != nil {
				return err
			}
		}
	}
	return nil
}

// countKind returns how many probe events of kind evs hold.
func countKind(evs []Event, kind string) int {
	n := 0
	for _, ev := range evs {
		if ev.Kind == kind {
			n++
		}
	}
	return n
}

// BenchmarkReload is scenario 7: 10 HUPs during 30 s of load, after a
// 10 s baseline, 4 workers that boot in 200 ms, forkd and Gunicorn.
func BenchmarkReload(b *testing.B) {
	s := env(b)
	base := s.wrk(b, reloadBaseline)
	during := base
	during.Duration = reloadLoad
	const workers, hups = 4, 10
	baseP99, p99, failed, baseRate, rate, fresh := newPair(), newPair(), newPair(), newPair(), newPair(), newPair()
	for _, g := range s.sides() {
		m := s.start(b, g, withEnv(s.spec(g, workers, 30*time.Second), map[string]string{benchworker.EnvBootDelay: bootDelay}))
		if _, err := m.WaitReady(workers, 30*time.Second); err != nil {
			b.Fatalf("%s: %v\n%s", m.Name, err, m.Output())
		}
		bl, err := base.Run(context.Background(), fmt.Sprintf("http://127.0.0.1:%d/", m.Port))
		if err != nil {
			b.Fatalf("%s baseline: %v", m.Name, err)
		}
		b.Logf("%s baseline: %v", m.Name, bl)
		before := m.Probe.Events()
		load := startLoad(b, during, m)
		if err := signalEvery(m.PID(), syscall.SIGHUP, hups, time.Now(), 1500*time.Millisecond, 3*time.Second,
			func(int, time.Time) error { return m.Err() }); err != nil {
			b.Fatalf("%s: %v", m.Name, err)
		}
		res := <-load
		if res.err != nil {
			b.Fatalf("%s under reloads: %v", m.Name, res.err)
		}
		b.Logf("%s during %d HUPs: %v", m.Name, hups, res.load)
		// Every HUP brought up a new generation; forkd stopped every old one.
		want := len(ReadyPIDs(before)) + hups*workers
		evs, err := m.Probe.WaitEvents(15*time.Second, fmt.Sprintf("%d workers ready in all", want),
			func(evs []Event) bool {
				return m.Err() != nil || len(ReadyPIDs(evs)) >= want &&
					(g || countKind(evs, benchworker.KindStop) >= hups*workers)
			})
		if err == nil {
			err = m.Err()
		}
		if err != nil {
			b.Errorf("%s: %v (%d ready, %d stopped)", m.Name, err, len(ReadyPIDs(evs)), countKind(evs, benchworker.KindStop))
		}
		assertServes(b, m, evs)
		closeMaster(b, m)

		i := idx(g)
		baseP99[i], p99[i] = ms(bl.P99), ms(res.load.P99)
		failed[i] = float64(res.load.Failed())
		baseRate[i], rate[i] = bl.Rate(), res.load.Rate()
		fresh[i] = float64(len(ReadyPIDs(evs)) - len(ReadyPIDs(before)))
		if bl.Failed() > 0 {
			b.Logf("%s: %d failed requests in the baseline", m.Name, bl.Failed())
		}
		b.ReportMetric(p99[i], name(g)+"-reload-p99-ms")
		b.ReportMetric(failed[i], name(g)+"-reload-failed")
	}
	const sc = "7 HUP reload under load, 4 workers booting in 200 ms"
	report.Add(row(sc, "p99 latency, 10 s baseline", "ms", Goal{}, baseP99))
	report.Add(row(sc, fmt.Sprintf("p99 latency, 30 s with %d HUPs", hups), "ms",
		Goal{Text: fmt.Sprintf("≤ 2 × baseline = %.2f ms", 2*baseP99[0]), Limit: 2 * baseP99[0]}, p99))
	report.Add(row(sc, fmt.Sprintf("failed requests (socket errors + non-2xx) during %d HUPs", hups), "",
		Goal{Text: "0", Limit: 0}, failed))
	report.Add(row(sc, "requests/s, baseline (higher is better)", "/s", Goal{}, baseRate))
	report.Add(row(sc, fmt.Sprintf("requests/s during %d HUPs (higher is better)", hups), "/s", Goal{}, rate))
	report.Add(row(sc, fmt.Sprintf("new workers ready during the run (%d per HUP = %d)", workers, hups*workers), "",
		Goal{Text: fmt.Sprintf("≥ %d", hups*workers), Limit: hups * workers, AtLeast: true}, fresh))
}

// readyCount returns how many sd_notify datagrams among msgs hold READY=1.
func readyCount(msgs []Message) int {
	n := 0
	for _, m := range msgs {
		for _, line := range strings.Split(m.Data, "\n") {
			if line == "READY=1" {
				n++
				break
			}
		}
	}
	return n
}

// BenchmarkUpgrade is scenario 8 (forkd only): 10 in-place upgrades (USR2,
// every 2 s) during 25 s of load; the master's and the workers' pids must
// not change.
func BenchmarkUpgrade(b *testing.B) {
	s := env(b)
	w := s.wrk(b, upgradeLoad)
	const workers, upgrades = 4, 10
	m := s.start(b, false, s.forkdSpec(workers, 30*time.Second))
	if _, err := m.WaitReady(workers, 30*time.Second); err != nil {
		b.Fatalf("%v\n%s", err, m.Output())
	}
	if _, err := m.Notify.Wait(10*time.Second, "forkd's READY=1", func(ms []Message) bool {
		return readyCount(ms) > 0 || m.Err() != nil
	}); err != nil {
		b.Fatal(err)
	}
	masterBefore, err := procStartTime(m.PID())
	if err != nil {
		b.Fatal(err)
	}
	kidsBefore := liveWorkers(m)
	if len(kidsBefore) != workers {
		b.Fatalf("forkd has %d live workers, want %d: %v", len(kidsBefore), workers, kidsBefore)
	}
	load := startLoad(b, w, m)
	var took Sample
	err = signalEvery(m.PID(), syscall.SIGUSR2, upgrades, time.Now(), 1500*time.Millisecond, 2*time.Second,
		func(i int, at time.Time) error {
			var upgraded time.Time
			_, err := m.Notify.Wait(1900*time.Millisecond, fmt.Sprintf("READY=1 after USR2 #%d", i+1),
				func(ms []Message) bool {
					for _, msg := range ms {
						if msg.At.After(at) && readyCount([]Message{msg}) > 0 {
							upgraded = msg.At
							return true
						}
					}
					return m.Err() != nil
				})
			if err == nil {
				err = m.Err()
			}
			if err != nil {
				return err
			}
			took = append(took, ms(upgraded.Sub(at)))
			return nil
		})
	if err != nil {
		b.Errorf("upgrade: %v\n%s", err, m.Output())
	}
	res := <-load
	if res.err != nil {
		b.Fatalf("load during upgrades: %v", res.err)
	}
	b.Logf("forkd during %d upgrades: %v", upgrades, res.load)
	masterAfter, err := procStartTime(m.PID())
	if err != nil {
		b.Fatalf("forkd's pid %d after the upgrades: %v\n%s", m.PID(), err, m.Output())
	}
	kidsAfter := liveWorkers(m)
	replaced := 0
	for _, k := range kidsBefore {
		if !slices.Contains(kidsAfter, k) {
			replaced++
		}
	}
	if replaced > 0 || len(kidsAfter) != workers {
		b.Errorf("workers before %v, after %v", kidsBefore, kidsAfter)
	}
	masterChanged := 0.0
	if m.Err() != nil || masterAfter != masterBefore {
		masterChanged = 1
		b.Errorf("forkd's master changed: start time %d → %d, %v", masterBefore, masterAfter, m.Err())
	}
	assertServes(b, m, m.Probe.Events())
	closeMaster(b, m)

	b.ReportMetric(float64(res.load.Failed()), "failed")
	b.ReportMetric(took.Median(), "usr2-to-ready-median-ms")
	const sc = "8 USR2 upgrade under load, 4 workers (forkd only)"
	zero := Goal{Text: "0", Limit: 0}
	one := func(v float64) pair { return pair{v, math.NaN()} }
	report.Add(row(sc, fmt.Sprintf("upgrades completed (READY=1 from the re-executed master), of %d", upgrades), "",
		Goal{Text: fmt.Sprintf("= %d", upgrades), Limit: upgrades, AtLeast: true}, one(float64(len(took)))))
	report.Add(row(sc, fmt.Sprintf("failed requests during %d upgrades", upgrades), "", zero,
		one(float64(res.load.Failed()))))
	report.Add(row(sc, "master pid/start time changed (1 = yes)", "", zero, one(masterChanged)))
	report.Add(row(sc, fmt.Sprintf("workers replaced (of %d, by pid and start time)", workers), "", zero,
		one(float64(replaced))))
	report.Add(row(sc, fmt.Sprintf("p99 latency, 25 s with %d upgrades", upgrades), "ms", Goal{}, one(ms(res.load.P99))))
	report.Add(row(sc, "USR2 → READY=1, median", "ms", Goal{}, one(took.Median())))
	report.Add(row(sc, "USR2 → READY=1, max", "ms", Goal{}, one(took.Max())))
}

// liveWorkers returns m's descendants that reported ready: its workers,
// without a child caught between fork and exec or a hook's command.
func liveWorkers(m *Master) []ProcID {
	ready := ReadyPIDs(m.Probe.Events())
	var out []ProcID
	for _, k := range Descendants(m.PID()) {
		if _, ok := ready[k.PID]; ok {
			out = append(out, k)
		}
	}
	return out
}

// statusReady matches forkd's STATUS= text.
var statusReady = regexp.MustCompile(`(?m)^STATUS=(?:reloading, )?(\d+)/(\d+) workers ready`)

// fewestReadyStatus returns the fewest ready workers forkd's STATUS= said
// from msgs[mark] on — the status in force at mark (the last line before
// it: forkd sends STATUS= only when the text changes) and every line after
// — and how many lines there were after mark.
func fewestReadyStatus(msgs []Message, mark int) (fewest, lines int) {
	fewest = -1
	for i, msg := range msgs {
		for _, m := range statusReady.FindAllStringSubmatch(msg.Data, -1) {
			n, _ := strconv.Atoi(m[1])
			if i < mark {
				fewest = n // superseded by later lines before mark
				continue
			}
			if fewest < 0 {
				fewest = n
			}
			fewest = min(fewest, n)
			lines++
		}
	}
	return fewest, lines
}

// fewestServing returns the fewest workers serving — between their "ready"
// and their "stop" probe, by the probes' own timestamps — from from to to.
func fewestServing(evs []Event, from, to time.Time) int {
	evs = slices.Clone(evs)
	slices.SortStableFunc(evs, func(a, b Event) int { return a.At.Compare(b.At) })
	serving := map[int]bool{}
	fewest := -1 // not yet at from
	for _, ev := range evs {
		if ev.Kind != benchworker.KindReady && ev.Kind != benchworker.KindStop {
			continue
		}
		if ev.At.After(to) {
			break
		}
		if fewest < 0 && !ev.At.Before(from) {
			fewest = len(serving) // the count at from
		}
		if ev.Kind == benchworker.KindReady {
			serving[ev.PID] = true
		} else {
			delete(serving, ev.PID)
		}
		if fewest >= 0 {
			fewest = min(fewest, len(serving))
		}
	}
	if fewest < 0 {
		return len(serving)
	}
	return fewest
}

// BenchmarkRecycle is scenario 9 (forkd only): max_requests = 1000 during
// 20 s of load, 4 workers that boot in 200 ms.
func BenchmarkRecycle(b *testing.B) {
	s := env(b)
	w := s.wrk(b, recycleLoad)
	const workers, maxRequests = 4, 1000
	spec := withEnv(s.forkdSpec(workers, 30*time.Second), map[string]string{benchworker.EnvBootDelay: bootDelay,
		benchworker.EnvCountRequests: "1"})
	spec.MaxRequests = maxRequests
	m := s.start(b, false, spec)
	before, err := m.WaitReady(workers, 30*time.Second)
	if err != nil {
		b.Fatalf("%v\n%s", err, m.Output())
	}
	if _, err := m.Notify.Wait(10*time.Second, "forkd's READY=1", func(ms []Message) bool {
		return readyCount(ms) > 0 || m.Err() != nil
	}); err != nil {
		b.Fatal(err)
	}
	mark := len(m.Notify.Messages())
	from := time.Now()
	res := <-startLoad(b, w, m)
	to := time.Now()
	if res.err != nil {
		b.Fatalf("load during recycling: %v", res.err)
	}
	b.Logf("forkd recycling every %d requests: %v", maxRequests, res.load)
	if err := m.Err(); err != nil {
		b.Fatal(err)
	}
	evs := m.Probe.Events()
	recycles := len(ReadyPIDs(evs)) - len(ReadyPIDs(before))
	fewestStatus, lines := fewestReadyStatus(m.Notify.Messages(), mark)
	if fewestStatus < 0 {
		b.Errorf("no STATUS= line from forkd")
	}
	fewestProbe := fewestServing(evs, from, to)
	assertServes(b, m, m.Probe.Events())
	closeMaster(b, m)
	if least := res.load.Requests / (2 * maxRequests * workers); int64(recycles) < least {
		b.Errorf("%d recycles for %d requests, want at least %d", recycles, res.load.Requests, least)
	}

	b.ReportMetric(float64(res.load.Failed()), "failed")
	b.ReportMetric(float64(recycles), "recycles")
	const sc = "9 recycling, max_requests = 1000, 4 workers booting in 200 ms (forkd only)"
	one := func(v float64) pair { return pair{v, math.NaN()} }
	report.Add(row(sc, "failed requests during 20 s of load", "", Goal{Text: "0", Limit: 0},
		one(float64(res.load.Failed()))))
	report.Add(row(sc, "recycles (new worker pids)", "", Goal{}, one(float64(recycles))))
	report.Add(row(sc, "requests served", "", Goal{}, one(float64(res.load.Requests))))
	report.Add(row(sc, fmt.Sprintf("fewest ready workers in forkd's STATUS= (in force at the start + %d lines during)", lines), "",
		Goal{Text: fmt.Sprintf("≥ %d", workers), Limit: workers, AtLeast: true}, one(float64(fewestStatus))))
	report.Add(row(sc, "fewest serving workers by the probes (ready, not yet stopping)", "",
		Goal{Text: fmt.Sprintf("≥ %d", workers), Limit: workers, AtLeast: true}, one(float64(fewestProbe))))
	report.Add(row(sc, "p99 latency", "ms", Goal{}, one(ms(res.load.P99))))
}
