package bench

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// keepAliveDoc describes scenarios 14–16 in docs/BENCHMARKS.md.
const keepAliveDoc = `- **Keep-alive load (14–16).** wrk as above without ` + "`Connection: close`" + `:
  each of wrk's connections stays open for as many requests as the server
  allows, as browsers, HTTP client pools and nginx's upstream keepalive do.
  A worker that closes an idle connection just as wrk sends its next request
  on it costs a read error. The Go workers drain with package
  ` + "`sdk/httpdrain`" + `: once a drain begins, every answer says
  ` + "`Connection: close`" + ` (wrk then reconnects, to a worker still
  accepting), and a connection that stays idle is closed only a tenth of the
  grace period (at most 1 s) before its end.
- **14 HUP reload under keep-alive load** (forkd only: Gunicorn's sync
  workers close every connection). 4 workers, ` + "`graceful_timeout = \"5s\"`" + `,
  ` + "`wrk -t2 -c32`" + `: 5 s baseline, then 10 s with a HUP every 3 s (3, from
  1.5 s on), for the demo worker (` + "`examples/demo`" + `, plain go-systemd
  and ` + "`sdk/httpdrain`" + `) and an SDK worker (` + "`bench/cmd/sdk-worker`" + `,
  ` + "`sdk.Server`" + `), both ` + "`-graceful-timeout 5s`" + `, GOMAXPROCS=1. A reload
  counts as completed with forkd's READY=1 after it (systemd's
  notify-reload protocol), and every worker alive before the HUPs must be
  gone after.
- **15 USR2 upgrade under keep-alive load** (forkd only). The same two
  workers, 4 each, 10 s of ` + "`wrk -t2 -c32`" + ` with a USR2 every 2 s (4, from
  1.5 s on), each waited for (the re-executed master's READY=1); the workers
  (pid and start time) must be the same after.
- **16 the FastAPI example under keep-alive load.** ` + "`examples/fastapi-scheduler`" + `
  with 2 workers, under forkd (its ` + "`forkd.toml`" + `: ` + "`python3 -m uvicorn app:app --fd 3 --no-access-log`" + `)
  and under Gunicorn (its ` + "`gunicorn.conf.py`" + `, ` + "`--workers 2 -k uvicorn.workers.UvicornWorker`" + `),
  the job's period set to 60 s so that no job runs during the load.
  Throughput: four masters up side by side (idle but for the load): forkd
  and Gunicorn, each as shipped (no access log) and with access logs to
  stdout, which the benchmark reads as journald would (forkd: uvicorn's
  default, the example's command line before; Gunicorn:
  ` + "`--access-logfile -`" + `); then 5 rounds of ` + "`wrk -t2 -c16 -d2s`" + ` keep-alive
  against each in turn, the first one rotating, so that all see the machine
  at the same speed. The medians are reported, forkd's goal within 20 % of
  Gunicorn's requests/s, with the workers' CPU time (utime + stime of the
  master's descendants, /proc/PID/stat) per request over each round, a
  figure that a busy machine disturbs less than throughput. Then, one master at a time, 10 s of ` + "`wrk -t2 -c16`" + ` with 3 HUPs
  (every 3 s from 1.5 s on),
  after which 2 new worker pids must answer. uvicorn closes idle
  keep-alive connections as soon as it is told to stop (see the example's
  README), so that figure is uvicorn's, under either master.
`

// Scenarios 14–16's shape.
const (
	kaWorkers    = 4
	kaBaseline   = 5 * time.Second
	kaLoad       = 10 * time.Second
	kaHUPs       = 3
	kaUpgrades   = 4
	kaGrace      = "5s" // Spec.TOML's graceful_timeout, for the workers' own flag
	kaExWorkers  = 2
	kaExConns    = 16
	kaExPeriod   = 60 * time.Second
	kaRound      = 2 * time.Second // one throughput run
	kaRounds     = 5               // throughput rounds, each running wrk against every master
	kaThroughput = 0.8             // forkd's goal: this share of Gunicorn's requests/s at least
)

// goWorker is a Go worker of scenarios 14 and 15.
type goWorker struct {
	label  string  // in the report's figures
	metric string  // in metric names
	bin    *binary // built on first use
}

// goWorkers are the Go workers the keep-alive scenarios run: the demo and
// an SDK worker.
var goWorkers = []goWorker{
	{"demo worker (examples/demo)", "demo", demoBinary},
	{"SDK worker (sdk.Server)", "sdk", sdkWorkerBinary},
}

