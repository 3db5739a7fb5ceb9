package bench

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"testing"
	"time"

	"github.com/forkd/forkd/bench/benchworker"
)

// autoscaleDoc describes scenarios 17 and 18 in docs/BENCHMARKS.md.
const autoscaleDoc = `- **17 autoscaling, step load** (forkd only). Slow synchronous workers:
  ` + "`BENCH_SYNC_MS=50`" + ` makes the bench worker take one connection at a time and
  answer its one request after 50 ms, so that the connections beyond the ones
  in service wait in the listening socket's accept queue, as with Gunicorn's
  sync workers. From idle, a step to ` + "`wrk -t2 -c16 -d10s --latency -H 'Connection: close'`" + `:
  16 connections need 16 such workers. Three masters one after the other:
  ` + "`[server.autoscale]`" + ` min = 2, max = 16, queue = 4, up_after = "200ms",
  down_after = "30s", starting with 2 workers; a fixed 2; a fixed 16. p99 is
  wrk's. "Load start → pool covering it": from wrk's start to the "ready" probe
  of the last worker the scaler added during the step (it adds none after it:
  the queues stayed at or below queue).
- **18 on demand** (forkd only). ` + "`[server.autoscale]`" + ` min = 0, max = 4,
  down_after = "1s", no worker at the start (the plain bench worker). The
  master's context switches (all threads) over 10 s with no worker, 2 s after
  its READY=1; then one GET on a new connection, timed from before the dial to
  the end of the answer: forkd wakes on the queued connection (epoll), starts
  a worker, which boots and answers it. Its goal is the bench worker's own
  boot (exec → ready, run alone, median of 10, as in scenario 1) + 5 ms. The
  same again after the pool went back to no worker (its "stop" probe) and
  2 s of idle.
`

// stepSide is one master of scenario 17.
type stepSide struct {
	label     string
	workers   int
	autoscale string
}

// BenchmarkAutoscale is scenario 17: a step load on slow synchronous
// workers, with autoscaling 2…16 against a fixed 2 and a fixed 16.
func BenchmarkAutoscale(b *testing.B) {
	s := env(b)
	const conns, max = 16, 16
	w := s.wrk(b, 10*time.Second)
	w.Conns = conns
	sides := []stepSide{
		{"autoscale 2..16", 2, `min = 2
max = 16
queue = 4
up_after = "200ms"
down_after = "30s"`},
		{"fixed 2", 2, ""},
		{"fixed 16", 16, ""},
	}
	p99 := make([]float64, len(sides))
	var cover, reached float64
	for i, sd := range sides {
		spec := withEnv(s.forkdSpec(sd.workers, 0), map[string]string{benchworker.EnvSyncMS: "50"})
		spec.Autoscale = sd.autoscale
		m := s.start(b, false, spec)
		evs, err := m.WaitReady(sd.workers, 30*time.Second)
		if err != nil {
			b.Fatalf("%s: %v", sd.label, err)
		}
		before := ReadyPIDs(evs)
		t0 := time.Now()
		load, err := w.Run(context.Background(), fmt.Sprintf("http://127.0.0.1:%d/", m.Port))
		if err != nil {
			b.Fatalf("%s: %v", sd.label, err)
		}
		b.Logf("%s: %v", sd.label, load)
		if load.Failed() > 0 {
			b.Errorf("%s: %d requests failed", sd.label, load.Failed())
		}
		p99[i] = float64(load.P99) / float64(time.Millisecond)
		if sd.autoscale == "" {
			closeMaster(b, m)
			continue
		}
		var last time.Time
		added := 0
		for pid, at := range ReadyPIDs(m.Probe.Events()) {
			if _, ok := before[pid]; !ok {
				added++
				if at.After(last) {
					last = at
				}
			}
		}
		reached = float64(sd.workers + added)
		if int(reached) > max {
			b.Errorf("%s: %v workers served, above max %d", sd.label, reached, max)
		}
		cover = math.NaN()
		if added > 0 {
			cover = last.Sub(t0).Seconds()
		}
		closeMaster(b, m)
	}
	const sc = "17 autoscaling, step to 16 connections on 50 ms synchronous workers (forkd only)"
	report.Add(row(sc, "p99, autoscale 2..16 (forkd column) vs a fixed 2 (Gunicorn column)", "ms",
		Goal{Text: "≤ ½ fixed 2", Limit: p99[1] / 2}, pair{p99[0], p99[1]}))
	report.Add(row(sc, "p99, autoscale 2..16 (forkd column) vs a fixed 16 (Gunicorn column)", "ms", Goal{}, pair{p99[0], p99[2]}))
	report.Add(row(sc, "load start → pool covering it (last worker added ready)", "s",
		Goal{Text: "≤ 2 s", Limit: 2}, pair{cover, math.NaN()}))
	report.Add(row(sc, "workers that served the step (at most max = 16)", "", Goal{}, pair{reached, math.NaN()}))
}