// wrkKeepAlive returns the keep-alive load generator with conns
// connections, skipping b when wrk is not installed.
func (s *setup) wrkKeepAlive(b *testing.B, conns int, d time.Duration) Wrk {
	b.Helper()
	w := s.wrk(b, d)
	w.Conns, w.Headers = conns, nil
	return w
}

// startGoWorker starts forkd with n of w and waits for forkd's READY=1.
func (s *setup) startGoWorker(b *testing.B, w goWorker, n int) *Master {
	b.Helper()
	path, err := w.bin.build()
	if err != nil {
		b.Fatal(err)
	}
	m := s.start(b, false, Spec{Workers: n, Timeout: 30 * time.Second, Command: path,
		Args: []string{"-graceful-timeout", kaGrace}, Env: s.workerEnv()})
	if err := waitReadyCount(m, 1, 30*time.Second); err != nil {
		b.Fatalf("%s: %v\n%s", w.label, err, m.Output())
	}
	return m
}

// waitReadyCount waits until forkd has sent n READY=1 in all, failing early
// when it exits.
func waitReadyCount(m *Master, n int, timeout time.Duration) error {
	_, err := m.Notify.Wait(timeout, fmt.Sprintf("forkd's READY=1 #%d", n), func(ms []Message) bool {
		return readyCount(ms) >= n || m.Err() != nil
	})
	if err == nil {
		err = m.Err()
	}
	return err
}

// url is m's root URL.
func (m *Master) url() string { return fmt.Sprintf("http://127.0.0.1:%d/", m.Port) }

// survivors returns how many of before are still alive among m's
// descendants.
func survivors(m *Master, before []ProcID) int {
	now := Descendants(m.PID())
	n := 0
	for _, p := range before {
		if slices.Contains(now, p) {
			n++
		}
	}
	return n
}

// waitGone waits until none of before is among m's descendants any more
// (the last old generation may still be draining when forkd says the
// reload is done), or until timeout, and returns how many are left.
func waitGone(m *Master, before []ProcID, timeout time.Duration) int {
	deadline := time.After(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		left := survivors(m, before)
		if left == 0 {
			return 0
		}
		select {
		case <-deadline:
			return left
		case <-tick.C: // /proc tells no one when a grandchild exits
		}
	}
}

// BenchmarkReloadKeepAlive is scenario 14 (forkd only): 3 HUPs during
// 10 s of keep-alive load, for the demo worker and an SDK worker.
func BenchmarkReloadKeepAlive(b *testing.B) {
	s := env(b)
	base := s.wrkKeepAlive(b, 32, kaBaseline)
	during := s.wrkKeepAlive(b, 32, kaLoad)
	const sc = "14 HUP reload under keep-alive load, 4 workers (forkd only)"
	one := func(v float64) pair { return pair{v, math.NaN()} }
	for _, w := range goWorkers {
		m := s.startGoWorker(b, w, kaWorkers)
		bl, err := base.Run(context.Background(), m.url())
		if err != nil {
			b.Fatalf("%s baseline: %v", w.label, err)
		}
		b.Logf("%s baseline: %v", w.label, bl)
		before := Descendants(m.PID())
		load := startLoad(b, during, m)
		if err := signalEvery(m.PID(), syscall.SIGHUP, kaHUPs, time.Now(), 1500*time.Millisecond, 3*time.Second,
			func(int, time.Time) error { return m.Err() }); err != nil {
			b.Fatalf("%s: %v", w.label, err)
		}
		res := <-load
		if res.err != nil {
			b.Fatalf("%s under reloads: %v", w.label, res.err)
		}
		b.Logf("%s during %d HUPs: %v", w.label, kaHUPs, res.load)
		if err := waitReadyCount(m, 1+kaHUPs, 15*time.Second); err != nil {
			b.Errorf("%s: %v\n%s", w.label, err, m.Output())
		}
		reloads := readyCount(m.Notify.Messages()) - 1
		if left := waitGone(m, before, 10*time.Second); left > 0 {
			b.Errorf("%s: %d of the %d processes before the HUPs still run", w.label, left, len(before))
		}
		if _, err := m.Get("/"); err != nil {
			b.Error(err)
		}
		closeMaster(b, m)

		b.ReportMetric(float64(res.load.Failed()), w.metric+"-failed")
		report.Add(row(sc, fmt.Sprintf("%s: failed requests (socket errors + non-2xx) during %d HUPs", w.label, kaHUPs),
			"", Goal{Text: "0", Limit: 0}, one(float64(res.load.Failed()))))
		report.Add(row(sc, fmt.Sprintf("%s: reloads completed (READY=1 after the HUP), of %d", w.label, kaHUPs), "",
			Goal{Text: fmt.Sprintf("= %d", kaHUPs), Limit: kaHUPs, AtLeast: true}, one(float64(reloads))))
		report.Add(row(sc, fmt.Sprintf("%s: requests/s, %d s baseline (higher is better)", w.label, kaBaseline/time.Second),
			"/s", Goal{}, one(bl.Rate())))
		report.Add(row(sc, fmt.Sprintf("%s: requests/s during the HUPs (higher is better)", w.label), "/s", Goal{},
			one(res.load.Rate())))
		report.Add(row(sc, fmt.Sprintf("%s: p99 latency, baseline", w.label), "ms", Goal{}, one(ms(bl.P99))))
		report.Add(row(sc, fmt.Sprintf("%s: p99 latency during the HUPs", w.label), "ms", Goal{}, one(ms(res.load.P99))))
	}
}

// BenchmarkUpgradeKeepAlive is scenario 15 (forkd only): 4 in-place
// upgrades (USR2, each waited for) during 10 s of keep-alive load, for the
// demo worker and an SDK worker.
func BenchmarkUpgradeKeepAlive(b *testing.B) {
	s := env(b)
	load := s.wrkKeepAlive(b, 32, kaLoad)
	const sc = "15 USR2 upgrade under keep-alive load, 4 workers (forkd only)"
	one := func(v float64) pair { return pair{v, math.NaN()} }
	for _, w := range goWorkers {
		m := s.startGoWorker(b, w, kaWorkers)
		before := Descendants(m.PID())
		if len(before) != kaWorkers {
			b.Fatalf("%s: forkd has %d children, want %d workers: %v", w.label, len(before), kaWorkers, before)
		}
		running := startLoad(b, load, m)
		upgraded := 0
		err := signalEvery(m.PID(), syscall.SIGUSR2, kaUpgrades, time.Now(), 1500*time.Millisecond, 2*time.Second,
			func(i int, _ time.Time) error {
				if err := waitReadyCount(m, 2+i, 1900*time.Millisecond); err != nil {
					return fmt.Errorf("USR2 #%d: %w", i+1, err)
				}
				upgraded++
				return nil
			})
		if err != nil {
			b.Errorf("%s: %v\n%s", w.label, err, m.Output())
		}
		res := <-running
		if res.err != nil {
			b.Fatalf("%s under upgrades: %v", w.label, res.err)
		}
		b.Logf("%s during %d upgrades: %v", w.label, kaUpgrades, res.load)
		kept := survivors(m, before)
		if kept != kaWorkers {
			b.Errorf("%s: %d of the %d workers kept across the upgrades", w.label, kept, kaWorkers)
		}
		if _, err := m.Get("/"); err != nil {
			b.Error(err)
		}
		closeMaster(b, m)

		b.ReportMetric(float64(res.load.Failed()), w.metric+"-failed")
		report.Add(row(sc, fmt.Sprintf("%s: failed requests during %d upgrades", w.label, kaUpgrades), "",
			Goal{Text: "0", Limit: 0}, one(float64(res.load.Failed()))))
		report.Add(row(sc, fmt.Sprintf("%s: upgrades completed (READY=1 from the re-executed master), of %d",
			w.label, kaUpgrades), "", Goal{Text: fmt.Sprintf("= %d", kaUpgrades), Limit: kaUpgrades, AtLeast: true},
			one(float64(upgraded))))
		report.Add(row(sc, fmt.Sprintf("%s: workers replaced (of %d, by pid and start time)", w.label, kaWorkers), "",
			Goal{Text: "0", Limit: 0}, one(float64(kaWorkers-kept))))
		report.Add(row(sc, fmt.Sprintf("%s: requests/s during the upgrades (higher is better)", w.label), "/s", Goal{},
			one(res.load.Rate())))
	}
}