// BenchmarkOnDemand is scenario 18: autoscaling with min = 0 — the
// master's wakeups with no worker, and the first request's answer.
func BenchmarkOnDemand(b *testing.B) {
	s := env(b)
	boot := s.workerBoot(b).toReady.Median()
	spec := s.forkdSpec(0, 0)
	spec.Autoscale = `min = 0
max = 4
down_after = "1s"`
	m := s.start(b, false, spec)
	if _, err := m.Notify.Wait(10*time.Second, "forkd's READY=1", func(ms []Message) bool {
		_, ok := FirstReady(ms)
		return m.Err() != nil || ok
	}); err != nil {
		b.Fatal(err)
	}
	<-time.After(2 * time.Second) // settle before the window
	n0, err := ContextSwitches(m.PID())
	if err != nil {
		b.Fatal(err)
	}
	const window = 10 * time.Second
	t0 := time.Now()
	<-time.After(window) // the measurement window itself
	n1, err := ContextSwitches(m.PID())
	if err != nil {
		b.Fatal(err)
	}
	wakeups := float64(n1-n0) / time.Since(t0).Seconds()
	if evs := m.Probe.Events(); len(evs) > 0 {
		b.Fatalf("a worker started with no connection: %v", evs)
	}

	var firsts Sample
	for round := range 2 {
		c := http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		start := time.Now()
		resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/", m.Port))
		if err != nil {
			b.Fatalf("round %d: %v", round, err)
		}
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		took := time.Since(start)
		if err != nil || resp.StatusCode != http.StatusOK {
			b.Fatalf("round %d: status %d, %v", round, resp.StatusCode, err)
		}
		firsts = append(firsts, float64(took)/float64(time.Millisecond))
		b.Logf("round %d: first request answered in %v (worker boot alone %.2f ms)", round, took, boot)
		if round == 0 {
			// Back to no worker: its "stop" probe, then idle again.
			if _, err := m.Probe.WaitEvents(20*time.Second, "the worker's stop", func(evs []Event) bool {
				for _, ev := range evs {
					if ev.Kind == benchworker.KindStop {
						return true
					}
				}
				return false
			}); err != nil {
				b.Fatal(err)
			}
			<-time.After(2 * time.Second) // idle before the second round
		}
	}
	const sc = "18 on demand, autoscale min = 0 (forkd only)"
	report.Add(row(sc, "master wakeups/s over 10 s with no worker", "/s", Goal{Text: "≤ 0.2/s", Limit: 0.2},
		pair{wakeups, math.NaN()}))
	report.Add(row(sc, "first request after idle → answered (dial to answer), first round", "ms",
		Goal{Text: fmt.Sprintf("≤ boot + 5 ms = %.2f ms", boot+5), Limit: boot + 5}, pair{firsts[0], math.NaN()}))
	report.Add(row(sc, "the same after the pool went back to no worker", "ms",
		Goal{Text: fmt.Sprintf("≤ boot + 5 ms = %.2f ms", boot+5), Limit: boot + 5}, pair{firsts[1], math.NaN()}))
}