// BenchmarkExampleKeepAlive is scenario 16: the FastAPI example with 2
// workers under forkd and under Gunicorn with uvicorn workers, keep-alive
// throughput with and without access logs (both masters up side by side,
// measured in alternating rounds), and 3 HUPs under keep-alive load.
func BenchmarkExampleKeepAlive(b *testing.B) {
	s := env(b)
	ex := example(b)
	round := s.wrkKeepAlive(b, kaExConns, kaRound)
	during := s.wrkKeepAlive(b, kaExConns, kaLoad)
	rounds := s.exampleRounds(b, ex, round)
	rate, loggedRate, p50, p99, failed, hupRate := newPair(), newPair(), newPair(), newPair(), newPair(), newPair()
	cpu, loggedCPU, best := newPair(), newPair(), newPair()
	for _, g := range s.sides() {
		i := idx(g)
		rate[i], loggedRate[i] = rounds[0][i].rate.Median(), rounds[1][i].rate.Median()
		p50[i], p99[i] = rounds[0][i].p50.Median(), rounds[0][i].p99.Median()
		cpu[i], loggedCPU[i] = rounds[0][i].cpu.Median(), rounds[1][i].cpu.Median()
		best[i] = rounds[0][i].rate.Max()

		m := s.startExampleKeepAlive(b, ex, g, false)
		first, err := s.answering(b, m, nil)
		if err != nil {
			b.Fatal(err)
		}
		load := startLoad(b, during, m)
		if err := signalEvery(m.PID(), syscall.SIGHUP, kaHUPs, time.Now(), 1500*time.Millisecond, 3*time.Second,
			func(int, time.Time) error { return m.Err() }); err != nil {
			b.Fatalf("%s: %v", m.Name, err)
		}
		res := <-load
		if res.err != nil {
			b.Fatalf("%s under HUPs: %v", m.Name, res.err)
		}
		b.Logf("%s during %d HUPs, keep-alive: %v", m.Name, kaHUPs, res.load)
		if _, err := s.answering(b, m, first); err != nil {
			b.Errorf("after %d HUPs: %v", kaHUPs, err)
		}
		closeMaster(b, m)
		failed[i], hupRate[i] = float64(res.load.Failed()), res.load.Rate()
		b.ReportMetric(rate[i], name(g)+"-keepalive-req/s")
		b.ReportMetric(failed[i], name(g)+"-keepalive-hup-failed")
	}
	const sc = "16 the FastAPI example under keep-alive load, 2 uvicorn workers"
	goal := Goal{}
	if !math.IsNaN(rate[1]) {
		goal = Goal{Text: fmt.Sprintf("≥ %.1f × Gunicorn = %.0f/s", kaThroughput, kaThroughput*rate[1]),
			Limit: kaThroughput * rate[1], AtLeast: true}
	}
	runs := fmt.Sprintf("median of %d rounds of wrk -t2 -c%d -d%ds, the 4 masters in turn", kaRounds, kaExConns,
		kaRound/time.Second)
	report.Add(row(sc, fmt.Sprintf("requests/s, keep-alive, access logs off, %s (higher is better)", runs), "/s",
		goal, rate))
	report.Add(row(sc, "requests/s, the best of the same rounds (the least disturbed by the machine's other load)", "/s",
		Goal{}, best))
	report.Add(row(sc, "p50 latency, the same runs (median)", "ms", Goal{}, p50))
	report.Add(row(sc, "p99 latency, the same runs (median)", "ms", Goal{}, p99))
	report.Add(row(sc, "the workers' CPU time per request, the same runs (median)", "µs", Goal{}, cpu))
	report.Add(row(sc, "requests/s, the same with access logs to stdout (forkd: uvicorn's default, without "+
		"--no-access-log; Gunicorn: --access-logfile -)", "/s", Goal{}, loggedRate))
	report.Add(row(sc, "the workers' CPU time per request, access logs to stdout (median)", "µs", Goal{}, loggedCPU))
	report.Add(row(sc, fmt.Sprintf("failed requests (socket errors + non-2xx) during %d HUPs, %d s of keep-alive load",
		kaHUPs, kaLoad/time.Second), "", Goal{}, failed))
	report.Add(row(sc, fmt.Sprintf("requests/s during %d HUPs (higher is better)", kaHUPs), "/s", Goal{}, hupRate))
	if !math.IsNaN(rate[1]) && rate[1] > 0 {
		report.Note("Scenario 16: forkd / Gunicorn keep-alive requests/s: %.2f× as each ships (access logs off); "+
			"%.2f× with uvicorn's access log on under forkd only (the example's command line before); "+
			"%.2f× with access logs on both sides. Workers' CPU time per request, forkd / Gunicorn: %.2f× as each "+
			"ships, %.2f× with uvicorn's access log on under forkd only.", rate[0]/rate[1], loggedRate[0]/rate[1],
			loggedRate[0]/loggedRate[1], cpu[0]/cpu[1], loggedCPU[0]/cpu[1])
	}
}

// exampleRuns are one master's keep-alive rounds in scenario 16.
type exampleRuns struct {
	rate     Sample // requests/s
	p50, p99 Sample // ms
	cpu      Sample // the workers' CPU time per request, µs
}

// exampleRounds starts the example under forkd and under Gunicorn (when
// installed), each with access logs off and on, all side by side, and runs
// w against each in turn kaRounds times, the first one rotating, so that
// all see the machine at the same speed. It returns the rounds by access
// log (0 off, 1 on) and side (idx); the masters are stopped before it
// returns.
func (s *setup) exampleRounds(b *testing.B, ex Example, w Wrk) [2][2]exampleRuns {
	b.Helper()
	type target struct {
		m        *Master
		logged   int
		gunicorn bool
	}
	var targets []target
	for _, logged := range []int{0, 1} {
		for _, g := range s.sides() {
			targets = append(targets, target{s.startExampleKeepAlive(b, ex, g, logged == 1), logged, g})
		}
	}
	for _, t := range targets {
		if _, err := s.answering(b, t.m, nil); err != nil {
			b.Fatal(err)
		}
	}
	var out [2][2]exampleRuns
	for r := range kaRounds {
		for k := range targets {
			t := targets[(r+k)%len(targets)]
			before, err := workersCPU(t.m)
			if err != nil {
				b.Fatal(err)
			}
			l, err := w.Run(context.Background(), t.m.url())
			if err != nil {
				b.Fatalf("%s, access log %d, round %d: %v", t.m.Name, t.logged, r+1, err)
			}
			after, err := workersCPU(t.m)
			if err != nil {
				b.Fatal(err)
			}
			b.Logf("%s, access log %d, round %d: %v; workers' CPU %v", t.m.Name, t.logged, r+1, l, after-before)
			o := &out[t.logged][idx(t.gunicorn)]
			o.rate, o.p50, o.p99 = append(o.rate, l.Rate()), append(o.p50, ms(l.P50)), append(o.p99, ms(l.P99))
			if l.Requests > 0 {
				o.cpu = append(o.cpu, float64(after-before)/float64(time.Microsecond)/float64(l.Requests))
			}
		}
	}
	for _, t := range targets {
		closeMaster(b, t.m)
	}
	return out
}

// workersCPU returns the CPU time m's descendants (its workers, and the
// example's scheduler under forkd) have used.
func workersCPU(m *Master) (time.Duration, error) {
	var sum time.Duration
	for _, p := range Descendants(m.PID()) {
		d, err := CPUTime(p.PID)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", m.Name, err)
		}
		sum += d
	}
	return sum, nil
}

// answering waits until kaExWorkers worker pids not in skip answer on m,
// and returns them.
func (s *setup) answering(b *testing.B, m *Master, skip map[int]bool) (map[int]bool, error) {
	b.Helper()
	_, pids, err := WaitAnswering(m.Port, kaExWorkers, skip, 60*time.Second)
	if err != nil {
		return nil, fmt.Errorf("%s: %w\n%s", m.Name, err, m.Output())
	}
	return pids, nil
}

// startExampleKeepAlive starts the example with kaExWorkers workers and
// the job's period at kaExPeriod: under forkd with its forkd.toml (uvicorn
// without --no-access-log when accessLog), or under Gunicorn with its
// gunicorn.conf.py (and --access-logfile - when accessLog). It is stopped
// when b ends.
func (s *setup) startExampleKeepAlive(b *testing.B, ex Example, gunicorn, accessLog bool) *Master {
	b.Helper()
	env := []string{"JOB_LOG=" + filepath.Join(b.TempDir(), "jobs.log"), fmt.Sprintf("JOB_EVERY=%d", kaExPeriod/time.Second)}
	var m *Master
	var err error
	if gunicorn {
		m, err = StartGunicornWith(s.gunicorn, func(m *Master) []string {
			args := ex.GunicornArgsN(filepath.Join(ex.Dir, "gunicorn.conf.py"), m.Port, kaExWorkers)
			if accessLog {
				args = append([]string{"--access-logfile", "-"}, args...)
			}
			return args
		}, env, "")
	} else {
		var cfg string
		if cfg, err = ex.ForkdConfig(1, kaExPeriod); err == nil {
			_, err = WithWorkers(cfg, kaExWorkers)
		}
		if err != nil {
			b.Fatal(err)
		}
		m, err = StartForkdWith(s.forkd, func(m *Master) string {
			cfg, _ := ex.ForkdConfig(m.Port, kaExPeriod) // checked above
			cfg, _ = WithWorkers(cfg, kaExWorkers)
			if accessLog {
				cfg = strings.Replace(cfg, `, "--no-access-log"`, "", 1)
			}
			return cfg
		}, env, ex.Root)
	}
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { closeMaster(b, m) })
	return m
}
